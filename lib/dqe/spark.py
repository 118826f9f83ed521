"""The Spark session: the active one on Databricks, untouched; locally ``local[*]`` with Delta and a warehouse."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from dqe.config import DqeConfig


def get_spark(config: DqeConfig) -> SparkSession:
    """Return the active session if there is one (Databricks, notebooks, tests); otherwise build a local one.

    The local session uses the same Delta catalog as Databricks; its Hive metastore (Derby) keeps table names
    across processes so that ``dqe sql`` sees what ``dqe clean`` wrote.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    return build_local_session(config)


DELTA_VERSION = "4.0.1"
SCALA_BINARY = "2.13"


def local_delta_jars() -> list[str] | None:
    """The Delta jars that ``scripts/setup.sh`` put in ~/.m2, or None when any is missing.

    Passing them as ``spark.jars`` skips Ivy resolution (a second per start, and a page of console output)."""
    repo = Path.home() / ".m2" / "repository"
    wanted = [
        repo / "io/delta" / f"delta-spark_{SCALA_BINARY}" / DELTA_VERSION / f"delta-spark_{SCALA_BINARY}-{DELTA_VERSION}.jar",
        repo / "io/delta/delta-storage" / DELTA_VERSION / f"delta-storage-{DELTA_VERSION}.jar",
    ]
    antlr = sorted((repo / "org/antlr/antlr4-runtime").glob("4.13.*/antlr4-runtime-4.13.*.jar"))
    if not all(p.is_file() for p in wanted) or not antlr:
        return None
    return [str(p) for p in wanted] + [str(antlr[-1])]


def build_local_session(config: DqeConfig) -> SparkSession:
    from delta import configure_spark_with_delta_pip

    work = config.storage.work_dir
    work.mkdir(parents=True, exist_ok=True)
    config.storage.warehouse_dir.mkdir(parents=True, exist_ok=True)
    # Spark's Python workers must run the same interpreter as the driver (the project's .venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.warehouse.dir": str(config.storage.warehouse_dir),
        "spark.driver.memory": config.spark.driver_memory,
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work}",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.python.worker.reuse": "true",
        # Delta's default of 50 partitions for reading its log costs seconds per query on a laptop.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "false",
    }
    if config.spark.hive_metastore:
        settings["spark.sql.catalogImplementation"] = "hive"
        settings["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={work / 'metastore_db'};create=true"
        )
    settings.update(config.spark.extra_conf)
    builder = SparkSession.builder.master(config.spark.master).appName(config.spark.app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    jars = local_delta_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
