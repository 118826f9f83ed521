"""Databricks Python task / local script for the report stage: `python jobs/report.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("report"))
