"""Select: ``clean`` + ``embeddings`` → ``selection`` (row_id, label, split, partition, rank, local_rank,
criterion, run_id): a diverse ``ratio`` of each label is ``sampled``, the rest ``unsampled``.

How it scales:

1. **Partitions** of at most ``max_rows_per_partition`` rows, keyed by label × semantic bucket: each label with
   more rows than the bound is split by k-means (FAISS) on its vectors into ``ceil(n / bound)`` buckets, and
   buckets that k-means left oversized are cut by ``row_id`` order into pieces that fit.
2. **Quotas**: each label keeps ``round(ratio · n_label)`` rows (so the ratio holds per label within one row),
   shared among its partitions by largest remainder.
3. **Greedy per partition** (``applyInPandas``): :func:`greedy_select` picks ``ceil(quota · merge_oversample)``
   candidates, starting from a seeded random row of the partition.
4. **Merge**: per label, when the union of its candidates fits in one partition, a second greedy round over the
   union picks the label's quota (the two-round scheme of GreeDi / composable coresets, which for k-center keeps
   a constant-factor guarantee); a larger union is cut by fractional local rank (``local_rank / candidates``),
   which keeps every partition's prefix. The global ``rank`` orders sampled rows by their fractional rank within
   the label's final order, so any prefix of ``rank`` is spread over labels and partitions in proportion.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from dqe.algorithms.greedy import greedy_select
from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig, SelectConfig
from dqe.embed import model_identifier
from dqe.errors import InputError
from dqe.lakehouse import stage_fingerprint, stage_run

__all__ = ["greedy_select", "select", "largest_remainder", "select_frame"]

CANDIDATE_SCHEMA = "row_id string, label string, partition string, local_rank int, candidates int"
MERGE_SCHEMA = "row_id string, label string, label_rank int"


def largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (Hamilton's method; ties to the first)."""
    weight_sum = sum(weights)
    if weight_sum == 0:
        return [0] * len(weights)
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return [min(s, w) for s, w in zip(shares, weights)]


# embed skips rows it already has (same row, text and model), so re-running it alone would keep broken vectors.
REPAIR_EMBEDDINGS = "delete the broken rows from the embeddings table, then re-run dqe embed"


def _start_position(key: str, n: int, seed: int) -> int:
    """A seeded random start that depends only on the partition key, not on row order or worker."""
    digest = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16)
    return int(np.random.default_rng([seed, digest, n]).integers(n))


def _stack(vectors: pd.Series, key: str) -> np.ndarray:
    dims = {len(v) for v in vectors}
    if len(dims) != 1:
        raise InputError(f"partition {key}: vectors of different dimensions {sorted(dims)}: {REPAIR_EMBEDDINGS}")
    return np.stack(vectors.to_numpy()).astype(np.float32)


