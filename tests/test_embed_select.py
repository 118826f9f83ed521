"""Embed and select stages on real Spark + Delta with the offline MiniLM model."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from dqe.algorithms.greedy import check_trace
from dqe.catalog import Catalog, Table
from dqe.clean import clean
from dqe.embed import embed, encode
from dqe.errors import InputError
from dqe.ingest import ingest
from dqe.select import largest_remainder, select

from conftest import SHARED_DATA


@pytest.fixture(scope="module")
def small(spark, make_config, tmp_path_factory):
    raw = pd.read_parquet(SHARED_DATA / "sst2" / "train.parquet").iloc[:400].copy()
    raw.loc[0, "text"] = " ".join(["very long review"] * 200)  # > 256 word pieces: truncated
    path = tmp_path_factory.mktemp("small") / "small.parquet"
    raw.to_parquet(path)
    config = make_config("sst2", f"dataset.train.path={path}", "select.max_rows_per_partition=60")
    ingest(spark, config)
    clean(spark, config)
    summary = embed(spark, config)
    return config, summary, path


def _table(spark, config, table):
    return spark.table(Catalog.from_config(config).name(table))


def _config_with_tables(spark, make_config, small, clean_rows, vectors, *overrides):
    """The config of a fresh schema whose clean and embeddings tables are the given frames."""
    config = make_config("sst2", f"dataset.train.path={small[2]}", *overrides)
    catalog = Catalog.from_config(config)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {catalog.namespace}")
    clean_rows.write.format("delta").saveAsTable(catalog.name(Table.CLEAN))
    vectors.write.format("delta").saveAsTable(catalog.name(Table.EMBEDDINGS))
    return config


def test_embeddings_cover_clean_rows_and_match_direct_encode(spark, small):
    config, summary, _ = small
    vectors = _table(spark, config, Table.EMBEDDINGS)
    clean_rows = _table(spark, config, Table.CLEAN)
    assert vectors.count() == clean_rows.count() == summary["embedded"]
    assert summary["truncated"] == 1
    sample = clean_rows.join(vectors, "row_id").orderBy("row_id").limit(20).toPandas()
    direct, _ = encode(sample["text"].tolist(), config.embed)
    stored = np.stack(sample["vector"].to_numpy())
    assert stored.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(stored, direct, atol=1e-5)


def test_embedding_is_incremental(spark, make_config, small):
    config, _, path = small
    assert embed(spark, config)["embedded"] == 0
    raw = pd.read_parquet(path)
    raw.loc[5, "text"] = raw.loc[5, "text"] + " and then some"
    raw.to_parquet(path)
    ingest(spark, config)
    clean(spark, config)
    summary = embed(spark, config)
    assert summary["embedded"] == 1
    vectors = _table(spark, config, Table.EMBEDDINGS)
    assert vectors.count() == vectors.select("row_id").distinct().count()


@pytest.fixture(scope="module")
def selected(spark, small):
    config = small[0]
    return config, select(spark, config)


def test_every_clean_row_once_with_ratio_per_label(spark, selected):
    config, _ = selected
    selection = _table(spark, config, Table.SELECTION)
    clean_rows = _table(spark, config, Table.CLEAN)
    assert selection.count() == clean_rows.count() == selection.select("row_id").distinct().count()
    assert selection.join(clean_rows, "row_id", "left_anti").count() == 0
    per_label = selection.groupBy("label").agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.when(F.col("split") == "sampled", 1).otherwise(0)).alias("s")
    )
    for row in per_label.collect():
        assert abs(row.s - 0.5 * row.n) <= 1, row


def test_partitions_are_bounded_and_ranks_form_a_permutation(spark, selected):
    config, _ = selected
    selection = _table(spark, config, Table.SELECTION)
    sizes = [r["count"] for r in selection.groupBy("partition").count().collect()]
    assert max(sizes) <= 60 and len(sizes) >= 6
    ranks = sorted(r["rank"] for r in selection.where("split = 'sampled'").select("rank").collect())
    assert ranks == list(range(len(ranks)))
    assert selection.where("split = 'unsampled' AND rank IS NOT NULL").count() == 0


def test_each_partition_is_a_valid_greedy_trace(spark, selected):
    config, _ = selected
    frame = (
        _table(spark, config, Table.SELECTION)
        .join(_table(spark, config, Table.EMBEDDINGS), "row_id")
        .select("partition", "row_id", "local_rank", "vector")
        .toPandas()
    )
    for _, part in frame.groupby("partition"):
        part = part.sort_values("row_id").reset_index(drop=True)
        picked = part[part["local_rank"].notna()].sort_values("local_rank")
        vectors = np.stack(part["vector"].to_numpy())
        check_trace(vectors, picked.index.to_numpy(), "centroid")


def test_selection_is_deterministic_and_kcenter_works(spark, selected, make_config, small):
    config, _ = selected
    first = _table(spark, config, Table.SELECTION).drop("run_id").orderBy("row_id").collect()
    select(spark, config)
    assert _table(spark, config, Table.SELECTION).drop("run_id").orderBy("row_id").collect() == first
    kcenter = config.model_copy(update={"select": config.select.model_copy(update={"criterion": "kcenter"})})
    summary = select(spark, kcenter)
    assert summary["criterion"] == "kcenter"
    assert _table(spark, config, Table.SELECTION).where("criterion = 'kcenter'").count() == len(first)


def test_missing_embeddings_are_a_clear_error(spark, small, make_config):
    config = small[0]
    other = make_config("sst2", f"dataset.train.path={small[2]}", "embed.model=some/other-model")
    catalog = Catalog.from_config(other)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {catalog.namespace}")
    for table in (Table.CLEAN, Table.EMBEDDINGS):
        _table(spark, config, table).write.format("delta").mode("overwrite").saveAsTable(catalog.name(table))
    with pytest.raises(InputError, match="have no current embedding for model some/other-model: run dqe embed"):
        select(spark, other)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda v: [float("nan")] + v[1:], r"1 embeddings contain NaN or null values \(for example row_id {row_id}\)"),
        (lambda v: [0.0] * len(v), r"1 embeddings are zero vectors \(for example row_id {row_id}\)"),
        (lambda v: v[:-1], "different dimensions"),
    ],
)
def test_bad_vectors_are_a_clear_error(spark, small, make_config, corrupt, message):
    config = small[0]
    embeddings = _table(spark, config, Table.EMBEDDINGS)
    vectors = embeddings.toPandas()
    vectors.at[0, "vector"] = corrupt(list(vectors.at[0, "vector"]))
    corrupted = spark.createDataFrame(vectors, embeddings.schema)
    other = _config_with_tables(spark, make_config, small, _table(spark, config, Table.CLEAN), corrupted)
    with pytest.raises(InputError, match=message.format(row_id=re.escape(vectors.at[0, "row_id"]))) as raised:
        select(spark, other)
    # embed keeps rows it already has: the advice must be to delete the broken ones first.
    assert str(raised.value).endswith("delete the broken rows from the embeddings table, then re-run dqe embed")


@pytest.mark.parametrize(
    "empty, message",
    [
        ({Table.CLEAN}, "nothing to select: the input has no rows"),
        ({Table.EMBEDDINGS}, "have no current embedding"),
        ({Table.CLEAN, Table.EMBEDDINGS}, "nothing to select: the input has no rows"),
    ],
    ids=["clean", "embeddings", "both"],
)
def test_empty_input_is_a_clear_error(spark, small, make_config, empty, message):
    config = small[0]
    clean_rows, vectors = [
        _table(spark, config, table).limit(0) if table in empty else _table(spark, config, table)
        for table in (Table.CLEAN, Table.EMBEDDINGS)
    ]
    with pytest.raises(InputError, match=message):
        select(spark, _config_with_tables(spark, make_config, small, clean_rows, vectors))


def test_zero_quotas_keep_every_row_once(spark, small, make_config):
    """At ratio 0.4 a label of one row keeps round(0.4) = 0 rows, and a label of three rows (quota 1) over
    partitions of at most two gives one of its partitions quota 0: both are k = 0 greedy calls."""
    config = small[0]
    clean_rows = _table(spark, config, Table.CLEAN)
    solo, trio = sorted(r["label"] for r in clean_rows.select("label").distinct().collect())[:2]
    subset = (
        clean_rows.where(F.col("label") == solo).orderBy("row_id").limit(1)
        .unionByName(clean_rows.where(F.col("label") == trio).orderBy("row_id").limit(3))
    )
    other = _config_with_tables(
        spark, make_config, small, subset, _table(spark, config, Table.EMBEDDINGS),
        "select.ratio=0.4", "select.max_rows_per_partition=2",
    )
    select(spark, other)
    selection = _table(spark, other, Table.SELECTION).toPandas()
    assert sorted(selection["row_id"]) == sorted(r["row_id"] for r in subset.collect())
    sampled = selection[selection["split"] == "sampled"]
    assert sampled.groupby("label").size().to_dict() == {trio: 1}
    assert sampled["rank"].tolist() == [0]
    candidates_per_partition = selection.groupby(["label", "partition"])["local_rank"].count()
    assert candidates_per_partition[solo].tolist() == [0]
    assert len(candidates_per_partition[trio]) >= 2 and candidates_per_partition[trio].min() == 0


def test_largest_remainder_sums_and_bounds():
    assert largest_remainder(5, [3, 3, 3]) == [2, 2, 1]
    assert sum(largest_remainder(50, [33, 33, 34])) == 50
    assert largest_remainder(0, [0, 0]) == [0, 0]
