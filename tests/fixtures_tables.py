"""Small but real dqe tables for the SQL and notebook tests, built without the train/triage/curate stages.

Source: every 13th row of the real CR training set plus every row whose text occurs more than once (CR's empty
texts, its label conflict and its exact duplicates), plus ``INJECTED`` near-copies of real rows with the other
label (a trailing " !" and a flipped label: simulated label noise that MinHash must pair up and triage must
flag). From there:

- ``bronze``, ``clean``, ``quarantine``, ``near_duplicates``, ``runs``: the real ingest and clean stages;
- ``embeddings``: LSA vectors of the clean texts (TF-IDF → 64-dim truncated SVD, L2-normalised) under the model
  name ``fixture-lsa-64`` (the configs below set ``embed.model`` to it), seconds instead of a transformer;
- ``selection``: a deterministic half by row_id (each injected copy unsampled, its original sampled);
- predictions (not written: nothing here reads them): a similarity-weighted 5-nearest-neighbour vote over the
  sampled rows' vectors;
- ``triage``: the real rule, :func:`dqe.algorithms.triage_rule.categorize`, with a rule-based stand-in for the
  LLM judge (injected copies: ``a``, the copy is mislabelled; other noisy rows alternate ``b``/``ambiguous``);
- ``flagged_noise``: the real view, :func:`dqe.triage.create_flagged_noise_view`;
- ``reviews``: two reviewers, one agreeing with the judge throughout, one dropping every row and
  changing an earlier verdict;
- ``evaluation``: three variant rows in the real schema (:data:`dqe.evaluate.EVALUATION_SCHEMA`).

The pandas frames returned alongside are what the tests compute their expectations from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from dqe.algorithms.triage_rule import categorize
from dqe.catalog import Catalog, Table
from dqe.clean import clean
from dqe.config import DqeConfig
from dqe.embed import EMBEDDING_SCHEMA
from dqe.evaluate import EVALUATION_SCHEMA
from dqe.ingest import ingest
from dqe.triage import create_flagged_noise_view

from conftest import SHARED_DATA

EVERY_NTH = 13
INJECTED = 4
EMBED_MODEL = "fixture-lsa-64"
REVIEWS_SCHEMA = (
    "row_id string, reviewer string, verdict string, new_label string, note string, reviewed_at timestamp"
)
SELECTION_SCHEMA = (
    "row_id string, label string, split string, partition int, rank int, local_rank int, criterion string, "
    "run_id string"
)
TRIAGE_SCHEMA = (
    "row_id string, label string, predicted_label string, split string, category string, neighbor_row_id string, "
    "neighbor_label string, neighbor_split string, similarity double, direction string, judge_verdict string, "
    "judge_label string, judge_reason string"
)


@dataclass
class Tables:
    config: DqeConfig
    overrides: list[str]  # the config overrides that lead a notebook (DQE_OVERRIDES) to these tables
    clean: pd.DataFrame  # row_id order; with split, vector position = index
    quarantine: pd.DataFrame
    near_duplicates: pd.DataFrame
    vectors: np.ndarray
    triage: pd.DataFrame
    reviews: pd.DataFrame
    evaluation: pd.DataFrame
    injected_texts: list[str]

    @property
    def catalog(self) -> Catalog:
        return Catalog.from_config(self.config)

    def name(self, table: Table) -> str:
        return self.catalog.name(table)


def sample_source(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Write the sampled CR rows (plus injected near-copies with flipped labels) to ``path``."""
    raw = pd.read_parquet(SHARED_DATA / "cr" / "train.parquet")
    sample = pd.concat([raw.iloc[::EVERY_NTH], raw[raw["text"].duplicated(keep=False)]]).drop_duplicates("id")
    long_rows = sample[sample["text"].str.len().between(80, 200)].head(INJECTED)
    assert len(long_rows) == INJECTED
    copies = pd.DataFrame(
        {
            "id": [f"cr-injected-{i}" for i in range(INJECTED)],
            "text": long_rows["text"].to_numpy() + " !",
            "label": np.where(long_rows["label"].to_numpy() == "positive", "negative", "positive"),
        }
    )
    table = pd.concat([sample, copies], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return table, copies["text"].tolist()


def lsa_vectors(texts: list[str], dims: int = 64) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1).fit_transform(texts)
    vectors = TruncatedSVD(n_components=dims, random_state=0).fit_transform(tfidf)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def save(df, name: str) -> None:
    """A Delta table as the stages write them, minus the version bookkeeping the tests do not need."""
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").saveAsTable(name)


