"""The judge's verdict cache as a Delta table (``judge_cache``), keyed by pair hash.

Lookups read the table once per call; stored verdicts are buffered and MERGEd in one commit by :meth:`flush`,
so a run of many pairs costs one Delta transaction.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, fields
from typing import Sequence

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dqe.judge import JudgeVerdict
from dqe.lakehouse import last_commit, table_exists

CACHE_SCHEMA = "pair_hash string, verdict string, label string, reason string, model string, prompt_version string"
_STORED = [f.name for f in fields(JudgeVerdict) if f.name != "from_cache"]


class DeltaJudgeCache:
    """A :class:`dqe.judge.JudgeCache` backed by a Delta table."""

    def __init__(self, spark: SparkSession, table: str) -> None:
        self._spark = spark
        self._table = table
        self._pending: dict[str, JudgeVerdict] = {}
        self._lock = threading.Lock()

    def lookup(self, hashes: Sequence[str]) -> dict[str, JudgeVerdict]:
        if not hashes or not table_exists(self._spark, self._table):
            return {}
        rows = self._spark.table(self._table).where(F.col("pair_hash").isin(list(hashes))).collect()
        return {r["pair_hash"]: JudgeVerdict(**{name: r[name] for name in _STORED}) for r in rows}

    def store(self, records: Sequence[JudgeVerdict]) -> None:
        with self._lock:
            self._pending.update((r.pair_hash, r) for r in records)

    def flush(self) -> None:
        """Write buffered verdicts (replacing any with the same hash) in one commit."""
        from delta.tables import DeltaTable

        with self._lock:
            records, self._pending = list(self._pending.values()), {}
        if not records:
            return
        rows = [tuple(asdict(r)[name] for name in _STORED) for r in records]
        updates = self._spark.createDataFrame(rows, CACHE_SCHEMA).withColumn("cached_at", F.current_timestamp())
        if not table_exists(self._spark, self._table):
            updates.write.format("delta").saveAsTable(self._table)
            return
        (
            DeltaTable.forName(self._spark, self._table)
            .alias("t")
            .merge(updates.alias("s"), "t.pair_hash = s.pair_hash")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    def version(self) -> int | None:
        return last_commit(self._spark, self._table)[0] if table_exists(self._spark, self._table) else None
