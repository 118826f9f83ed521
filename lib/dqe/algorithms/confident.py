"""Confident learning: which labels out-of-sample probabilities say are wrong (Northcutt, Jiang & Chuang, JAIR 2021).

DQE calls a wrong prediction *noisy* when the row's nearest neighbour carries another label. That rule reads
labels through a topic embedding, and measured on injected noise (``bench/README.md``) it finds fewer flipped
labels than confident learning on the same model's probabilities. This module is that alternative
(``triage.noise_rule: confident_learning``), written in numpy as the steps the Spark triage stage reuses, so that
it runs on a corpus that does not fit one machine and needs no AGPL dependency in the wheel:

1. :func:`confident_thresholds` — per class ``k``, the mean probability of ``k`` over the rows labelled ``k``;
2. :func:`confident_guesses` — per row, the class it confidently belongs to (probability at or above that class's
   threshold; the most probable when several are), or ``NO_GUESS``;
3. :func:`removal_counts` — the confident joint (given label × guessed class) calibrated to the label counts, and
   from it how many rows of each given label to flag as each other class (*prune by noise rate*);
4. :func:`label_issues` — per given label ``i`` and class ``j``, the rows with the largest margin
   ``p_j − p_i``, as many as :func:`flag_quotas` says; never a row whose most probable class is its label.

``max_flagged_share`` (beyond cleanlab; 1.0, i.e. off, by default) caps what may be flagged of each given label:
when a label's quotas add up to more than that share of its rows, every quota of the label shrinks in proportion,
so the rows with the largest margins are still the ones flagged. It is for a small class that uniform noise
floods with wrong labels: out-of-sample models fitted on such rows flag its genuine members too
(``bench/README.md``).

Steps 1 and 3 need only per-class sums and counts, step 2 and the margins are per row, and step 4 is a top-n per
(label, class) cell: that is how the Spark stage distributes it. The result equals
``cleanlab.filter.find_label_issues`` with its defaults (``filter_by="prune_by_noise_rate"``), which the tests
check, except that ties in the margin go to the lower position here.
"""

from __future__ import annotations

import numpy as np

NO_GUESS = -1
# Classes nobody carries get a threshold no probability reaches, so no row is guessed into them.
UNREACHABLE = 2.0
# Tolerances cleanlab applies; kept so the flags match it exactly.
THRESHOLD_SLACK = 1e-6
SAME_LABEL_SLACK = 1e-6
MIN_ROWS_PER_CLASS = 1


def check_inputs(labels: object, probabilities: object) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels in ``[0, n_classes)`` and a (rows × classes) probability matrix, or a ValueError."""
    label_array = np.asarray(labels)
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(f"probabilities must be a 2-D array with a column per class (2 or more); got shape {matrix.shape}")
    if label_array.shape != (matrix.shape[0],):
        raise ValueError(f"labels must hold one class index per row ({matrix.shape[0]}); got shape {label_array.shape}")
    if not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"labels must be class indices (integers), got dtype {label_array.dtype}")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= matrix.shape[1]):
        raise ValueError(f"labels must lie in [0, {matrix.shape[1]}): one column of probabilities per class")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    return label_array.astype(np.int64), matrix


def confident_thresholds(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per class, the mean probability of that class over the rows labelled with it (``UNREACHABLE`` if none)."""
    n_classes = probabilities.shape[1]
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.bincount(labels, weights=probabilities[np.arange(len(labels)), labels], minlength=n_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), UNREACHABLE)


