"""Near-duplicate flagging: MinHash over character shingles with banded LSH, from Spark primitives.

A pair becomes a candidate when all ``rows_per_band`` minhashes of at least one band agree (AND within a band,
OR across bands), which keeps candidate sets small; Spark MLlib's ``MinHashLSH`` lacks the AND step. Candidates
are kept when their estimated Jaccard similarity (the share of equal minhashes) reaches ``threshold``. Buckets
larger than ``max_bucket_size`` (e.g. thousands of one-word texts) are skipped rather than exploding into
quadratic pair lists. Nothing is dropped: pairs are written to ``near_duplicates`` for review.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dqe.config import NearDuplicateConfig

# The largest prime below 2^32: a, b, h < p keep a·h + b below 2^64, so uint64 arithmetic never wraps.
_PRIME = np.uint64(4_294_967_291)


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """Distinct hashes (< p) of the text's character ``size``-grams (the whole text when shorter)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < size:
        size = max(len(codes), 1)
        if len(codes) == 0:
            codes = np.zeros(1, dtype=np.uint64)
    hashes = np.zeros(len(codes) - size + 1, dtype=np.uint64)
    for offset in range(size):
        hashes = hashes * np.uint64(1_000_003) + codes[offset : len(codes) - size + 1 + offset]
    return np.unique(hashes % _PRIME)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(_PRIME), size=num_perm, dtype=np.uint64)
    b = rng.integers(0, int(_PRIME), size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signature(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min over shingles of the universal hash ``(a·h + b) mod p`` per permutation."""
    values = (np.outer(a, hashes) + b[:, None]) % _PRIME
    return values.min(axis=1).astype(np.int64)


def _signature_udf(cfg: NearDuplicateConfig):
    a, b = permutations(cfg.bands * cfg.rows_per_band, cfg.seed)
    size = cfg.shingle_size

    @F.pandas_udf("array<long>")
    def signature(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: minhash_signature(shingle_hashes(t, size), a, b))

    return signature


def flag_near_duplicates(clean: DataFrame, cfg: NearDuplicateConfig) -> DataFrame:
    """Pairs ``row_id_a < row_id_b`` with estimated Jaccard ≥ threshold, their labels and ``same_label``."""
    num_perm = cfg.bands * cfg.rows_per_band
    signed = clean.select("row_id", "label", _signature_udf(cfg)("text").alias("signature")).localCheckpoint()
    bands = signed.select(
        "row_id",
        F.posexplode(
            F.transform(
                F.sequence(F.lit(0), F.lit(cfg.bands - 1)),
                lambda band: F.xxhash64(F.slice("signature", band * cfg.rows_per_band + 1, cfg.rows_per_band)),
            )
        ).alias("band", "bucket"),
    )
    sizes = bands.groupBy("band", "bucket").count().where(F.col("count").between(2, cfg.max_bucket_size))
    members = bands.join(sizes.select("band", "bucket"), ["band", "bucket"])
    candidates = (
        members.alias("x")
        .join(members.alias("y"), (F.col("x.band") == F.col("y.band")) & (F.col("x.bucket") == F.col("y.bucket")))
        .where(F.col("x.row_id") < F.col("y.row_id"))
        .select(F.col("x.row_id").alias("row_id_a"), F.col("y.row_id").alias("row_id_b"))
        .distinct()
    )
    left = signed.select(F.col("row_id").alias("row_id_a"), F.col("label").alias("label_a"), F.col("signature").alias("sig_a"))
    right = signed.select(F.col("row_id").alias("row_id_b"), F.col("label").alias("label_b"), F.col("signature").alias("sig_b"))
    equal = F.aggregate(F.zip_with("sig_a", "sig_b", lambda x, y: F.when(x == y, 1).otherwise(0)), F.lit(0), lambda s, v: s + v)
    return (
        candidates.join(left, "row_id_a")
        .join(right, "row_id_b")
        .withColumn("jaccard_estimate", equal / F.lit(float(num_perm)))
        .where(F.col("jaccard_estimate") >= cfg.threshold)
        .select(
            "row_id_a",
            "row_id_b",
            "jaccard_estimate",
            "label_a",
            "label_b",
            (F.col("label_a") == F.col("label_b")).alias("same_label"),
        )
    )
