"""Databricks Python task / local script for the select stage: `python jobs/select.py --dataset cr`."""

import os
import sys

# This file's name shadows the standard-library module `select` (used by subprocess) for anything imported
# after it, because Python puts the script's folder first on sys.path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]

from dqe.cli import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("select"))
