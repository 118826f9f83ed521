"""Diversity of a set of texts from their embeddings (Cox et al. 2021, as used by Li et al., EMNLP 2023).

Both scores use cosine distance ``1 - cos`` (in [0, 2]); higher means more diverse.

- Remote Clique: mean over items of the mean distance to every other item. It equals
  ``1 - (|sum x|^2 - sum |x|^2) / (n (n - 1))`` for unit rows ``x``, so it is computed exactly in O(n d) for any
  ``n``, in blocks, with no sampling.
- Chamfer distance: mean over items of the distance to the nearest other item. Exact (FAISS flat search of every
  item against the set) up to ``max_exact`` items; above that, the mean over ``sample_size`` items drawn uniformly
  with replacement, each still searched exactly against the full set, with a confidence bound on the error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dqe.algorithms.neighbors import l2_normalized, top1_neighbors

# Cosine distance lies in [0, 2].
_DISTANCE_RANGE = 2.0
_BLOCK_ROWS = 65_536


@dataclass(frozen=True)
class DiversityScore:
    """A diversity score.

    ``value``: the score. ``exact``: computed from every item. ``sample_size``: items whose term was averaged
    (all ``n`` when exact). ``bound``: with probability at least ``confidence``, ``|value - exact value| <=
    bound`` (0.0 when exact, apart from float rounding).
    """

    value: float
    exact: bool
    sample_size: int
    bound: float
    confidence: float


def _unit_rows(embeddings: object) -> np.ndarray:
    vectors = l2_normalized(embeddings)
    if vectors.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 items, got {vectors.shape[0]}")
    return vectors


def remote_clique_score(embeddings: object) -> DiversityScore:
    """Remote Clique score: mean over items of the mean cosine distance to all other items (exact).

    Parameters
    ----------
    embeddings : array of shape (n_items, n_dims), n_items >= 2
        Rows are L2-normalised here.
    """
    vectors = _unit_rows(embeddings)
    n_items = vectors.shape[0]
    total = np.zeros(vectors.shape[1])
    squared_norms = 0.0  # not exactly n: float32 unit rows are unit only up to rounding
    for start in range(0, n_items, _BLOCK_ROWS):
        block = vectors[start : start + _BLOCK_ROWS].astype(np.float64)
        total += block.sum(axis=0)
        squared_norms += float(np.einsum("ij,ij->", block, block))
    mean_similarity = (float(total @ total) - squared_norms) / (n_items * (n_items - 1))
    return DiversityScore(value=1.0 - mean_similarity, exact=True, sample_size=n_items, bound=0.0, confidence=1.0)


def chamfer_distance_bound(distances: np.ndarray, delta: float) -> float:
    """Half-width of a two-sided ``1 - delta`` confidence interval for the mean of i.i.d. draws in [0, 2].

    The smaller of Hoeffding's bound and the empirical Bernstein bound of Maurer & Pontil (2009, Thm 4), each at
    ``delta / 2`` so that their union holds with probability ``1 - delta``. Bernstein is much tighter when the
    distances vary little, Hoeffding when the sample is small.
    """
    m = distances.shape[0]
    hoeffding = _DISTANCE_RANGE * math.sqrt(math.log(4.0 / delta) / (2.0 * m))
    if m < 2:
        return hoeffding
    log_term = math.log(8.0 / delta)  # delta / 2 for this bound, split again over its two sides
    variance = float(np.var(distances, ddof=1))
    bernstein = math.sqrt(2.0 * variance * log_term / m) + 7.0 * _DISTANCE_RANGE * log_term / (3.0 * (m - 1))
    return min(hoeffding, bernstein)


def chamfer_distance_score(
    embeddings: object,
    *,
    max_exact: int = 20_000,
    sample_size: int = 5_000,
    delta: float = 0.05,
    seed: int = 0,
) -> DiversityScore:
    """Chamfer distance score: mean over items of the cosine distance to the nearest other item.

    Parameters
    ----------
    embeddings : array of shape (n_items, n_dims), n_items >= 2
        Rows are L2-normalised here.
    max_exact : int
        Up to this many items every item is searched (O(n^2 d) work in FAISS's bounded-memory blocks).
    sample_size : int
        Above ``max_exact``, this many items (uniform, with replacement, seeded by ``seed``) are searched against
        the full set; the reported ``bound`` holds with probability ``1 - delta``
        (see :func:`chamfer_distance_bound`).
    """
    vectors = _unit_rows(embeddings)
    if not isinstance(max_exact, (int, np.integer)) or max_exact < 2:
        raise ValueError(f"max_exact must be an integer >= 2, got {max_exact!r}")
    if not isinstance(sample_size, (int, np.integer)) or sample_size < 2:
        raise ValueError(f"sample_size must be an integer >= 2, got {sample_size!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    n_items = vectors.shape[0]
    exact = n_items <= max_exact
    if exact:
        items = np.arange(n_items)
    else:
        items = np.random.default_rng(seed).integers(0, n_items, size=sample_size)
    nearest = top1_neighbors(vectors[items], vectors, query_ids=items)
    distances = np.clip(1.0 - nearest.similarities, 0.0, _DISTANCE_RANGE)
    return DiversityScore(
        value=float(distances.mean()),
        exact=exact,
        sample_size=int(items.shape[0]),
        bound=0.0 if exact else chamfer_distance_bound(distances, delta),
        confidence=1.0 if exact else 1.0 - delta,
    )
