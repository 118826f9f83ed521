-- Exact-duplicate clusters removed by the clean stage.
--
-- Purpose:
--   Every clean row whose exact duplicates (same normalised text and label) went to quarantine with reason
--   'duplicate': the cluster size, the quarantined row ids and the text. Large clusters point at scraping or
--   export bugs; duplicates that cross the train/test split inflate test scores.
-- Tables: quarantine, clean
-- Parameters:
--   :min_size INT (default 2) -- smallest cluster to list (the kept row plus its duplicates)
-- Columns:
--   kept_row_id STRING -- the row kept in clean (the smallest row_id of the cluster)
--   label STRING -- the cluster's label
--   cluster_size BIGINT -- rows in the cluster, the kept one included
--   duplicate_rows BIGINT -- quarantined duplicates
--   duplicate_row_ids ARRAY<STRING> -- their row ids, sorted
--   example_text STRING -- the (normalised) text of the cluster
WITH duplicates AS (
  SELECT duplicate_of,
         count(*) AS duplicate_rows,
         sort_array(collect_list(row_id)) AS duplicate_row_ids,
         min(label) AS raw_label,
         min(text) AS raw_text
  FROM quarantine
  WHERE reason = 'duplicate'
  GROUP BY duplicate_of
)
SELECT d.duplicate_of AS kept_row_id,
       coalesce(c.label, d.raw_label) AS label,
       d.duplicate_rows + 1 AS cluster_size,
       d.duplicate_rows,
       d.duplicate_row_ids,
       coalesce(c.text, d.raw_text) AS example_text
FROM duplicates d
LEFT JOIN clean c ON c.row_id = d.duplicate_of
WHERE d.duplicate_rows + 1 >= :min_size
ORDER BY cluster_size DESC, kept_row_id
