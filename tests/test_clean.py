"""The clean stage on real Spark + Delta against independent pandas computations."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd
import pytest
from pyspark.sql import functions as F

from dqe.algorithms.cleaning import REASONS, clean_pandas
from dqe.catalog import Catalog, Table
from dqe.clean import clean
from dqe.ingest import ingest

from conftest import SHARED_DATA


def _norm(text):
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip() if isinstance(text, str) else None


def _expected(raw: pd.DataFrame) -> dict[str, int]:
    """Independent pandas count of the quarantine reasons for a frame with no labels outside the label set."""
    df = raw.assign(t=raw["text"].map(_norm), l=raw["label"].map(_norm))
    missing = df["t"].isna() | (df["t"] == "")
    valid = df[~missing]
    labels_per_text = valid.groupby("t")["l"].nunique()
    conflicted = set(labels_per_text[labels_per_text > 1].index)
    kept = valid[~valid["t"].isin(conflicted)]
    return {
        "missing_text": int(missing.sum()),
        "label_conflict": int(valid["t"].isin(conflicted).sum()),
        "duplicate": int(len(kept) - len(kept.drop_duplicates(["t", "l"]))),
        "clean": int(len(kept.drop_duplicates(["t", "l"]))),
    }


def _run(spark, config):
    ingest(spark, config)
    return clean(spark, config)


def _tables(spark, config):
    catalog = Catalog.from_config(config)
    return (
        spark.table(catalog.name(Table.BRONZE)),
        spark.table(catalog.name(Table.CLEAN)),
        spark.table(catalog.name(Table.QUARANTINE)),
    )


@pytest.fixture(scope="module")
def cr(spark, make_config):
    config = make_config("cr", "dataset.holdout_fraction=0")
    return config, _run(spark, config)


def test_manifest_facts_hold_for_raw_cr():
    raw = pd.read_parquet(SHARED_DATA / "cr" / "train.parquet")
    counts = raw["text"].value_counts()
    assert int((raw["text"] == "").sum()) == 4
    assert int((counts[counts > 1] - 1).sum()) == 9


@pytest.mark.parametrize("dataset", ["cr", "trec"])
def test_counts_match_independent_pandas(spark, make_config, dataset, cr):
    config, counts = cr if dataset == "cr" else (None, None)
    if config is None:
        config = make_config(dataset)
        counts = _run(spark, config)
    raw = pd.read_parquet(SHARED_DATA / dataset / "train.parquet")
    expected = _expected(raw)
    for reason in ("missing_text", "label_conflict", "duplicate"):
        assert counts.get(reason, 0) == expected[reason], reason
    assert counts["clean"] == expected["clean"]
    if dataset == "cr":
        assert expected["missing_text"] == 4 and expected["duplicate"] == 6  # 9 extra rows, 3 of them empty
    else:
        assert expected["duplicate"] == 71


def test_every_bronze_row_lands_exactly_once(spark, cr):
    bronze, clean_rows, quarantine = _tables(spark, cr[0])
    ids = clean_rows.select("row_id").unionAll(quarantine.select("row_id"))
    assert ids.count() == bronze.count()
    assert ids.distinct().count() == bronze.count()
    assert ids.join(bronze, "row_id", "left_anti").count() == 0
    assert set(r.reason for r in quarantine.select("reason").distinct().collect()) <= set(REASONS)


def test_duplicate_of_points_to_a_clean_row_with_same_text_and_label(spark, cr):
    _, clean_rows, quarantine = _tables(spark, cr[0])
    dups = quarantine.where("reason = 'duplicate'").alias("q")
    joined = dups.join(clean_rows.alias("c"), F.col("q.duplicate_of") == F.col("c.row_id"))
    assert joined.count() == dups.count() > 0
    for row in joined.select("q.text", "q.label", "c.text", "c.label").collect():
        assert " ".join(row[0].split()) == row[2] and row[1] == row[3]


def test_spark_matches_pandas_reference_row_by_row(spark, cr):
    bronze, _, quarantine = _tables(spark, cr[0])
    reference = clean_pandas(bronze.toPandas(), cr[0].clean, cr[0].dataset.labels)
    spark_reasons = dict(quarantine.select("row_id", "reason").collect())
    pandas_reasons = {r: reason for r, reason in zip(reference["row_id"], reference["reason"]) if reason is not None}
    assert spark_reasons == pandas_reasons


def test_rerun_leaves_identical_content(spark, cr):
    config = cr[0]
    before = [t.orderBy("row_id").collect() for t in _tables(spark, config)]
    _run(spark, config)
    after = [t.orderBy("row_id").collect() for t in _tables(spark, config)]
    assert before == after
    runs = spark.table(Catalog.from_config(config).name(Table.RUNS)).where("stage = 'clean'").collect()
    assert len(runs) == 2 and all(r.inputs and r.outputs for r in runs)


def test_row_id_survives_reordered_input(spark, make_config, tmp_path):
    raw = pd.read_parquet(SHARED_DATA / "cr" / "train.parquet")
    raw.iloc[:1800].to_parquet(tmp_path / "a.parquet")
    raw.iloc[1800:].to_parquet(tmp_path / "b.parquet")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    raw.sample(frac=1.0, random_state=1).iloc[:2000].to_parquet(shuffled / "x.parquet")
    raw.sample(frac=1.0, random_state=1).iloc[2000:].to_parquet(shuffled / "y.parquet")
    ids = []
    for folder in (tmp_path, shuffled):
        config = make_config("cr", "dataset.holdout_fraction=0", f"dataset.train.path={folder}")
        ingest(spark, config)
        bronze = spark.table(Catalog.from_config(config).name(Table.BRONZE))
        ids.append(sorted(r.row_id for r in bronze.select("row_id").collect()))
    assert ids[0] == ids[1] and len(set(ids[0])) == len(raw)


def test_majority_policy_keeps_majority_label(spark, make_config, tmp_path):
    rows = [
        ("1", "great phone", "positive"),
        ("2", "great  phone", "positive"),
        ("3", "great phone", "negative"),
        ("4", "tie text", "positive"),
        ("5", "tie text", "negative"),
        ("6", "other", "negative"),
    ]
    path = tmp_path / "conflicts.parquet"
    pd.DataFrame(rows, columns=["id", "text", "label"]).to_parquet(path)
    for policy, expected in [
        ("quarantine", {"label_conflict": 5}),
        ("majority", {"label_conflict": 3, "duplicate": 1}),
    ]:
        config = make_config(
            "cr", f"dataset.train.path={path}", "dataset.holdout_fraction=0", f"clean.conflict_policy={policy}"
        )
        counts = _run(spark, config)
        assert {k: v for k, v in counts.items() if k in REASONS} == expected, policy
        kept = {(r.text, r.label) for r in _tables(spark, config)[1].collect()}
        if policy == "majority":
            assert ("great phone", "positive") in kept and ("tie text", "positive") not in kept


def test_rule_reasons(spark, make_config, tmp_path):
    rows = [
        ("1", None, "positive", "missing_text"),
        ("2", "   ", "positive", "missing_text"),
        ("3", "fine text", None, "missing_label"),
        ("4", "bad \ufffd bytes", "positive", "invalid_encoding"),
        ("5", "x" * 1_000_000, "positive", "too_long"),
        ("6", "odd label", "neutral", "invalid_label"),
        ("7", "Cafe\u0301  ok", "positive", None),
    ]
    path = tmp_path / "rules.parquet"
    pd.DataFrame([r[:3] for r in rows], columns=["id", "text", "label"]).to_parquet(path)
    config = make_config("cr", f"dataset.train.path={path}", "dataset.holdout_fraction=0", "clean.lowercase=true")
    _run(spark, config)
    bronze, clean_rows, quarantine = _tables(spark, config)
    by_source = dict(
        quarantine.join(bronze.select("row_id", "source_id"), "row_id").select("source_id", "reason").collect()
    )
    assert by_source == {r[0]: r[3] for r in rows if r[3]}
    assert [r.text for r in clean_rows.collect()] == ["caf\u00e9 ok"]  # NFC, whitespace, lower-cased
    too_long = quarantine.where("reason = 'too_long'").first()
    assert too_long.detail == "1000000 characters"


def test_near_duplicates_flagged_not_dropped(spark, make_config, tmp_path):
    base = "the battery life of this camera is excellent and the pictures are sharp"
    rows = [
        ("1", base, "positive"),
        ("2", base + " !", "positive"),
        ("3", base.replace("excellent", "excellent,"), "negative"),
        ("4", "completely unrelated sentence about a broken charger", "negative"),
    ]
    path = tmp_path / "near.parquet"
    pd.DataFrame(rows, columns=["id", "text", "label"]).to_parquet(path)
    config = make_config("cr", f"dataset.train.path={path}", "dataset.holdout_fraction=0")
    counts = _run(spark, config)
    catalog = Catalog.from_config(config)
    pairs = spark.table(catalog.name(Table.NEAR_DUPLICATES)).join(
        spark.table(catalog.name(Table.BRONZE)).select(F.col("row_id").alias("row_id_a"), F.col("source_id").alias("a")),
        "row_id_a",
    ).join(
        spark.table(catalog.name(Table.BRONZE)).select(F.col("row_id").alias("row_id_b"), F.col("source_id").alias("b")),
        "row_id_b",
    )
    found = {frozenset((r.a, r.b)): r for r in pairs.collect()}
    assert set(found) == {frozenset(p) for p in [("1", "2"), ("1", "3"), ("2", "3")]}
    assert found[frozenset(("1", "3"))].same_label is False
    assert all(r.jaccard_estimate >= 0.8 for r in found.values())
    assert counts["clean"] == 4