def knn_predict(vectors: np.ndarray, labels: np.ndarray, sampled: np.ndarray, k: int = 5) -> np.ndarray:
    """Label of every row by a vote of its k most similar sampled rows, weighted by exp(10·cosine): a
    near-identical row dominates the vote, otherwise the neighbourhood decides (so some wrong rows are
    'difficult': their nearest row is a sampled one with their label, outvoted by the others)."""
    train, train_labels = vectors[sampled], labels[sampled]
    similarity = vectors @ train.T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    weights = np.exp(10.0 * np.take_along_axis(similarity, nearest, axis=1))
    classes = np.unique(labels)
    votes = np.stack([(weights * (train_labels[nearest] == c)).sum(axis=1) for c in classes], axis=1)
    return classes[votes.argmax(axis=1)]


def _judge(row: pd.Series, injected: set[str], position: int) -> tuple[str | None, str | None, str | None]:
    if row["category"] != "noisy":
        return None, None, None
    if row["text"] in injected:
        return "a", row["neighbor_label"], "fixture judge: the text reads like its neighbour's label"
    if position % 2 == 0:
        return "b", row["label"], "fixture judge: the neighbour looks mislabelled"
    return "ambiguous", None, "fixture judge: both labels are defensible"


_BUILT: dict[str, Tables] = {}


def shared_tables(spark: SparkSession, make_config: Callable[..., DqeConfig], tmp_dir_factory) -> Tables:
    """One build per test process, shared by test_sql.py and test_notebooks.py: a build on a cold JVM costs about
    a minute. Consumers that write (the triage-explorer notebook adds reviews) must leave what others assert on
    intact: the notebook test reviews as its own reviewer, and the SQL test reads reviews back from the table."""
    if "tables" not in _BUILT:
        _BUILT["tables"] = build_tables(spark, make_config, tmp_dir_factory.mktemp("dqe_tables"))
    return _BUILT["tables"]


