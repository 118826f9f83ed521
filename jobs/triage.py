"""Databricks Python task / local script for the triage stage: `python jobs/triage.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("triage"))
