"""The Databricks notebooks, executed locally top to bottom against small real tables (tests/fixtures_tables.py).

Each notebook is split into cells on ``# COMMAND ----------``; ``# MAGIC`` lines (markdown, magics) are dropped
and the cells are ``exec``-uted in order in one namespace that holds the test's ``spark``, as a Databricks
notebook would see it. Parameters come from ``DQE_<NAME>`` environment variables, as the notebooks read them
off Databricks.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dqe.algorithms.diversity import chamfer_distance_score, remote_clique_score
from dqe.catalog import Table

from fixtures_tables import INJECTED, Tables, shared_tables

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["triage_explorer.py", "dataset_overview.py", "run_comparison.py"]
HEADER = "# Databricks notebook source\n"
SEPARATOR = "\n# COMMAND ----------\n"
PARAMETERS = (
    "dataset", "config", "data_root", "overrides", "label_pair", "min_similarity", "review_row_id", "reviewer", "verdict",
    "new_label", "note", "sample_size", "output_dir", "max_runs", "stage",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cells(path: Path) -> list[tuple[str, str]]:
    """(kind, source) per cell: kind 'md' for markdown-only cells, 'code' otherwise (MAGIC lines dropped)."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER), f"{path.name}: not in Databricks source format"
    found = []
    for raw in text[len(HEADER):].split(SEPARATOR):
        lines = raw.strip("\n").splitlines()
        magic = [line for line in lines if line.startswith("# MAGIC")]
        code = "\n".join(line for line in lines if not line.startswith("# MAGIC"))
        if magic and not code.strip():
            assert magic[0].startswith("# MAGIC %md"), f"{path.name}: a magic cell other than markdown: {magic[0]}"
            found.append(("md", "\n".join(magic)))
        else:
            assert not magic, f"{path.name}: code and MAGIC lines mixed in one cell"
            found.append(("code", code))
    return found


def run_notebook(
    name: str, spark, monkeypatch, *, only: tuple[str, ...] = (), namespace: dict[str, Any] | None = None, **params: str
) -> dict[str, Any]:
    """Run a notebook's code cells in order, or only those containing one of ``only`` (re-running cells after
    changing a widget, as a reviewer does), in ``namespace`` (a fresh one holding ``spark`` by default)."""
    for key in PARAMETERS:
        monkeypatch.delenv(f"DQE_{key.upper()}", raising=False)
    for key, value in params.items():
        assert key in PARAMETERS, key
        monkeypatch.setenv(f"DQE_{key.upper()}", value)
    namespace = {"spark": spark, "__name__": "__main__"} if namespace is None else namespace
    code_cells = [(i, source) for i, (kind, source) in enumerate(cells(NOTEBOOK_DIR / name)) if kind == "code"]
    selected = [(i, source) for i, source in code_cells if not only or any(marker in source for marker in only)]
    assert len(selected) == (len(only) if only else len(code_cells)), f"{name}: cells {only} not found once each"
    for index, source in selected:
        exec(compile(source, f"{name} [cell {index}]", "exec"), namespace)
    return namespace


SETUP_CELL, RECORD_CELL, SUMMARY_CELL = "def param(", "review_row_id = param(", "review_summary ="


@pytest.fixture(scope="module")
def tables(spark, make_config, tmp_path_factory) -> Tables:
    return shared_tables(spark, make_config, tmp_path_factory)


@pytest.fixture(scope="module")
def overrides(tables) -> str:
    return ";".join(tables.overrides)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_databricks_source(name):
    found = cells(NOTEBOOK_DIR / name)
    kinds = [kind for kind, _ in found]
    assert kinds[0] == "md" and kinds.count("code") >= 3, kinds
    setup = found[1][1]
    assert "dbutils = None" in setup and "globals().get(\"display\")" in setup and "get_spark(config)" in setup
    for _, source in (c for c in found if c[0] == "code"):
        compile(source, name, "exec")


