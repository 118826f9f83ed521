from __future__ import annotations

import numpy as np
import pytest

from dqe.algorithms import greedy
from dqe.algorithms.greedy import check_trace, greedy_select, naive_greedy

CRITERIA = ("centroid", "kcenter")


def unit_rows(n_rows: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n_rows, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def embedding_like(n_rows: int, dim: int, seed: int) -> np.ndarray:
    """Unit rows around a shared direction, in clusters: the geometry of sentence embeddings (pruning works)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    clusters = rng.standard_normal((40, dim))
    rows = 2.0 * common + clusters[rng.integers(0, 40, n_rows)] + 0.8 * rng.standard_normal((n_rows, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------ rules, spelled out


def test_centroid_rule_on_a_line():
    # 1-D points 0, 1, 3, 10: from 0, the farthest from the mean 0 is 10; the mean becomes 5, so 1 (at 4) beats 3
    # (at 2); the mean of {0, 10, 1} is 11/3, so 3 is last.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    expected = [0, 3, 1, 2]
    assert naive_greedy(points, 4, "centroid").tolist() == expected
    assert greedy_select(points, 4, "centroid").tolist() == expected
    assert greedy_select(points, 4, "centroid", device="torch-cpu").tolist() == expected


def test_kcenter_rule_on_a_line():
    # From 0: 10 is farthest; then nearest distances are 1 (to 0), 3 (to 0): 3 wins; then 1.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    expected = [0, 3, 2, 1]
    assert naive_greedy(points, 4, "kcenter").tolist() == expected
    assert greedy_select(points, 4, "kcenter").tolist() == expected
    assert greedy_select(points, 4, "kcenter", device="torch-cpu").tolist() == expected


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
def test_exact_ties_go_to_the_lowest_position(criterion, device):
    # Rows 1, 2, 3 are all at distance 1 from the start (and from the centroid): row 1 first; then row 2 is the
    # farther one for the centroid rule (1.5 vs 1.118), and ties with row 3 at distance 1 for k-center.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    assert greedy_select(points, 4, criterion, device=device).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_duplicate_rows_are_taken_lowest_position_first(criterion):
    rows = unit_rows(300, 16, seed=3)
    rng = np.random.default_rng(4)
    copies_from, copies_to = rng.choice(300, 60, replace=False)[:30], rng.choice(300, 60, replace=False)[30:]
    rows[copies_to] = rows[copies_from]
    order = greedy_select(rows, len(rows), criterion, start=5)
    position = np.empty(len(rows), dtype=np.int64)
    position[order] = np.arange(len(rows))
    groups: dict[bytes, list[int]] = {}
    for row, vector in enumerate(rows):
        groups.setdefault(vector.tobytes(), []).append(row)
    duplicates = [members for members in groups.values() if len(members) > 1]
    assert duplicates
    for members in duplicates:
        assert list(position[members]) == sorted(position[members])
    check_trace(rows, order, criterion)
    assert np.array_equal(order, naive_greedy(rows, len(rows), criterion, start=5))


# -------------------------------------------------------------------------------- agreement with the reference


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize(("n_rows", "dim", "k", "start"), [(2, 3, 2, 1), (50, 2, 17, 0), (200, 8, 200, 199), (400, 64, 123, 7)])
def test_matches_the_naive_reference(criterion, n_rows, dim, k, start):
    rows = np.random.default_rng(n_rows + dim).standard_normal((n_rows, dim)).astype(np.float32)
    order = greedy_select(rows, k, criterion, start)
    assert order.dtype == np.int64 and len(order) == k and order[0] == start and len(set(order)) == k
    assert np.array_equal(order, naive_greedy(rows, k, criterion, start))
    check_trace(rows, order, criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_torch_path_matches_numpy(criterion):
    rows = unit_rows(500, 24, seed=9)
    numpy_order = greedy_select(rows, 250, criterion, start=3)
    torch_order = greedy_select(rows, 250, criterion, start=3, device="torch-cpu")
    assert np.array_equal(numpy_order, torch_order)
    check_trace(rows, torch_order, criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_k_of_one_and_all_rows(criterion):
    rows = unit_rows(40, 5, seed=1)
    assert greedy_select(rows, 1, criterion, start=39).tolist() == [39]
    everything = greedy_select(rows, 40, criterion, start=39)
    assert sorted(everything.tolist()) == list(range(40)) and everything[0] == 39
    check_trace(rows, everything, criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_pruned_blocks_on_embedding_like_data(criterion, monkeypatch):
    # Large enough for pools, outside verification and compaction (n > 4096, half selected).
    rows = embedding_like(6000, 48, seed=5)
    calls = {"blocks": 0}
    selector = greedy._CentroidSelector if criterion == "centroid" else greedy._KCenterSelector
    step = "_step_block" if criterion == "centroid" else "_pick_block"
    original = getattr(selector, step)

    def counting(self, *args):
        calls["blocks"] += 1
        return original(self, *args)

    monkeypatch.setattr(selector, step, counting)
    order = greedy_select(rows, 3000, criterion, start=11)
    assert 0 < calls["blocks"] < 1000  # many picks per block, so the block path did the work
    check_trace(rows, order, criterion)
    # The float64 torch path may order near-ties differently, but it selects nearly the same rows.
    reference = greedy_select(rows, 3000, criterion, start=11, device="torch-cpu")
    assert len(np.intersect1d(order, reference)) > 0.9 * len(order)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_near_isotropic_data_stays_valid(criterion):
    # Random directions in many dimensions: rankings reshuffle at every pick (the incremental fallback) and
    # hundreds of rows tie within float32 rounding late in the run.
    rows = unit_rows(2500, 96, seed=2)
    order = greedy_select(rows, 2500, criterion)
    check_trace(rows, order, criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize(("dtype", "scale"), [(np.float32, 1e-3), (np.float64, 1e3)])
def test_rows_of_any_length_and_scale(criterion, dtype, scale):
    lengths = np.random.default_rng(0).uniform(0.2, 3.0, size=(3000, 1))
    rows = (embedding_like(3000, 32, seed=8) * lengths * scale).astype(dtype)
    check_trace(rows, greedy_select(rows, 2000, criterion, start=3), criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_other_input_types(criterion):
    integers = np.random.default_rng(0).integers(-5, 6, size=(60, 4))
    integers[7] = 0  # a zero vector is an ordinary point
    order = greedy_select(integers.tolist(), 60, criterion)
    assert np.array_equal(order, naive_greedy(integers, 60, criterion))
    doubles = np.random.default_rng(1).standard_normal((80, 6))
    check_trace(doubles, greedy_select(doubles, 40, criterion), criterion)


# ----------------------------------------------------------------------------------------------------- checker


@pytest.mark.parametrize("criterion", CRITERIA)
def test_checker_rejects_a_corrupted_trace(criterion):
    rows = unit_rows(200, 8, seed=7)
    order = greedy_select(rows, 100, criterion)
    check_trace(rows, order, criterion)
    swapped = order.copy()
    swapped[[10, 60]] = swapped[[60, 10]]
    with pytest.raises(AssertionError, match="step 10: picked row"):
        check_trace(rows, swapped, criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_checker_rejects_a_tie_taken_out_of_order(criterion):
    # Rows 1 and 2 are identical, so at step 1 they tie exactly and row 1 must come first.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    check_trace(points, [0, 1, 3, 2], criterion)
    with pytest.raises(AssertionError, match="step 1: picked row 2, but row 1 has exactly the same value"):
        check_trace(points, [0, 2, 3, 1], criterion)


def test_checker_tolerance_is_relative():
    # From 0 the candidates are at distance 1 and 1 + 1e-6: either pick is within rtol = 1e-5, not within 1e-8.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0 + 1e-6]])
    check_trace(points, [0, 1, 2], "kcenter")
    with pytest.raises(AssertionError, match="is farther"):
        check_trace(points, [0, 1, 2], "kcenter", rtol=1e-8)


@pytest.mark.parametrize(
    ("order", "message"),
    [([], "non-empty"), ([[0, 1]], "1-D"), ([0, 0], "more than once"), ([0, 9], "outside"), ([0.0, 1.0], "integer")],
)
def test_checker_rejects_malformed_orders(order, message):
    with pytest.raises(ValueError, match=message):
        check_trace(unit_rows(5, 3, seed=0), order, "centroid")


# ---------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.array([[0.0, 1.0], [np.nan, 0.0]]), "NaN .*row 1"),
        (np.array([[0.0, 1.0], [0.0, np.inf]]), "infinity .*row 1"),
        (np.empty((0, 3)), "empty"),
        ([], "empty"),
        (np.array([1.0, 2.0, 3.0]), "2-D"),
        (np.zeros((2, 2, 2)), "2-D"),
        ([[1.0, 2.0], [3.0]], "different lengths"),
        (np.array([np.zeros(3), np.zeros(2)], dtype=object), "different lengths"),
        (np.array([["a", "b"]]), "real numbers"),
        (np.array([[1 + 2j, 0]]), "real numbers"),
    ],
)
def test_invalid_vectors(vectors, message):
    with pytest.raises(ValueError, match=message):
        greedy_select(vectors, 1)
    with pytest.raises(ValueError, match=message):
        check_trace(vectors, [0], "kcenter")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"k": 0}, r"k must be between 1 and the number of rows \(4\); got k=0"),
        ({"k": 5}, r"got k=5"),
        ({"k": 2.0}, "k must be an integer"),
        ({"k": True}, "k must be an integer"),
        ({"k": 2, "start": 4}, r"start must be a row position between 0 and 3; got start=4"),
        ({"k": 2, "start": -1}, "got start=-1"),
        ({"k": 2, "criterion": "kmeans"}, "unknown criterion 'kmeans'; choose one of 'centroid', 'kcenter'"),
        ({"k": 2, "device": "gpu"}, "unknown device 'gpu'"),
    ],
)
def test_invalid_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        greedy_select(unit_rows(4, 3, seed=0), **arguments)


def test_numpy_integer_arguments_are_accepted():
    order = greedy_select(unit_rows(10, 3, seed=0), np.int64(3), start=np.int32(2))
    assert order.tolist()[0] == 2 and len(order) == 3


def test_cuda_without_a_gpu_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        greedy_select(unit_rows(4, 3, seed=0), 2, device="cuda")
