# Databricks notebook source
# MAGIC %md
# MAGIC # Dataset overview
# MAGIC
# MAGIC One dataset through the dqe pipeline: rows per table and the latest run of each stage, why rows were
# MAGIC quarantined, exact and near duplicates, the label distribution, and the diversity of the embeddings
# MAGIC (Remote Clique and Chamfer distance, cosine; higher = more diverse) for all clean rows and per split.
# MAGIC
# MAGIC **Parameters** (widgets on Databricks, `DQE_<NAME>` environment variables elsewhere): `dataset`, `config`,
# MAGIC `data_root` (on Databricks the volume holding the source files), `overrides` (`section.key=value` separated
# MAGIC by `;`, e.g. `storage.schema=dev_<you>_dqe_{dataset}`), `sample_size` (embeddings sampled for the diversity
# MAGIC scores), `output_dir` (where the plot is saved; default `<work_dir>/reports/<dataset>`).

# COMMAND ----------

# Portable setup: the Databricks globals (spark, dbutils, display) when present, local stand-ins otherwise.
import os
import sys
from pathlib import Path

try:
    dbutils  # noqa: B018  (a global in Databricks notebooks)
except NameError:
    dbutils = None

NOTEBOOK_DIR = Path.cwd()
PROJECT_ROOT = NOTEBOOK_DIR.parent if (NOTEBOOK_DIR.parent / "conf").is_dir() else NOTEBOOK_DIR
try:
    import dqe  # noqa: F401  (the project wheel, or an editable install)
except ImportError:  # a bundle checkout in the workspace: use its lib/
    sys.path.insert(0, str(PROJECT_ROOT / "lib"))


def param(name: str, default: str = "", label: str | None = None) -> str:
    """A notebook parameter: a text widget on Databricks, the DQE_<NAME> environment variable elsewhere."""
    if dbutils is not None:
        dbutils.widgets.text(name, default, label or name)
        return dbutils.widgets.get(name).strip()
    return os.environ.get(f"DQE_{name.upper()}", default).strip()


def _show(obj, n: int = 20) -> None:
    if hasattr(obj, "show"):
        obj.show(n, truncate=60)
    elif hasattr(obj, "to_string"):
        print(obj.head(n).to_string())
    else:
        print(obj)


display = globals().get("display") or _show

from dqe.catalog import Catalog, Table  # noqa: E402
from dqe.cli import STAGES  # noqa: E402
from dqe.config import load_config  # noqa: E402
from dqe.spark import get_spark  # noqa: E402

