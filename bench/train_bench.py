"""Training and inference throughput of the Hugging Face ``encoder`` backend (offline all-MiniLM-L6-v2, SST-2).

Measured in one run, on this machine:

1. training examples/s — the Trainer's loop alone (``train_examples_per_second``) and the whole ``fit`` including
   model loading and saving — without DeepSpeed and with ZeRO-2 in process;
2. inference rows/s of the trained model — in process (``trainer.predict``, all cores) vs through Spark
   (``mlflow.pyfunc.spark_udf`` over a DataFrame, one task per core, one torch thread per task; the first pass
   starts the Python workers and loads the model in each, the second reuses the workers but, as in the infer stage,
   loads the model once per task again).

With CUDA, training and in-process inference are measured on the GPU as well.

Each figure comes with the CPU time the process tree spent (``cpu_seconds``; the driver, Spark's JVM and its Python
workers) and the rate per CPU-second. On a shared machine the wall-clock rates depend on what else runs (the load
average at start and end is recorded); the per-CPU-second rates much less.

    .venv/bin/python bench/train_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULT = ROOT / "bench" / "results" / "train_bench.json"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / "work" / "torch_extensions"))


def tree_cpu_seconds() -> float:
    """User + system CPU time of this process, its reaped children and its live descendants."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def measure_training(
    texts: list[str], labels: list[str], work: Path, deepspeed: str | None, use_gpu: bool, max_length: int
) -> tuple[Any, dict[str, float]]:
    from dqe.config import TrainConfig
    from dqe.trainers import make_trainer

    config = TrainConfig(
        backend="encoder",
        epochs=1,
        batch_size=16,
        max_length=max_length,
        deepspeed_config=deepspeed,
        use_gpu=use_gpu,
    )
    trainer = make_trainer(config, work_dir=work, device="cuda" if use_gpu else "cpu")
    cpu_before = tree_cpu_seconds()
    trainer.fit(texts, labels)
    cpu_seconds = tree_cpu_seconds() - cpu_before
    metrics = trainer.metrics_
    return trainer, {
        "rows": len(texts),
        "steps": metrics["train_steps"],
        "loop_examples_per_second": metrics["train_examples_per_second"],
        "fit_seconds": metrics["fit_seconds"],
        "fit_examples_per_second": len(texts) / metrics["fit_seconds"],
        "fit_cpu_seconds": cpu_seconds,
        "fit_examples_per_cpu_second": len(texts) / cpu_seconds,
        "final_epoch_loss": trainer.history_[-1]["train_loss"],
    }


def timed(rows: int, run: Any) -> dict[str, float]:
    cpu_before, started = tree_cpu_seconds(), time.perf_counter()
    run()
    seconds, cpu_seconds = time.perf_counter() - started, tree_cpu_seconds() - cpu_before
    return {
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "cpu_seconds": cpu_seconds,
        "rows_per_cpu_second": rows / cpu_seconds,
    }


def measure_in_process(trainer: Any, texts: list[str]) -> dict[str, float]:
    return {"rows": len(texts), **timed(len(texts), lambda: trainer.predict(texts))}


def measure_spark(trainer: Any, texts: list[str], work: Path) -> dict[str, Any]:
    import mlflow
    from pyspark.sql import functions as F

    from dqe.config import load_config
    from dqe.spark import build_local_session
    from dqe.trainers.pyfunc import SPARK_RESULT_TYPE, log_trainer

    config = load_config(
        dataset="sst2",
        overrides=[
            f"storage.work_dir={work}",
            f"storage.warehouse_dir={work / 'warehouse'}",
            "spark.hive_metastore=false",
            "spark.master=local[*]",
        ],
    )
    spark = build_local_session(config)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
        experiment = mlflow.create_experiment("bench", artifact_location=(work / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            model_uri = log_trainer(trainer).model_uri
        slots = spark.sparkContext.defaultParallelism
        predict = mlflow.pyfunc.spark_udf(
            spark,
            model_uri,
            result_type=SPARK_RESULT_TYPE,
            env_manager="local",
            model_config={"torch_threads": 1, "device": "cpu"},
        )
        frame = spark.createDataFrame(pd.DataFrame({"text": texts})).repartition(slots).cache()
        frame.count()
        predicted = frame.withColumn("p", predict(F.struct("text"))).select("p.predicted_label")
        passes = [timed(len(texts), lambda: predicted.write.format("noop").mode("overwrite").save()) for _ in "12"]
        return {"rows": len(texts), "tasks": slots, "cold": passes[0], "warm": passes[1]}
    finally:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a few minutes")
    args = parser.parse_args()

    import torch

    from dqe.config import PROJECT_ROOT

    train_rows, infer_rows, max_length = (64, 256, 64) if args.quick else (512, 2000, 64)
    data = pd.read_parquet(SHARED / "sst2" / "train.parquet").sample(n=train_rows + infer_rows, random_state=0)
    train_texts, train_labels = data["text"].tolist()[:train_rows], data["label"].tolist()[:train_rows]
    infer_texts = data["text"].tolist()[train_rows:]
    zero2 = str(PROJECT_ROOT / "conf" / "deepspeed" / "zero2.json")

    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_start": os.getloadavg(),
        },
        "settings": {"quick": args.quick, "model": "bundled all-MiniLM-L6-v2", "max_length": max_length, "batch": 16},
    }
    with tempfile.TemporaryDirectory(prefix="train-bench-") as folder:
        work = Path(folder)
        trainer, result["train_cpu"] = measure_training(train_texts, train_labels, work, None, False, max_length)
        _, result["train_cpu_zero2"] = measure_training(train_texts, train_labels, work, zero2, False, max_length)
        result["infer_in_process_cpu"] = measure_in_process(trainer, infer_texts)
        result["infer_spark_cpu"] = measure_spark(trainer, infer_texts, work)
        if torch.cuda.is_available():
            gpu_trainer, result["train_gpu"] = measure_training(train_texts, train_labels, work, None, True, max_length)
            result["infer_in_process_gpu"] = measure_in_process(gpu_trainer, infer_texts)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    spark_warm, in_process = result["infer_spark_cpu"]["warm"], result["infer_in_process_cpu"]
    result["spark_vs_in_process_cpu"] = {
        "wall_clock": spark_warm["rows_per_second"] / in_process["rows_per_second"],
        "per_cpu_second": spark_warm["rows_per_cpu_second"] / in_process["rows_per_cpu_second"],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    target = RESULT.with_name("train_bench_quick.json") if args.quick else RESULT
    target.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
