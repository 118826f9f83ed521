"""Clean: ``bronze`` → ``clean`` + ``quarantine`` (+ ``near_duplicates``, flagged only).

Every bronze row lands in exactly one of ``clean`` and ``quarantine``. The first rule that matches names the
reason, in this order:

``malformed_record`` → ``missing_text`` → ``missing_label`` → ``invalid_encoding`` (U+FFFD from undecodable
bytes) → ``too_long`` → ``invalid_label`` → ``label_conflict`` → ``duplicate``.

Label conflicts (one normalised text, two or more labels): policy ``quarantine`` sends every row of the text to
quarantine (as the DQE paper); ``majority`` keeps the rows of the most frequent label and quarantines the others
(a tie quarantines all). Duplicates of (normalised text, label) keep the row with the smallest ``row_id``; the
others name it in ``duplicate_of``.

:func:`dqe.algorithms.cleaning.clean_pandas` applies the same rules to a pandas frame in one process, without
Spark: a reference for tests and the benchmark baseline, and usable in a notebook.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from dqe.algorithms.cleaning import REPLACEMENT_CHAR, normalize_text
from dqe.catalog import Catalog, Table
from dqe.config import CleanConfig, DqeConfig
from dqe.lakehouse import stage_fingerprint, stage_run

CLEAN_COLUMNS = ["row_id", "text", "label", "source"]
QUARANTINE_COLUMNS = ["row_id", "text", "label", "source", "reason", "detail", "duplicate_of"]


def _normalize_udf(lowercase: bool):
    @F.pandas_udf("string")
    def normalize(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: normalize_text(t, lowercase), na_action="ignore")

    return normalize


def _rule_reason(cfg: CleanConfig, labels: list[str] | None) -> Column:
    """The reason from per-row rules (before conflicts and duplicates), or null."""
    reason = (
        F.when(F.col("parse_error").isNotNull(), "malformed_record")
        .when(F.col("text_norm").isNull() | (F.col("text_norm") == ""), "missing_text")
        .when(F.col("label_norm").isNull() | (F.col("label_norm") == ""), "missing_label")
        .when(F.col("text_norm").contains(REPLACEMENT_CHAR), "invalid_encoding")
        .when(F.length("text_norm") > cfg.max_chars, "too_long")
    )
    if labels is not None:
        reason = reason.when(~F.col("label_norm").isin(labels), "invalid_label")
    return reason


def classify(bronze: DataFrame, cfg: CleanConfig, labels: list[str] | None) -> DataFrame:
    """Bronze rows with normalised text/label and ``reason``/``detail``/``duplicate_of`` (null reason = clean)."""
    normalize = _normalize_udf(cfg.lowercase)
    df = (
        bronze.withColumn("text_norm", normalize("text"))
        .withColumn("label_norm", _normalize_udf(False)("label"))
        .withColumn("rule_reason", _rule_reason(cfg, labels))
    )
    valid = F.col("rule_reason").isNull()
    by_text = Window.partitionBy("valid", "text_norm")
    by_text_label = Window.partitionBy("valid", "text_norm", "label_norm")
    df = (
        df.withColumn("valid", valid)
        .withColumn("label_count", F.count(F.lit(1)).over(by_text_label))
        .withColumn("labels_of_text", F.size(F.collect_set("label_norm").over(by_text)))
    )
    conflict = F.col("valid") & (F.col("labels_of_text") > 1)
    if cfg.conflict_policy == "majority":
        top = F.max("label_count").over(by_text)
        top_ties = F.sum(F.when(F.col("label_count") == top, 1).otherwise(0)).over(by_text) / F.col("label_count")
        keeps_majority = (F.col("label_count") == top) & (top_ties == 1)
        conflict = conflict & ~keeps_majority
        detail_conflict = F.concat(F.lit("text has "), F.col("labels_of_text").cast("string"), F.lit(" labels; not the majority"))
    else:
        detail_conflict = F.concat(F.lit("text has "), F.col("labels_of_text").cast("string"), F.lit(" labels"))
    kept = F.col("valid") & ~conflict
    first_of_pair = F.min("row_id").over(Window.partitionBy("kept", "text_norm", "label_norm"))
    df = df.withColumn("conflict", conflict).withColumn("kept", kept).withColumn("first_row_id", first_of_pair)
    duplicate = F.col("kept") & (F.col("row_id") != F.col("first_row_id"))
    return (
        df.withColumn(
            "reason",
            F.when(F.col("rule_reason").isNotNull(), F.col("rule_reason"))
            .when(F.col("conflict"), "label_conflict")
            .when(duplicate, "duplicate"),
        )
        .withColumn(
            "detail",
            F.when(F.col("rule_reason") == "malformed_record", F.col("parse_error"))
            .when(F.col("rule_reason") == "too_long", F.concat(F.length("text_norm").cast("string"), F.lit(" characters")))
            .when(F.col("rule_reason") == "invalid_label", F.concat(F.lit("label "), F.col("label_norm")))
            .when(F.col("conflict"), detail_conflict),
        )
        .withColumn("duplicate_of", F.when(duplicate, F.col("first_row_id")))
    )


def split_clean(classified: DataFrame) -> tuple[DataFrame, DataFrame]:
    clean = classified.where(F.col("reason").isNull()).select(
        "row_id", F.col("text_norm").alias("text"), F.col("label_norm").alias("label"), "source"
    )
    quarantine = classified.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
    return clean, quarantine


def clean(spark: SparkSession, config: DqeConfig) -> dict[str, int]:
    """Run the clean stage; returns counts per reason plus ``clean`` and ``near_duplicates`` totals."""
    from dqe.near_duplicates import flag_near_duplicates

    catalog = Catalog.from_config(config)
    with stage_run(spark, catalog, "clean", stage_fingerprint(config, "clean")) as run:
        bronze = run.read(spark, catalog.name(Table.BRONZE))
        classified = classify(bronze, config.clean, config.dataset.labels).localCheckpoint()
        clean_rows, quarantine_rows = split_clean(classified)
        counts = {"clean": run.write(clean_rows, catalog.name(Table.CLEAN))}
        run.write(quarantine_rows, catalog.name(Table.QUARANTINE))
        counts.update({r["reason"]: r["count"] for r in quarantine_rows.groupBy("reason").count().collect()})
        if config.clean.near_duplicates.enabled:
            pairs = flag_near_duplicates(spark.table(catalog.name(Table.CLEAN)), config.clean.near_duplicates)
            counts["near_duplicate_pairs"] = run.write(pairs, catalog.name(Table.NEAR_DUPLICATES))
    return counts
