"""The Spark triage and curate stages against the in-memory rule, on tables built here."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from dqe.algorithms.neighbors import NO_NEIGHBOR, l2_normalized, top1_neighbors
from dqe.algorithms.triage_rule import categorize
from dqe.catalog import Catalog, Table
from dqe.curate import curate
from dqe.errors import InputError
from dqe.triage import positioned_rows, search_partitions, triage

from conftest import SHARED_DATA

EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DUPLICATED = range(10)
# Rows 100-109, 300-309 and 500-509 copy rows 0-9: ties inside one corpus partition and across partitions.
COPIES = (100, 300, 500)
# Null predictions: a causal LM's output that named no label.
UNPARSABLE = range(200, 220)
NO_LABEL = "<no label>"


def _write(spark, config, table, frame, schema):
    catalog = Catalog.from_config(config)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {catalog.namespace}")
    spark.createDataFrame(frame, schema).repartition(4).write.format("delta").mode("overwrite").saveAsTable(
        catalog.name(table)
    )


def _write_inputs(spark, config, raw, vectors, sampled, predicted, probabilities=None) -> list[str]:
    """clean, selection, embeddings and predictions (with ``probabilities`` maps when given) for the rows of
    ``raw``; returns their row_ids."""
    row_ids = [f"r{i:04d}" for i in range(len(raw))]
    split = np.where(sampled, "sampled", "unsampled")
    _write(spark, config, Table.CLEAN, pd.DataFrame({"row_id": row_ids, "text": raw["text"], "label": raw["label"], "source": "t"}), "row_id string, text string, label string, source string")
    _write(spark, config, Table.SELECTION, pd.DataFrame({"row_id": row_ids, "split": split}), "row_id string, split string")
    _write(
        spark,
        config,
        Table.EMBEDDINGS,
        pd.DataFrame({"row_id": row_ids, "vector": list(vectors), "model": EMBED_MODEL}),
        "row_id string, vector array<float>, model string",
    )
    predictions = pd.DataFrame({"row_id": row_ids, "predicted_label": predicted, "split": split})
    schema = "row_id string, predicted_label string, split string"
    if probabilities is not None:
        predictions["probabilities"] = probabilities
        schema += ", probabilities map<string, double>"
    _write(spark, config, Table.PREDICTIONS, predictions, schema)
    return row_ids


@contextmanager
def _session_conf(spark, settings: dict[str, str]):
    """Spark SQL settings for the duration of a block (the session is shared by every test)."""
    before = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def _trec_rows(n_rows: int) -> pd.DataFrame:
    return pd.read_parquet(SHARED_DATA / "trec" / "train.parquet").iloc[:n_rows].reset_index(drop=True)


def _wrong_label(label: str, classes: list[str]) -> str:
    return classes[(classes.index(label) + 1) % len(classes)]


@pytest.fixture(scope="module")
def built(spark, make_config):
    """600 real TREC rows with random unit vectors (plus exact duplicates to force ties), noisy predictions and a
    few null ones; triaged with small Arrow batches, so each corpus partition is searched in several batches."""
    raw = _trec_rows(600)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(raw), 16)).astype(np.float32)
    for start in COPIES:
        vectors[start : start + len(DUPLICATED)] = vectors[DUPLICATED]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sampled = rng.random(len(raw)) < 0.5
    labels = raw["label"].to_numpy(dtype=object)
    classes = sorted(set(labels))
    predicted = np.where(rng.random(len(raw)) < 0.3, rng.choice(classes, len(raw)), labels).astype(object)
    # Every copy is predicted wrong, so each is a query whose best neighbours tie.
    for row in [i + start for start in (0, *COPIES) for i in DUPLICATED]:
        predicted[row] = _wrong_label(labels[row], classes)
    predicted[list(UNPARSABLE)] = None
    config = make_config("trec", "triage.both_directions=true")
    row_ids = _write_inputs(spark, config, raw, vectors, sampled, predicted)
    with _session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": "32"}):
        summary = triage(spark, config)
    return config, summary, vectors, labels, sampled, predicted, row_ids


def _triage_table(spark, config) -> pd.DataFrame:
    return spark.table(Catalog.from_config(config).name(Table.TRIAGE)).toPandas()


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_spark_search_matches_in_memory_rule(spark, built, direction):
    config, _, vectors, labels, sampled, predicted, row_ids = built
    training = sampled if direction == "forward" else ~sampled
    # A null prediction is wrong in the Spark stage; the in-memory rule needs it spelled as a (wrong) label.
    answered = np.where(pd.isna(predicted), NO_LABEL, predicted)
    expected = categorize(vectors, labels, training, np.where(training, None, answered))
    got = _triage_table(spark, config)
    got = got[got["direction"] == direction].sort_values("row_id").reset_index(drop=True)
    assert len(got) == len(expected) > 20
    assert got["row_id"].tolist() == [row_ids[i] for i in expected["row"]]
    assert got["neighbor_row_id"].tolist() == [row_ids[i] for i in expected["neighbor"]]
    assert got["category"].tolist() == expected["category"].tolist()
    np.testing.assert_allclose(got["similarity"], expected["similarity"], rtol=1e-6)


def test_corpus_is_searched_over_partitions_with_ties_across_them(spark, built):
    config, _, _, _, _, _, row_ids = built
    catalog = Catalog.from_config(config)
    tables = [spark.table(catalog.name(t)) for t in (Table.CLEAN, Table.SELECTION, Table.EMBEDDINGS)]
    placed = (
        positioned_rows(*tables, search_partitions(spark))
        .select("row_id", "pos", F.spark_partition_id().alias("partition"))
        .toPandas()
        .set_index("row_id")
        .sort_index()
    )
    assert placed["partition"].nunique() >= 4
    assert placed["pos"].is_unique and placed["pos"].is_monotonic_increasing  # positions follow row_id
    got = _triage_table(spark, config).set_index("row_id")
    for i in DUPLICATED:
        copies = [row_ids[i + start] for start in (0, *COPIES)]
        assert placed.loc[copies, "partition"].nunique() >= 3
        for row in copies:
            assert got.loc[row, "neighbor_row_id"] == min(c for c in copies if c != row)
            assert got.loc[row, "similarity"] == pytest.approx(1.0)


def test_null_predictions_count_as_wrong(spark, built):
    config, _, _, _, sampled, _, row_ids = built
    got = _triage_table(spark, config).set_index("row_id")
    unparsable = [row_ids[i] for i in UNPARSABLE]
    assert set(unparsable) <= set(got.index)
    assert got.loc[unparsable, "predicted_label"].isna().all()
    expected_direction = ["reverse" if sampled[i] else "forward" for i in UNPARSABLE]
    assert got.loc[unparsable, "direction"].tolist() == expected_direction


def test_ivf_searches_exactly_where_the_probed_lists_hold_no_other_row(spark, make_config):
    raw = _trec_rows(600)
    rng = np.random.default_rng(0)
    # Four tight clusters, and outliers each on an axis of their own: with 15 lists and one probe, k-means gives
    # some outliers a list of their own, so their probe holds no other row.
    vectors = np.eye(32)[rng.integers(0, 4, len(raw))] + 0.01 * rng.normal(size=(len(raw), 32))
    vectors[:, 16:] = 0
    outliers = rng.choice(len(raw), 4, replace=False)
    for axis, row in enumerate(outliers, start=16):
        vectors[row] = 0.05 * rng.normal(size=32)
        vectors[row, 16:] = 0
        vectors[row, axis] = 1.0
    vectors = l2_normalized(vectors)
    sampled = rng.random(len(raw)) < 0.5
    sampled[outliers] = False
    labels = raw["label"].to_numpy(dtype=object)
    classes = sorted(set(labels))
    predicted = np.where(rng.random(len(raw)) < 0.3, rng.choice(classes, len(raw)), labels).astype(object)
    predicted[outliers] = [_wrong_label(labels[row], classes) for row in outliers]
    ivf = {"index": "ivf", "nlist": 15, "nprobe": 1}
    probed = top1_neighbors(vectors[outliers], vectors, query_ids=outliers, **ivf)
    assert (probed.ids == NO_NEIGHBOR).any()  # the setting really leaves probes empty

    config = make_config("trec", "triage.index=ivf", "triage.ivf_nlist=15", "triage.ivf_nprobe=1")
    row_ids = _write_inputs(spark, config, raw, vectors, sampled, predicted)
    # One corpus partition and one Arrow batch: the Spark path builds the same IVF index as the in-memory rule.
    with _session_conf(spark, {"spark.sql.shuffle.partitions": "1"}):
        triage(spark, config)
    expected = categorize(vectors, labels, sampled, np.where(sampled, None, predicted), **ivf)
    got = _triage_table(spark, config).sort_values("row_id").reset_index(drop=True)
    assert got["row_id"].tolist() == [row_ids[i] for i in expected["row"]]
    assert got["neighbor_row_id"].tolist() == [row_ids[i] for i in expected["neighbor"]]
    assert got["category"].tolist() == expected["category"].tolist()
    np.testing.assert_allclose(got["similarity"], expected["similarity"], rtol=1e-6)


def test_flagged_noise_view_pairs_texts(spark, built):
    config = built[0]
    catalog = Catalog.from_config(config)
    view = spark.sql(f"SELECT * FROM {catalog.name(Table.FLAGGED_NOISE)}").toPandas()
    noisy = _triage_table(spark, config).query("category == 'noisy'")
    assert len(view) == len(noisy) > 0
    assert (view["label"] != view["neighbor_label"]).all()
    assert view["text"].notna().all() and view["neighbor_text"].notna().all()


def test_curated_is_sampled_plus_uncovered_plus_difficult_minus_noisy(spark, built):
    config, _, _, _, sampled, _, row_ids = built
    summary = curate(spark, config)
    catalog = Catalog.from_config(config)
    curation = spark.table(catalog.name(Table.CURATION)).toPandas().set_index("row_id")
    assert len(curation) == len(row_ids)
    tri = _triage_table(spark, config)
    forward, reverse = tri[tri["direction"] == "forward"], tri[tri["direction"] == "reverse"]
    reverse_noisy = set(reverse.query("category == 'noisy'")["row_id"])
    expected = {r for r, s in zip(row_ids, sampled) if s} - reverse_noisy
    expected |= set(forward[forward["category"].isin(["uncovered", "difficult"])]["row_id"])
    assert set(curation.index[curation["curated"]]) == expected
    assert summary["curated"] == len(expected)
    assert set(curation.loc[list(set(forward.query("category == 'noisy'")["row_id"])), "fate"]) == {"noisy_dropped"}
    curated_view = spark.sql(f"SELECT count(*) AS n FROM {catalog.name(Table.CURATED)}").first().n
    assert curated_view == len(expected)


def test_reviews_override_automatic_fates(spark, built):
    config = built[0]
    catalog = Catalog.from_config(config)
    curation = spark.table(catalog.name(Table.CURATION)).toPandas()
    dropped = curation[curation["fate"] == "noisy_dropped"]["row_id"].iloc[0]
    kept = curation[curation["fate"] == "sampled"]["row_id"].iloc[0]
    now = datetime.now(timezone.utc)
    reviews = pd.DataFrame(
        {
            "row_id": [dropped, kept, kept],
            "reviewer": ["ana", "ana", "bo"],
            "verdict": ["relabel", "keep", "drop"],
            "new_label": ["LOC", None, None],
            "note": ["", "", "later review wins"],
            "reviewed_at": [now, now, now.replace(year=now.year + 1)],
        }
    )
    spark.createDataFrame(reviews).write.format("delta").mode("overwrite").saveAsTable(catalog.name(Table.REVIEWS))
    curate(spark, config)
    after = spark.table(catalog.name(Table.CURATION)).toPandas().set_index("row_id")
    assert after.loc[dropped, "fate"] == "review_relabelled" and after.loc[dropped, "label"] == "LOC"
    assert bool(after.loc[dropped, "curated"])
    assert after.loc[kept, "fate"] == "review_dropped" and not bool(after.loc[kept, "curated"])


def test_missing_predictions_are_a_clear_error(spark, built, make_config):
    config = built[0]
    other = make_config("trec")
    catalog, source = Catalog.from_config(other), Catalog.from_config(config)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {catalog.namespace}")
    for table in (Table.CLEAN, Table.SELECTION, Table.EMBEDDINGS):
        spark.table(source.name(table)).write.format("delta").saveAsTable(catalog.name(table))
    spark.table(source.name(Table.PREDICTIONS)).limit(10).write.format("delta").saveAsTable(catalog.name(Table.PREDICTIONS))
    with pytest.raises(InputError, match=r"triage \(forward\) needs a prediction for every unsampled row"):
        triage(spark, other)


class _RelabelToNeighbourServer:
    """An OpenAI-compatible chat-completions server that always says example A is mislabelled and gives it B's label."""

    def __init__(self) -> None:
        import json
        import re
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                counter.requests += 1
                label_b = re.findall(r"^Label: (.*)$", body["messages"][-1]["content"], re.MULTILINE)[1]
                content = json.dumps({"verdict": "a", "label": label_b, "reason": "B's label fits"})
                data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_judge_verdicts_are_cached_in_delta_and_drive_relabelling(spark, built, make_config, monkeypatch):
    config = built[0]
    server = _RelabelToNeighbourServer()
    monkeypatch.setenv("DQE_TEST_JUDGE_KEY", "secret-test-key")
    try:
        judged = make_config(
            "trec",
            "triage.judge.enabled=true",
            f"triage.judge.base_url={server.base_url}",
            "triage.judge.api_key_env=DQE_TEST_JUDGE_KEY",
            "triage.judge.backoff_s=0",
            "triage.noisy_policy=relabel",
            schema=config.schema,
        )
        triage(spark, judged)
        catalog = Catalog.from_config(judged)
        noisy = _triage_table(spark, judged).query("category == 'noisy' and direction == 'forward'")
        assert len(noisy) > 0 and server.requests > 0
        assert (noisy["judge_verdict"] == "a").all()
        assert (noisy["judge_label"] == noisy["neighbor_label"]).all()
        assert spark.table(catalog.name(Table.JUDGE_CACHE)).count() == server.requests
        before = server.requests
        triage(spark, judged)
        assert server.requests == before  # every verdict came from the Delta cache
        curate(spark, judged)
        curation = spark.table(catalog.name(Table.CURATION)).toPandas().set_index("row_id")
        relabelled = curation.loc[noisy["row_id"]]
        assert set(relabelled["fate"]) <= {"relabelled", "relabel_conflict"}
        ok = relabelled[relabelled["fate"] == "relabelled"]
        assert len(ok) > 0 and (ok["label"] == noisy.set_index("row_id").loc[ok.index, "neighbor_label"]).all()
        assert "secret-test-key" not in spark.table(catalog.name(Table.JUDGE_CACHE)).toPandas().to_string()
    finally:
        server.close()
