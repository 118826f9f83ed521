"""Databricks Python task / local script for the clean stage: `python jobs/clean.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("clean"))
