"""Evaluate: the configured trainer fitted on (a) all clean rows, (b) the curated rows, (c) a random subset of
the curated size, each scored on the dataset's ``test_set`` → ``evaluation`` table and an MLflow run.

Per variant: accuracy, macro-F1 and a percentile-bootstrap 95% interval of the accuracy. Against ``full`` and
``random``: the paper's paired t-test on per-example correctness and McNemar's test. Test rows are normalised
as in the clean stage; rows whose text or label is empty are left out (and counted).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dqe.algorithms import stats
from dqe.algorithms.cleaning import normalize_label, normalize_text
from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig
from dqe.embed import encode, model_identifier
from dqe.errors import InputError
from dqe.lakehouse import stage_fingerprint, stage_run

EVALUATION_SCHEMA = (
    "dataset string, variant string, backend string, rows long, fraction double, accuracy double, macro_f1 double, "
    "ci_low double, ci_high double, p_ttest_vs_full double, p_mcnemar_vs_full double, "
    "p_ttest_vs_random double, p_mcnemar_vs_random double, train_seconds double, test_rows long"
)
VARIANTS = ("full", "curated", "random")


def load_test_rows(spark: SparkSession, config: DqeConfig, name: str) -> tuple[pd.DataFrame, int]:
    """Normalised test rows and how many were left out for an empty text or label."""
    raw = spark.table(name).select("text", "label").toPandas()
    raw["text"] = raw["text"].map(lambda t: normalize_text(t, config.clean.lowercase), na_action="ignore")
    raw["label"] = raw["label"].map(normalize_label, na_action="ignore")
    usable = raw["text"].fillna("").ne("") & raw["label"].fillna("").ne("")
    return raw[usable].reset_index(drop=True), int((~usable).sum())


def fit_and_score(
    config: DqeConfig, train: pd.DataFrame, test: pd.DataFrame, test_vectors: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-example correctness and predictions on ``test`` of a trainer fitted on ``train``; seconds to fit."""
    from dqe.trainers import trainer_for

    trainer = trainer_for(config)
    vectors = np.stack(train["vector"].to_numpy()) if config.train.backend == "linear" else None
    started = time.perf_counter()
    trainer.fit(train["text"].tolist(), train["label"].tolist(), vectors)
    seconds = time.perf_counter() - started
    predicted = np.asarray(trainer.predict(test["text"].tolist(), test_vectors).labels, dtype=object)
    return predicted == test["label"].to_numpy(dtype=object), predicted, seconds


def evaluate(spark: SparkSession, config: DqeConfig) -> dict[str, object]:
    import mlflow

    from dqe.tracking import configure_mlflow

    catalog = Catalog.from_config(config)
    with stage_run(spark, catalog, "evaluate", stage_fingerprint(config, "evaluate")) as run:
        vectors = run.read(spark, catalog.name(Table.EMBEDDINGS)).where(F.col("model") == model_identifier(config.embed))
        clean = run.read(spark, catalog.name(Table.CLEAN)).join(vectors.select("row_id", "vector"), "row_id")
        curation = run.read(spark, catalog.name(Table.CURATION)).where("curated").select("row_id", "label")
        full = clean.select("row_id", "text", "label", "vector").orderBy("row_id").toPandas()
        curated = (
            clean.select("row_id", "text", "vector").join(curation, "row_id").orderBy("row_id").toPandas()
        )
        if curated.empty:
            raise InputError("the curated set is empty: run dqe curate")
        random_rows = full.sample(n=len(curated), random_state=config.evaluate.seed).sort_values("row_id")
        test, dropped = load_test_rows(spark, config, catalog.name(Table.TEST))
        if test.empty:
            raise InputError(f"{catalog.name(Table.TEST)} has no usable rows to evaluate on")

        # Embedded once for the three linear models, with the model that embedded the training rows.
        test_vectors = encode(test["text"].tolist(), config.embed)[0] if config.train.backend == "linear" else None
        results: dict[str, tuple[np.ndarray, np.ndarray, float, int]] = {}
        for variant, rows in zip(VARIANTS, (full, curated, random_rows)):
            correct, predicted, seconds = fit_and_score(config, rows, test, test_vectors)
            results[variant] = (correct, predicted, seconds, len(rows))

        records = []
        for variant, (correct, predicted, seconds, n_rows) in results.items():
            interval = stats.bootstrap_accuracy_ci(
                correct, n_resamples=config.evaluate.bootstrap_samples, seed=config.evaluate.seed
            )
            versus = {}
            for other in ("full", "random"):
                if other == variant:
                    versus[other] = (None, None)
                    continue
                versus[other] = (
                    stats.paired_t_test(correct, results[other][0]).p_value,
                    stats.mcnemar_test(correct, results[other][0]).p_value,
                )
            records.append(
                {
                    "dataset": config.dataset.name,
                    "variant": variant,
                    "backend": config.train.backend,
                    "rows": n_rows,
                    "fraction": n_rows / len(full),
                    "accuracy": stats.accuracy(test["label"], predicted),
                    "macro_f1": stats.macro_f1(test["label"], predicted),
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "p_ttest_vs_full": versus["full"][0],
                    "p_mcnemar_vs_full": versus["full"][1],
                    "p_ttest_vs_random": versus["random"][0],
                    "p_mcnemar_vs_random": versus["random"][1],
                    "train_seconds": seconds,
                    "test_rows": len(test),
                }
            )
        table = pd.DataFrame(records)
        run.write(spark.createDataFrame(table, EVALUATION_SCHEMA), catalog.name(Table.EVALUATION))

        configure_mlflow(config)
        with mlflow.start_run(run_name=f"{config.dataset.name}-evaluate"):
            mlflow.set_tags({"dqe.stage": "evaluate", "dqe.dataset": config.dataset.name, "dqe.stage_run_id": run.run_id})
            for record in records:
                prefix = record["variant"]
                mlflow.log_metrics(
                    {
                        f"{prefix}_{key}": float(record[key])
                        for key in ("accuracy", "macro_f1", "ci_low", "ci_high", "rows", "train_seconds")
                    }
                )
            mlflow.log_table(table, "evaluation.json")
    return {"test_rows": len(test), "test_rows_dropped": dropped, "variants": table.round(4).to_dict("records")}
