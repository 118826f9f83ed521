"""Benchmark of greedy selection: the pruned method of ``dqe.algorithms.greedy`` against two baselines.

(A) naive — recompute every distance at every pick (``naive_greedy``; too slow to finish at n = 50,000, so it is
    timed on its first picks and extrapolated linearly per pick);
(B) incremental — one float32 matrix-vector product per pick, the usual fast implementation.

Every output of (B) and of the pruned method is validated with ``check_trace``. Data: real sentence embeddings of
the shared data sets (all-MiniLM-L6-v2, cached under ``bench/.cache/``) and random unit vectors. Writes
``bench/results/select_bench.json``.

    .venv/bin/python bench/select_bench.py            # full run (about 20 minutes on two cores)
    .venv/bin/python bench/select_bench.py --quick    # smoke run (seconds)

Timings are only comparable within one run: the script times both baselines next to the pruned method and
records the machine load, because on a busy two-core machine multi-threaded BLAS slows down erratically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from dqe.algorithms.greedy import check_trace, greedy_select, naive_greedy

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS = BENCH_DIR / "results" / "select_bench.json"
SHARED_DATA = BENCH_DIR.parents[1] / "shared" / "data"
# Short texts first (encoding cost grows with length); 61,133 rows in all.
TEXT_SOURCES = ("mr/train", "subj/train", "sst5/train", "clinc150/train", "cr/train", "trec/train", "ag_news/test")
REAL_ROWS = 50_000


# ---------------------------------------------------------------------------------------------------------- data


def real_embeddings(n_rows: int) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings of the first ``n_rows`` shared texts (cached as .npy)."""
    cache = CACHE_DIR / f"real_minilm_{REAL_ROWS}.npy"
    if not cache.exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import pandas as pd
        from sentence_transformers import SentenceTransformer

        from dqe.models import bundled_model_path

        texts: list[str] = []
        for source in TEXT_SOURCES:
            texts += pd.read_parquet(SHARED_DATA / f"{source}.parquet")["text"].tolist()
        model = SentenceTransformer(str(bundled_model_path()), device="cpu")
        print(f"encoding {REAL_ROWS} texts (a few minutes, once)", flush=True)
        vectors = model.encode(texts[:REAL_ROWS], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors.astype(np.float32))
    return np.load(cache, mmap_mode="r")[:n_rows].copy()


