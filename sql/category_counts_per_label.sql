-- Triage category counts per label.
--
-- Purpose:
--   For every label, the mispredicted rows split into the DQE categories: noisy (the most similar row has
--   another label), difficult (same label, and that row was in the training half) and uncovered (same label,
--   not trained on). Many uncovered rows mean the selection missed part of the label's space; many difficult
--   rows mean the model struggles despite similar training rows.
-- Tables: triage
-- Parameters:
--   :direction STRING (default 'forward') -- triage direction: 'forward' or 'reverse'
-- Columns:
--   label STRING -- the label as given in the data
--   noisy BIGINT -- rows flagged noisy
--   difficult BIGINT -- rows categorised difficult
--   uncovered BIGINT -- rows categorised uncovered
--   wrong_rows BIGINT -- all mispredicted rows of the label
--   noisy_share DOUBLE -- noisy / wrong_rows
SELECT label,
       count_if(category = 'noisy') AS noisy,
       count_if(category = 'difficult') AS difficult,
       count_if(category = 'uncovered') AS uncovered,
       count(*) AS wrong_rows,
       count_if(category = 'noisy') / count(*) AS noisy_share
FROM triage
WHERE direction = :direction
GROUP BY label
ORDER BY wrong_rows DESC, label
