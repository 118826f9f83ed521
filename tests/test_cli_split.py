"""``dqe train`` / ``dqe infer`` and their jobs take ``--split``, for the reverse direction of
``triage.both_directions`` outside ``dqe run`` (no Spark)."""

from __future__ import annotations

import inspect

import pytest

from dqe import cli
from dqe.cli import build_parser, job_main, stage_function

from conftest import SHARED_DATA

CONFIG_OPTIONS = ["--dataset", "cr", "--set", f"data_root={SHARED_DATA}"]


@pytest.mark.parametrize("stage", ["train", "infer"])
def test_split_defaults_to_the_stage_functions_default(stage):
    parsed = build_parser().parse_args([stage, *CONFIG_OPTIONS])
    assert parsed.split == inspect.signature(stage_function(stage)).parameters["split"].default


@pytest.mark.parametrize("stage", ["train", "infer"])
@pytest.mark.parametrize("split", ["sampled", "unsampled"])
def test_split_is_parsed(stage, split):
    assert build_parser().parse_args([stage, "--split", split]).split == split


@pytest.mark.parametrize("argv", [["train", "--split", "test"], ["triage", "--split", "sampled"]])
def test_unknown_split_or_stage_without_splits_is_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "--split" in capsys.readouterr().err


def test_jobs_pass_the_split_to_the_stage(monkeypatch):
    calls = []
    monkeypatch.setattr("dqe.spark.get_spark", lambda config: None)
    record = lambda stage: lambda spark, config, **options: calls.append((stage, options))  # noqa: E731
    monkeypatch.setattr(cli, "stage_function", record)
    assert job_main("train", [*CONFIG_OPTIONS, "--split", "unsampled"]) == 0
    assert job_main("infer", [*CONFIG_OPTIONS, "--split", "sampled"]) == 0
    assert job_main("triage", CONFIG_OPTIONS) == 0
    assert calls == [("train", {"split": "unsampled"}), ("infer", {"split": "sampled"}), ("triage", {})]
