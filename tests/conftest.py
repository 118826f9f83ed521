"""Shared fixtures: one local Spark session (with Delta) per test run, configs pointing at a temporary warehouse."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from dqe.config import DqeConfig, load_config  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_schema_numbers = itertools.count()


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dqe_work")


@pytest.fixture(scope="session")
def make_config(work_dir: Path) -> Callable[..., DqeConfig]:
    """``make_config("cr", "clean.lowercase=true")``: a config whose tables live in a fresh schema of the test
    warehouse, so tests never see each other's tables."""

    def make(dataset: str | None = "cr", *overrides: str, schema: str | None = None) -> DqeConfig:
        schema = schema or f"t{next(_schema_numbers)}_{{dataset}}"
        base = [
            f"storage.work_dir={work_dir}",
            f"storage.warehouse_dir={work_dir / 'warehouse'}",
            f"storage.schema={schema}",
            f"mlflow.tracking_uri=sqlite:///{work_dir / 'mlflow.db'}",
            "spark.hive_metastore=false",
            "spark.master=local[2]",
            "spark.shuffle_partitions=4",
            "spark.driver_memory=4g",
            f"data_root={SHARED_DATA}",
        ]
        return load_config(dataset=dataset, overrides=[*base, *overrides])

    return make


@pytest.fixture(scope="session")
def spark(make_config):
    from dqe.spark import build_local_session

    session = build_local_session(make_config("cr"))
    yield session
    session.stop()
