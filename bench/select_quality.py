"""Quality of the distributed selection (partition → greedy → merge) against single-partition greedy.

On 20,000 real MiniLM embeddings of the shared MR and SUBJ texts (labels kept, 4 label groups), ``dqe``'s Spark
selection (:func:`dqe.select.select_frame`) runs with 1, 4, 16 and 64 partitions (``max_rows_per_partition`` =
rows / partitions) for both criteria. For each, the k-center radius (largest distance from an unsampled row to its
nearest sampled row of the same label) and the mean nearest-sampled distance, as ratios to the 1-partition run.
Writes ``bench/results/select_quality.json``.

    .venv/bin/python bench/select_quality.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_bench import SHARED_DATA, TEXT_SOURCES, real_embeddings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "select_quality.json"


def labels_for(n_rows: int) -> np.ndarray:
    labels: list[str] = []
    for source in TEXT_SOURCES:
        frame = pd.read_parquet(SHARED_DATA / f"{source}.parquet")
        labels += [f"{source.split('/')[0]}/{label}" for label in frame["label"]]
    return np.asarray(labels[:n_rows], dtype=object)


def coverage(vectors: np.ndarray, labels: np.ndarray, sampled: np.ndarray) -> tuple[float, float]:
    """(k-center radius, mean nearest-sampled distance) over unsampled rows, within each label."""
    distances = []
    for label in np.unique(labels):
        mask = labels == label
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors[mask & sampled])
        similarity, _ = index.search(vectors[mask & ~sampled], 1)
        distances.append(np.sqrt(np.clip(2.0 - 2.0 * similarity[:, 0], 0.0, None)))
    joined = np.concatenate(distances)
    return float(joined.max()), float(joined.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()

    from dqe.config import load_config
    from dqe.select import select_frame
    from dqe.spark import build_local_session

    vectors = real_embeddings(args.rows).astype(np.float32)
    labels = labels_for(args.rows)
    row_ids = np.asarray([f"r{i:06d}" for i in range(args.rows)], dtype=object)
    config = load_config(dataset="mr", overrides=["spark.hive_metastore=false", "storage.work_dir=/tmp/dqe_select_quality"])
    spark = build_local_session(config)
    rows = spark.createDataFrame(
        pd.DataFrame({"row_id": row_ids, "label": labels, "vector": list(vectors)}),
        "row_id string, label string, vector array<float>",
    ).localCheckpoint()
    results = []
    for criterion in ("centroid", "kcenter"):
        baseline = None
        for partitions in (1, 4, 16, 64):
            bound = max(2, math.ceil(args.rows / partitions))
            cfg = config.select.model_copy(update={"criterion": criterion, "max_rows_per_partition": bound})
            started = time.perf_counter()
            chosen = select_frame(spark, rows, cfg).select("row_id", "split", "partition").toPandas()
            seconds = time.perf_counter() - started
            split = dict(zip(chosen["row_id"], chosen["split"]))
            sampled = np.asarray([split[r] == "sampled" for r in row_ids])
            radius, mean_distance = coverage(vectors, labels, sampled)
            baseline = baseline or (radius, mean_distance)
            results.append(
                {
                    "criterion": criterion,
                    "partitions_requested": partitions,
                    "partitions": int(chosen["partition"].nunique()),
                    "max_rows_per_partition": bound,
                    "sampled": int(sampled.sum()),
                    "kcenter_radius": round(radius, 4),
                    "mean_nearest_sampled_distance": round(mean_distance, 4),
                    "radius_ratio_vs_1": round(radius / baseline[0], 3),
                    "mean_distance_ratio_vs_1": round(mean_distance / baseline[1], 3),
                    "seconds": round(seconds, 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    spark.stop()
    RESULTS.write_text(
        json.dumps({"rows": args.rows, "data": "MiniLM embeddings of MR + SUBJ (real)", "results": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
