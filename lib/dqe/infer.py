"""Infer: a registered model + the rows of one split → ``predictions``.

By default the ``unsampled`` rows are predicted by the latest model trained on ``sampled``
(``models:/<name>@trained_on_sampled``); ``split="sampled"`` with the model trained on ``unsampled`` gives the
second direction of a cross-fit. The model runs through ``mlflow.pyfunc.spark_udf`` (one load per Spark task, the
input spread over one task per core) with the ``infer.*`` settings: ``device`` (auto = CUDA when the worker has it),
``torch_threads_per_worker`` (torch threads per task) and ``batch_size``.

``predictions`` holds one row per clean row that has been predicted, with the split it was predicted on:

======================  ===========================================================================================
row_id, label           the row and its (given) label
predicted_label         the model's label; null when a generative model's output named none
confidence              probability of ``predicted_label`` (0 when null)
probabilities           map label → probability, over the labels the model was trained on
raw_output, parse_ok    the model's raw answer and whether it named exactly one label
model_uri               the model version that predicted (``models:/name/version``)
training_run_id         the MLflow run that trained it
run_id                  this stage run (see the ``runs`` table)
selection_version       the version of ``selection`` the split was read from
split                   the split the row belonged to when predicted (the table is partitioned by it)
======================  ===========================================================================================

Writing split S replaces, in one Delta commit, the rows of S and any rows predicted against another version of
``selection`` (``replaceWhere``): the rows of the other split stay when the selection is unchanged, and a row never
appears twice. The accuracy, instruction-following rate and row count of the split are logged to the training run
as ``<split>_accuracy``, ``<split>_instruction_following_rate``, ``<split>_rows`` and ``<split>_unseen_label_rows``
(rows whose label the model never saw: always wrong).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dqe.catalog import SPLITS, Catalog, Table
from dqe.config import DqeConfig
from dqe.errors import InputError, StageError
from dqe.lakehouse import last_commit, stage_run
from dqe.tracking import configure_mlflow, model_uri_for_split, pinned_model_uri
from dqe.train import check_split, split_rows


def infer(
    spark: SparkSession,
    config: DqeConfig,
    model_uri: str | None = None,
    split: str = "unsampled",
) -> dict[str, Any]:
    """Predict the rows of ``split`` with ``model_uri`` (default: the model trained on the other split)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from dqe.trainers.pyfunc import SPARK_RESULT_TYPE

    check_split(split)
    configure_mlflow(config)
    requested = model_uri or model_uri_for_split(config, next(s for s in SPLITS if s != split))
    try:
        model_uri = pinned_model_uri(requested)
        model_info = mlflow.models.get_model_info(model_uri)
    except MlflowException as exc:
        raise StageError(f"cannot load model {requested}: {exc.message} (run dqe train first?)") from None
    classes: list[str] = list(model_info.metadata["classes"])
    catalog = Catalog.from_config(config)
    predictions_table = catalog.name(Table.PREDICTIONS)

    with stage_run(spark, catalog, f"infer_{split}", config.fingerprint("infer")) as run:
        uses_vectors = bool(model_info.metadata["accepts_embeddings"])
        rows = split_rows(spark, config, run, split, with_vectors=uses_vectors)
        selection_version = run.inputs[catalog.name(Table.SELECTION)]
        counts = rows.agg(F.count("*").alias("rows"), F.countDistinct("row_id").alias("ids")).collect()[0]
        if counts["rows"] == 0:
            raise InputError(f"the {split!r} split has no clean rows to predict: run dqe select")
        if counts["rows"] != counts["ids"]:
            # The UDF gives one prediction per input row: duplicates here would be duplicates in the table.
            raise StageError(f"{counts['rows'] - counts['ids']} row_ids occur twice among the {split} rows")
        predict = mlflow.pyfunc.spark_udf(
            spark,
            model_uri,
            result_type=SPARK_RESULT_TYPE,
            env_manager="local",
            model_config={
                "device": config.infer.device,
                "torch_threads": config.infer.torch_threads_per_worker,
                "batch_size": config.infer.batch_size,
            },
        )
        model_input = F.struct("text", "vector") if uses_vectors else F.struct("text")
        # spark_udf loads the model once per task: one task per core loads it once per worker.
        predicted = (
            rows.repartition(spark.sparkContext.defaultParallelism)
            .withColumn("prediction", predict(model_input))
            .select(
                "row_id",
                "label",
                F.col("prediction.predicted_label").alias("predicted_label"),
                F.col("prediction.confidence").alias("confidence"),
                F.map_from_arrays(
                    F.array(*[F.lit(label) for label in classes]), F.col("prediction.probabilities")
                ).alias("probabilities"),
                F.col("prediction.raw_output").alias("raw_output"),
                F.col("prediction.parse_ok").alias("parse_ok"),
                F.lit(model_uri).alias("model_uri"),
                F.lit(model_info.run_id).alias("training_run_id"),
                F.lit(run.run_id).alias("run_id"),
                F.lit(selection_version).cast("long").alias("selection_version"),
                # The partition column goes last: a Hive-style catalog rejects a schema where it does not.
                F.lit(split).alias("split"),
            )
        )
        (
            predicted.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"split = '{split}' OR selection_version <> {selection_version}")
            .partitionBy("split")
            .saveAsTable(predictions_table)
        )
        version, _ = last_commit(spark, predictions_table)
        run.outputs[predictions_table] = version

        summary = (
            spark.read.format("delta")
            .option("versionAsOf", version)
            .table(predictions_table)
            .where(F.col("split") == split)
            .agg(
                F.count("*").alias("rows"),
                F.avg(F.coalesce(F.col("predicted_label") == F.col("label"), F.lit(False)).cast("double")).alias(
                    "accuracy"
                ),
                F.avg(F.col("parse_ok").cast("double")).alias("instruction_following_rate"),
                F.sum((~F.col("label").isin(classes)).cast("long")).alias("unseen_label_rows"),
            )
            .collect()[0]
            .asDict()
        )
        metrics = {f"{split}_{name}": float(value) for name, value in summary.items() if value is not None}
        client = MlflowClient()
        for name, value in metrics.items():
            client.log_metric(model_info.run_id, name, value)
    return {
        "split": split,
        "table": predictions_table,
        "version": version,
        "model_uri": model_uri,
        "training_run_id": model_info.run_id,
        "stage_run_id": run.run_id,
        **{name: summary[name] for name in ("rows", "accuracy", "instruction_following_rate", "unseen_label_rows")},
    }
