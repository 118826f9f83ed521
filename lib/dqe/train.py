"""Train: ``clean`` + ``selection`` (+ ``embeddings`` for ``linear``) → an MLflow run and a registered model.

The configured backend (:mod:`dqe.trainers`) is fitted on the rows of one split: ``sampled`` (the DQE direction)
or ``unsampled`` (the second direction of a cross-fit, so that every row gets an out-of-sample prediction). The
MLflow run records:

- tags ``dqe.stage=train``, ``dqe.split``, ``dqe.backend``, ``dqe.dataset``, ``dqe.stage_run_id``;
- params: every ``train.*`` setting, ``split``, ``train_rows``, ``n_classes``, and ``input.<table>`` = the Delta
  version read of each input table (also as the artifact ``inputs.json``);
- the resolved configuration as the artifact ``config.json``;
- metrics: per epoch (``train_loss``, …; step = epoch), per optimizer step (``train_step_loss``; step = step) and
  the run's summary (``train_seconds``, ``train_examples_per_second``, …);
- the model as a pyfunc (:mod:`dqe.trainers.pyfunc`), registered under ``mlflow.registered_model_name``; the new
  version gets the tag ``dqe.split`` and the alias ``trained_on_<split>``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dqe.catalog import SPLITS, Catalog, Table
from dqe.config import DqeConfig
from dqe.embed import model_identifier
from dqe.errors import InputError
from dqe.lakehouse import StageRun, stage_run
from dqe.tracking import configure_mlflow, model_uri_for_split, registered_model_name, split_alias


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


def split_rows(spark: SparkSession, config: DqeConfig, run: StageRun, split: str, with_vectors: bool) -> DataFrame:
    """row_id, text, label (and the current embedding as ``vector``) of the clean rows in ``split``.

    Vectors are current when they were computed from the row's present text with the configured embedding model.
    """
    catalog = Catalog.from_config(config)
    clean = run.read(spark, catalog.name(Table.CLEAN)).select("row_id", "text", "label")
    selection = run.read(spark, catalog.name(Table.SELECTION)).where(F.col("split") == split).select("row_id")
    rows = clean.join(selection, "row_id")
    if not with_vectors:
        return rows
    vectors = (
        run.read(spark, catalog.name(Table.EMBEDDINGS))
        .where(F.col("model") == model_identifier(config.embed))
        .select("row_id", "text_hash", "vector")
    )
    return (
        rows.withColumn("text_hash", F.sha2("text", 256))
        .join(vectors, ["row_id", "text_hash"], "left")
        .drop("text_hash")
    )


def train(spark: SparkSession, config: DqeConfig, split: str = "sampled") -> dict[str, Any]:
    """Fit ``train.backend`` on the rows of ``split``, log and register the model; return what was logged."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from dqe.trainers import trainer_for
    from dqe.trainers.pyfunc import log_trainer

    check_split(split)
    catalog = Catalog.from_config(config)
    backend = config.train.backend
    with stage_run(spark, catalog, f"train_{split}", config.fingerprint("train", "embed", "select")) as run:
        trainer = trainer_for(config)
        with_vectors = trainer.accepts_embeddings
        rows = split_rows(spark, config, run, split, with_vectors).orderBy("row_id").toPandas()
        if rows.empty:
            raise InputError(f"the {split!r} split has no clean rows to train on: run dqe select")
        if with_vectors and (missing := int(rows["vector"].isna().sum())):
            raise InputError(f"{missing} {split} rows have no current embedding: run dqe embed")
        vectors = rows["vector"] if with_vectors else None

        configure_mlflow(config)
        model_name = registered_model_name(config)
        with mlflow.start_run(run_name=f"{config.dataset.name}-{backend}-{split}") as active:
            mlflow.set_tags(
                {
                    "dqe.stage": "train",
                    "dqe.split": split,
                    "dqe.backend": backend,
                    "dqe.dataset": config.dataset.name,
                    "dqe.stage_run_id": run.run_id,
                }
            )
            mlflow.log_params(_run_params(config, split, rows, run))
            mlflow.log_dict(config.model_dump(mode="json", by_alias=True), "config.json")
            mlflow.log_dict(run.inputs, "inputs.json")

            trainer.fit(rows["text"].tolist(), rows["label"].tolist(), vectors)

            metrics = [
                Metric(name, float(value), 0, int(epoch_metrics["epoch"]))
                for epoch_metrics in trainer.history_
                for name, value in epoch_metrics.items()
                if name != "epoch"
            ] + [Metric("train_step_loss", step["loss"], 0, int(step["step"])) for step in trainer.step_history_]
            MlflowClient().log_batch(active.info.run_id, metrics=metrics)
            mlflow.log_metrics({name: float(value) for name, value in trainer.metrics_.items()})

            info = log_trainer(
                trainer,
                registered_model_name=model_name,
                metadata={"trained_on_split": split, "dataset": config.dataset.name, "stage_run_id": run.run_id},
            )
            version = str(info.registered_model_version)
            client = MlflowClient()
            client.set_model_version_tag(model_name, version, "dqe.split", split)
            client.set_registered_model_alias(model_name, split_alias(split), version)
    return {
        "split": split,
        "backend": backend,
        "train_rows": len(rows),
        "classes": list(trainer.classes_),
        "mlflow_run_id": active.info.run_id,
        "stage_run_id": run.run_id,
        "registered_model": model_name,
        "model_version": version,
        "model_uri": f"models:/{model_name}/{version}",
        "alias_uri": model_uri_for_split(config, split),
        "metrics": {**trainer.metrics_, **(trainer.history_[-1] if trainer.history_ else {})},
    }


def _run_params(config: DqeConfig, split: str, rows: pd.DataFrame, run: StageRun) -> dict[str, Any]:
    params: dict[str, Any] = {f"train.{key}": value for key, value in config.train.model_dump(mode="json").items()}
    params.update(
        {
            "split": split,
            "embed.model": config.embed.model,
            "train_rows": len(rows),
            "n_classes": rows["label"].nunique(),
            **{f"input.{table}": version for table, version in run.inputs.items()},
        }
    )
    return params
