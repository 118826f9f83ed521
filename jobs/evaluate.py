"""Databricks Python task / local script for the evaluate stage: `python jobs/evaluate.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("evaluate"))