def random_embeddings(n_rows: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Standard normal rows scaled to unit length (float32)."""
    vectors = np.random.default_rng(seed).standard_normal((n_rows, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------------- baselines


def incremental_greedy(vectors: np.ndarray, k: int, criterion: str, start: int = 0) -> np.ndarray:
    """Baseline (B): one float32 matrix-vector product ``X @ x_new`` per pick, keys kept in float64.

    Centroid: ``dots += X @ x_new`` holds x·S, the pick maximises ``m|x|² - 2 x·S``. K-center: the squared distance
    to the new center updates a running minimum. ``argmax`` keeps the lowest position among equal values.
    """
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    squared_norms = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    order = np.empty(k, dtype=np.int64)
    order[0] = pick = start
    products = np.empty(len(rows), dtype=np.float32)
    np.matmul(rows, rows[pick], out=products)
    if criterion == "centroid":
        dots = products.astype(np.float64)
        penalty = np.zeros(len(rows))
        penalty[pick] = -np.inf
        for count in range(1, k):
            keys = count * squared_norms - 2.0 * dots
            keys += penalty
            pick = int(np.argmax(keys))
            order[count] = pick
            penalty[pick] = -np.inf
            np.matmul(rows, rows[pick], out=products)
            dots += products
    else:
        nearest = squared_norms + squared_norms[pick] - 2.0 * products
        nearest[pick] = -np.inf
        for count in range(1, k):
            pick = int(np.argmax(nearest))
            order[count] = pick
            np.matmul(rows, rows[pick], out=products)
            np.minimum(nearest, squared_norms + squared_norms[pick] - 2.0 * products, out=nearest)
            nearest[pick] = -np.inf
    return order


# ------------------------------------------------------------------------------------------------------ measuring


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def peak_mib(function, *args, **kwargs) -> float:
    """Peak of memory allocated through Python (numpy included) while ``function`` runs, in MiB."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def validity(vectors: np.ndarray, order: np.ndarray, criterion: str) -> dict:
    started = time.perf_counter()
    try:
        check_trace(vectors, order, criterion)
        valid, problem = True, None
    except AssertionError as error:
        valid, problem = False, str(error)
    return {"valid": valid, "problem": problem, "check_seconds": round(time.perf_counter() - started, 2)}


def naive_estimate(vectors: np.ndarray, k: int, criterion: str, prefix_picks: int) -> dict:
    """Time (A) on its first picks; extrapolate linearly per pick to all k - 1 picks.

    Naive k-center recomputes the distances to every selected row, so its cost per pick grows with the number
    selected: it is timed on the first half of the prefix as well, and a per-pick cost linear in that number
    (fitted to the two halves) gives a second, more realistic estimate.
    """
    picks = min(prefix_picks, k - 1)
    _, seconds = timed(naive_greedy, vectors, picks + 1, criterion, 0)
    estimate = {
        "picks_measured": picks,
        "seconds_measured": round(seconds, 3),
        "seconds": round(seconds / picks * (k - 1), 2),
        "method": f"measured on the first {picks} picks, extrapolated linearly per pick to {k - 1} picks",
    }
    if criterion == "kcenter" and picks >= 4:
        half = picks // 2
        _, first_half = timed(naive_greedy, vectors, half + 1, criterion, 0)
        early, late = first_half / half, max(seconds - first_half, 0.0) / (picks - half)
        growth = max(late - early, 0.0) / (picks / 2)  # extra seconds per pick for each selected row
        base = early - growth * half / 2
        estimate["seconds_cost_model"] = round((k - 1) * base + growth * (k - 1) * k / 2, 1)
        estimate["note"] = (
            "naive k-center costs more per pick as the selection grows: the linear extrapolation (used for the "
            "ratio) is a lower bound; seconds_cost_model fits a per-pick cost linear in the number selected"
        )
    return estimate


def run_case(data: str, vectors: np.ndarray, criterion: str, prefix_picks: int, with_incremental: bool) -> dict:
    n_rows, dim = vectors.shape
    k = n_rows // 2
    case = {"data": data, "n": n_rows, "d": dim, "k": k, "criterion": criterion, "start": 0, "dtype": "float32"}
    pruned, pruned_seconds = timed(greedy_select, vectors, k, criterion, 0)
    seconds = {"pruned": round(pruned_seconds, 3)}
    memory = {"pruned": round(peak_mib(greedy_select, vectors, k, criterion, 0), 1)}
    valid = {"pruned": validity(vectors, pruned, criterion)}
    if with_incremental:
        incremental, incremental_seconds = timed(incremental_greedy, vectors, k, criterion, 0)
        seconds["incremental"] = round(incremental_seconds, 3)
        memory["incremental"] = round(peak_mib(incremental_greedy, vectors, min(k, 50), criterion, 0), 1)
        valid["incremental"] = validity(vectors, incremental, criterion)
        case["same_order_as_incremental"] = bool(np.array_equal(pruned, incremental))
    naive = naive_estimate(vectors, k, criterion, prefix_picks)
    seconds["naive"] = naive["seconds"]
    case["naive"] = naive
    try:
        import torch

        if torch.cuda.is_available():
            gpu, gpu_seconds = timed(greedy_select, vectors, k, criterion, 0, device="cuda")
            seconds["gpu"] = round(gpu_seconds, 3)
            valid["gpu"] = validity(vectors, gpu, criterion)
    except ImportError:
        pass
    case["seconds"] = seconds
    case["speedup"] = {
        f"{baseline}_over_pruned": round(seconds[baseline] / pruned_seconds, 1)
        for baseline in ("incremental", "naive")
        if baseline in seconds
    }
    case["peak_memory_mib"] = memory
    case["input_mib"] = round(vectors.nbytes / 2**20, 1)
    case["trace_check"] = valid
    return case


def machine() -> dict:
    from threadpoolctl import threadpool_info

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "blas": [
            {key: pool.get(key) for key in ("internal_api", "version", "num_threads", "architecture")}
            for pool in threadpool_info()
            if pool.get("user_api") == "blas"
        ],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only, for a smoke run")
    parser.add_argument("--sizes", type=int, nargs="*", help="row counts (default 5000 20000 50000)")
    parser.add_argument("--data", choices=("real", "random", "both"), default="both")
    parser.add_argument("--criteria", nargs="*", default=["centroid", "kcenter"])
    parser.add_argument("--naive-picks", type=int, default=None, help="picks of (A) to time (default 200)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--blas-threads", type=int, help="limit BLAS threads (both methods alike)")
    args = parser.parse_args(argv)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    sizes = args.sizes or ([1000, 3000] if args.quick else [5000, 20000, 50000])
    prefix_picks = args.naive_picks or (20 if args.quick else 200)
    datasets = ("real", "random") if args.data == "both" else (args.data,)
    report = {
        "description": (
            "greedy selection, k = n/2, start 0, float32 input: pruned greedy_select vs (B) one matrix-vector "
            "product per pick vs (A) recompute all distances per pick; every output checked with check_trace"
        ),
        "command": "bench/select_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "runs": [],
    }
    for data in datasets:
        for n_rows in sizes:
            vectors = real_embeddings(n_rows) if data == "real" else random_embeddings(n_rows)
            for criterion in args.criteria:
                case = run_case(data, vectors, criterion, prefix_picks, with_incremental=True)
                report["runs"].append(case)
                s = case["seconds"]
                print(
                    f"{data:6s} n={n_rows:6d} {criterion:8s} pruned {s['pruned']:8.2f}s  incremental(B) "
                    f"{s.get('incremental', float('nan')):8.2f}s  naive(A, est.) {s['naive']:9.1f}s  "
                    f"B/pruned {case['speedup'].get('incremental_over_pruned')}x  "
                    f"A/pruned {case['speedup']['naive_over_pruned']}x  "
                    f"valid {all(v['valid'] for v in case['trace_check'].values())}  "
                    f"peak {case['peak_memory_mib']['pruned']} MiB",
                    flush=True,
                )
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(v["valid"] for run in report["runs"] for v in run["trace_check"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
