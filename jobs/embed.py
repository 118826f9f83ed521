"""Databricks Python task / local script for the embed stage: `python jobs/embed.py --dataset cr`."""

import sys

from dqe.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("embed"))
