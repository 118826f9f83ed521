"""Nearest neighbour by inner product (cosine on L2-normalised rows) with FAISS, with a deterministic tie rule.

The answer for each query is the corpus row with the highest similarity, ties broken to the lowest id, and never
the query itself. FAISS orders candidates by float32 scores and keeps an unspecified subset of equal scores, so the
search asks FAISS for a few candidates, rescores them in float64 (float32 products are exact in float64, and every
(query, row) pair is summed the same way, so duplicate rows score bit-identically wherever they are searched), and
asks again with twice as many candidates while every candidate returned ties with the best one.

Because the winner is a function of (similarity, id) only, per-partition answers combine exactly:
``reduce_best([top1_neighbors(q, part, ...) for part in partitions])`` equals ``top1_neighbors(q, whole, ...)``
for the flat index. This is how a Spark stage broadcasts the queries and searches the corpus partition by
partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

import faiss
import numpy as np

NO_NEIGHBOR = -1
# FAISS needs at least this many training points per inverted list to train its k-means quantizer.
_MIN_POINTS_PER_IVF_LIST = 39
# Candidate values rescored per FAISS call (32 MiB per float64 copy), which bounds memory for any query count.
_RESCORE_BUDGET = 1 << 22


class Neighbors(NamedTuple):
    """Best neighbour per query: ``ids`` (int64 corpus ids, ``NO_NEIGHBOR`` when none was found) and
    ``similarities`` (float64 inner products, ``-inf`` when none was found)."""

    ids: np.ndarray
    similarities: np.ndarray


def check_embeddings(embeddings: object, name: str = "embeddings") -> np.ndarray:
    """Validate a 2-D array of finite real numbers and return it as a C-contiguous float32 array."""
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_rows, n_dims), got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def l2_normalized(embeddings: object, name: str = "embeddings") -> np.ndarray:
    """Validated float32 copy of ``embeddings`` with unit-length rows, so inner product equals cosine similarity."""
    array = check_embeddings(embeddings, name)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        first = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise ValueError(f"{name} row {first} is all zeros: cosine similarity is undefined for it")
    return array / norms


def _check_ids(ids: object, length: int, name: str, rows_name: str) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(
            f"{name} must be a 1-D array with one id per {rows_name} row ({length}), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if length and array.min() < 0:
        raise ValueError(f"{name} must be non-negative ({NO_NEIGHBOR} marks a missing neighbour)")
    return array.astype(np.int64, copy=False)


def _build_index(corpus: np.ndarray, index: str, nlist: int, nprobe: int) -> faiss.Index:
    dims = corpus.shape[1]
    if index == "flat":
        built = faiss.IndexFlatIP(dims)
    else:
        lists = max(1, min(nlist, corpus.shape[0] // _MIN_POINTS_PER_IVF_LIST))
        built = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, lists, faiss.METRIC_INNER_PRODUCT)
        built.train(corpus)
        built.nprobe = min(nprobe, lists)
    built.add(corpus)
    return built


def _best_of_candidates(
    queries: np.ndarray,
    corpus: np.ndarray,
    found: np.ndarray,
    corpus_ids: np.ndarray,
    query_ids: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescore FAISS candidates; return best ids, their similarities and whether more ties may lie beyond ``k``."""
    valid = found >= 0
    candidate_ids = np.where(valid, corpus_ids[np.where(valid, found, 0)], NO_NEIGHBOR)
    if query_ids is not None:
        valid &= candidate_ids != query_ids[:, None]
    rows = corpus[np.where(valid, found, 0)].astype(np.float64)
    scores = (rows * queries.astype(np.float64)[:, None, :]).sum(axis=-1)
    scores = np.where(valid, scores, -np.inf)

    best_scores = scores.max(axis=1)
    tied = valid & (scores == best_scores[:, None])
    best_ids = np.where(tied, candidate_ids, np.iinfo(np.int64).max).min(axis=1)
    best_ids = np.where(valid.any(axis=1), best_ids, NO_NEIGHBOR)

    filled_k = found[:, -1] >= 0  # fewer than k results means the index had nothing more to offer
    all_tied = np.where(valid, scores, np.inf).min(axis=1) == best_scores
    truncated = filled_k & (all_tied | ~valid.any(axis=1))
    return best_ids, best_scores, truncated


