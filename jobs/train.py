"""Databricks Python task / local script for the train stage: `python jobs/train.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("train"))
