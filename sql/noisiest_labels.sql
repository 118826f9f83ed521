-- Noisiest labels: how much suspected label noise each label attracts.
--
-- Purpose:
--   For every label of the clean rows: how many rows the model got wrong (triage rows), how many of those the
--   DQE triage rule flagged as noisy (their most similar row carries another label), and the noisy rate. A label
--   with a high rate is the first place to look for annotation problems.
-- Tables: clean, triage
-- Parameters:
--   :direction STRING (default 'forward') -- triage direction: 'forward' (errors on the unsampled half, as in
--     the paper) or 'reverse' (errors on the sampled half, with triage.both_directions)
-- Columns:
--   label STRING -- the label as given in the data
--   clean_rows BIGINT -- clean rows with this label
--   wrong_rows BIGINT -- of those, rows the model mispredicted (in the chosen direction)
--   noisy_rows BIGINT -- of those, rows flagged noisy
--   noisy_rate DOUBLE -- noisy_rows / clean_rows
--   noisy_share_of_wrong DOUBLE -- noisy_rows / wrong_rows; NULL when the label has no wrong rows
WITH labels AS (
  SELECT label, count(*) AS clean_rows
  FROM clean
  GROUP BY label
),
wrong AS (
  SELECT label,
         count(DISTINCT row_id) AS wrong_rows,
         count(DISTINCT CASE WHEN category = 'noisy' THEN row_id END) AS noisy_rows
  FROM triage
  WHERE direction = :direction
  GROUP BY label
)
SELECT l.label,
       l.clean_rows,
       coalesce(w.wrong_rows, 0) AS wrong_rows,
       coalesce(w.noisy_rows, 0) AS noisy_rows,
       coalesce(w.noisy_rows, 0) / l.clean_rows AS noisy_rate,
       CASE WHEN w.wrong_rows > 0 THEN w.noisy_rows / w.wrong_rows END AS noisy_share_of_wrong
FROM labels l
LEFT JOIN wrong w ON w.label = l.label
ORDER BY noisy_rate DESC, l.label
