-- Reviewer agreement with the LLM judge.
--
-- Purpose:
--   How often each reviewer (triage-explorer notebook → reviews table) agrees with the judge on flagged rows.
--   Only a reviewer's latest verdict per row counts. The reviewer says the row is mislabelled with 'drop' or
--   'relabel' and that its label stands with 'keep'; the judge says the row is mislabelled with verdict 'a' and
--   that its label stands with 'b' (the neighbour is mislabelled) or 'ambiguous'. Rows without a usable judge
--   verdict (judge off, or 'error') count as reviews but not as judged.
-- Tables: reviews, flagged_noise
-- Parameters: none
-- Columns:
--   reviewer STRING -- who reviewed
--   reviews BIGINT -- rows reviewed (latest verdict per row)
--   judged BIGINT -- of those, rows with a usable judge verdict
--   agreements BIGINT -- judged rows where reviewer and judge agree
--   agreement_rate DOUBLE -- agreements / judged; NULL when nothing was judged
--   relabels BIGINT -- judged rows the reviewer relabelled where the judge also said 'a'
--   relabel_label_matches BIGINT -- of those, rows where the reviewer's new label equals the judge's label
WITH latest AS (
  SELECT row_id, reviewer, verdict, new_label,
         row_number() OVER (PARTITION BY row_id, reviewer ORDER BY reviewed_at DESC) AS n
  FROM reviews
),
judged AS (
  SELECT row_id, judge_verdict, judge_label,
         row_number() OVER (PARTITION BY row_id ORDER BY similarity DESC, neighbor_row_id) AS n
  FROM flagged_noise
),
paired AS (
  SELECT l.reviewer,
         l.verdict,
         l.new_label,
         j.judge_verdict,
         j.judge_label,
         j.judge_verdict IN ('a', 'b', 'ambiguous') AS is_judged,
         (l.verdict IN ('drop', 'relabel')) = (j.judge_verdict = 'a') AS agrees
  FROM latest l
  LEFT JOIN judged j ON j.row_id = l.row_id AND j.n = 1
  WHERE l.n = 1
)
SELECT reviewer,
       count(*) AS reviews,
       count_if(is_judged) AS judged,
       count_if(is_judged AND agrees) AS agreements,
       CASE WHEN count_if(is_judged) > 0 THEN count_if(is_judged AND agrees) / count_if(is_judged) END
         AS agreement_rate,
       count_if(is_judged AND verdict = 'relabel' AND judge_verdict = 'a') AS relabels,
       count_if(is_judged AND verdict = 'relabel' AND judge_verdict = 'a' AND new_label = judge_label)
         AS relabel_label_matches
FROM paired
GROUP BY reviewer
ORDER BY reviewer