def build_tables(
    spark: SparkSession,
    make_config: Callable[..., DqeConfig],
    tmp_dir: Path,
) -> Tables:
    source = tmp_dir / "source" / "train.parquet"
    _, injected_texts = sample_source(source)
    overrides = [f"dataset.train.path={source}", "dataset.holdout_fraction=0", f"embed.model={EMBED_MODEL}"]
    config = make_config("cr", *overrides)
    overrides += [
        f"storage.work_dir={config.storage.work_dir}",
        f"storage.warehouse_dir={config.storage.warehouse_dir}",
        f"storage.schema={config.storage.schema_name}",
        f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
        f"data_root={config.data_root}",
        "spark.hive_metastore=false",
    ]
    catalog = Catalog.from_config(config)
    ingest(spark, config)
    clean(spark, config)

    clean_rows = spark.table(catalog.name(Table.CLEAN)).toPandas().sort_values("row_id").reset_index(drop=True)
    quarantine = spark.table(catalog.name(Table.QUARANTINE)).toPandas()
    near = spark.table(catalog.name(Table.NEAR_DUPLICATES)).toPandas()
    vectors = lsa_vectors(clean_rows["text"].tolist())
    n_rows = len(clean_rows)

    # embeddings
    embeddings = pd.DataFrame(
        {
            "row_id": clean_rows["row_id"],
            "vector": list(vectors),
            "model": EMBED_MODEL,
            "dim": vectors.shape[1],
            "text_hash": "",
            "truncated": False,
        }
    )
    save(spark.createDataFrame(embeddings, EMBEDDING_SCHEMA), catalog.name(Table.EMBEDDINGS))

    # selection: half by row_id; injected copies unsampled, their originals sampled
    injected = set(injected_texts)
    originals = {t[: -len(" !")] for t in injected_texts}
    sampled = np.array([int(r, 16) % 2 == 0 for r in clean_rows["row_id"]])
    sampled[clean_rows["text"].isin(injected).to_numpy()] = False
    sampled[clean_rows["text"].isin(originals).to_numpy()] = True
    clean_rows["split"] = np.where(sampled, "sampled", "unsampled")
    selection = pd.DataFrame(
        {
            "row_id": clean_rows["row_id"],
            "label": clean_rows["label"],
            "split": clean_rows["split"],
            "partition": 0,
            "rank": np.arange(n_rows),
            "local_rank": np.arange(n_rows),
            "criterion": "fixture",
            "run_id": "fixture",
        }
    )
    save(spark.createDataFrame(selection, SELECTION_SCHEMA), catalog.name(Table.SELECTION))

    # predictions of a similarity-weighted 5-NN "model" over the sampled half
    labels = clean_rows["label"].to_numpy(dtype=object)
    predicted = knn_predict(vectors, labels, sampled)

    # triage by the real rule, judged by the stand-in
    found = categorize(vectors, labels, sampled, np.where(sampled, None, predicted))
    triage = pd.DataFrame(
        {
            "row_id": clean_rows["row_id"].to_numpy()[found["row"]],
            "label": labels[found["row"]],
            "predicted_label": predicted[found["row"]],
            "split": clean_rows["split"].to_numpy()[found["row"]],
            "category": found["category"].to_numpy(),
            "neighbor_row_id": clean_rows["row_id"].to_numpy()[found["neighbor"]],
            "neighbor_label": labels[found["neighbor"]],
            "neighbor_split": clean_rows["split"].to_numpy()[found["neighbor"]],
            "similarity": found["similarity"].astype(float).to_numpy(),
            "direction": "forward",
        }
    )
    triage["text"] = clean_rows["text"].to_numpy()[found["row"]]
    verdicts = [_judge(row, injected, i) for i, (_, row) in enumerate(triage.iterrows())]
    triage["judge_verdict"], triage["judge_label"], triage["judge_reason"] = map(list, zip(*verdicts))
    copies = triage[triage["text"].isin(injected)]
    assert len(copies) == INJECTED and set(copies["category"]) == {"noisy"}, "injected noise not flagged"
    assert set(triage["category"]) >= {"noisy", "difficult"}, triage["category"].value_counts()
    triage = triage.drop(columns="text")
    save(spark.createDataFrame(triage, TRIAGE_SCHEMA), catalog.name(Table.TRIAGE))
    create_flagged_noise_view(spark, catalog)

    reviews = sample_reviews(triage)
    save(spark.createDataFrame(reviews, REVIEWS_SCHEMA), catalog.name(Table.REVIEWS))

    evaluation = pd.DataFrame(
        {
            "dataset": "cr",
            "variant": ["full", "curated", "random"],
            "backend": "linear",
            "rows": [n_rows, int(sampled.sum()) + 20, int(sampled.sum()) + 20],
            "fraction": [1.0, 0.6, 0.6],
            "accuracy": [0.800, 0.825, 0.780],
            "macro_f1": [0.780, 0.810, 0.760],
            "ci_low": [0.770, 0.795, 0.750],
            "ci_high": [0.830, 0.855, 0.810],
            "p_ttest_vs_full": [None, 0.04, 0.20],
            "p_mcnemar_vs_full": [None, 0.05, 0.25],
            "p_ttest_vs_random": [0.20, 0.01, None],
            "p_mcnemar_vs_random": [0.25, 0.02, None],
            "train_seconds": [1.5, 1.1, 1.0],
            "test_rows": 400,
        }
    )
    save(spark.createDataFrame(evaluation, EVALUATION_SCHEMA), catalog.name(Table.EVALUATION))
    return Tables(config, overrides, clean_rows, quarantine, near, vectors, triage, reviews, evaluation, injected_texts)


def sample_reviews(triage: pd.DataFrame) -> pd.DataFrame:
    """alice follows the judge on every noisy row (relabel when the row is mislabelled, keep otherwise);
    bob drops every noisy row, and on the first one first said 'keep' (an earlier, superseded review)."""
    noisy = triage[triage["category"] == "noisy"].sort_values("row_id").reset_index(drop=True)
    start = datetime(2025, 1, 6, 9, 0, 0)
    rows = []
    for i, r in noisy.iterrows():
        mislabelled = r["judge_verdict"] == "a"
        rows.append(
            (r["row_id"], "alice", "relabel" if mislabelled else "keep", r["judge_label"] if mislabelled else None,
             "follows the judge", start + timedelta(minutes=i))
        )
        later = start + timedelta(hours=1, minutes=i)
        rows.append((r["row_id"], "bob", "drop", None, "drops every flagged row", later))
    first = noisy.iloc[0]
    rows.append((first["row_id"], "bob", "keep", None, "first look", start - timedelta(days=1)))
    return pd.DataFrame(rows, columns=["row_id", "reviewer", "verdict", "new_label", "note", "reviewed_at"])
