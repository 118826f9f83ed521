"""Databricks Python task / local script for the train stage: `python jobs/train.py --dataset cr`.

`--split unsampled` trains the reverse-direction model that `triage.both_directions` needs (default: sampled).
"""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("train"))
