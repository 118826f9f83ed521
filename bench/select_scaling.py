"""Scaling of the distributed selection: time of :func:`dqe.select.select_frame` as N grows at a fixed partition size.

N = 5,000, 10,000, 20,000 and 40,000 real MiniLM embeddings of the shared texts with their labels (the first N rows
of one fixed shuffle of the 50,000 rows of ``select_bench.real_embeddings`` and ``select_quality.labels_for``, so
that every N has the same mix of data sets and labels), ``max_rows_per_partition`` = 5,000, the
centroid criterion, everything else at the config defaults. The timed part is the whole Spark selection without
Delta I/O (buckets, quotas, greedy per partition, merge, global rank), materialised with ``localCheckpoint``; the
input DataFrame is built and cached before timing. A warm-up run first (JVM JIT, Python worker start) is not counted.
Each N runs ``--repeats`` times and the fastest counts, since on a shared machine other load only ever adds time.

Reported per N: seconds, seconds per 1,000 rows, partitions (labels × semantic buckets; all labels of the
mix, with k-means buckets added as labels outgrow the bound) and
``linearity`` = (t_N / t_smallest) / (N / N_smallest), where 1.0 is perfectly linear growth. Writes
``bench/results/select_scaling.json`` with the machine's load averages at start and end.

    .venv/bin/python bench/select_scaling.py            # full run (first encodes 50,000 texts into bench/.cache/)
    .venv/bin/python bench/select_scaling.py --quick    # smoke run: random unit vectors, tiny N, no JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_bench import REAL_ROWS, machine, random_embeddings, real_embeddings  # noqa: E402
from select_quality import labels_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "select_scaling.json"
ROWS_SCHEMA = "row_id string, label string, vector array<float>"


def timed_selection(spark, rows, cfg) -> tuple[float, dict]:
    """Seconds for one materialised ``select_frame`` run, and the shape of its output."""
    from dqe.select import select_frame

    started = time.perf_counter()
    result = select_frame(spark, rows, cfg).localCheckpoint()
    seconds = time.perf_counter() - started
    shape = result.agg(
        F.count(F.lit(1)).alias("output_rows"),
        F.countDistinct("row_id").alias("distinct_row_ids"),
        F.countDistinct("label").alias("labels"),
        F.countDistinct("partition").alias("partitions"),
        F.sum((F.col("split") == "sampled").cast("int")).alias("sampled"),
    ).first().asDict()
    shape["largest_partition_rows"] = result.groupBy("partition").count().agg(F.max("count")).first()[0]
    return seconds, shape


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes on random vectors, no JSON written")
    parser.add_argument("--sizes", type=int, nargs="*", help="row counts (default 5000 10000 20000 40000)")
    parser.add_argument("--max-rows-per-partition", type=int, help="partition bound (default 5000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per size, fastest counts (default 3)")
    args = parser.parse_args()
    sizes = sorted(args.sizes or ([400, 800] if args.quick else [5_000, 10_000, 20_000, 40_000]))
    bound = args.max_rows_per_partition or (200 if args.quick else 5_000)
    repeats = args.repeats or (1 if args.quick else 3)

    from dqe.config import load_config
    from dqe.spark import build_local_session

    report = {
        "description": (
            "dqe.select.select_frame (Spark selection without Delta I/O) as N grows at a fixed partition bound; "
            "fastest of the repeats after an uncounted warm-up; linearity = (t_N / t_smallest) / (N / N_smallest)"
        ),
        "command": "bench/select_scaling.py " + " ".join(sys.argv[1:]),
        "data": "random unit vectors" if args.quick else "MiniLM embeddings of the shared texts (real), their labels",
        "machine": machine(),
    }
    # The quick run must not need the embedding cache, which takes minutes to build the first time.
    pool = sizes[-1] if args.quick else REAL_ROWS
    # One fixed shuffle of the pool, so that every N holds the same mix of data sets and labels (the shared texts
    # come grouped by data set) and the partition count grows with N alone.
    shuffle = np.random.default_rng(0).permutation(pool)
    vectors = (random_embeddings if args.quick else real_embeddings)(pool)[shuffle]
    labels = labels_for(pool)[shuffle]
    overrides = ["spark.hive_metastore=false", "storage.work_dir=/tmp/dqe_select_scaling"]
    config = load_config(dataset="mr", overrides=overrides)
    cfg = config.select.model_copy(update={"criterion": "centroid", "max_rows_per_partition": bound})
    spark = build_local_session(config)
    report["settings"] = {
        "criterion": cfg.criterion,
        "ratio": cfg.ratio,
        "max_rows_per_partition": bound,
        "merge_oversample": cfg.merge_oversample,
        "repeats": repeats,
        "spark_master": spark.sparkContext.master,
        "shuffle_partitions": config.spark.shuffle_partitions,
    }

    def rows_frame(n_rows: int):
        frame = pd.DataFrame(
            {"row_id": [f"r{i:06d}" for i in range(n_rows)], "label": labels[:n_rows], "vector": list(vectors[:n_rows])}
        )
        return spark.createDataFrame(frame, ROWS_SCHEMA).localCheckpoint()

    warmup_seconds, _ = timed_selection(spark, rows_frame(sizes[0]), cfg)
    report["warmup_seconds"] = round(warmup_seconds, 2)
    print(f"warm-up n={sizes[0]}: {warmup_seconds:.1f}s (not counted)", flush=True)
    results: list[dict] = []
    smallest: tuple[int, float] | None = None  # (rows, seconds) of the smallest N, the linearity reference
    for n_rows in sizes:
        rows = rows_frame(n_rows)
        runs = [timed_selection(spark, rows, cfg) for _ in range(repeats)]
        seconds, shape = min(runs, key=lambda run: run[0])
        if shape["output_rows"] != n_rows or shape["distinct_row_ids"] != n_rows:
            raise RuntimeError(
                f"n={n_rows}: the selection has {shape['output_rows']} rows ({shape['distinct_row_ids']} distinct)"
            )
        smallest = smallest or (n_rows, seconds)
        results.append(
            {
                "rows": n_rows,
                "seconds": round(seconds, 2),
                "runs_seconds": [round(run[0], 2) for run in runs],
                "seconds_per_1000_rows": round(1000 * seconds / n_rows, 3),
                **{key: shape[key] for key in ("partitions", "largest_partition_rows", "labels", "sampled")},
                "linearity": round((seconds / smallest[1]) / (n_rows / smallest[0]), 3),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    spark.stop()
    report["results"] = results
    # t = fixed + per_row · N by least squares: the fixed part is Spark's per-job overhead, the slope the real cost.
    slope, intercept = np.polyfit([r["rows"] for r in results], [r["seconds"] for r in results], 1)
    report["linear_fit"] = {"fixed_seconds": round(float(intercept), 2), "seconds_per_1000_rows": round(1000 * float(slope), 3)}
    print(json.dumps(report["linear_fit"]), flush=True)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.quick:
        print("quick run: no JSON written")
    else:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
