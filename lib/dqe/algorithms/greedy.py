"""Greedy diverse selection over embedding rows: the DQE centroid rule and Gonzalez k-center, exact and fast.

Both rules start from one given row and add rows one at a time:

* ``"centroid"`` (the DQE authors' rule): add the not-yet-selected row with the largest Euclidean distance to the
  mean of the rows selected so far;
* ``"kcenter"`` (Gonzalez farthest-point greedy): add the row whose Euclidean distance to its nearest selected row
  is largest.

**Exactness.** An output is a *valid greedy trace* when, re-evaluated in float64, every pick's criterion value is
within a relative ``rtol`` (1e-5) of the best value among the rows not yet selected, and exact ties (equal float64
values) go to the lowest row position. :func:`check_trace` verifies this; bit-equality with one implementation is
not the goal, because float32 and float64 round differently.

**Speed (numpy, ``device="cpu"``).** The plain incremental method costs one matrix-vector product over all rows
per pick; beyond the last-level cache it runs at memory bandwidth. :func:`greedy_select` instead works in blocks:

1. it speculates a block of picks inside a small *pool* of the current top rows, updating only the pool;
2. it proves the block correct for the rows outside the pool. K-center values only decrease, so a pick that beats
   the largest value outside the pool beats every outside row for good. Centroid keys move by ``-(2/m)·x·E``
   when the centroid moves by ``E/m``; the component of ``E`` along the current centroid direction is known per
   row, the rest is bounded by Cauchy–Schwarz, and the few rows that could still reach a pick are evaluated for
   every step of the block with one matrix-matrix product;
3. it brings all rows up to date once per block (k-center: one matrix-matrix product against the block's centers,
   near peak FLOP rate; centroid: one matrix-vector product with the sum of the block's picks);
4. it decides near-ties in float64: rows whose float32 value lies within the rounding budget of the best are
   re-evaluated from the input vectors (see "Rounding" below), and exact ties go to the lowest position.

Where the centroid rule has no structure to exploit (near-isotropic data: the centroid shrinks towards zero and
every pick reshuffles the ranking) speculation fails, and the selector falls back to one matrix-vector product per
pick over the rows not yet selected, retrying blocks periodically.

**Torch** (``device="cuda"``, ``"cuda:N"`` or ``"torch-cpu"``): the incremental method in float64 on the device
(one matrix-vector product per pick, no host synchronisation inside the loop). On a GPU that product is fast; the
``"torch-cpu"`` device exists so that the torch code path can be tested without one.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

CRITERIA = ("centroid", "kcenter")

# Unit roundoff of the float32 screening arithmetic and of float64.
_U32 = float(np.finfo(np.float32).eps) / 2
_EPS64 = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------------- validation


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _as_matrix(vectors: Any, name: str = "vectors") -> np.ndarray:
    """The rows as a C-contiguous float32 (float32/float16 input) or float64 (other numbers) matrix.

    Raises ``ValueError`` naming the problem: not 2-D, ragged rows, empty, non-numeric, NaN or infinity.
    """
    if _is_torch_tensor(vectors):
        tensor = vectors.detach().cpu()
        vectors = (tensor.float() if str(tensor.dtype) == "torch.bfloat16" else tensor).numpy()  # numpy has no bf16
    try:
        array = np.asarray(vectors)
    except ValueError as error:  # numpy refuses nested sequences of different lengths
        raise ValueError(f"{name} must be a 2-D array (n_rows, n_dims); its rows have different lengths") from error
    if array.dtype == object:  # e.g. an array of per-row arrays
        if array.ndim == 1 and len({np.shape(row) for row in array}) > 1:
            raise ValueError(f"{name} must be a 2-D array (n_rows, n_dims); its rows have different lengths")
        try:
            array = np.array(array.tolist(), dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must hold real numbers; got an object array that is not numeric") from error
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers; got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); selection needs at least one row and column")
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_rows, n_dims); got {array.ndim}-D shape {array.shape}")
    dtype = np.float32 if array.dtype in (np.float32, np.float16) else np.float64
    array = np.ascontiguousarray(array, dtype=dtype)
    finite_rows = np.isfinite(array).all(axis=1)
    if not finite_rows.all():
        row = int(np.flatnonzero(~finite_rows)[0])
        kind = "NaN" if np.isnan(array[row]).any() else "infinity"
        raise ValueError(f"{name} contains {kind} (first in row {row}); selection needs finite values")
    return array


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    return int(value)


def check_criterion(criterion: Any) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(map(repr, CRITERIA))}")
    return criterion


def _check_k_start(k: Any, start: Any, n_rows: int) -> tuple[int, int]:
    k = _as_int(k, "k")
    if not 1 <= k <= n_rows:
        raise ValueError(f"k must be between 1 and the number of rows ({n_rows}); got k={k}")
    start = _as_int(start, "start")
    if not 0 <= start < n_rows:
        raise ValueError(f"start must be a row position between 0 and {n_rows - 1}; got start={start}")
    return k, start


def _torch_device(device: Any) -> str | None:
    """``None`` for the numpy path, else the torch device name; raises on anything else."""
    if device == "cpu":
        return None
    if device == "torch-cpu":
        return "cpu"
    if isinstance(device, str) and (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        return device
    raise ValueError(f"unknown device {device!r}; use 'cpu' (numpy), 'torch-cpu', 'cuda' or 'cuda:N'")


# ------------------------------------------------------------------------------------------------------ public API


def greedy_select(
    vectors: Any, k: int, criterion: str = "centroid", start: int = 0, device: str = "cpu"
) -> np.ndarray:
    """Select ``k`` rows greedily; returns their int64 positions in selection order (first is ``start``).

    ``vectors`` is an (n, d) array (numpy, anything ``np.asarray`` accepts, or a torch tensor) of finite numbers;
    rows need not be normalised (Euclidean distance on L2-normalised embeddings is equivalent to cosine), and zero
    vectors are ordinary points. ``criterion`` is ``"centroid"`` (farthest from the mean of the selected rows) or
    ``"kcenter"`` (farthest from the nearest selected row). ``device``: ``"cpu"`` runs the pruned numpy method,
    ``"cuda"``/``"cuda:N"`` the float64 incremental method on a GPU and ``"torch-cpu"`` that torch code on the CPU.

    Every result is a valid greedy trace in the sense of :func:`check_trace` at its default ``rtol`` of 1e-5
    (ties go to the lowest position). The numpy method needs about one float32 copy of the input as working
    memory. Raises ``ValueError`` for invalid input: not 2-D, ragged rows, empty, NaN/inf, ``k`` outside ``1..n``,
    ``start`` outside ``0..n-1``, an unknown criterion or device, or a CUDA device that torch cannot see.
    """
    criterion = check_criterion(criterion)
    torch_device = _torch_device(device)
    matrix = _as_matrix(vectors)
    k, start = _check_k_start(k, start, len(matrix))
    if torch_device is not None:
        return _select_torch(matrix, k, criterion, start, torch_device)
    if k == 1:
        return np.array([start], dtype=np.int64)
    selector = _CentroidSelector if criterion == "centroid" else _KCenterSelector
    return selector(matrix, start, k).run()


def naive_greedy(vectors: Any, k: int, criterion: str = "centroid", start: int = 0) -> np.ndarray:
    """Reference selection that recomputes every distance at every pick (float64; slow, for small inputs).

    Centroid: the mean of the selected rows is recomputed and every row's distance to it is evaluated from the
    differences. K-center: the distances of every row to every selected row are recomputed (as one product).
    Ties go to the lowest position. Same arguments and result as :func:`greedy_select`.
    """
    criterion = check_criterion(criterion)
    matrix = _as_matrix(vectors).astype(np.float64)
    k, start = _check_k_start(k, start, len(matrix))
    squared_norms = np.einsum("ij,ij->i", matrix, matrix)
    noise_floor = 64.0 * matrix.shape[1] * _EPS64 * squared_norms.max()
    selected = [start]
    taken = np.zeros(len(matrix), dtype=bool)
    taken[start] = True
    for _ in range(1, k):
        if criterion == "centroid":
            centroid = matrix[selected].mean(axis=0)
            values = ((matrix - centroid) ** 2).sum(axis=1)
        else:
            centers = matrix[selected]
            gram = matrix @ centers.T
            values = (squared_norms[:, None] + squared_norms[selected][None, :] - 2.0 * gram).min(axis=1)
            # Dot products cannot resolve distances near zero (duplicates would differ by rounding noise):
            # recompute those from differences, which are exactly 0 for identical rows.
            for row in np.flatnonzero((values <= noise_floor) & ~taken):
                values[row] = ((centers - matrix[row]) ** 2).sum(axis=1).min()
        values[taken] = -np.inf
        pick = int(np.argmax(values))
        selected.append(pick)
        taken[pick] = True
    return np.array(selected, dtype=np.int64)


def check_trace(vectors: Any, order: Any, criterion: str, rtol: float = 1e-5) -> None:
    """Raise ``AssertionError`` describing the first pick of ``order`` that is not a valid greedy choice.

    Re-evaluates every step in float64: the pick's criterion value (a Euclidean distance) must be at least
    ``best - rtol * max(best, tiny)``, where ``best`` is the largest value among the rows not yet selected and
    ``tiny = floor / rtol`` with ``floor = sqrt(16 (d + 2) eps64 max|x|²)``, the rounding floor of float64
    distances computed from dot products (about 1e-6 for unit vectors); and no unselected row at a lower position
    may have exactly the pick's value. ``order[0]`` (the start) is free. Raises ``ValueError`` when ``order`` is
    not a selection at all (not 1-D integers, out of range, repeated, empty) or the vectors are invalid.

    Cost: one float64 matrix-matrix product per block of steps plus a few passes over (steps x rows), i.e.
    ``O(k n d)`` FLOPs at BLAS-3 speed (seconds for n = 50,000, k = 25,000 on two cores).
    """
    criterion = check_criterion(criterion)
    matrix = _as_matrix(vectors).astype(np.float64)
    n_rows, dim = matrix.shape
    order = _check_order(order, n_rows)
    squared_norms = np.einsum("ij,ij->i", matrix, matrix)
    floor = float(np.sqrt(16.0 * (dim + 2) * _EPS64 * squared_norms.max()))
    check = _check_centroid_steps if criterion == "centroid" else _check_kcenter_steps
    check(matrix, squared_norms, order, rtol, floor)


# --------------------------------------------------------------------------------------------------- the checker


def _check_order(order: Any, n_rows: int) -> np.ndarray:
    array = np.asarray(order)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"order must be a non-empty 1-D sequence of row positions; got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"order must hold integer row positions; got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.min() < 0 or array.max() >= n_rows:
        raise ValueError(f"order holds a position outside 0..{n_rows - 1}")
    if len(np.unique(array)) != len(array):
        raise ValueError("order selects some row more than once")
    return array


_CHECK_BLOCK = 128


class _Columns:
    """The rows a checker still has to look at: the input minus rows selected before the current block.

    Selected rows are masked at first and dropped once they make up a fifth of the columns, so the products shrink
    as the selection grows. ``positions`` ascend, so a lower column is a lower input position (the tie rule).
    """

    def __init__(self, matrix: np.ndarray, squared_norms: np.ndarray, state: np.ndarray):
        self.positions = np.arange(len(matrix))
        self.matrix, self.squared_norms, self.state = matrix, squared_norms, state
        self.selected = np.zeros(len(matrix), dtype=bool)

    def of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.positions, rows)

    def select(self, columns: np.ndarray) -> None:
        self.selected[columns] = True
        if self.selected.sum() > 0.2 * len(self.selected):
            keep = ~self.selected
            self.positions, self.matrix = self.positions[keep], self.matrix[keep]
            self.squared_norms, self.state, self.selected = self.squared_norms[keep], self.state[keep], self.selected[keep]

    def mask(self, values: np.ndarray, columns: np.ndarray) -> None:
        """-inf for rows selected before the block, and for each block pick from the step after it on."""
        values[:, self.selected] = -np.inf
        for j, column in enumerate(columns[:-1]):
            values[j + 1 :, column] = -np.inf


def _judge_steps(values, to_distance, columns: _Columns, picks: np.ndarray, first_step, rtol, floor) -> None:
    """Judge each step (row ``j`` of ``values``: the criterion key of every column, -inf where selected)."""
    best_columns = values.argmax(axis=1)  # first maximum: the lowest position among exact ties
    for j in np.flatnonzero(best_columns != picks):
        step, pick, best = first_step + int(j), int(picks[j]), int(best_columns[j])
        pick_row, best_row = int(columns.positions[pick]), int(columns.positions[best])
        pick_value, best_value = values[j, pick], values[j, best]
        pick_distance, best_distance = to_distance(j, pick_value), to_distance(j, best_value)
        if pick_distance < best_distance - rtol * max(best_distance, floor / rtol):
            raise AssertionError(
                f"step {step}: picked row {pick_row} at distance {pick_distance:.9g}, but row {best_row} is farther "
                f"({best_distance:.9g}; relative gap {(best_distance - pick_distance) / best_distance:.2e} > {rtol})"
            )
        earlier_ties = np.flatnonzero(values[j, :pick] == pick_value)
        if earlier_ties.size:
            raise AssertionError(
                f"step {step}: picked row {pick_row}, but row {int(columns.positions[earlier_ties[0]])} has exactly "
                f"the same value ({pick_distance:.9g}) and a lower position, so it must come first"
            )


def _check_centroid_steps(matrix, squared_norms, order, rtol, floor) -> None:
    selected_sum = matrix[order[0]].copy()
    columns = _Columns(matrix, squared_norms, matrix @ selected_sum)  # state: x · (sum of selected rows)
    columns.select(columns.of(order[:1]))
    for first in range(1, len(order), _CHECK_BLOCK):
        block = order[first : first + _CHECK_BLOCK]
        picks = columns.of(block)
        # Row j (< len(block)): the selected sum added before step first+j; the last row: the whole block.
        partial_sums = np.vstack([np.zeros(matrix.shape[1]), np.cumsum(matrix[block], axis=0)])
        products = partial_sums @ columns.matrix.T
        counts = np.arange(first, first + len(block), dtype=np.float64)
        # m·|x - S/m|² - |S|²/m = m|x|² - 2 x·S: the same order as the distance, without dividing.
        keys = products[:-1]
        keys += columns.state
        keys *= -2.0
        keys += np.multiply.outer(counts, columns.squared_norms)
        columns.mask(keys, picks)
        sums = selected_sum + partial_sums[:-1]
        sum_norms = np.einsum("ij,ij->i", sums, sums)

        def to_distance(j: int, key: float) -> float:
            return float(np.sqrt(max(key / counts[j] + sum_norms[j] / counts[j] ** 2, 0.0)))

        _judge_steps(keys, to_distance, columns, picks, first, rtol, floor)
        columns.state += products[-1]
        selected_sum += partial_sums[-1]
        columns.select(picks)


def _check_kcenter_steps(matrix, squared_norms, order, rtol, floor) -> None:
    start = order[0]
    nearest = np.maximum(squared_norms + squared_norms[start] - 2.0 * (matrix @ matrix[start]), 0.0)
    columns = _Columns(matrix, squared_norms, nearest)  # state: squared distance to the nearest selected row
    columns.select(columns.of(order[:1]))
    for first in range(1, len(order), _CHECK_BLOCK):
        block = order[first : first + _CHECK_BLOCK]
        picks = columns.of(block)
        squared = matrix[block] @ columns.matrix.T
        squared *= -2.0
        squared += columns.squared_norms
        squared += squared_norms[block][:, None]
        np.maximum(squared, 0.0, out=squared)
        np.minimum.accumulate(squared, axis=0, out=squared)  # row j: nearest among the block's first j+1 rows
        values = np.empty_like(squared)
        values[0] = columns.state
        np.minimum(columns.state, squared[:-1], out=values[1:])
        columns.mask(values, picks)
        _judge_steps(values, lambda j, value: float(np.sqrt(max(value, 0.0))), columns, picks, first, rtol, floor)
        np.minimum(columns.state, squared[-1], out=columns.state)
        columns.select(picks)


# ------------------------------------------------------------------------------------------------ the torch path


def _select_torch(matrix: np.ndarray, k: int, criterion: str, start: int, device: str) -> np.ndarray:
    """Incremental greedy in float64 on a torch device: one matrix-vector product per pick.

    Float64 keeps rounding (about 1e-13) far below the 1e-5 tolerance, and ``argmax`` returns the first maximum,
    so exact ties go to the lowest position. Picks stay on the device; the loop never waits for the GPU.
    """
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested, but torch sees no CUDA device (use device='cpu')")
    rows = torch.as_tensor(matrix, device=device).to(torch.float64)
    squared_norms = (rows * rows).sum(dim=1)
    order = torch.empty(k, dtype=torch.int64, device=device)
    order[0] = start
    taken = torch.zeros(len(rows), dtype=torch.bool, device=device)
    taken[start] = True
    pick = order[0]
    if criterion == "centroid":
        dots = rows @ rows[pick]  # x_i · (sum of selected rows)
        for count in range(1, k):
            keys = count * squared_norms - 2.0 * dots  # order-preserving form of the squared distance
            pick = torch.argmax(keys.masked_fill_(taken, -torch.inf))
            order[count] = pick
            taken[pick] = True
            dots += rows @ rows[pick]
    else:
        nearest = squared_norms + squared_norms[pick] - 2.0 * (rows @ rows[pick])
        for count in range(1, k):
            pick = torch.argmax(nearest.masked_fill_(taken, -torch.inf))
            order[count] = pick
            taken[pick] = True
            torch.minimum(nearest, squared_norms + squared_norms[pick] - 2.0 * (rows @ rows[pick]), out=nearest)
    return order.cpu().numpy()


# ------------------------------------------------------------------------------------------ the pruned numpy path
#
# Rounding. A float32 dot product of length d errs by at most (d-1)·u·|a||b| in the worst case, but rounding errors
# behave like independent zero-mean variables, so the error stays below λ·sqrt(d)·u·|a||b| except with probability
# about exp(-λ²/2) (Higham & Mary, SIAM J. Sci. Comput. 41, 2019); measured errors on this data are about
# 2·u·|a||b| at d = 384. The selectors count in units of sqrt(d+4)·u·max|x|² and budget 3 units per product
# (λ = 3, about 15 times the measured error). Decisions the budget cannot settle are taken in float64: rows whose
# float32 value lies within twice the budget of the best are re-evaluated from the input vectors. When that window
# is crowded (near-isotropic data, where hundreds of rows tie within rounding) and twice the budget is within the
# tolerance of check_trace, the float32 best is taken as it is: it is a valid pick either way.

RTOL = 1e-5
_CROWDED = 64


class _Rows:
    """Float32 working rows (compacted as rows are selected) plus float64 access to the input.

    With ``extra`` each row is stored as ``[x, |x|², extra]``, so that one BLAS call returns squared distances;
    without, the working rows are the input itself when it is float32 (no copy until the first compaction).
    ``original`` maps working positions to input positions; compaction keeps it increasing, so the lowest working
    position is also the lowest input position (the tie rule).
    """

    def __init__(self, matrix: np.ndarray, extra: float | None = None):
        n_rows, dim = matrix.shape
        self.source, self.dim = matrix, dim
        self.squared_norms = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
        if extra is None:
            self.work = matrix if matrix.dtype == np.float32 else matrix.astype(np.float32)
        else:
            self.work = np.empty((n_rows, dim + 2), dtype=np.float32)
            self.work[:, :dim] = matrix
            self.work[:, dim] = self.squared_norms
            self.work[:, dim + 1] = extra
        self.original = np.arange(n_rows)
        self.max_squared_norm = float(self.squared_norms.max())
        self.unit = float(np.sqrt(dim + 4)) * _U32 * self.max_squared_norm

    @property
    def vectors(self) -> np.ndarray:
        return self.work[:, : self.dim]

    def exact64(self, positions: np.ndarray) -> np.ndarray:
        """Float64 copies of working rows, from the input (so float64 input keeps its full precision)."""
        return self.source[self.original[positions]].astype(np.float64)

    def dot64(self, positions: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """Row-by-row float64 dot products; identical rows give bit-identical results (no BLAS blocking)."""
        return (self.exact64(positions) * vector).sum(axis=1)

    def keep(self, mask: np.ndarray) -> None:
        self.work = self.work[mask]
        self.squared_norms = self.squared_norms[mask]
        self.original = self.original[mask]


def _best_by_exact(candidates: np.ndarray, exact_values: np.ndarray) -> tuple[int, float]:
    """The candidate with the largest exact value; among exact ties the lowest position (candidates ascend)."""
    best = int(np.argmax(exact_values))
    return int(candidates[best]), float(exact_values[best])


def _decide(positions: np.ndarray, approx: np.ndarray, error: float, exact, offset=lambda: 0.0):
    """The row to pick among ``positions`` (ascending) from values ``approx`` that err by at most ``error``.

    Returns ``(position, exact value or None)``. Rows within 2·error of the top may be the true best and are
    re-evaluated by ``exact(positions)`` (largest wins, lowest position among exact ties), unless they are many and
    2·error is within the trace tolerance of the top (``offset()`` turns a value into a squared distance): then
    the float32 best (lowest position among equal values) is valid whichever row is truly best.
    """
    best = int(np.argmax(approx))
    top = float(approx[best])
    in_window = np.count_nonzero(approx >= top - 2.0 * error)
    if in_window == 1:
        return int(positions[best]), None
    if in_window > _CROWDED and 2.0 * error <= 0.9 * 2.0 * RTOL * (top - error + offset()):
        return int(positions[best]), None
    window = np.flatnonzero(approx >= top - 2.0 * error)
    return _best_by_exact(positions[window], exact(positions[window]))


class _CentroidSelector:
    """Pruned exact greedy for the centroid rule.

    Per row it keeps ``dots[i] = x_i·S`` (S: sum of the selected rows; float32 products summed in float64) and
    ranks rows by ``key_i = |x_i|² - 2 x_i·S/m``, the squared distance to the centroid S/m minus the common
    ``|S/m|²``. Each block speculates picks inside a pool of top rows (in float64), then checks the rest: moving
    the centroid from ``c = S/m`` to ``(S + Δs_j)/m_j`` changes a key by ``-(2/m_j)·x·E_j`` with
    ``E_j = Δs_j - j·c``. Along ``u = S/|S|`` the part ``(x·u)(u·E_j)`` is known per row, so only ``|x_⊥||E_⊥j|``
    is bounded (Cauchy–Schwarz). Rows that could still reach a pick are evaluated for every step of the block
    with one matrix-matrix product against the partial sums ``Δs_j``.

    Rounding: the stored keys err by at most 6 units (every block's product errs by 3 units times |Δs|/max|x|,
    and the |Δs| add up to at most m·max|x|; the key doubles it and divides by m); the verification product adds
    ``6·|Δs_j|/(m_j·max|x|)`` units. The pool works in float64.
    """

    MIN_BLOCK, MAX_BLOCK, SEGMENT, MIN_MARGIN = 8, 256, 32, 32
    # Where speculation keeps failing (near-isotropic data: every pick reshuffles the ranking) one matrix-vector
    # product per pick is cheapest; blocks are retried after this many picks (doubling while they keep failing).
    INCREMENTAL_RUN = 64
    PICK_OVERHEAD = 2000  # interpreter time per pick, in rows read

    def __init__(self, matrix: np.ndarray, start: int, k: int):
        self.rows = rows = _Rows(matrix)
        self.k = k
        self.selected = [start]
        self.selected_sum = rows.exact64(np.array([start]))[0]
        self.products = np.empty(len(matrix), dtype=np.float32)
        self.dots = np.zeros(len(matrix))  # +inf once selected, so that the key is -inf
        self._add_products(self.selected_sum)
        self.dots[start] = np.inf
        self.n_alive = len(matrix) - 1
        self.max_norm = float(np.sqrt(rows.max_squared_norm))
        self.key_error = 6.0 * rows.unit
        self.pool_error = 8.0 * (rows.dim + 4) * _EPS64 * rows.max_squared_norm  # float64, worst case
        self.block, self.margin = self.MIN_BLOCK, self.MIN_MARGIN
        self.incremental_until, self.incremental_run, self.poor_blocks = 0, self.INCREMENTAL_RUN, 0
        self.verified_rows = 0  # rows the last block evaluated outside its pool
        self.positions = np.arange(len(matrix))  # all working positions, for the incremental step

    def _add_products(self, vector: np.ndarray) -> None:
        """``dots += X @ vector``: the one matrix-vector product over all working rows."""
        products = self.products[: len(self.dots)]
        np.matmul(self.rows.vectors, vector.astype(np.float32), out=products)
        self.dots += products

    def run(self) -> np.ndarray:
        while len(self.selected) < self.k:
            if len(self.selected) < self.incremental_until:
                self._step_incremental()
            else:
                self._step_block(self.k - len(self.selected))
            if self.n_alive < 0.85 * len(self.dots) and len(self.dots) > 4096:
                self._compact()
        return np.array(self.selected, dtype=np.int64)

    def _compact(self) -> None:
        keep = np.isfinite(self.dots)
        self.rows.keep(keep)
        self.dots = self.dots[keep]

    def _keys(self, count: int) -> np.ndarray:
        keys = np.multiply(self.dots, -2.0 / count)
        keys += self.rows.squared_norms
        return keys

    def _exact_keys(self, count: int, selected_sum: np.ndarray):
        def exact(positions: np.ndarray) -> np.ndarray:
            return self.rows.squared_norms[positions] - (2.0 / count) * self.rows.dot64(positions, selected_sum)

        return exact

    def _centroid_norm(self, count: int, selected_sum: np.ndarray) -> float:
        return float(selected_sum @ selected_sum) / count**2

    def _accept(self, positions: list[int]) -> None:
        added = self.rows.exact64(np.array(positions)).sum(axis=0)
        self.selected.extend(int(p) for p in self.rows.original[positions])
        self.dots[positions] = np.inf
        self.n_alive -= len(positions)
        self.selected_sum += added
        self._add_products(added)

    def _step_incremental(self) -> None:
        count, selected_sum = len(self.selected), self.selected_sum
        if len(self.positions) != len(self.dots):
            self.positions = np.arange(len(self.dots))
        best, _ = _decide(
            self.positions,
            self._keys(count),
            self.key_error,
            self._exact_keys(count, selected_sum),
            lambda: self._centroid_norm(count, selected_sum),
        )
        self._accept([best])

    def _step_block(self, remaining: int) -> None:
        count0 = len(self.selected)
        want = min(remaining, self.block, count0)  # blocks of at most m picks keep the rounding budget
        keys = self._keys(count0)
        pool_size = min(self.n_alive, want + self.margin)
        if pool_size < self.n_alive:
            pool = np.argpartition(keys, len(keys) - pool_size)[len(keys) - pool_size :]
            # Rows tied with the smallest pool key join the pool: exact duplicates are never split.
            pool = np.union1d(pool, np.flatnonzero(keys == keys[pool].min()))
        else:
            pool = np.flatnonzero(np.isfinite(keys))
        picks, values, vectors = self._speculate(pool, want, count0)
        failed_at, correction, self.verified_rows = len(picks), None, 0
        if len(pool) < self.n_alive:
            keys[pool] = -np.inf
            failed_at, correction = self._verify_outside(keys, picks, values, vectors, count0)
        accepted = [int(p) for p in picks[:failed_at]] + ([correction] if correction is not None else [])
        self._accept(accepted)
        if correction is None:
            self.block = min(2 * self.block, self.MAX_BLOCK) if want == self.block else self.block
            self.margin = max(self.MIN_MARGIN, self.margin // 2)
        else:
            self.block = max(self.MIN_BLOCK, failed_at)
            # A larger pool helps only if the row that overtook was ranked just below it.
            rank = int((keys > keys[correction]).sum())
            if rank < len(pool):
                self.margin = min(2 * self.margin, 8 * self.MAX_BLOCK)
        # Cost model in rows read (calibrated on this machine): the block's pool (float64 rows count twice, once
        # per speculative pick and for the gather), a fixed overhead per speculative pick, the verification
        # product (about half a row read per row and step) and the update of all rows, against one
        # matrix-vector product per accepted pick. Where the ranking reshuffles at every pick, blocks lose.
        steps = len(picks)
        block_reads = (
            2 * len(pool) * (steps + 1) + self.PICK_OVERHEAD * steps + self.verified_rows * (1 + steps / 2) + len(keys)
        )
        poor = block_reads > len(accepted) * (self.n_alive + self.PICK_OVERHEAD)
        self.poor_blocks = self.poor_blocks + 1 if poor else 0
        if self.poor_blocks >= 2:
            self.incremental_until = len(self.selected) + self.incremental_run
            self.incremental_run *= 2
            self.poor_blocks = 0
        elif len(accepted) >= 4 * self.MIN_BLOCK:  # clearly productive: speculation works here
            self.incremental_run = self.INCREMENTAL_RUN

    def _speculate(self, pool: np.ndarray, want: int, count0: int):
        """Greedy inside the pool, in float64: picks (working positions), their keys and float64 vectors."""
        rows = self.rows
        pool_rows = rows.exact64(pool)
        pool_dots = pool_rows @ self.selected_sum
        pool_norms = rows.squared_norms[pool]
        running_sum = self.selected_sum.copy()
        picked, values = [], []
        for j in range(min(want, len(pool))):
            count = count0 + j
            pool_keys = pool_norms - (2.0 / count) * pool_dots
            best, _ = _decide(np.arange(len(pool)), pool_keys, self.pool_error, self._pool_exact(pool, count, running_sum))
            picked.append(best)
            values.append(pool_keys[best])
            running_sum += pool_rows[best]
            pool_dots += pool_rows @ pool_rows[best]
            pool_norms[best] = -np.inf  # never picked twice: -inf survives the key arithmetic
        return pool[picked], np.array(values), pool_rows[picked]

    def _pool_exact(self, pool: np.ndarray, count: int, selected_sum: np.ndarray):
        exact = self._exact_keys(count, selected_sum)
        return lambda local: exact(pool[local])

    def _verify_outside(self, keys, picks, values, vectors, count0):
        """First step at which a row outside the pool beats the speculative pick, and that row (else len, None)."""
        n_steps = len(picks)
        counts = count0 + np.arange(n_steps, dtype=np.float64)
        partial_sums = np.zeros_like(vectors)  # row j: the sum of the picks before step j
        np.cumsum(vectors[:-1], axis=0, out=partial_sums[1:])
        candidates = self._threatening_rows(keys, values, partial_sums, counts)
        self.verified_rows = candidates.size
        if candidates.size == 0:
            return n_steps, None
        probes = partial_sums.T.astype(np.float32)
        if candidates.size > len(keys) // 4:  # most rows: multiplying them all beats gathering them
            products = (self.rows.vectors @ probes)[candidates]
        else:
            products = self.rows.vectors[candidates] @ probes
        step_keys = self.rows.squared_norms[candidates, None] - 2.0 / counts * (self.dots[candidates, None] + products)
        # Their error: the stored keys' budget, plus 3 units per product with Δs_j (doubled and divided by m_j).
        sum_norms = np.sqrt(np.einsum("ij,ij->i", partial_sums, partial_sums))
        errors = self.key_error + self.pool_error + 6.0 * self.rows.unit * sum_norms / (counts * self.max_norm)
        best_keys = step_keys.max(axis=0)
        for j in np.flatnonzero(best_keys >= values - errors):
            near_local = np.flatnonzero(step_keys[:, j] >= values[j] - errors[j])
            selected_sum = self.selected_sum + partial_sums[j]
            tolerance = 0.9 * 2.0 * RTOL * (values[j] + self._centroid_norm(counts[j], selected_sum))
            if len(near_local) > _CROWDED and 2.0 * errors[j] <= tolerance:
                # Many rows within rounding of the pick, and any of them is a valid pick: float32 decides.
                if best_keys[j] <= values[j] + errors[j]:
                    continue
                return int(j), int(candidates[near_local[np.argmax(step_keys[near_local, j])]])
            exact = self._exact_keys(counts[j], selected_sum)
            winner, value = _best_by_exact(candidates[near_local], exact(candidates[near_local]))
            pick_value = float(exact(picks[j : j + 1])[0])
            if value > pick_value or (value == pick_value and winner < picks[j]):
                return int(j), winner
        return n_steps, None

    def _threatening_rows(self, keys, values, partial_sums, counts) -> np.ndarray:
        """Rows outside the pool (finite ``keys``) whose key might reach a speculative pick's during the block."""
        rows, count0 = self.rows, counts[0]
        norm_sum = float(np.linalg.norm(self.selected_sum))
        if norm_sum == 0.0:  # no preferred direction: bound the whole move by Cauchy–Schwarz
            direction, along_rows, slack = np.zeros_like(self.selected_sum), np.zeros_like(self.dots), 0.0
        else:
            direction = self.selected_sum / norm_sum
            along_rows = self.dots / norm_sum
            slack = 3.0 * rows.unit * count0 / norm_sum  # the rounding of the stored dots, along u
        deviations = partial_sums - np.arange(len(counts))[:, None] * (self.selected_sum / count0)
        along = deviations @ direction
        across = np.sqrt(np.maximum(np.einsum("ij,ij->i", deviations, deviations) - along**2, 0.0))

        def threatening(segment: slice, positions: np.ndarray) -> np.ndarray:
            # Over the segment, -(2/m_j)·x·E_j ≤ 2·max(-(x·u)·β_j) + 2·|x_⊥|·max(|E_⊥j|/m_j) with β_j = u·E_j/m_j
            # and x·u known up to ±slack.
            low, high = along_rows[positions] - slack, along_rows[positions] + slack
            closest = np.maximum(np.abs(along_rows[positions]) - slack, 0.0)
            across_rows = np.sqrt(np.maximum(rows.squared_norms[positions] - closest**2, 0.0))
            beta = along[segment] / counts[segment]
            beta_low, beta_high = float(beta.min()), float(beta.max())
            rise = np.maximum(np.maximum(-low * beta_low, -low * beta_high), np.maximum(-high * beta_low, -high * beta_high))
            spread = float((across[segment] / counts[segment]).max())
            bound = keys[positions] + 2.0 * rise + 2.0 * spread * across_rows + self.key_error + self.pool_error
            return bound >= float(values[segment].min())

        candidates = np.flatnonzero(np.isfinite(keys))
        candidates = candidates[threatening(slice(0, len(counts)), candidates)]  # coarse: the whole block
        if len(counts) > self.SEGMENT and candidates.size:
            kept = np.zeros(len(candidates), dtype=bool)
            for first in range(0, len(counts), self.SEGMENT):
                kept |= threatening(slice(first, first + self.SEGMENT), candidates)
            candidates = candidates[kept]
        return candidates


