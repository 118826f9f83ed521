"""Databricks Python task / local script for the ingest stage: `python jobs/ingest.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("ingest"))
