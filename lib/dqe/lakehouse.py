"""Delta I/O at the edges: writing a stage's tables and recording which versions each run read and wrote."""

from __future__ import annotations

import hashlib
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("stage", T.StringType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("finished_at", T.TimestampType(), True),
        T.StructField("config_fingerprint", T.StringType(), True),
        T.StructField("inputs", T.MapType(T.StringType(), T.LongType()), True),
        T.StructField("outputs", T.MapType(T.StringType(), T.LongType()), True),
        T.StructField("message", T.StringType(), True),
    ]
)


# The configuration sections each stage's output depends on: a run is current only while they are unchanged.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "ingest": ("dataset",),
    "clean": ("dataset", "clean"),
    "embed": ("embed",),
    "select": ("select", "embed"),
    "train": ("train", "embed", "select"),
    "infer": ("infer",),
    "triage": ("triage", "select", "embed", "train"),
    "curate": ("triage", "select"),
    "evaluate": ("train", "evaluate", "triage", "select"),
    "report": ("triage", "select", "evaluate"),
}


def stage_fingerprint(config: DqeConfig, stage: str) -> str:
    """The fingerprint of ``stage`` (``train_sampled`` counts as ``train``) under ``config``; ingest's also covers
    the size and modification time of its source files, so a changed input file is ingested again."""
    base = stage.split("_")[0]
    fingerprint = config.fingerprint(*STAGE_SECTIONS[base])
    if base != "ingest":
        return fingerprint
    stats = []
    for source in (config.dataset.train, config.dataset.test):
        path = Path(config.source_path(source)) if source is not None else None
        if path is not None and path.exists():
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            stats += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(repr((fingerprint, stats)).encode()).hexdigest()[:16]


def ensure_schema(spark: SparkSession, catalog: Catalog) -> None:
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {catalog.namespace}")


def table_exists(spark: SparkSession, name: str) -> bool:
    return spark.catalog.tableExists(name)


def table_version(spark: SparkSession, name: str) -> int | None:
    """The latest Delta version of a table, or None when it does not exist."""
    if not table_exists(spark, name):
        return None
    return int(spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").collect()[0]["version"])


def last_commit(spark: SparkSession, name: str) -> tuple[int, int | None]:
    """(version, rows written) of a table's latest commit, from the Delta log rather than a count."""
    row = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").collect()[0]
    metrics = row["operationMetrics"] or {}
    rows = metrics.get("numOutputRows")
    return int(row["version"]), int(rows) if rows is not None else None


def write_table(df: DataFrame, name: str, partition_by: list[str] | None = None) -> tuple[int, int | None]:
    """Replace a table's content atomically (a killed run leaves the previous version readable).

    Returns the new version and the number of rows written."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.saveAsTable(name)
    return last_commit(df.sparkSession, name)


@dataclass
class StageRun:
    """What one stage run read and wrote; saved to the ``runs`` table when the run ends."""

    stage: str
    config_fingerprint: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    inputs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def read(self, spark: SparkSession, name: str) -> DataFrame:
        """Read a table and record its version as an input of this run."""
        version = table_version(spark, name)
        if version is None:
            from dqe.errors import StageError

            raise StageError(f"stage {self.stage!r} needs table {name}, which does not exist: run the earlier stage")
        self.inputs[name] = version
        return spark.read.format("delta").option("versionAsOf", version).table(name)

    def write(self, df: DataFrame, name: str, partition_by: list[str] | None = None) -> int | None:
        """Write a table as an output of this run; returns the number of rows written."""
        version, rows = write_table(df, name, partition_by)
        self.outputs[name] = version
        return rows


def _append_run(spark: SparkSession, catalog: Catalog, run: StageRun, status: str, message: str | None) -> None:
    row = (
        run.run_id,
        run.stage,
        status,
        run.started_at,
        datetime.now(timezone.utc),
        run.config_fingerprint,
        run.inputs,
        run.outputs,
        message,
    )
    spark.createDataFrame([row], RUNS_SCHEMA).write.format("delta").mode("append").saveAsTable(
        catalog.name(Table.RUNS)
    )


@contextmanager
def stage_run(spark: SparkSession, catalog: Catalog, stage: str, fingerprint: str) -> Iterator[StageRun]:
    """Record a stage run in the ``runs`` table, as succeeded or failed with the error's message."""
    ensure_schema(spark, catalog)
    run = StageRun(stage=stage, config_fingerprint=fingerprint)
    try:
        yield run
    except BaseException as exc:
        _append_run(spark, catalog, run, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    _append_run(spark, catalog, run, "succeeded", None)


def is_current(spark: SparkSession, catalog: Catalog, stage: str, fingerprint: str) -> bool:
    """True when the last successful run of ``stage`` used this config and the current versions of the tables it
    read, and the tables it wrote are still at the versions it wrote."""
    runs_name = catalog.name(Table.RUNS)
    if not table_exists(spark, runs_name):
        return False
    last = (
        spark.table(runs_name)
        .where(f"stage = '{stage}' AND status = 'succeeded'")
        .orderBy("finished_at", ascending=False)
        .limit(1)
        .collect()
    )
    if not last or last[0]["config_fingerprint"] != fingerprint:
        return False
    recorded_inputs = last[0]["inputs"] or {}
    recorded_outputs = last[0]["outputs"] or {}
    return all(table_version(spark, name) == version for name, version in {**recorded_inputs, **recorded_outputs}.items())
