from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import f1_score

from dqe.algorithms.stats import (
    accuracy,
    bootstrap_accuracy_ci,
    bootstrap_accuracy_difference_ci,
    macro_f1,
    mcnemar_test,
    paired_t_test,
)


def paired_outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither)
    return a, b


def test_accuracy_and_macro_f1_on_a_known_case():
    y_true = ["pos", "pos", "neg", "neg", "neu"]
    y_pred = ["pos", "neg", "neg", "neg", "pos"]
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 5)
    # F1: pos 2*1/(2*1+1+1)=0.5, neg 2*2/(2*2+1+0)=0.8, neu 0 -> mean 0.4333...
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_macro_f1_matches_scikit_learn_and_honours_labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    # A label absent from both counts as F1 = 0 when listed explicitly.
    assert macro_f1(y_true, y_pred, labels=[0, 1, 2, 3, 4]) == pytest.approx(macro_f1(y_true, y_pred) * 4 / 5)


def test_paired_t_test_matches_scipy():
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.8).astype(int)
    b = (rng.random(300) < 0.7).astype(int)
    result = paired_t_test(a, b)
    expected = scipy_stats.ttest_rel(a, b)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.mean_difference == pytest.approx(a.mean() - b.mean())
    assert result.n == 300


def test_paired_t_test_degenerate_cases_are_defined_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = paired_t_test([1, 0, 1, 1], [1, 0, 1, 1])
        always_better = paired_t_test([True, True, True], [False, False, False])
        always_worse = paired_t_test([0, 0, 0], [1, 1, 1])
    assert (same.statistic, same.p_value, same.mean_difference) == (0.0, 1.0, 0.0)
    assert always_better.statistic == math.inf and always_better.p_value == 0.0
    assert always_worse.statistic == -math.inf and always_worse.mean_difference == -1.0


def test_mcnemar_exact_on_a_small_table():
    # 2 vs 8 discordant pairs: p = 2 * P[Binom(10, 1/2) <= 2] = 2 * (1 + 10 + 45) / 1024
    a, b = paired_outcomes(both=40, only_a=2, only_b=8, neither=5)
    result = mcnemar_test(a, b)
    assert result.method == "exact"
    assert (result.only_a_correct, result.only_b_correct) == (2, 8)
    assert result.p_value == pytest.approx(2 * 56 / 1024)
    assert result.statistic == 2.0


def test_mcnemar_chi_square_with_continuity_correction_on_a_large_table():
    # b = 30, c = 12: chi2 = (|30 - 12| - 1)^2 / 42 = 289 / 42
    a, b = paired_outcomes(both=100, only_a=30, only_b=12, neither=20)
    result = mcnemar_test(a, b)
    assert result.method == "chi2"
    assert result.statistic == pytest.approx(289 / 42)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(289 / 42 / 2)))  # chi2(1) survival function


def test_mcnemar_can_be_forced_and_handles_no_discordant_pairs():
    a, b = paired_outcomes(both=10, only_a=3, only_b=1, neither=2)
    forced = mcnemar_test(a, b, exact=False)
    assert forced.method == "chi2" and forced.statistic == pytest.approx(1 / 4)
    assert mcnemar_test(a, b).p_value == pytest.approx(2 * 5 / 16)
    equal_counts = mcnemar_test(*paired_outcomes(both=0, only_a=20, only_b=20, neither=0))
    assert equal_counts.method == "chi2" and equal_counts.p_value == 1.0
    none = mcnemar_test([1, 0, 1], [1, 0, 1])
    assert none.p_value == 1.0 and none.only_a_correct == none.only_b_correct == 0


def test_bootstrap_accuracy_interval_is_seeded_and_brackets_the_estimate():
    correct = np.array([1] * 80 + [0] * 20)
    first = bootstrap_accuracy_ci(correct, n_resamples=2000, seed=7)
    assert first == bootstrap_accuracy_ci(correct, n_resamples=2000, seed=7)
    # With few resamples the interpolated quantiles show whether the seed is used at all.
    few = [bootstrap_accuracy_ci(correct, n_resamples=101, seed=seed) for seed in (7, 8)]
    assert few[0] != few[1]
    assert first.estimate == pytest.approx(0.8)
    assert first.low < 0.8 < first.high
    # The normal approximation's 95% half-width is 1.96 * sqrt(0.8 * 0.2 / 100) = 0.078.
    assert (first.high - first.low) / 2 == pytest.approx(0.078, abs=0.015)


def test_bootstrap_accuracy_interval_matches_index_resampling_in_distribution():
    rng = np.random.default_rng(3)
    correct = (rng.random(400) < 0.65).astype(int)
    ours = bootstrap_accuracy_ci(correct, n_resamples=4000, confidence=0.9, seed=0)
    indices = np.random.default_rng(99).integers(0, 400, size=(4000, 400))
    low, high = np.quantile(correct[indices].mean(axis=1), [0.05, 0.95])
    assert ours.low == pytest.approx(low, abs=0.01)
    assert ours.high == pytest.approx(high, abs=0.01)


def test_bootstrap_difference_interval_is_paired():
    # Model a is right exactly where b is, plus 10 more examples: the paired difference never goes below 0,
    # although unpaired resampling of two accuracies of ~0.5 would easily straddle 0.
    a, b = paired_outcomes(both=100, only_a=10, only_b=0, neither=90)
    interval = bootstrap_accuracy_difference_ci(a, b, n_resamples=2000, seed=0)
    assert interval.estimate == pytest.approx(0.05)
    assert 0.0 < interval.low < 0.05 < interval.high
    swapped = bootstrap_accuracy_difference_ci(b, a, n_resamples=2000, seed=0)
    assert swapped.estimate == pytest.approx(-0.05) and swapped.high < 0.0


def test_bootstrap_difference_matches_index_resampling_in_distribution():
    a, b = paired_outcomes(both=150, only_a=30, only_b=18, neither=52)
    ours = bootstrap_accuracy_difference_ci(a, b, n_resamples=4000, seed=0)
    indices = np.random.default_rng(5).integers(0, len(a), size=(4000, len(a)))
    low, high = np.quantile(a[indices].mean(axis=1) - b[indices].mean(axis=1), [0.025, 0.975])
    assert ours.low == pytest.approx(low, abs=0.01)
    assert ours.high == pytest.approx(high, abs=0.01)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accuracy([1, 2], [1]), "same length"),
        (lambda: accuracy([], []), "non-empty 1-D"),
        (lambda: paired_t_test([1, 2, 0], [1, 0, 0]), "0/1 or booleans"),
        (lambda: paired_t_test([1], [0]), "at least 2"),
        (lambda: mcnemar_test(["yes"], ["no"]), "0/1 or booleans"),
        (lambda: bootstrap_accuracy_ci([[1, 0]]), "non-empty 1-D"),
        (lambda: bootstrap_accuracy_ci([1, 0], confidence=1.0), "confidence"),
        (lambda: bootstrap_accuracy_difference_ci([1, 0], [0, 1], n_resamples=0), "n_resamples"),
    ],
)
def test_invalid_inputs_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