def test_triage_explorer_shows_pairs_and_records_verdicts(spark, tables, overrides, monkeypatch):
    triage = tables.triage
    noisy = triage[triage["category"] == "noisy"]
    text_of = tables.clean.set_index("row_id")["text"]
    copies = noisy[noisy["row_id"].map(text_of).isin(tables.injected_texts)]
    target = copies.sort_values("row_id").iloc[0]
    pair = f"{target['label']}->{target['neighbor_label']}"
    reviewer = "carol"

    ns = run_notebook(
        "triage_explorer.py", spark, monkeypatch, dataset="cr", overrides=overrides, label_pair=pair,
        min_similarity="0.5", review_row_id=target["row_id"], reviewer=reviewer, verdict="relabel",
        new_label=target["neighbor_label"], note="copy of a row with the other label",
    )
    assert ns["config"].schema == tables.config.schema
    shown = ns["pairs"].toPandas()
    expected = noisy[
        (noisy["label"] == target["label"])
        & (noisy["neighbor_label"] == target["neighbor_label"])
        & (noisy["similarity"] >= 0.5)
    ]
    assert sorted(shown["row_id"]) == sorted(expected["row_id"]) and len(shown) >= 1
    assert list(shown["similarity"]) == sorted(shown["similarity"], reverse=True)
    assert (shown["text"] == shown["row_id"].map(text_of)).all()
    assert (shown["neighbor_text"] == shown["neighbor_row_id"].map(text_of)).all()
    assert target["row_id"] in set(ns["side_by_side"]["row_id"])
    counts = ns["pair_counts"].set_index(["label", "neighbor_label"])["count"]
    assert counts[(target["label"], target["neighbor_label"])] == len(expected)

    reviews_name = tables.name(Table.REVIEWS)
    mine = spark.table(reviews_name).where(f"reviewer = '{reviewer}'").toPandas()
    assert len(mine) == 1
    first = mine.iloc[0]
    assert (first["row_id"], first["verdict"], first["new_label"]) == (
        target["row_id"], "relabel", target["neighbor_label"]
    )
    assert first["note"] == "copy of a row with the other label" and pd.notna(first["reviewed_at"])
    others = spark.table(reviews_name).where(f"reviewer <> '{reviewer}'").count()
    assert others == len(tables.reviews)  # the fixture's reviews are untouched

    # the reviewer changes the verdict widget and re-runs the record and summary cells: replaced, not added
    ns = run_notebook(
        "triage_explorer.py", spark, monkeypatch, only=(RECORD_CELL, SUMMARY_CELL), namespace=ns, dataset="cr",
        overrides=overrides, review_row_id=target["row_id"], reviewer=reviewer, verdict="keep",
    )
    mine = spark.table(reviews_name).where(f"reviewer = '{reviewer}'").toPandas()
    assert len(mine) == 1 and mine.iloc[0]["verdict"] == "keep" and mine.iloc[0]["new_label"] is None
    assert mine.iloc[0]["reviewed_at"] >= first["reviewed_at"]
    summary = ns["review_summary"].set_index(["reviewer", "verdict"])["count"]
    assert summary[(reviewer, "keep")] == 1 and (reviewer, "relabel") not in summary.index


def test_triage_explorer_rejects_a_label_outside_the_label_set(spark, tables, overrides, monkeypatch):
    row_id = tables.triage[tables.triage["category"] == "noisy"]["row_id"].iloc[0]
    before = spark.table(tables.name(Table.REVIEWS)).count()
    with pytest.raises(ValueError, match="new_label 'neutral'"):
        run_notebook(
            "triage_explorer.py", spark, monkeypatch, only=(SETUP_CELL, RECORD_CELL), dataset="cr",
            overrides=overrides, review_row_id=row_id, reviewer="dave", verdict="relabel", new_label="neutral",
        )
    assert spark.table(tables.name(Table.REVIEWS)).count() == before