class _KCenterSelector:
    """Exact greedy k-center with blocked float32 squared distances.

    ``nearest[i]`` is the float32 squared distance from row i to its nearest center and ``assigned[i]`` the center
    that is nearest in exact arithmetic (when two centers are within rounding of each other, float64 decides).
    Each block takes a pool of the rows with the largest values and picks inside it, updating only the pool (one
    matrix-vector product per pick over the pool), for as long as the best pool value beats the largest value
    outside the pool: values only decrease as centers are added, so no outside row can have overtaken. Then all
    rows are brought up to date with the block's new centers by one matrix-matrix product, which runs near peak
    FLOP rate instead of at memory bandwidth.

    Rounding: ``[x, |x|², 1]·[-2c, 1, |c|²]`` adds terms of total size at most 4·max|x|², so it errs by at most
    ``error`` = 12 units.
    """

    POOL, CHUNK = 256, 4096

    def __init__(self, matrix: np.ndarray, start: int, k: int):
        self.rows = rows = _Rows(matrix, extra=1.0)
        n_rows, dim = matrix.shape
        self.k = k
        self.error = 12.0 * rows.unit
        self.centers = np.empty((k, dim + 2), dtype=np.float32)  # rows [-2c, 1, |c|²] in pick order
        self.center_positions = np.empty(k, dtype=np.int64)  # input positions, in pick order
        self.n_centers = 0
        self.nearest = np.full(n_rows, np.inf, dtype=np.float32)  # -inf once selected
        self.assigned = np.zeros(n_rows, dtype=np.int64)
        self.n_alive = n_rows
        self._add_center(start)
        self._update_all(0)

    def _add_center(self, working_position: int) -> None:
        rows, number = self.rows, self.n_centers
        self.centers[number, : rows.dim] = -2.0 * rows.work[working_position, : rows.dim]
        self.centers[number, rows.dim] = 1.0
        self.centers[number, rows.dim + 1] = rows.squared_norms[working_position]
        self.center_positions[number] = rows.original[working_position]
        self.n_centers += 1
        self.nearest[working_position] = -np.inf
        self.n_alive -= 1

    def run(self) -> np.ndarray:
        while self.n_centers < self.k:
            first_center = self.n_centers
            self._pick_block(self.k - self.n_centers)
            self._update_all(first_center)
            if self.n_alive < 0.85 * len(self.nearest) and len(self.nearest) > 4096:
                self._compact()
        return self.center_positions

    def _compact(self) -> None:
        keep = np.isfinite(self.nearest)
        self.rows.keep(keep)
        self.nearest, self.assigned = self.nearest[keep], self.assigned[keep]

    def _update_all(self, first_center: int) -> None:
        """Fold the centers added since ``first_center`` into every row, a chunk of rows per product."""
        centers = self.centers[first_center : self.n_centers].T
        for first in range(0, len(self.nearest), self.CHUNK):
            chunk = np.arange(first, min(first + self.CHUNK, len(self.nearest)))
            self._merge(chunk, self.rows.work[first : first + self.CHUNK] @ centers, first_center)

    def _merge(self, group: np.ndarray, squared: np.ndarray, first_center: int) -> None:
        """Fold float32 squared distances to centers ``first_center..`` (columns) into the rows' state."""
        slack = 2.0 * self.error  # two float32 values this close may be in either true order
        columns = squared.argmin(axis=1)
        new_nearest = squared[np.arange(len(group)), columns]
        old_nearest, old_assigned = self.nearest[group], self.assigned[group]
        self.nearest[group] = np.minimum(old_nearest, new_nearest)
        closer = new_nearest < old_nearest
        self.assigned[group[closer]] = columns[closer] + first_center
        # A row can only have two centers within rounding of its nearest if a new one comes that close.
        suspects = np.flatnonzero(new_nearest <= old_nearest + slack)
        if suspects.size == 0:
            return
        lowest = np.minimum(old_nearest[suspects], new_nearest[suspects])
        contenders = squared[suspects] <= (lowest + slack)[:, None]
        # The old center competes unless this product recomputed it (pool rows meet their block's centers twice).
        old_in_play = (old_nearest[suspects] <= lowest + slack) & (old_assigned[suspects] < first_center)
        contested = np.flatnonzero(contenders.sum(axis=1) + old_in_play > 1)
        if contested.size:
            rows = group[suspects[contested]]
            self.assigned[rows] = self._nearest_in_float64(
                rows, contenders[contested], old_in_play[contested], old_assigned[suspects[contested]], first_center
            )

    def _nearest_in_float64(self, positions, contenders, old_in_play, old_assigned, first_center) -> np.ndarray:
        """For rows with several centers within rounding of their float32 nearest: the float64 nearest center.

        Candidates are the centers ``first_center + j`` where ``contenders[row, j]``, plus ``old_assigned[row]``
        where ``old_in_play[row]``; returns one center per row of ``positions``.
        """
        row_numbers, columns = np.nonzero(contenders)
        old_rows = np.flatnonzero(old_in_play)
        row_numbers = np.concatenate([row_numbers, old_rows])
        centers = np.concatenate([columns + first_center, old_assigned[old_rows]])
        center_rows = self.rows.source[self.center_positions[centers]].astype(np.float64)
        differences = self.rows.exact64(positions[row_numbers]) - center_rows
        squared = np.einsum("ij,ij->i", differences, differences)
        order = np.lexsort((centers, squared, row_numbers))  # per row: smallest distance, then lowest center
        row_numbers, centers = row_numbers[order], centers[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = row_numbers[1:] != row_numbers[:-1]
        return centers[first]

    def _exact_squared(self, positions: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Float64 squared distances of rows to the given centers (numbers), from the input vectors."""
        center_rows = self.rows.source[self.center_positions[centers]].astype(np.float64)
        differences = self.rows.exact64(positions) - center_rows
        return (differences * differences).sum(axis=1)

    def _exact_nearest(self, positions: np.ndarray) -> np.ndarray:
        return self._exact_squared(positions, self.assigned[positions])

    def _pick_block(self, remaining: int) -> None:
        """Picks inside the pool while they provably beat every row outside it; at least one pick.

        The pool's values and nearest centers live in local arrays during the block and are written back after.
        """
        rows, nearest = self.rows, self.nearest
        pool_size = min(self.n_alive, self.POOL)
        if pool_size < self.n_alive:
            split = len(nearest) - pool_size
            parts = np.argpartition(nearest, split - 1)
            pool = np.sort(parts[split:])
            outside_bound = float(nearest[parts[split - 1]]) + self.error  # no outside row is truly farther
        else:
            pool = np.flatnonzero(np.isfinite(nearest))
            outside_bound = -np.inf
        pool_rows = rows.vectors[pool]
        pool_norms = rows.squared_norms[pool].astype(np.float32)
        values, owners = nearest[pool], self.assigned[pool]
        local_positions = np.arange(len(pool))

        def exact(local: np.ndarray) -> np.ndarray:
            return self._exact_squared(pool[local], owners[local])

        picked = 0
        while picked < min(remaining, len(pool)):
            best, value = _decide(local_positions, values, self.error, exact)
            if value is None:  # the float32 value of the pick, less its error, bounds the truth from below
                value = float(values[best]) - self.error
            if not value > outside_bound:
                break
            center = self.n_centers
            self._add_center(int(pool[best]))
            values[best] = -np.inf
            squared = pool_norms + pool_norms[best] - 2.0 * (pool_rows @ pool_rows[best])
            contested = np.flatnonzero(np.abs(squared - values) <= 2.0 * self.error)
            previous = owners[contested]
            owners[squared < values] = center
            np.minimum(values, squared, out=values)
            if contested.size:  # the new center and the old nearest are within rounding of each other
                both = np.ones((len(contested), 1), dtype=bool)
                owners[contested] = self._nearest_in_float64(pool[contested], both, both[:, 0], previous, center)
            picked += 1
        nearest[pool], self.assigned[pool] = values, owners
        if picked == 0:  # a near-tie across the pool boundary: decide among all rows
            alive = np.flatnonzero(np.isfinite(nearest))
            best, _ = _decide(alive, nearest[alive], self.error, self._exact_nearest)
            self._add_center(best)
