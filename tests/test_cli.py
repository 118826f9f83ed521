"""The ``dqe`` command outside the stages: ``dqe runs`` against a local SQLite MLflow store (no Spark)."""

from __future__ import annotations

from pathlib import Path

from dqe.cli import RUN_TABLE_HEADER, main
from dqe.config import load_config
from dqe.tracking import configure_mlflow

from conftest import SHARED_DATA


def test_runs_prints_a_table_of_the_logged_runs(tmp_path: Path, capsys) -> None:
    import mlflow

    options = [
        "--dataset",
        "cr",
        "--set",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "--set",
        "mlflow.experiment=cli-test",
        "--set",
        f"data_root={SHARED_DATA}",
    ]
    assert main(["runs", *options]) == 0
    assert capsys.readouterr().out.strip() == "no runs in MLflow experiment 'cli-test'"

    configure_mlflow(load_config(dataset="cr", overrides=options[3::2]))
    with mlflow.start_run(run_name="cr-linear-sampled") as run:
        mlflow.set_tags({"dqe.stage": "train", "dqe.split": "sampled", "dqe.backend": "linear", "dqe.dataset": "cr"})
        mlflow.log_metrics({"train_accuracy": 0.91234, "unsampled_accuracy": 0.8, "train_seconds": 2.5})
    with mlflow.start_run(run_name="cr-report"):
        mlflow.set_tags({"dqe.stage": "report", "dqe.dataset": "cr"})

    assert main(["runs", *options, "-n", "5"]) == 0
    header, *lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert header.split() == ["run_id", "start", "(UTC)", "stage", "split", "backend", "status", "accuracies"]
    cells = {line.split()[0]: line.split() for line in lines}
    assert len(cells) == 2
    train = cells.pop(run.info.run_id)
    (report,) = cells.values()
    assert report[3:] == ["report", "-", "-", "FINISHED", "-"]
    assert train[3:7] == ["train", "sampled", "linear", "FINISHED"]
    assert train[7:] == ["train_accuracy=0.912", "unsampled_accuracy=0.800"]  # no train_seconds
    # columns are aligned: every column starts where its header does
    for column in RUN_TABLE_HEADER[1:]:
        start = header.index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines), column
