"""Confident learning in numpy (dqe.algorithms.confident): equal to cleanlab's find_label_issues, checked inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from cleanlab.filter import find_label_issues

from dqe.algorithms.confident import (
    NO_GUESS,
    confident_guesses,
    confident_thresholds,
    flag_quotas,
    joint_counts,
    label_issues,
    removal_counts,
)


def noisy_probabilities(rng: np.random.Generator, n_rows: int, n_classes: int, missing_class: bool):
    labels = rng.integers(0, n_classes, n_rows)
    if missing_class:
        labels[labels == n_classes - 1] = 0  # a class no row carries: its threshold is unreachable
    logits = rng.normal(size=(n_rows, n_classes)) * rng.uniform(0.5, 4.0)
    logits[np.arange(n_rows), labels] += rng.uniform(0.0, 3.0)
    probabilities = np.exp(logits)
    return labels, probabilities / probabilities.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(4))
def test_flags_equal_cleanlab_find_label_issues(seed):
    rng = np.random.default_rng(seed)
    for case in range(60):
        labels, probabilities = noisy_probabilities(
            rng, int(rng.integers(5, 400)), int(rng.integers(2, 8)), missing_class=case % 3 == 0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cleanlab warns about tiny classes
            expected = find_label_issues(labels, probabilities)
        assert np.array_equal(label_issues(labels, probabilities), expected), (seed, case)


def test_a_confidently_misplaced_row_is_flagged_and_a_doubtful_one_is_not():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0])
    probabilities = np.array(
        [[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 4 + [[0.05, 0.95]]  # the last row is labelled 0 and looks like a 1
    )
    assert label_issues(labels, probabilities).tolist() == [False] * 8 + [True]
    doubtful = probabilities.copy()
    doubtful[-1] = [0.55, 0.45]  # its label is still the most probable class: never flagged
    assert not label_issues(labels, doubtful).any()


def test_steps_count_confident_rows_per_label_and_class():
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.9, 0.1]])
    thresholds = confident_thresholds(labels, probabilities)
    assert np.allclose(thresholds, [0.7, (0.7 + 0.9 + 0.1) / 3])
    guesses = confident_guesses(probabilities, thresholds)
    assert guesses.tolist() == [0, NO_GUESS, 1, 1, 0]  # row 1 reaches neither 0.7 nor 0.567
    joint = joint_counts(labels, guesses, 2)
    assert joint.tolist() == [[1, 0], [1, 2]]  # given label × guessed class, unguessed rows left out
    # Calibrated to the label counts (2 and 3 rows): one row labelled 1 is to be flagged as a 0.
    assert removal_counts(joint, np.bincount(labels)).tolist() == [[2, 0], [1, 2]]
    assert label_issues(labels, probabilities).tolist() == [False, False, False, False, True]


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([0, 1], [[1.0], [1.0]], "column per class"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "one class index per row"),
        (["a", "b"], [[0.5, 0.5], [0.5, 0.5]], "integers"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], r"\[0, 2\)"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], "finite"),
    ],
)
def test_bad_inputs_are_clear_errors(labels, probabilities, message):
    with pytest.raises(ValueError, match=message):
        label_issues(labels, probabilities)


def flooded_label(rng: np.random.Generator):
    """Class 2 is small and flooded: 20 genuine rows, 60 rows of classes 0 and 1 wrongly labelled 2, and
    out-of-sample probabilities that, learnt from such rows, confidently put the genuine rows in class 0 too,
    though by a smaller margin than the intruders."""
    labels = np.r_[np.zeros(200, int), np.ones(200, int), np.full(80, 2)]
    probabilities = np.zeros((480, 3))
    probabilities[:200] = [0.6, 0.2, 0.2]
    probabilities[200:400] = [0.2, 0.6, 0.2]
    own, other = rng.uniform(0.25, 0.3, 20), rng.uniform(0.62, 0.7, 20)
    probabilities[400:420] = np.c_[other, 1 - own - other, own]
    intruder_class = rng.integers(0, 2, 60)
    probabilities[420:] = 0.05
    probabilities[420 + np.arange(60), intruder_class] = 0.9
    return labels, probabilities


def test_max_flagged_share_caps_each_label_and_keeps_its_smallest_margins():
    labels, probabilities = flooded_label(np.random.default_rng(0))
    uncapped = label_issues(labels, probabilities)
    assert uncapped[400:420].sum() >= 10 and uncapped[420:].all()  # the genuine rows go with the intruders
    capped = label_issues(labels, probabilities, max_flagged_share=0.5)
    assert 30 <= capped[400:].sum() <= 40
    assert not capped[400:420].any()  # the cut falls on the smallest margins: the genuine rows
    assert np.array_equal(capped[:400], uncapped[:400])  # labels the cap does not bind are untouched
    assert np.array_equal(label_issues(labels, probabilities, max_flagged_share=1.0), uncapped)


def test_flag_quotas_shrink_a_label_s_cells_in_proportion():
    joint = np.array([[50, 0, 0], [0, 50, 0], [30, 15, 5]])
    counts = np.array([50, 50, 50])
    assert flag_quotas(joint, counts)[2].tolist() == [30, 15, 0]
    assert flag_quotas(joint, counts, max_flagged_share=0.5)[2].tolist() == [16, 8, 0]  # 25 of 45, floored
    assert flag_quotas(joint, counts, max_flagged_share=0.5)[:2].sum() == 0


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_max_flagged_share_outside_zero_to_one_is_a_clear_error(share):
    labels, probabilities = flooded_label(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"max_flagged_share must be in \(0, 1\]"):
        label_issues(labels, probabilities, max_flagged_share=share)
