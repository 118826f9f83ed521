"""Embedding throughput: ``dqe``'s Spark iterator pandas UDF vs ``SentenceTransformer.encode`` in one process.

Both embed the same N shared texts (default 20,000: MR, SUBJ, ...) with the bundled all-MiniLM-L6-v2 on the
CPU (GPU when present), in the same run. The UDF side includes Spark's Arrow transfer and writing Parquet; the
direct side uses every core in one process. Writes ``bench/results/embed_bench.json`` with rows/s of each, the
UDF overhead, and the largest difference between the two sets of vectors.

    .venv/bin/python bench/embed_bench.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_bench import SHARED_DATA, TEXT_SOURCES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "embed_bench.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from sentence_transformers import SentenceTransformer

    from dqe.config import load_config
    from dqe.embed import embed_frame, pick_device
    from dqe.models import resolve_model
    from dqe.spark import build_local_session

    texts: list[str] = []
    for source in TEXT_SOURCES:
        texts += pd.read_parquet(SHARED_DATA / f"{source}.parquet")["text"].tolist()
    texts = texts[: args.rows]
    config = load_config(dataset="mr", overrides=["spark.hive_metastore=false", "storage.work_dir=/tmp/dqe_embed_bench"])
    device = pick_device(config.embed.device)

    load_at_start = os.getloadavg()
    model = SentenceTransformer(resolve_model(config.embed.model), device=device)
    started = time.perf_counter()
    direct = model.encode(texts, batch_size=config.embed.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    direct_seconds = time.perf_counter() - started
    del model

    spark = build_local_session(config)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.embed.max_records_per_batch))
    frame = spark.createDataFrame(
        pd.DataFrame({"row_id": [f"r{i:06d}" for i in range(len(texts))], "text": texts})
    ).repartition(spark.sparkContext.defaultParallelism * 4).localCheckpoint()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        embed_frame(frame, config.embed).write.parquet(f"{tmp}/vectors")
        udf_seconds = time.perf_counter() - started
        written = spark.read.parquet(f"{tmp}/vectors").select("row_id", "vector").toPandas().sort_values("row_id")
    spark.stop()
    udf_vectors = np.stack(written["vector"].to_numpy())
    result = {
        "rows": len(texts),
        "device": device,
        "cuda": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "direct_encode": {"seconds": round(direct_seconds, 1), "rows_per_s": round(len(texts) / direct_seconds, 1)},
        "spark_udf": {"seconds": round(udf_seconds, 1), "rows_per_s": round(len(texts) / udf_seconds, 1)},
        "udf_overhead": round(udf_seconds / direct_seconds - 1.0, 3),
        "max_abs_vector_difference": float(np.abs(udf_vectors - direct).max()),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
