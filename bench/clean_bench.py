"""Ingest + clean throughput: the Spark stages vs a single-process pandas implementation of the same rules.

Builds N rows (default 1,000,000) from the shared datasets, sampled with replacement (so exact duplicates are
plentiful), then injects label conflicts, empty texts and missing labels at known rates. Both sides read the same
Parquet file and produce clean/quarantine outputs; the JSON records rows/s of each, the ratio, peak memory (RSS
of the process tree, sampled), and whether the per-row reasons agree.

    .venv/bin/python bench/clean_bench.py [--rows 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SOURCES = ["mr/train", "subj/train", "sst2/train", "sst5/train", "trec/train", "clinc150/train", "cr/train"]
RATES = {"conflict": 0.01, "empty_text": 0.005, "missing_label": 0.002}


class PeakRss:
    """Peak resident memory of this process and its children (Spark's JVM and Python workers), sampled."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def build_input(rows: int, path: Path, seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    pool = pd.concat([pd.read_parquet(SHARED / f"{s}.parquet") for s in SOURCES], ignore_index=True)
    frame = pool.iloc[rng.integers(0, len(pool), rows)].reset_index(drop=True)[["text", "label"]]
    frame.insert(0, "id", [f"b{i}" for i in range(rows)])
    conflict = rng.random(rows) < RATES["conflict"]
    frame.loc[conflict, "label"] = frame.loc[conflict, "label"] + "_flipped"
    empty = rng.random(rows) < RATES["empty_text"]
    frame.loc[empty, "text"] = ""
    missing = rng.random(rows) < RATES["missing_label"]
    frame.loc[missing, "label"] = None
    frame.to_parquet(path, index=False)
    return {"rows": rows, "injected_conflict_rows": int(conflict.sum()), "empty_texts": int(empty.sum()), "missing_labels": int(missing.sum())}


def run_pandas(path: Path, out: Path, config) -> tuple[float, pd.DataFrame]:
    from dqe.algorithms.cleaning import clean_pandas

    started = time.perf_counter()
    raw = pd.read_parquet(path)
    raw["row_id"] = [
        hashlib.sha256(f"bench\x1f{i}\x1f0".encode()).hexdigest()[:16] for i in raw["id"]
    ]
    raw["parse_error"] = None
    result = clean_pandas(raw, config.clean, config.dataset.labels)
    quarantined = result["reason"].notna()
    result.loc[~quarantined, ["row_id", "text_norm", "label_norm"]].to_parquet(out / "pandas_clean.parquet")
    result.loc[quarantined, ["row_id", "text", "label", "reason", "duplicate_of"]].to_parquet(out / "pandas_quarantine.parquet")
    return time.perf_counter() - started, result[["row_id", "reason"]]


def run_spark(path: Path, work: Path, config) -> tuple[float, pd.DataFrame, dict]:
    from dqe.catalog import Catalog, Table
    from dqe.clean import clean
    from dqe.ingest import ingest
    from dqe.spark import build_local_session

    spark = build_local_session(config)
    spark.range(1).collect()  # session start is not part of the measured work
    started = time.perf_counter()
    ingest(spark, config)
    counts = clean(spark, config)
    seconds = time.perf_counter() - started
    catalog = Catalog.from_config(config)
    reasons = spark.table(catalog.name(Table.QUARANTINE)).select("row_id", "reason").toPandas()
    spark.stop()
    return seconds, reasons, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    args = parser.parse_args()
    rows = 50_000 if args.quick else args.rows

    from dqe.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source = tmp_path / "input.parquet"
        injected = build_input(rows, source)
        config = load_config(
            dataset="cr",
            overrides=[
                f"dataset.name=bench",
                f"dataset.train.path={source}",
                "dataset.labels=null",
                "dataset.holdout_fraction=0",
                "clean.near_duplicates.enabled=false",
                f"storage.work_dir={tmp_path / 'work'}",
                f"storage.warehouse_dir={tmp_path / 'work' / 'warehouse'}",
                "spark.hive_metastore=false",
                "spark.driver_memory=8g",
            ],
        )
        with PeakRss() as pandas_memory:
            pandas_seconds, pandas_reasons = run_pandas(source, tmp_path, config)
        with PeakRss() as spark_memory:
            spark_seconds, spark_reasons, counts = run_spark(source, tmp_path, config)

    pandas_map = dict(zip(pandas_reasons["row_id"], pandas_reasons["reason"]))
    pandas_map = {k: v for k, v in pandas_map.items() if isinstance(v, str)}
    spark_map = dict(zip(spark_reasons["row_id"], spark_reasons["reason"]))
    result = {
        "benchmark": "ingest+clean",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "input": injected,
        "near_duplicates": "disabled (exact rules only, as in the pandas baseline)",
        "spark": {"seconds": round(spark_seconds, 2), "rows_per_s": round(rows / spark_seconds), "peak_rss_gib": round(spark_memory.peak / 2**30, 2)},
        "pandas": {"seconds": round(pandas_seconds, 2), "rows_per_s": round(rows / pandas_seconds), "peak_rss_gib": round(pandas_memory.peak / 2**30, 2)},
        "spark_over_pandas_throughput": round(pandas_seconds / spark_seconds, 3),
        "quarantine_counts": {k: v for k, v in counts.items()},
        "outputs_agree": spark_map == pandas_map,
        "rows_disagreeing": len(set(spark_map.items()) ^ set(pandas_map.items())),
    }
    out = ROOT / "bench" / "results" / ("clean_bench_quick.json" if args.quick else "clean_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