def _greedy_rows(frame: pd.DataFrame, k: int, key: str, cfg: SelectConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows sorted by row_id (so results do not depend on row order) and the greedy order of k of them."""
    frame = frame.sort_values("row_id", kind="stable").reset_index(drop=True)
    if k == 0:
        return frame, np.empty(0, dtype=np.int64)
    vectors = _stack(frame["vector"], key)
    order = greedy_select(vectors, k, criterion=cfg.criterion, start=_start_position(key, len(frame), cfg.seed), device=cfg.device)
    return frame, order


def _semantic_buckets(spark: SparkSession, rows: DataFrame, bound: int, seed: int) -> DataFrame:
    """Add ``partition`` = label/bucket/piece with every partition at most ``bound`` rows."""
    import faiss

    sizes = {r["label"]: r["count"] for r in rows.groupBy("label").count().collect()}
    centroids: dict[str, np.ndarray] = {}
    for label, size in sizes.items():
        buckets = math.ceil(size / bound)
        if buckets > 1:
            fraction = min(1.0, 256 * buckets / size)
            sample = rows.where(F.col("label") == label).sample(fraction=fraction, seed=seed).select("vector").collect()
            matrix = np.asarray([r["vector"] for r in sample], dtype=np.float32)
            kmeans = faiss.Kmeans(matrix.shape[1], buckets, niter=20, seed=seed, spherical=True)
            kmeans.train(matrix)
            centroids[label] = kmeans.centroids.copy()
    broadcast = spark.sparkContext.broadcast(centroids)

    @F.pandas_udf("int")
    def bucket_of(labels: pd.Series, vectors: pd.Series) -> pd.Series:
        result = np.zeros(len(labels), dtype=np.int32)
        for label, centres in broadcast.value.items():
            mask = (labels == label).to_numpy()
            if mask.any():
                matrix = np.stack(vectors[mask].to_numpy()).astype(np.float32)
                result[mask] = np.argmax(matrix @ centres.T, axis=1)
        return pd.Series(result)

    bucketed = rows.withColumn("bucket", bucket_of("label", "vector"))
    piece = (F.row_number().over(Window.partitionBy("label", "bucket").orderBy("row_id")) - 1) / bound
    return bucketed.withColumn(
        "partition",
        F.concat_ws("/", "label", F.col("bucket").cast("string"), F.floor(piece).cast("string")),
    ).drop("bucket")


def select_frame(spark: SparkSession, rows: DataFrame, cfg: SelectConfig) -> DataFrame:
    """rows (row_id, label, vector) → row_id, label, split, partition, rank, local_rank (no Delta I/O)."""
    partitioned = _semantic_buckets(spark, rows, cfg.max_rows_per_partition, cfg.seed).localCheckpoint()
    part_sizes = partitioned.groupBy("label", "partition").count().orderBy("label", "partition").collect()
    if not part_sizes:
        raise InputError("nothing to select: the input has no rows (is the clean table empty? run dqe clean)")
    quotas: dict[str, int] = {}
    by_label: dict[str, list] = {}
    for r in part_sizes:
        by_label.setdefault(r["label"], []).append(r)
    for label, parts in by_label.items():
        label_quota = round(cfg.ratio * sum(p["count"] for p in parts))
        for part, share in zip(parts, largest_remainder(label_quota, [p["count"] for p in parts])):
            quotas[part["partition"]] = min(part["count"], math.ceil(share * cfg.merge_oversample))
    label_quotas = {label: round(cfg.ratio * sum(p["count"] for p in parts)) for label, parts in by_label.items()}

    def pick_candidates(frame: pd.DataFrame) -> pd.DataFrame:
        key = frame["partition"].iloc[0]
        k = quotas[key]
        frame, order = _greedy_rows(frame, k, key, cfg)
        local_rank = np.full(len(frame), -1, dtype=np.int64)
        local_rank[order] = np.arange(len(order))
        out = frame[["row_id", "label", "partition"]].copy()
        out["local_rank"] = local_rank
        out["candidates"] = k
        return out

    candidates = partitioned.groupBy("partition").applyInPandas(pick_candidates, CANDIDATE_SCHEMA).localCheckpoint()
    chosen = candidates.where("local_rank >= 0").join(partitioned.select("row_id", "vector"), "row_id")

    def merge_label(frame: pd.DataFrame) -> pd.DataFrame:
        label = frame["label"].iloc[0]
        quota = label_quotas[label]
        if len(frame) <= cfg.max_rows_per_partition:
            frame, order = _greedy_rows(frame, quota, f"merge/{label}", cfg)
        else:
            fraction = (frame["local_rank"] + 1) / frame["candidates"]
            frame = frame.assign(_f=fraction).sort_values(["_f", "row_id"]).reset_index(drop=True)
            order = np.arange(quota)
        label_rank = np.full(len(frame), -1, dtype=np.int64)
        label_rank[order] = np.arange(len(order))
        return pd.DataFrame({"row_id": frame["row_id"], "label": label, "label_rank": label_rank})

    merged = chosen.groupBy("label").applyInPandas(merge_label, MERGE_SCHEMA).where("label_rank >= 0")
    quota_column = F.create_map(*[x for label, q in label_quotas.items() for x in (F.lit(label), F.lit(q))])
    ranked = merged.withColumn(
        "rank",
        F.row_number().over(Window.orderBy((F.col("label_rank") + 1) / quota_column[F.col("label")], "label", "row_id"))
        - 1,
    )
    return (
        candidates.select("row_id", "label", "partition", "local_rank")
        .join(ranked.select("row_id", "rank"), "row_id", "left")
        .select(
            "row_id",
            "label",
            F.when(F.col("rank").isNotNull(), "sampled").otherwise("unsampled").alias("split"),
            "partition",
            F.col("rank").cast("int").alias("rank"),
            F.when(F.col("local_rank") >= 0, F.col("local_rank")).cast("int").alias("local_rank"),
        )
    )


def select(spark: SparkSession, config: DqeConfig) -> dict[str, object]:
    cfg = config.select
    catalog = Catalog.from_config(config)
    model_name = model_identifier(config.embed)
    with stage_run(spark, catalog, "select", stage_fingerprint(config, "select")) as run:
        clean = run.read(spark, catalog.name(Table.CLEAN)).select("row_id", "label", F.sha2("text", 256).alias("h"))
        vectors = run.read(spark, catalog.name(Table.EMBEDDINGS)).where(F.col("model") == model_name)
        rows = clean.join(
            vectors.select("row_id", F.col("text_hash").alias("h"), "vector"), ["row_id", "h"], "left"
        ).localCheckpoint()
        missing = rows.where(F.col("vector").isNull()).count()
        if missing:
            raise InputError(f"{missing} clean rows have no current embedding for model {model_name}: run dqe embed")
        has_nan = F.exists("vector", lambda x: x.isNull() | F.isnan(x))
        # The embed stage L2-normalises every vector, so a zero vector can only be a broken embedding.
        all_zero = F.forall("vector", lambda x: x == 0)
        checks = rows.agg(
            F.sum(has_nan.cast("int")).alias("nan_rows"),
            F.min(F.when(has_nan, F.col("row_id"))).alias("nan_example"),
            F.sum(all_zero.cast("int")).alias("zero_rows"),
            F.min(F.when(all_zero, F.col("row_id"))).alias("zero_example"),
            F.collect_set(F.size("vector")).alias("dims"),
        ).first()
        if checks["nan_rows"]:
            raise InputError(
                f"{checks['nan_rows']} embeddings contain NaN or null values (for example row_id "
                f"{checks['nan_example']}): {REPAIR_EMBEDDINGS}"
            )
        if checks["zero_rows"]:
            raise InputError(
                f"{checks['zero_rows']} embeddings are zero vectors (for example row_id {checks['zero_example']}): "
                f"{REPAIR_EMBEDDINGS}"
            )
        if len(checks["dims"]) > 1:
            raise InputError(f"embeddings have different dimensions {sorted(checks['dims'])}: {REPAIR_EMBEDDINGS}")
        selection = select_frame(spark, rows.drop("h"), cfg).select(
            "*", F.lit(cfg.criterion).alias("criterion"), F.lit(run.run_id).alias("run_id")
        )
        written = run.write(selection, catalog.name(Table.SELECTION))
        counts = {
            f"{r['label']}/{r['split']}": r["count"]
            for r in spark.table(catalog.name(Table.SELECTION)).groupBy("label", "split").count().collect()
        }
    return {"rows": written, "criterion": cfg.criterion, **counts}
