"""Databricks Python task / local script for the whole pipeline: `python jobs/run_pipeline.py --dataset cr`."""

import sys

from dqe.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
