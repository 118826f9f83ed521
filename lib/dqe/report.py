"""Report: counts per stage and category, per-label breakdown, diversity of full / sampled / curated, the
evaluation table, and plots → PNGs plus one HTML page under ``<work_dir>/reports/<dataset>/``, logged to MLflow.

Diversity uses the Remote Clique and Chamfer distance scores (Cox et al. 2021, as in Li et al. EMNLP 2023) from
:mod:`dqe.algorithms.diversity`; the 2-D projection is PCA (numpy SVD) of at most 5,000 embeddings.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from dqe.algorithms.diversity import chamfer_distance_score, remote_clique_score  # noqa: E402
from dqe.catalog import Catalog, Table  # noqa: E402
from dqe.config import DqeConfig  # noqa: E402
from dqe.embed import model_identifier  # noqa: E402
from dqe.lakehouse import stage_fingerprint, stage_run, table_exists  # noqa: E402

PROJECTION_SAMPLE = 5_000


def diversity_table(frames: dict[str, np.ndarray]) -> pd.DataFrame:
    records = []
    for name, vectors in frames.items():
        if len(vectors) < 2:
            continue
        clique, chamfer = remote_clique_score(vectors), chamfer_distance_score(vectors)
        records.append(
            {
                "set": name,
                "rows": len(vectors),
                "remote_clique": clique.value,
                "chamfer": chamfer.value,
                "chamfer_bound": chamfer.bound,
                "chamfer_exact": chamfer.exact,
            }
        )
    return pd.DataFrame(records)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def _plot_categories(per_label: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    if per_label.empty:
        ax.text(0.5, 0.5, "no wrong predictions", ha="center")
    else:
        per_label.plot.bar(ax=ax, stacked=False)
        ax.set_ylabel("wrong predictions")
    ax.set_title("Triage categories per label")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_projection(points: np.ndarray, groups: pd.Series, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    for name in ["sampled", "unsampled", "uncovered", "difficult", "noisy"]:
        mask = (groups == name).to_numpy()
        if mask.any():
            size = 4 if name in ("sampled", "unsampled") else 16
            ax.scatter(points[mask, 0], points[mask, 1], s=size, label=f"{name} ({mask.sum()})", alpha=0.6)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Embeddings (PCA) by split and triage category")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_accuracy(evaluation: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    if not evaluation.empty:
        x = np.arange(len(evaluation))
        acc = evaluation["accuracy"].to_numpy()
        errors = np.vstack([acc - evaluation["ci_low"].to_numpy(), evaluation["ci_high"].to_numpy() - acc])
        ax.bar(x, acc, yerr=errors, capsize=6, color=["#888", "#2a7", "#c84"][: len(x)])
        ax.set_xticks(x, [f"{v}\n{int(r)} rows" for v, r in zip(evaluation["variant"], evaluation["rows"])])
        ax.set_ylim(max(0.0, acc.min() - 0.1), min(1.0, acc.max() + 0.05))
        ax.set_ylabel("test accuracy (95% bootstrap CI)")
    ax.set_title("Full vs curated vs random subset")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _html_page(title: str, sections: list[tuple[str, str]]) -> str:
    body = "\n".join(f"<h2>{html.escape(name)}</h2>\n{content}" for name, content in sections)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{body}</body></html>"
    )


def report(spark: SparkSession, config: DqeConfig) -> dict[str, object]:
    import mlflow

    from dqe.tracking import configure_mlflow

    catalog = Catalog.from_config(config)
    out = config.storage.work_dir / "reports" / config.dataset.name
    out.mkdir(parents=True, exist_ok=True)
    with stage_run(spark, catalog, "report", stage_fingerprint(config, "report")) as run:
        counts = {
            table.value: spark.table(catalog.name(table)).count()
            for table in (Table.BRONZE, Table.CLEAN, Table.QUARANTINE, Table.NEAR_DUPLICATES, Table.TRIAGE)
            if table_exists(spark, catalog.name(table))
        }
        quarantine = run.read(spark, catalog.name(Table.QUARANTINE)).groupBy("reason").count().toPandas()
        triaged = run.read(spark, catalog.name(Table.TRIAGE))
        per_label = (
            triaged.groupBy("label").pivot("category", ["uncovered", "difficult", "noisy"]).count().fillna(0).toPandas()
        ).set_index("label").sort_index()
        curation = run.read(spark, catalog.name(Table.CURATION))
        fates = curation.groupBy("fate").count().toPandas().sort_values("fate")
        evaluation = (
            run.read(spark, catalog.name(Table.EVALUATION)).toPandas()
            if table_exists(spark, catalog.name(Table.EVALUATION))
            else pd.DataFrame()
        )
        vectors = run.read(spark, catalog.name(Table.EMBEDDINGS)).where(F.col("model") == model_identifier(config.embed))
        rows = (
            run.read(spark, catalog.name(Table.SELECTION))
            .select("row_id", "split")
            .join(curation.select("row_id", "curated"), "row_id")
            .join(triaged.where("direction = 'forward'").select("row_id", "category"), "row_id", "left")
            .join(vectors.select("row_id", "vector"), "row_id")
            .toPandas()
        )
        matrix = np.stack(rows["vector"].to_numpy()).astype(np.float32)
        diversity = diversity_table(
            {
                "full": matrix,
                "sampled": matrix[(rows["split"] == "sampled").to_numpy()],
                "curated": matrix[rows["curated"].to_numpy(dtype=bool)],
            }
        )
        sample = rows.sample(n=min(PROJECTION_SAMPLE, len(rows)), random_state=0)
        keep = rows["category"].notna().to_numpy()
        shown = pd.concat([sample, rows[keep]]).drop_duplicates("row_id")
        groups = shown["category"].fillna(shown["split"])
        _plot_categories(per_label, out / "categories_per_label.png")
        _plot_projection(pca_2d(np.stack(shown["vector"].to_numpy())), groups.reset_index(drop=True), out / "projection.png")
        _plot_accuracy(evaluation, out / "accuracy.png")

        def table_html(frame: pd.DataFrame) -> str:
            return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}") if not frame.empty else "<p>none</p>"

        page = _html_page(
            f"dqe report: {config.dataset.name}",
            [
                ("Rows per table", table_html(pd.DataFrame([counts]))),
                ("Quarantine reasons", table_html(quarantine)),
                ("Triage categories per label", table_html(per_label.reset_index())),
                ("Fate of every clean row", table_html(fates)),
                ("Diversity (cosine distance; higher is more diverse)", table_html(diversity)),
                ("Evaluation on the test split", table_html(evaluation)),
                (
                    "Plots",
                    "".join(
                        f"<img src='{name}' style='max-width:48%'>"
                        for name in ("categories_per_label.png", "projection.png", "accuracy.png")
                    ),
                ),
            ],
        )
        index = out / "report.html"
        index.write_text(page, encoding="utf-8")
        configure_mlflow(config)
        with mlflow.start_run(run_name=f"{config.dataset.name}-report"):
            mlflow.set_tags({"dqe.stage": "report", "dqe.dataset": config.dataset.name, "dqe.stage_run_id": run.run_id})
            mlflow.log_artifacts(str(out), artifact_path="report")
    return {"html": str(index), "pngs": sorted(p.name for p in out.glob("*.png")), **counts}