def confident_guesses(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per row, the class its probability confidently points to, or ``NO_GUESS`` when no class reaches its
    threshold. With one confident class it is that class; with several, the most probable class overall."""
    confident = probabilities >= thresholds - THRESHOLD_SLACK
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, probabilities.argmax(axis=1), confident.argmax(axis=1))
    return np.where(n_confident > 0, guess, NO_GUESS).astype(np.int64)


def joint_counts(labels: np.ndarray, guesses: np.ndarray, n_classes: int, counts: np.ndarray | None = None) -> np.ndarray:
    """The confident joint before calibration: rows = given label, columns = guessed class; every diagonal cell is
    at least 1, so that each class counts as carrying at least one correct label. ``counts`` (rows per
    (label, guess) pair) lets a caller pass pairs already counted, e.g. by a Spark ``groupBy``."""
    kept = guesses != NO_GUESS
    weights = np.ones(len(labels), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    joint = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(joint, (labels[kept], guesses[kept]), weights[kept])
    np.fill_diagonal(joint, np.maximum(np.diagonal(joint), 1))
    return joint


def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    ints = values.round()
    target = round(float(values.sum()))
    while abs(ints.sum() - target) > 1e-6:
        step = 1 if target > ints.sum() else -1
        changes = min(int(abs(target - ints.sum())), len(values))
        ints[np.argsort(values - ints)[::-step][:changes]] += step
    return ints.astype(np.int64)


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    return np.stack([_round_preserving_sum(row) for row in matrix]) if len(matrix) else matrix.astype(np.int64)


def removal_counts(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """How many rows of each given label (rows) to flag as each true class (columns).

    The joint is calibrated so that row ``i`` sums to the number of rows labelled ``i`` and the whole to the number
    of rows, rounded with row totals kept; then each given label keeps at least ``MIN_ROWS_PER_CLASS`` rows on the
    diagonal, the rise taken evenly from the label's other non-zero cells.
    """
    label_counts = np.asarray(label_counts, dtype=np.float64)
    row_totals = np.clip(joint.sum(axis=1), 1e-30, None)
    # Laid out as cleanlab lays it out (its joint is the transpose of a C-ordered matrix), so that the total is
    # summed in the same order: roundings of exact halves, and with them the flags, then agree with it to the row.
    calibrated = (np.ascontiguousarray(joint.T) / row_totals * label_counts).T
    calibrated = calibrated / max(np.sum(calibrated), 1e-30) * label_counts.sum()
    by_true_class = _round_rows(calibrated).T.astype(np.float64)  # rows = true class, columns = given label
    diagonal = np.diagonal(by_true_class).copy()
    raised = np.maximum(diagonal, MIN_ROWS_PER_CLASS)
    others = np.maximum(np.count_nonzero(by_true_class, axis=0) - 1.0, 1.0)
    adjusted = np.clip(by_true_class - (raised - diagonal) / others, 0, None)
    np.fill_diagonal(adjusted, raised)
    return adjusted.astype(np.int64).T  # truncated, as cleanlab does


def check_max_flagged_share(max_flagged_share: float) -> float:
    share = float(max_flagged_share)
    if not 0.0 < share <= 1.0:
        raise ValueError(
            f"max_flagged_share must be in (0, 1]: the most of a label's rows that may be flagged; got {max_flagged_share}"
        )
    return share


def flag_quotas(joint: np.ndarray, label_counts: np.ndarray, max_flagged_share: float = 1.0) -> np.ndarray:
    """Per (given label, true class) cell, how many rows to flag: :func:`removal_counts` off the diagonal, none
    for a label with ``MIN_ROWS_PER_CLASS`` rows or fewer, and per label at most ``max_flagged_share`` of its rows
    (its quotas scaled down in proportion, rounded down)."""
    share = check_max_flagged_share(max_flagged_share)
    label_counts = np.asarray(label_counts)
    quotas = removal_counts(joint, label_counts)
    quotas[label_counts <= MIN_ROWS_PER_CLASS] = 0
    np.fill_diagonal(quotas, 0)
    if share < 1.0:
        cap = np.floor(share * label_counts)
        totals = quotas.sum(axis=1)
        scale = np.where(totals > cap, cap / np.maximum(totals, 1), 1.0)
        quotas = np.floor(quotas * scale[:, None]).astype(np.int64)
    return quotas


def label_issues(labels: object, probabilities: object, max_flagged_share: float = 1.0) -> np.ndarray:
    """Boolean mask of the rows whose given label confident learning calls wrong.

    Parameters
    ----------
    labels : int array of shape (n_rows,)
        Given labels as class indices (columns of ``probabilities``).
    probabilities : array of shape (n_rows, n_classes)
        Out-of-sample class probabilities: each row predicted by a model that did not train on it.
    max_flagged_share : float in (0, 1]
        The most of each given label's rows that may be flagged (1.0: no cap, as cleanlab).
    """
    label_array, matrix = check_inputs(labels, probabilities)
    n_classes = matrix.shape[1]
    guesses = confident_guesses(matrix, confident_thresholds(label_array, matrix))
    label_counts = np.bincount(label_array, minlength=n_classes)
    quotas = flag_quotas(joint_counts(label_array, guesses, n_classes), label_counts, max_flagged_share)
    flagged = np.zeros(len(label_array), dtype=bool)
    for given, true_class in zip(*np.nonzero(quotas)):
        members = np.flatnonzero(label_array == given)
        margin = matrix[members, true_class] - matrix[members, given]
        flagged[members[np.argsort(-margin, kind="stable")[: quotas[given, true_class]]]] = True
    return flagged & ~predicts_given_label(label_array, matrix)


def predicts_given_label(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Rows whose most probable class is their label (within ``SAME_LABEL_SLACK``): never flagged."""
    nudged = probabilities.copy()
    nudged[np.arange(len(labels)), labels] += SAME_LABEL_SLACK
    return nudged.argmax(axis=1) == labels
