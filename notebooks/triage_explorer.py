# Databricks notebook source
# MAGIC %md
# MAGIC # Triage explorer
# MAGIC
# MAGIC The rows the DQE triage flagged as **noisy**: a mispredicted row next to its most similar row, which carries
# MAGIC another label, with the LLM judge's verdict when the judge ran. Filter by label pair and similarity, read
# MAGIC the pairs side by side, and record your own verdict in the `reviews` Delta table. The next `curate` run
# MAGIC honours the latest verdict per row: `keep` keeps the row, `drop` drops it, `relabel` trains on `new_label`.
# MAGIC
# MAGIC **Parameters** (widgets on Databricks, `DQE_<NAME>` environment variables elsewhere):
# MAGIC `dataset`, `config` (empty: `conf/databricks.yaml` on Databricks, `conf/default.yaml` elsewhere),
# MAGIC `data_root` (on Databricks the volume holding the source files), `overrides` (`section.key=value` separated
# MAGIC by `;`, e.g. `storage.schema=dev_<you>_dqe_{dataset};mlflow.experiment=/Users/<you>/dqe-dev` for a dev run),
# MAGIC `label_pair` (`label->neighbor_label`, empty for all), `min_similarity`, and to record a verdict:
# MAGIC `review_row_id`, `reviewer` (default: the current user), `verdict` (`keep` / `drop` / `relabel`), `new_label`,
# MAGIC `note`. Nothing is recorded while `review_row_id` is empty.

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
# MAGIC ## Flagged pairs

# COMMAND ----------

from pyspark.sql import functions as F  # noqa: E402

label_pair = param("label_pair", "", "Label pair (label->neighbor_label)")
min_similarity = float(param("min_similarity", "0.0", "Min similarity") or 0.0)

flagged = spark.table(catalog.name(Table.FLAGGED_NOISE)).where(F.col("similarity") >= min_similarity)
if label_pair:
    if "->" not in label_pair:
        raise ValueError(f"label_pair {label_pair!r} must look like label->neighbor_label")
    pair_label, pair_neighbor = (part.strip() for part in label_pair.split("->", 1))
    flagged = flagged.where((F.col("label") == pair_label) & (F.col("neighbor_label") == pair_neighbor))

pairs = flagged.select(
    "row_id",
    "text",
    "label",
    "predicted_label",
    "similarity",
    "neighbor_text",
    "neighbor_label",
    "neighbor_row_id",
    "judge_verdict",
    "judge_label",
    "judge_reason",
).orderBy(F.col("similarity").desc(), "row_id")
pair_counts = flagged.groupBy("label", "neighbor_label").count().orderBy(F.col("count").desc()).toPandas()
print(
    f"{int(pair_counts['count'].sum())} flagged pairs with similarity >= {min_similarity}"
    + (f" and labels {label_pair}" if label_pair else "")
)
display(pair_counts)

# COMMAND ----------

# MAGIC %md
# MAGIC ### Side by side
# MAGIC Left: the mispredicted row; right: its most similar row. Judge verdict `a` = the left row is mislabelled,
# MAGIC `b` = the right one is, `ambiguous` = either label is defensible.

# COMMAND ----------

side_by_side = pairs.limit(50).toPandas()
side_by_side = side_by_side[
    ["row_id", "label", "text", "similarity", "neighbor_label", "neighbor_text", "judge_verdict", "judge_label"]
].rename(columns={"label": "label (row)", "text": "row text", "neighbor_label": "label (neighbour)"})
display(side_by_side)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Record a verdict
# MAGIC Set `review_row_id`, `verdict` (and `new_label` for `relabel`), then run this cell. A reviewer has one
# MAGIC verdict per row: recording again replaces it (MERGE on `row_id`, `reviewer`).

# COMMAND ----------

from delta.tables import DeltaTable  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

REVIEWS_DDL = "row_id string, reviewer string, verdict string, new_label string, note string, reviewed_at timestamp"
VERDICTS = ("keep", "drop", "relabel")

review_row_id = param("review_row_id", "", "Row to review (row_id)")
reviewer = param("reviewer", "", "Reviewer") or spark.sql("SELECT current_user()").first()[0]
verdict = param("verdict", "keep", "Verdict (keep/drop/relabel)").lower()
new_label = param("new_label", "", "New label (relabel)") or None
note = param("note", "", "Note") or None
reviews_name = catalog.name(Table.REVIEWS)
recorded = None

if review_row_id:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} must be one of {VERDICTS}")
    if (verdict == "relabel") != (new_label is not None):
        raise ValueError("new_label is required for verdict 'relabel' and only for it")
    if spark.table(catalog.name(Table.FLAGGED_NOISE)).where(F.col("row_id") == review_row_id).isEmpty():
        raise ValueError(f"row {review_row_id} is not a flagged row of {catalog.namespace}")
    known_labels = config.dataset.labels or [
        r.label for r in spark.table(catalog.name(Table.CLEAN)).select("label").distinct().collect()
    ]
    if new_label is not None and new_label not in known_labels:
        raise ValueError(f"new_label {new_label!r} is not one of {sorted(known_labels)}")

    spark.sql(f"CREATE TABLE IF NOT EXISTS {reviews_name} ({REVIEWS_DDL}) USING DELTA")
    update = spark.createDataFrame(
        [(review_row_id, reviewer, verdict, new_label, note)],
        "row_id string, reviewer string, verdict string, new_label string, note string",
    ).withColumn("reviewed_at", F.current_timestamp())
    (
        DeltaTable.forName(spark, reviews_name)
        .alias("t")
        .merge(update.alias("s"), "t.row_id = s.row_id AND t.reviewer = s.reviewer")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    recorded = spark.table(reviews_name).where((F.col("row_id") == review_row_id) & (F.col("reviewer") == reviewer))
    print(f"recorded {verdict!r} by {reviewer} for row {review_row_id}")
    display(recorded)
else:
    print("no review_row_id set: nothing recorded")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Reviews so far

# COMMAND ----------

if spark.catalog.tableExists(reviews_name):
    review_summary = (
        spark.table(reviews_name).groupBy("reviewer", "verdict").count().orderBy("reviewer", "verdict").toPandas()
    )
    display(review_summary)
else:
    review_summary = None
    print(f"{reviews_name} does not exist yet: record a verdict above")