class FakeWidgets:
    """``dbutils.widgets`` as on Databricks: text() declares a widget with a default, get() returns its value."""

    def __init__(self, values: dict[str, str]):
        self.values, self.declared = values, {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.declared[name] = default

    def get(self, name: str) -> str:
        assert name in self.declared, f"widget {name} read before it was declared"
        return self.values.get(name, self.declared[name])


def test_triage_explorer_with_databricks_globals(spark, tables, overrides, monkeypatch):
    """The Databricks path: parameters from widgets (environment ignored), conf/databricks.yaml as the default
    config, the volume as the default data root, and output through the global ``display``."""
    widgets = FakeWidgets({"overrides": f"{overrides};storage.catalog=null", "min_similarity": "0.99"})
    shown: list[Any] = []
    namespace = {"spark": spark, "__name__": "__main__", "display": shown.append}
    namespace["dbutils"] = type("DBUtils", (), {"widgets": widgets})()
    monkeypatch.setenv("DQE_MIN_SIMILARITY", "0.0")  # must not win over the widget
    ns = run_notebook(
        "triage_explorer.py", spark, monkeypatch, namespace=namespace,
        only=(SETUP_CELL, "label_pair = param(", "side_by_side = pairs"),
    )
    assert widgets.declared["config"].endswith("conf/databricks.yaml")
    assert widgets.declared["data_root"] == "/Volumes/main/dqe/raw"
    assert {"dataset", "label_pair", "min_similarity"} <= set(widgets.declared)
    assert ns["config"].train.distributor == "spark"  # from conf/databricks.yaml
    assert ns["catalog"].namespace == tables.catalog.namespace
    noisy = tables.triage[tables.triage["category"] == "noisy"]
    assert ns["min_similarity"] == 0.99
    assert sorted(ns["pairs"].toPandas()["row_id"]) == sorted(noisy[noisy["similarity"] >= 0.99]["row_id"])
    assert len(shown) == 2 and all(isinstance(frame, pd.DataFrame) for frame in shown)
    assert list(shown[1].columns)[:3] == ["row_id", "label (row)", "row text"]


def test_dataset_overview(spark, tables, overrides, monkeypatch, tmp_path):
    ns = run_notebook(
        "dataset_overview.py", spark, monkeypatch, dataset="cr", overrides=overrides, output_dir=str(tmp_path)
    )

    counts = ns["table_counts"].set_index("table")["rows"]
    assert counts["clean"] == len(tables.clean)
    assert counts["quarantine"] == len(tables.quarantine)
    assert counts["triage"] == len(tables.triage)
    assert counts["flagged_noise"] == (tables.triage["category"] == "noisy").sum()
    assert "curation" not in counts.index  # not built by the fixture: absent tables are left out
    stages = ns["stage_runs"].set_index("stage")
    assert list(stages.index[:2]) == ["ingest", "clean"] and set(stages["status"]) == {"succeeded"}

    reasons = ns["quarantine_reasons"].set_index("reason")["count"].to_dict()
    assert reasons == tables.quarantine["reason"].value_counts().to_dict()
    dups = tables.quarantine[tables.quarantine["reason"] == "duplicate"]
    summary = ns["duplicate_summary"]
    assert summary["duplicate_rows"] == len(dups) > 0
    assert summary["duplicate_clusters"] == dups["duplicate_of"].nunique()
    assert summary["near_duplicate_pairs_label_conflict"] == (~tables.near_duplicates["same_label"]).sum() >= INJECTED
    labels = ns["label_distribution"].set_index("label")["count"].to_dict()
    assert labels == tables.clean["label"].value_counts().to_dict()

    diversity = ns["diversity"].set_index("set")
    everything = diversity.loc["all clean rows"]
    assert everything["rows"] == len(tables.clean)
    assert everything["remote_clique"] == pytest.approx(remote_clique_score(tables.vectors).value, abs=1e-6)
    assert everything["chamfer"] == pytest.approx(chamfer_distance_score(tables.vectors).value, abs=1e-6)
    sampled = tables.vectors[(tables.clean["split"] == "sampled").to_numpy()]
    assert diversity.loc["split = sampled", "rows"] == len(sampled)
    expected_clique = remote_clique_score(sampled).value
    assert diversity.loc["split = sampled", "remote_clique"] == pytest.approx(expected_clique, abs=1e-6)

    plot = ns["overview_plot"]
    assert plot.parent == tmp_path and plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 10_000


def test_run_comparison(spark, tables, overrides, monkeypatch, tmp_path):
    import mlflow

    from dqe.config import load_config
    from dqe.tracking import configure_mlflow

    experiment = f"notebook_test_{uuid.uuid4().hex[:8]}"
    overrides = f"{overrides};mlflow.experiment={experiment}"
    config = load_config(dataset="cr", overrides=overrides.split(";"))
    configure_mlflow(config)
    logged = {}
    for split, accuracy, c in (("sampled", 0.81, 1.0), ("unsampled", 0.79, 0.5)):
        with mlflow.start_run(run_name=f"train-{split}") as run:
            mlflow.set_tags({"dqe.stage": "train", "dqe.split": split, "dqe.dataset": "cr", "dqe.backend": "linear"})
            mlflow.log_params({"linear_c": c, "rows": 150})
            mlflow.log_metrics({"train_accuracy": accuracy})
            logged[run.info.run_id] = (split, accuracy, c)
    with mlflow.start_run(run_name="other-dataset"):
        mlflow.set_tags({"dqe.stage": "train", "dqe.dataset": "sst2"})
        mlflow.log_metrics({"train_accuracy": 0.5})

    ns = run_notebook(
        "run_comparison.py", spark, monkeypatch, dataset="cr", overrides=overrides, stage="train",
        output_dir=str(tmp_path),
    )
    runs = ns["runs"]
    assert set(runs["run_id"]) == set(logged)  # the other dataset's run is filtered out
    metrics = ns["metrics_side_by_side"]
    params = ns["params_side_by_side"]
    for run_id, (split, accuracy, c) in logged.items():
        column = next(col for col in metrics.columns if col.endswith(f"({run_id[:8]})"))
        assert column.startswith(f"train-{split}")
        assert metrics.loc["train_accuracy", column] == pytest.approx(accuracy)
        assert float(params.loc["linear_c", column]) == c
    assert set(ns["run_overview"]["split"]) == {"sampled", "unsampled"}

    full, curated = (tables.evaluation.set_index("variant").loc[v] for v in ("full", "curated"))
    comparison = ns["accuracy_comparison"]
    assert comparison["accuracy_gain"] == pytest.approx(curated["accuracy"] - full["accuracy"])
    assert comparison["row_fraction"] == pytest.approx(curated["rows"] / full["rows"])
    assert comparison["p_mcnemar_vs_full"] == pytest.approx(curated["p_mcnemar_vs_full"])
    assert list(ns["evaluation"]["variant"]) == ["full", "curated", "random"]
    plot = ns["comparison_plot"]
    assert plot.read_bytes()[:8] == PNG_MAGIC and plot.parent == tmp_path
    assert np.isfinite(comparison["macro_f1_gain"])