def top1_neighbors(
    queries: object,
    corpus: object,
    *,
    query_ids: object | None = None,
    corpus_ids: object | None = None,
    index: Literal["flat", "ivf"] = "flat",
    nlist: int = 1024,
    nprobe: int = 16,
    candidates: int = 4,
) -> Neighbors:
    """For each query, the corpus row with the highest inner product, ties broken to the lowest corpus id.

    Parameters
    ----------
    queries : array of shape (n_queries, n_dims)
    corpus : array of shape (n_corpus, n_dims)
        L2-normalise both for cosine similarity (see :func:`l2_normalized`); scores are computed as given.
    query_ids : array of shape (n_queries,), optional
        The corpus id of each query. A corpus row whose id equals its query's id is skipped, so a row is never its
        own neighbour. ``None`` skips nothing.
    corpus_ids : array of shape (n_corpus,), optional
        Unique non-negative ids of the corpus rows (global row ids for a partition); defaults to positions.
    index : {"flat", "ivf"}
        ``"flat"`` is exact. ``"ivf"`` (``IndexIVFFlat``) is approximate: it scans only the ``nprobe`` of ``nlist``
        k-means lists nearest each query and may miss the true neighbour, or find none (``NO_NEIGHBOR``) when the
        probed lists hold only the query. ``nlist`` is capped at ``n_corpus // 39`` so k-means has enough points.
    candidates : int
        Neighbours fetched per query before the tie check; more only changes speed, never the answer.

    Returns
    -------
    Neighbors
        ``ids`` and ``similarities`` of shape (n_queries,); ``NO_NEIGHBOR`` and ``-inf`` when the corpus holds no
        row other than the query.
    """
    query_matrix = check_embeddings(queries, "queries")
    corpus_matrix = check_embeddings(corpus, "corpus")
    if query_matrix.shape[1] != corpus_matrix.shape[1]:
        raise ValueError(
            f"queries have {query_matrix.shape[1]} dimensions but corpus has {corpus_matrix.shape[1]}"
        )
    if index not in ("flat", "ivf"):
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("candidates", candidates)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    n_queries, n_corpus = query_matrix.shape[0], corpus_matrix.shape[0]
    if corpus_ids is None:
        ids = np.arange(n_corpus, dtype=np.int64)
    else:
        ids = _check_ids(corpus_ids, n_corpus, "corpus_ids", "corpus")
        if np.unique(ids).size != n_corpus:
            raise ValueError("corpus_ids must be unique")
    own_ids = None if query_ids is None else _check_ids(query_ids, n_queries, "query_ids", "queries")

    best_ids = np.full(n_queries, NO_NEIGHBOR, dtype=np.int64)
    best_scores = np.full(n_queries, -np.inf)
    if n_queries == 0 or n_corpus == 0:
        return Neighbors(best_ids, best_scores)

    faiss_index = _build_index(corpus_matrix, index, nlist, nprobe)
    pending = np.arange(n_queries)
    k = min(n_corpus, candidates + (own_ids is not None))
    while pending.size:
        unresolved = []
        step = max(1, _RESCORE_BUDGET // (k * corpus_matrix.shape[1]))
        for start in range(0, pending.size, step):
            rows = pending[start : start + step]
            _, found = faiss_index.search(query_matrix[rows], k)
            chunk_ids, chunk_scores, truncated = _best_of_candidates(
                query_matrix[rows], corpus_matrix, found, ids, None if own_ids is None else own_ids[rows]
            )
            finished = ~truncated if k < n_corpus else np.ones(rows.size, dtype=bool)
            best_ids[rows[finished]] = chunk_ids[finished]
            best_scores[rows[finished]] = chunk_scores[finished]
            unresolved.append(rows[~finished])
        pending = np.concatenate(unresolved)
        k = min(n_corpus, 2 * k)
    return Neighbors(best_ids, best_scores)


def reduce_best(partials: Iterable[Neighbors]) -> Neighbors:
    """Combine per-partition answers for the same queries: highest similarity wins, then the lowest id.

    The rule is associative and commutative, so partitions may be reduced in any order or tree shape.
    """
    best: Neighbors | None = None
    for position, partial in enumerate(partials):
        ids = np.asarray(partial.ids, dtype=np.int64)
        scores = np.asarray(partial.similarities, dtype=np.float64)
        if ids.ndim != 1 or ids.shape != scores.shape:
            raise ValueError(f"partial {position}: ids and similarities must be 1-D arrays of equal length")
        if best is None:
            best = Neighbors(ids.copy(), scores.copy())
            continue
        if ids.shape != best.ids.shape:
            raise ValueError(
                f"partial {position} answers {ids.shape[0]} queries, the first partial {best.ids.shape[0]}"
            )
        found = ids != NO_NEIGHBOR
        tie_won = (scores == best.similarities) & (ids < best.ids)
        better = found & ((best.ids == NO_NEIGHBOR) | (scores > best.similarities) | tie_won)
        best.ids[better] = ids[better]
        best.similarities[better] = scores[better]
    if best is None:
        raise ValueError("reduce_best needs at least one partial result")
    return best
