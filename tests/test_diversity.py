from __future__ import annotations

import math

import numpy as np
import pytest

from dqe.algorithms.diversity import chamfer_distance_bound, chamfer_distance_score, remote_clique_score


def cosine_distances(embeddings: np.ndarray) -> np.ndarray:
    vectors = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return 1.0 - vectors @ vectors.T


def brute_remote_clique(embeddings: np.ndarray) -> float:
    distances = cosine_distances(embeddings)
    n = len(embeddings)
    return float(np.mean([(distances[i].sum() - distances[i, i]) / (n - 1) for i in range(n)]))


def brute_chamfer(embeddings: np.ndarray) -> float:
    distances = cosine_distances(embeddings)
    np.fill_diagonal(distances, np.inf)
    return float(np.clip(distances.min(axis=1), 0.0, 2.0).mean())


@pytest.fixture
def small() -> np.ndarray:
    rng = np.random.default_rng(8)
    points = rng.normal(size=(150, 10)) * rng.uniform(0.2, 4.0, size=(150, 1))
    points[100:110] = points[3]  # duplicates have Chamfer distance 0
    return points


def test_remote_clique_matches_brute_force(small):
    score = remote_clique_score(small)
    assert score.value == pytest.approx(brute_remote_clique(small), abs=1e-6)
    assert score.exact and score.bound == 0.0 and score.sample_size == 150


def test_chamfer_exact_matches_brute_force(small):
    score = chamfer_distance_score(small)
    assert score.value == pytest.approx(brute_chamfer(small), abs=1e-6)
    assert score.exact and score.bound == 0.0 and score.sample_size == 150


def test_scores_on_known_configurations():
    # Two antipodal points: every distance is 2.
    assert remote_clique_score([[1.0, 0.0], [-2.0, 0.0]]).value == pytest.approx(2.0)
    assert chamfer_distance_score([[1.0, 0.0], [-2.0, 0.0]]).value == pytest.approx(2.0)
    # Four orthogonal axes: every distance is 1. Identical points: every distance is 0.
    assert remote_clique_score(np.eye(4)).value == pytest.approx(1.0)
    assert chamfer_distance_score(np.eye(4)).value == pytest.approx(1.0)
    assert remote_clique_score(np.ones((5, 3))).value == pytest.approx(0.0, abs=1e-6)
    assert chamfer_distance_score(np.ones((5, 3))).value == pytest.approx(0.0, abs=1e-6)


def test_more_spread_out_data_scores_higher():
    rng = np.random.default_rng(1)
    center = rng.normal(size=16)
    tight = center + 0.1 * rng.normal(size=(300, 16))
    spread = center + 1.0 * rng.normal(size=(300, 16))
    assert remote_clique_score(spread).value > remote_clique_score(tight).value
    assert chamfer_distance_score(spread).value > chamfer_distance_score(tight).value


def test_sampled_chamfer_lies_within_its_stated_bound():
    rng = np.random.default_rng(21)
    centers = rng.normal(size=(30, 24))
    points = centers[rng.integers(0, 30, 6000)] + rng.normal(size=(6000, 24))
    exact = chamfer_distance_score(points)
    assert exact.exact
    for seed in range(5):
        sampled = chamfer_distance_score(points, max_exact=1000, sample_size=2000, delta=0.05, seed=seed)
        assert not sampled.exact and sampled.sample_size == 2000 and sampled.confidence == pytest.approx(0.95)
        # Each seed may miss with probability <= 5% by the bound's guarantee; in practice it is far from tight.
        assert abs(sampled.value - exact.value) <= sampled.bound
        # Informative, not the trivial range of 2.0: well under a tenth of the score itself.
        assert sampled.bound < 0.1 * exact.value


def test_sampled_chamfer_is_reproducible_for_a_seed():
    points = np.random.default_rng(0).normal(size=(500, 6))
    first = chamfer_distance_score(points, max_exact=100, sample_size=50, seed=3)
    again = chamfer_distance_score(points, max_exact=100, sample_size=50, seed=3)
    other = chamfer_distance_score(points, max_exact=100, sample_size=50, seed=4)
    assert first == again
    assert first.value != other.value


def test_bound_is_the_smaller_of_hoeffding_and_empirical_bernstein():
    delta = 0.1
    constant = np.full(400, 0.3)  # zero variance: Bernstein's second term only
    expected_bernstein = 7.0 * 2.0 * math.log(8.0 / delta) / (3.0 * 399)
    assert chamfer_distance_bound(constant, delta) == pytest.approx(expected_bernstein)
    spread = np.tile([0.0, 2.0], 10)  # maximal variance on a small sample: Hoeffding wins
    expected_hoeffding = 2.0 * math.sqrt(math.log(4.0 / delta) / (2.0 * 20))
    assert chamfer_distance_bound(spread, delta) == pytest.approx(expected_hoeffding)


@pytest.mark.parametrize(
    ("embeddings", "kwargs", "message"),
    [
        (np.ones((1, 3)), {}, "at least 2 items"),
        (np.ones(3), {}, "2-D array"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), {}, "all zeros"),
        (np.ones((4, 3)), {"delta": 1.5}, "delta must lie in"),
        (np.ones((4, 3)), {"sample_size": 1}, "sample_size must be"),
    ],
)
def test_invalid_inputs_are_rejected(embeddings, kwargs, message):
    with pytest.raises(ValueError, match=message):
        chamfer_distance_score(embeddings, **kwargs)
    if not kwargs:
        with pytest.raises(ValueError, match=message):
            remote_clique_score(embeddings)
