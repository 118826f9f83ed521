"""Databricks Python task / local script for the infer stage: `python jobs/infer.py --dataset cr`.

`--split sampled` predicts the sampled rows with the model trained on unsampled, for `triage.both_directions`
(default: unsampled).
"""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("infer"))
