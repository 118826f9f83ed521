"""Evaluation statistics: accuracy, macro-F1, and paired comparisons of two models on the same test set.

Paired comparisons take per-example correctness vectors (1 = right, 0 = wrong) of models ``a`` and ``b`` on the
same examples in the same order; differences are always ``a - b``. DQE reports the paired t-test (METHODS.md §1);
McNemar's test and the bootstrap interval are the usual companions for paired 0/1 outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from sklearn.metrics import f1_score

# Below this many discordant pairs McNemar's chi-square approximation is poor, so the exact binomial test is used.
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class TTestResult:
    """Paired t-test of ``a - b``: ``statistic`` (t), two-sided ``p_value``, ``mean_difference``, ``n``."""

    statistic: float
    p_value: float
    mean_difference: float
    n: int


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test. ``only_a_correct``/``only_b_correct``: the discordant counts; ``method``: ``"exact"``
    (two-sided binomial, ``statistic`` is the smaller count) or ``"chi2"`` (``statistic`` is the continuity-corrected
    chi-square with 1 degree of freedom)."""

    statistic: float
    p_value: float
    only_a_correct: int
    only_b_correct: int
    method: str


@dataclass(frozen=True)
class ConfidenceInterval:
    """Percentile bootstrap interval around ``estimate`` (the statistic on the original sample)."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int


def _as_vector(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def _check_same_length(first: object, second: object, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_vector(first, names[0]), _as_vector(second, names[1])
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {a.shape[0]} and {b.shape[0]}")
    return a, b


def _check_correctness(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype == np.bool_:
        return values.astype(np.int8)
    if not np.issubdtype(values.dtype, np.number) or not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name} must hold per-example correctness as 0/1 or booleans")
    return values.astype(np.int8)


def _paired_correctness(correct_a: object, correct_b: object) -> tuple[np.ndarray, np.ndarray]:
    a, b = _check_same_length(correct_a, correct_b, ("correct_a", "correct_b"))
    return _check_correctness(a, "correct_a"), _check_correctness(b, "correct_b")


def _check_bootstrap_settings(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _percentile_interval(
    estimate: float, resampled: np.ndarray, confidence: float, n_resamples: int
) -> ConfidenceInterval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return ConfidenceInterval(float(estimate), float(low), float(high), confidence, n_resamples)


def accuracy(y_true: object, y_pred: object) -> float:
    """Share of examples whose prediction equals the label."""
    truth, predicted = _check_same_length(y_true, y_pred, ("y_true", "y_pred"))
    return float(np.mean(truth == predicted))


def macro_f1(y_true: object, y_pred: object, labels: object | None = None) -> float:
    """Unweighted mean of per-label F1 over ``labels`` (default: every label in ``y_true`` or ``y_pred``).

    A label with no true and no predicted examples scores F1 = 0, as in scikit-learn with ``zero_division=0``.
    """
    truth, predicted = _check_same_length(y_true, y_pred, ("y_true", "y_pred"))
    return float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0.0))


def paired_t_test(correct_a: object, correct_b: object) -> TTestResult:
    """Two-sided paired t-test on per-example correctness (``scipy.stats.ttest_rel``), as in the DQE paper.

    When every difference is the same the t statistic is undefined; then identical models (all differences 0)
    give ``t = 0, p = 1`` and a constant non-zero difference gives ``t = ±inf, p = 0``, without warnings.
    """
    a, b = _paired_correctness(correct_a, correct_b)
    if a.shape[0] < 2:
        raise ValueError("paired_t_test needs at least 2 examples")
    differences = a.astype(np.float64) - b
    mean_difference = float(differences.mean())
    if np.all(differences == differences[0]):
        if mean_difference == 0.0:
            return TTestResult(0.0, 1.0, 0.0, a.shape[0])
        return TTestResult(float(np.copysign(np.inf, mean_difference)), 0.0, mean_difference, a.shape[0])
    result = scipy_stats.ttest_rel(a.astype(np.float64), b.astype(np.float64))
    return TTestResult(float(result.statistic), float(result.pvalue), mean_difference, a.shape[0])


def mcnemar_test(correct_a: object, correct_b: object, *, exact: bool | None = None) -> McNemarResult:
    """McNemar's test on the discordant pairs of two models' per-example correctness.

    ``exact=None`` picks the exact two-sided binomial test (``p = min(1, 2 * P[Binom(n, 1/2) <= min count])``)
    when there are fewer than ``MCNEMAR_EXACT_BELOW`` discordant pairs and otherwise the chi-square test with
    Edwards' continuity correction, ``max(|b - c| - 1, 0)^2 / (b + c)``; the correction is clipped at 0 so equal
    counts give ``p = 1``. No discordant pairs give ``p = 1``.
    """
    a, b = _paired_correctness(correct_a, correct_b)
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    discordant = only_a + only_b
    use_exact = discordant < MCNEMAR_EXACT_BELOW if exact is None else exact
    if discordant == 0:
        return McNemarResult(0.0, 1.0, 0, 0, "exact" if use_exact else "chi2")
    if use_exact:
        smaller = min(only_a, only_b)
        p_value = min(1.0, 2.0 * float(scipy_stats.binom.cdf(smaller, discordant, 0.5)))
        return McNemarResult(float(smaller), p_value, only_a, only_b, "exact")
    statistic = max(abs(only_a - only_b) - 1, 0) ** 2 / discordant
    return McNemarResult(float(statistic), float(scipy_stats.chi2.sf(statistic, df=1)), only_a, only_b, "chi2")


def bootstrap_accuracy_ci(
    correct: object, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> ConfidenceInterval:
    """Percentile bootstrap interval for accuracy from per-example correctness.

    Resampling n examples with replacement and counting the correct ones is a Binomial(n, accuracy) draw, so the
    resamples are drawn that way: the same distribution as index resampling, in O(n_resamples) memory.
    """
    values = _check_correctness(_as_vector(correct, "correct"), "correct")
    _check_bootstrap_settings(n_resamples, confidence)
    n = values.shape[0]
    estimate = float(values.mean())
    resampled = np.random.default_rng(seed).binomial(n, estimate, size=n_resamples) / n
    return _percentile_interval(estimate, resampled, confidence, n_resamples)


def bootstrap_accuracy_difference_ci(
    correct_a: object, correct_b: object, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> ConfidenceInterval:
    """Paired percentile bootstrap interval for ``accuracy(a) - accuracy(b)``.

    Examples are resampled as pairs. Only the counts of the four (a, b) outcomes matter, so each resample is a
    multinomial draw of those counts: the same distribution as index resampling, in O(n_resamples) memory.
    """
    a, b = _paired_correctness(correct_a, correct_b)
    _check_bootstrap_settings(n_resamples, confidence)
    n = a.shape[0]
    only_a = np.mean((a == 1) & (b == 0))
    only_b = np.mean((a == 0) & (b == 1))
    both_or_neither = 1.0 - only_a - only_b
    outcome_shares = [only_a, only_b, max(both_or_neither, 0.0)]
    counts = np.random.default_rng(seed).multinomial(n, outcome_shares, size=n_resamples)
    resampled = (counts[:, 0] - counts[:, 1]) / n
    return _percentile_interval(float(only_a - only_b), resampled, confidence, n_resamples)
