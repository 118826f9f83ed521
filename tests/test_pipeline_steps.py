"""``dqe run`` control flow on stand-in steps or one cheap stage: errors name the stage, --force re-runs (fast)."""

from __future__ import annotations

from functools import partial

import pandas as pd
import pytest

from dqe import pipeline
from dqe.catalog import Catalog, Table
from dqe.cli import main
from dqe.errors import StageError
from dqe.lakehouse import table_version
from dqe.pipeline import PipelineStep, run_pipeline

from conftest import SHARED_DATA


def _succeed(spark, config):
    return {"rows": 0}


@pytest.mark.parametrize("error", [ValueError("bad value"), RuntimeError("bad state")])
def test_plain_errors_name_the_failing_stage(spark, make_config, monkeypatch, error):
    def fail(spark, config):
        raise error

    steps = [PipelineStep("ingest", _succeed), PipelineStep("clean", fail), PipelineStep("embed", _succeed)]
    monkeypatch.setattr(pipeline, "pipeline_steps", lambda config: steps)
    with pytest.raises(StageError, match=rf"^stage clean failed: {type(error).__name__}: {error} ") as caught:
        run_pipeline(spark, make_config("cr"), echo=lambda _: None)
    assert caught.value.__cause__ is error


def test_force_reruns_a_stage_whose_outputs_are_current(spark, make_config, tmp_path):
    path = tmp_path / "tiny.parquet"
    texts = {"good phone": "positive", "bad battery": "negative", "fine screen": "positive"}
    pd.DataFrame({"id": ["1", "2", "3"], "text": list(texts), "label": list(texts.values())}).to_parquet(path)
    config = make_config("cr", f"dataset.train.path={path}", "dataset.holdout_fraction=0")
    bronze = Catalog.from_config(config).name(Table.BRONZE)
    ingest_only = partial(run_pipeline, spark, config, first="ingest", last="ingest", echo=lambda _: None)

    assert ingest_only()["ingest"] != "skipped"
    written = table_version(spark, bronze)
    assert ingest_only() == {"ingest": "skipped"}
    assert table_version(spark, bronze) == written
    assert ingest_only(force=True)["ingest"] != "skipped"
    assert table_version(spark, bronze) > written


def test_run_force_option_reaches_the_pipeline(monkeypatch):
    calls = []
    monkeypatch.setattr("dqe.spark.get_spark", lambda config: None)
    monkeypatch.setattr(pipeline, "run_pipeline", lambda spark, config, **options: calls.append(options))
    assert main(["run", "--dataset", "cr", "--set", f"data_root={SHARED_DATA}", "--force"]) == 0
    assert main(["run", "--dataset", "cr", "--set", f"data_root={SHARED_DATA}"]) == 0
    assert [options["force"] for options in calls] == [True, False]
