-- Near-duplicate pairs with different labels.
--
-- Purpose:
--   Pairs of clean rows that MinHash found nearly identical (estimated Jaccard similarity of character
--   shingles) but that carry different labels: the cheapest label-noise candidates to review, found before any
--   model is trained.
-- Tables: near_duplicates, clean
-- Parameters:
--   :min_jaccard DOUBLE (default 0.8) -- smallest estimated Jaccard similarity to list
--     (clean.near_duplicates.threshold already bounds what the table holds)
-- Columns:
--   row_id_a STRING -- the pair's smaller row id
--   row_id_b STRING -- the larger one
--   jaccard_estimate DOUBLE -- share of equal MinHash values
--   label_a STRING -- label of row a
--   label_b STRING -- label of row b
--   text_a STRING -- text of row a
--   text_b STRING -- text of row b
SELECT n.row_id_a,
       n.row_id_b,
       n.jaccard_estimate,
       n.label_a,
       n.label_b,
       a.text AS text_a,
       b.text AS text_b
FROM near_duplicates n
JOIN clean a ON a.row_id = n.row_id_a
JOIN clean b ON b.row_id = n.row_id_b
WHERE NOT n.same_label
  AND n.jaccard_estimate >= :min_jaccard
ORDER BY n.jaccard_estimate DESC, n.row_id_a, n.row_id_b