on_databricks = dbutils is not None
dataset = param("dataset", "cr", "Dataset")
config_path = param("config", str(PROJECT_ROOT / "conf" / "databricks.yaml") if on_databricks else "", "Config file")
# the config checks that the dataset's source files exist: on Databricks they live in a volume
data_root = param("data_root", "/Volumes/main/dqe/raw" if on_databricks else "", "Data root (volume)")
overrides = [item.strip() for item in param("overrides", "", "Overrides (a.b=c;...)").split(";") if item.strip()]
conf_dir = PROJECT_ROOT / "conf" if (PROJECT_ROOT / "conf").is_dir() else None  # also when dqe comes from a wheel
config = load_config(
    config_path or None,
    dataset=dataset,
    overrides=([f"data_root={data_root}"] if data_root else []) + overrides,
    conf_dir=conf_dir,
)
spark = globals().get("spark") or get_spark(config)
catalog = Catalog.from_config(config)
print(f"dataset {config.dataset.name}: tables in {catalog.namespace}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Rows per table and the latest run of each stage

# COMMAND ----------

import pandas as pd  # noqa: E402
from pyspark.sql import Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402


def exists(table: Table) -> bool:
    return spark.catalog.tableExists(catalog.name(table))


present = [table for table in Table if table is not Table.RUNS and exists(table)]
if not present:
    raise RuntimeError(f"no dqe table in {catalog.namespace}: run the pipeline first (dqe run / the bundle's job)")
# one query for all counts (one Spark job instead of one per table)
counted = spark.sql(
    " UNION ALL ".join(f"SELECT '{t.value}' AS table, count(*) AS rows FROM {catalog.name(t)}" for t in present)
).toPandas()
table_counts = pd.DataFrame({"table": [t.value for t in present], "name": [catalog.name(t) for t in present]}).merge(
    counted, on="table"
)
display(table_counts)

if exists(Table.RUNS):
    latest = Window.partitionBy("stage").orderBy(F.col("started_at").desc())
    stage_runs = (
        spark.table(catalog.name(Table.RUNS))
        .withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .select(
            "stage",
            "status",
            "started_at",
            (F.col("finished_at").cast("double") - F.col("started_at").cast("double")).alias("seconds"),
            "message",
        )
        .toPandas()
    )
    stage_order = {stage: i for i, stage in enumerate(STAGES)}
    stage_runs = stage_runs.sort_values("stage", key=lambda s: s.map(stage_order).fillna(99)).reset_index(drop=True)
else:
    stage_runs = pd.DataFrame(columns=["stage", "status", "started_at", "seconds", "message"])
display(stage_runs)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Quarantine, duplicates and labels

# COMMAND ----------

quarantine = spark.table(catalog.name(Table.QUARANTINE))
quarantine_reasons = quarantine.groupBy("reason").count().orderBy(F.col("count").desc(), "reason").toPandas()
display(quarantine_reasons)

duplicate_summary = (
    quarantine.where("reason = 'duplicate'")
    .agg(F.count(F.lit(1)).alias("duplicate_rows"), F.countDistinct("duplicate_of").alias("duplicate_clusters"))
    .first()
    .asDict()
)
if exists(Table.NEAR_DUPLICATES):
    duplicate_summary.update(
        spark.table(catalog.name(Table.NEAR_DUPLICATES))
        .agg(
            F.count(F.lit(1)).alias("near_duplicate_pairs"),
            F.count_if(~F.col("same_label")).alias("near_duplicate_pairs_label_conflict"),
        )
        .first()
        .asDict()
    )
print(duplicate_summary)

label_distribution = (
    spark.table(catalog.name(Table.CLEAN)).groupBy("label").count().orderBy(F.col("count").desc(), "label").toPandas()
)
label_distribution["share"] = label_distribution["count"] / label_distribution["count"].sum()
display(label_distribution)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Diversity of the embeddings
# MAGIC A sample of at most `sample_size` vectors of the configured embedding model (all of them when fewer);
# MAGIC per split when the select stage ran.

# COMMAND ----------

import numpy as np  # noqa: E402

from dqe.algorithms.diversity import chamfer_distance_score, remote_clique_score  # noqa: E402
from dqe.embed import model_identifier  # noqa: E402

sample_size = int(param("sample_size", "2000", "Embeddings sampled for diversity") or 2000)
diversity = pd.DataFrame(columns=["set", "rows", "remote_clique", "chamfer", "chamfer_exact"])
if exists(Table.EMBEDDINGS):
    vectors = spark.table(catalog.name(Table.EMBEDDINGS)).where(F.col("model") == model_identifier(config.embed))
    if exists(Table.SELECTION):
        vectors = vectors.join(spark.table(catalog.name(Table.SELECTION)).select("row_id", "split"), "row_id", "left")
    else:
        vectors = vectors.withColumn("split", F.lit(None).cast("string"))
    total = vectors.count()
    if total > sample_size:
        vectors = vectors.sample(fraction=min(1.0, 1.2 * sample_size / total), seed=0).limit(sample_size)
    sample = vectors.select("row_id", "vector", "split").toPandas()
    groups = {"all clean rows": sample}
    groups.update({f"split = {split}": part for split, part in sample.groupby("split")})
    records = []
    for name, part in groups.items():
        if len(part) < 2:
            continue
        matrix = np.stack(part["vector"].to_numpy()).astype(np.float32)
        clique, chamfer = remote_clique_score(matrix), chamfer_distance_score(matrix)
        records.append(
            {"set": name, "rows": len(part), "remote_clique": clique.value, "chamfer": chamfer.value,
             "chamfer_exact": chamfer.exact}
        )
    diversity = pd.DataFrame(records)
    display(diversity)
else:
    print(f"{catalog.name(Table.EMBEDDINGS)} does not exist yet: run the embed stage")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Plot

# COMMAND ----------

import matplotlib  # noqa: E402

if dbutils is None:
    matplotlib.use("Agg")  # no screen: write the figure to a file
import matplotlib.pyplot as plt  # noqa: E402

output_dir = Path(param("output_dir", "", "Plot folder") or config.storage.work_dir / "reports" / config.dataset.name)
output_dir.mkdir(parents=True, exist_ok=True)

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
axes[0].bar(label_distribution["label"], label_distribution["count"], color="tab:blue")
axes[0].set_title("clean rows per label")
axes[0].tick_params(axis="x", rotation=45)
axes[1].barh(quarantine_reasons["reason"], quarantine_reasons["count"], color="tab:red")
axes[1].set_title("quarantined rows per reason")
if len(diversity):
    x = np.arange(len(diversity))
    axes[2].bar(x - 0.2, diversity["remote_clique"], width=0.4, label="remote clique")
    axes[2].bar(x + 0.2, diversity["chamfer"], width=0.4, label="chamfer")
    axes[2].set_xticks(x, diversity["set"], rotation=20)
    axes[2].legend()
axes[2].set_title("diversity (cosine distance)")
fig.suptitle(f"dqe: {config.dataset.name} ({catalog.namespace})")
fig.tight_layout()
overview_plot = output_dir / f"overview_{config.dataset.name}.png"
fig.savefig(overview_plot, dpi=100)
print(f"saved {overview_plot}")
if dbutils is not None:
    display(fig)
plt.close(fig)
