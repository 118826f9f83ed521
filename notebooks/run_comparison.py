# Databricks notebook source
# MAGIC %md
# MAGIC # Run comparison
# MAGIC
# MAGIC The MLflow runs of the dqe experiment side by side (parameters and metrics, one column per run), and the
# MAGIC question the pipeline exists for: does training on the curated rows beat training on all clean rows? The
# MAGIC `evaluation` table holds accuracy, macro-F1 and a bootstrap interval per variant (`full`, `curated`,
# MAGIC `random` of the curated size) with paired tests against `full`.
# MAGIC
# MAGIC **Parameters** (widgets on Databricks, `DQE_<NAME>` environment variables elsewhere): `dataset`, `config`,
# MAGIC `data_root` (on Databricks the volume holding the source files), `overrides` (`section.key=value` separated
# MAGIC by `;`, e.g. `storage.schema=dev_<you>_dqe_{dataset};mlflow.experiment=/Users/<you>/dqe-dev` for a dev run),
# MAGIC `max_runs`, `stage` (only runs of this dqe stage; empty for all), `output_dir` (where the plot is saved).

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
# MAGIC ## MLflow runs

# COMMAND ----------

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402

from dqe.tracking import configure_mlflow  # noqa: E402

max_runs = int(param("max_runs", "20", "Runs to compare") or 20)
stage_filter = param("stage", "", "Only this dqe stage (empty: all)")
experiment_id = configure_mlflow(config)
filters = [f"tags.`dqe.dataset` = '{config.dataset.name}'"]
if stage_filter:
    filters.append(f"tags.`dqe.stage` = '{stage_filter}'")
runs = mlflow.search_runs(
    experiment_ids=[experiment_id],
    filter_string=" AND ".join(filters),
    max_results=max_runs,
    order_by=["attributes.start_time DESC"],
)
print(f"{len(runs)} runs of experiment {config.mlflow.experiment!r} for dataset {config.dataset.name}")


def side_by_side(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Rows = parameters or metrics, columns = runs (named run_name/short id), only keys some run has."""
    columns = [c for c in frame.columns if c.startswith(prefix)]
    if frame.empty or not columns:
        return pd.DataFrame()
    names = frame.get("tags.mlflow.runName", pd.Series([None] * len(frame))).fillna("run")
    labels = [f"{name} ({run_id[:8]})" for name, run_id in zip(names, frame["run_id"])]
    table = frame[columns].T
    table.columns = labels
    table.index = [c[len(prefix):] for c in columns]
    return table.dropna(how="all").sort_index()


run_overview = pd.DataFrame()
if len(runs):
    run_overview = runs[["run_id", "status", "start_time"]].assign(
        stage=runs.get("tags.dqe.stage"), split=runs.get("tags.dqe.split"), backend=runs.get("tags.dqe.backend")
    )
display(run_overview)
params_side_by_side = side_by_side(runs, "params.")
metrics_side_by_side = side_by_side(runs, "metrics.")
display(params_side_by_side.reset_index(names="parameter"))
display(metrics_side_by_side.reset_index(names="metric"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Full vs curated (evaluation table)

# COMMAND ----------

if not spark.catalog.tableExists(catalog.name(Table.EVALUATION)):
    raise RuntimeError(f"{catalog.name(Table.EVALUATION)} does not exist yet: run the evaluate stage")
evaluation = (
    spark.table(catalog.name(Table.EVALUATION))
    .select("variant", "rows", "accuracy", "macro_f1", "ci_low", "ci_high", "p_ttest_vs_full", "p_mcnemar_vs_full")
    .toPandas()
)
order = {"full": 0, "curated": 1, "random": 2}
evaluation = evaluation.sort_values("variant", key=lambda s: s.map(order).fillna(9)).reset_index(drop=True)
display(evaluation)

by_variant = evaluation.set_index("variant")
accuracy_comparison = None
if {"full", "curated"} <= set(by_variant.index):
    full, curated = by_variant.loc["full"], by_variant.loc["curated"]
    accuracy_comparison = {
        "full_accuracy": float(full["accuracy"]),
        "curated_accuracy": float(curated["accuracy"]),
        "accuracy_gain": float(curated["accuracy"] - full["accuracy"]),
        "macro_f1_gain": float(curated["macro_f1"] - full["macro_f1"]),
        "row_fraction": float(curated["rows"] / full["rows"]),
        "p_ttest_vs_full": float(curated["p_ttest_vs_full"]),
        "p_mcnemar_vs_full": float(curated["p_mcnemar_vs_full"]),
    }
    verdict = "better" if accuracy_comparison["accuracy_gain"] > 0 else "not better"
    print(
        f"curated ({accuracy_comparison['row_fraction']:.0%} of the rows) is {verdict} than full: "
        f"{accuracy_comparison['accuracy_gain']:+.4f} accuracy, p = {accuracy_comparison['p_mcnemar_vs_full']:.3g} "
        "(McNemar)"
    )

# COMMAND ----------

import matplotlib  # noqa: E402

if dbutils is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

output_dir = Path(param("output_dir", "", "Plot folder") or config.storage.work_dir / "reports" / config.dataset.name)
output_dir.mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(6, 4))
errors = [evaluation["accuracy"] - evaluation["ci_low"], evaluation["ci_high"] - evaluation["accuracy"]]
colors = {"full": "tab:gray", "curated": "tab:green", "random": "tab:blue"}
ax.bar(
    evaluation["variant"],
    evaluation["accuracy"],
    yerr=errors,
    capsize=6,
    color=[colors.get(v, "tab:purple") for v in evaluation["variant"]],
)
ax.set_ylim(max(0.0, float(evaluation["ci_low"].min()) - 0.05), min(1.0, float(evaluation["ci_high"].max()) + 0.02))
ax.set_ylabel("test accuracy (95% bootstrap interval)")
ax.set_title(f"{config.dataset.name}: full vs curated vs random")
fig.tight_layout()
comparison_plot = output_dir / f"comparison_{config.dataset.name}.png"
fig.savefig(comparison_plot, dpi=100)
print(f"saved {comparison_plot}")
if dbutils is not None:
    display(fig)
plt.close(fig)
