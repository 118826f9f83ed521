-- Label-pair confusion among noisy pairs.
--
-- Purpose:
--   Which labels get confused with which: every flagged pair (a mispredicted row and its most similar row with
--   another label) counted by (label, neighbor_label), with the mean similarity, what the LLM judge said, and
--   the most similar pair as an example. Asymmetric counts (A→B much more often than B→A) hint at a systematic
--   annotation rule rather than random slips.
-- Tables: flagged_noise
-- Parameters:
--   :min_similarity DOUBLE (default 0.0) -- ignore pairs whose cosine similarity is below this
-- Columns:
--   label STRING -- label of the mispredicted row
--   neighbor_label STRING -- label of its most similar row
--   pairs BIGINT -- flagged pairs with these two labels
--   avg_similarity DOUBLE -- mean cosine similarity of the pairs
--   judge_row_mislabelled BIGINT -- pairs where the judge said the mispredicted row is mislabelled (verdict 'a')
--   judge_neighbor_mislabelled BIGINT -- pairs where the judge blamed the neighbour (verdict 'b')
--   judge_ambiguous BIGINT -- pairs the judge found ambiguous
--   unjudged BIGINT -- pairs without a usable verdict (judge off, or 'error')
--   example_text STRING -- the mispredicted row of the most similar pair
--   example_neighbor_text STRING -- its neighbour
SELECT label,
       neighbor_label,
       count(*) AS pairs,
       avg(similarity) AS avg_similarity,
       count_if(judge_verdict = 'a') AS judge_row_mislabelled,
       count_if(judge_verdict = 'b') AS judge_neighbor_mislabelled,
       count_if(judge_verdict = 'ambiguous') AS judge_ambiguous,
       count_if(judge_verdict IS NULL OR judge_verdict NOT IN ('a', 'b', 'ambiguous')) AS unjudged,
       max_by(text, similarity) AS example_text,
       max_by(neighbor_text, similarity) AS example_neighbor_text
FROM flagged_noise
WHERE similarity >= :min_similarity
GROUP BY label, neighbor_label
ORDER BY pairs DESC, label, neighbor_label
