"""Ingest: source files or tables → ``bronze`` (training rows) and ``test_set`` (evaluation rows).

``row_id`` is ``sha2(dataset ␟ key ␟ occurrence)`` cut to 16 hex digits, where ``key`` is the source id when an
id column is configured and ``text ␟ label`` otherwise, and ``occurrence`` numbers rows sharing a key (ordered by
text, label). It depends on neither file order nor row order, so it survives re-runs and re-ordered inputs.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig, SourceConfig
from dqe.errors import SPARK_ERRORS, InputError, describe_spark_error
from dqe.lakehouse import stage_fingerprint, stage_run, table_exists

SEP = "\u001f"
BRONZE_COLUMNS = ["row_id", "text", "label", "source_id", "source", "parse_error", "ingested_at"]
_LABEL_TYPES = (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.BooleanType)


def read_source(spark: SparkSession, config: DqeConfig, source: SourceConfig) -> DataFrame:
    """Read one source, failing with a clear message when it cannot be read."""
    path = config.source_path(source)
    try:
        if source.format == "parquet":
            df = spark.read.parquet(path)
        elif source.format == "csv":
            df = (
                spark.read.option("header", True)
                .option("multiLine", True)
                .option("escape", '"')
                .option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", "_corrupt_record")
                .csv(path)
            )
        elif source.format == "jsonl":
            df = spark.read.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt_record").json(
                path
            )
        else:
            df = spark.read.table(path) if "/" not in path else spark.read.format("delta").load(path)
        df.schema  # forces footer/header reads so that unreadable files fail here
    except SPARK_ERRORS as exc:
        raise InputError(f"cannot read {path} as {source.format}: {describe_spark_error(exc)}") from None
    return df.withColumn("_source", F.lit(path) if source.format == "delta" else F.input_file_name())


def _column(df: DataFrame, name: str, what: str, path: str) -> T.StructField:
    fields = {f.name: f for f in df.schema.fields}
    if name not in fields:
        available = ", ".join(n for n in fields if not n.startswith("_"))
        raise InputError(f"{what} column {name!r} not found in {path} (columns: {available})")
    return fields[name]


def standardise(df: DataFrame, config: DqeConfig, path: str) -> DataFrame:
    """Select and type-check the text, label and id columns; returns text, label, source_id, source, parse_error."""
    ds = config.dataset
    text_field = _column(df, ds.text_column, "text", path)
    if not isinstance(text_field.dataType, T.StringType):
        raise InputError(
            f"text column {ds.text_column!r} in {path} has type {text_field.dataType.simpleString()}, expected string"
        )
    label_field = _column(df, ds.label_column, "label", path)
    if not isinstance(label_field.dataType, _LABEL_TYPES):
        raise InputError(
            f"label column {ds.label_column!r} in {path} has type {label_field.dataType.simpleString()}, "
            "expected string, integer or boolean"
        )
    source_id: Column = F.lit(None).cast("string")
    if ds.id_column:
        id_field = _column(df, ds.id_column, "id", path)
        if not isinstance(id_field.dataType, T.AtomicType):
            raise InputError(f"id column {ds.id_column!r} in {path} has type {id_field.dataType.simpleString()}")
        source_id = F.col(ds.id_column).cast("string")
    parse_error: Column = F.lit(None).cast("string")
    if "_corrupt_record" in df.columns:
        parse_error = F.when(F.col("_corrupt_record").isNotNull(), F.lit("malformed record"))
    return df.select(
        F.col(ds.text_column).alias("text"),
        F.col(ds.label_column).cast("string").alias("label"),
        source_id.alias("source_id"),
        F.col("_source").alias("source"),
        parse_error.alias("parse_error"),
    )


def with_row_id(df: DataFrame, dataset: str, keyed_by_id: bool) -> DataFrame:
    key = (
        F.coalesce(F.col("source_id"), F.lit(""))
        if keyed_by_id
        else F.concat_ws(SEP, F.coalesce("text", F.lit("")), F.coalesce("label", F.lit("")))
    )
    occurrence = F.row_number().over(Window.partitionBy("_key").orderBy("text", "label", "source")) - 1
    return (
        df.withColumn("_key", key)
        .withColumn("_occurrence", occurrence)
        .withColumn("row_id", F.substring(F.sha2(F.concat_ws(SEP, F.lit(dataset), "_key", "_occurrence"), 256), 1, 16))
        .drop("_key", "_occurrence")
    )


def holdout_mask(fraction: float) -> Column:
    """A deterministic hold-out: the row's hash decides, independent of partitioning and order."""
    return (F.abs(F.xxhash64("row_id")) % 1_000_000) < int(fraction * 1_000_000)


def load_rows(spark: SparkSession, config: DqeConfig, source: SourceConfig) -> DataFrame:
    """A source read, checked and given row ids; raises InputError on empty or label-less input."""
    path = config.source_path(source)
    df = standardise(read_source(spark, config, source), config, path)
    df = with_row_id(df, config.dataset.name, keyed_by_id=config.dataset.id_column is not None)
    try:
        counts = df.agg(F.count(F.lit(1)).alias("rows"), F.count("label").alias("labelled")).collect()[0]
    except SPARK_ERRORS as exc:
        raise InputError(f"cannot read the rows of {path}: {describe_spark_error(exc)}") from None
    if counts["rows"] == 0:
        raise InputError(f"input {path} has no rows")
    if counts["labelled"] == 0:
        raise InputError(
            f"label column {config.dataset.label_column!r} is null in all {counts['rows']} rows of {path}: "
            "wrong column name or broken export?"
        )
    return df


def ingest(spark: SparkSession, config: DqeConfig) -> dict[str, int]:
    """Write ``bronze`` (and ``test_set``); returns row counts. ``ingested_at`` of known rows is kept on re-runs."""
    catalog = Catalog.from_config(config)
    bronze_name, test_name = catalog.name(Table.BRONZE), catalog.name(Table.TEST)
    with stage_run(spark, catalog, "ingest", stage_fingerprint(config, "ingest")) as run:
        rows = load_rows(spark, config, config.dataset.train)
        test_rows = None
        if config.dataset.test is not None:
            test_rows = load_rows(spark, config, config.dataset.test)
        elif config.dataset.holdout_fraction > 0:
            held = holdout_mask(config.dataset.holdout_fraction)
            test_rows, rows = rows.where(held), rows.where(~held)

        now = F.current_timestamp()
        if table_exists(spark, bronze_name):
            known = run.read(spark, bronze_name).select("row_id", F.col("ingested_at").alias("_known_at"))
            rows = rows.join(known, "row_id", "left").withColumn("ingested_at", F.coalesce("_known_at", now))
        else:
            rows = rows.withColumn("ingested_at", now)
        # Materialised first: the old bronze version is read while the new one replaces it.
        bronze = rows.select(*BRONZE_COLUMNS).localCheckpoint()
        counts = {"bronze": run.write(bronze, bronze_name)}
        if test_rows is not None:
            counts["test_set"] = run.write(test_rows.select("row_id", "text", "label", "source_id", "source"), test_name)
    return counts
