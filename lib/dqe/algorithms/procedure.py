"""The whole DQE procedure in memory: select a diverse half per label, fit on it, predict the rest, triage the
mistakes, build the curated set (Zeng et al., COLING 2025; METHODS.md §1).

The Spark stages do the same at scale, partition by partition; this module is the single-machine version for
notebooks and benchmarks, and it reuses the same pieces (:func:`~dqe.algorithms.greedy.greedy_select`,
:func:`~dqe.algorithms.triage_rule.categorize`, :func:`~dqe.algorithms.triage_rule.curate`,
:func:`~dqe.algorithms.confident.label_issues`). The model is a strategy: any ``fit_predict(train_positions,
predict_positions) -> class probabilities`` callable (one column per label, labels sorted; the prediction is the
most probable), so the same procedure runs with the linear trainer on embeddings or a fine-tuned encoder::

    classes = sorted(set(labels))

    def fit_predict(train, predict):
        model = LinearTrainer().fit(texts[train], labels[train], vectors[train])
        found = model.predict(texts[predict], vectors[predict])
        return probabilities_over(classes, model.classes_, found.probabilities)

    outcome = run_dqe(vectors, labels, fit_predict, criterion="centroid", seed=0, both_directions=True)
    outcome.curation.positions                # rows to train on
    outcome.flagged                           # rows flagged noisy (either direction)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import pandas as pd

from dqe.algorithms.confident import check_max_flagged_share, label_issues
from dqe.algorithms.greedy import check_criterion, greedy_select
from dqe.algorithms.triage_rule import NOISY, Curation, categorize, curate, drop_reverse_noise

FitPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (train, predict) -> probabilities


@dataclass(frozen=True)
class DqeOutcome:
    """What one run of the procedure decided.

    ``sampled``: bool per row. ``forward``: triage of the wrong unsampled rows (``categorize``'s frame).
    ``reverse``: triage of the wrong sampled rows when the procedure also ran the other way (a model fitted on
    ``unsampled`` predicting ``sampled``), else None. ``curation``: the curated set, with rows flagged noisy in
    either direction left out. ``probabilities``: each row's out-of-sample class probabilities (columns: the
    labels, sorted), NaN for sampled rows when only one direction ran.
    """

    sampled: np.ndarray
    forward: pd.DataFrame
    reverse: pd.DataFrame | None
    curation: Curation
    probabilities: np.ndarray

    @property
    def flagged(self) -> np.ndarray:
        """Sorted positions of the rows flagged noisy (the wrong row of each noisy pair), in either direction."""
        frames = [self.forward] + ([self.reverse] if self.reverse is not None else [])
        rows = [frame.loc[frame["category"] == NOISY, "row"].to_numpy() for frame in frames]
        return np.unique(np.concatenate(rows)).astype(np.int64)


def select_per_label(
    vectors: np.ndarray, labels: np.ndarray, ratio: float = 0.5, criterion: str = "centroid", seed: int = 0
) -> np.ndarray:
    """Boolean mask of the greedily selected ``round(ratio · n_label)`` rows of each label.

    Each label's greedy run starts from a random row drawn with ``seed``; labels are visited in sorted order so
    that the draws do not depend on row order.
    """
    check_criterion(criterion)  # here too: a label whose quota rounds to 0 never reaches greedy_select
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be between 0 and 1 (exclusive); got {ratio}")
    label_array = np.asarray(labels, dtype=object)
    if label_array.shape != (len(vectors),):
        raise ValueError(f"labels must hold one label per vector ({len(vectors)}); got shape {label_array.shape}")
    rng = np.random.default_rng(seed)
    sampled = np.zeros(len(label_array), dtype=bool)
    for label in sorted(set(label_array.tolist())):
        members = np.flatnonzero(label_array == label)
        quota = round(ratio * len(members))
        if quota == 0:
            continue
        start = int(rng.integers(len(members)))
        order = greedy_select(vectors[members], quota, criterion=criterion, start=start)
        sampled[members[order]] = True
    return sampled


def probabilities_over(classes: list, trained_classes: list, probabilities: np.ndarray) -> np.ndarray:
    """A trainer's probabilities (columns: the ``trained_classes`` it saw) as columns over all ``classes``; a
    class missing from its training half gets probability 0."""
    expanded = np.zeros((len(probabilities), len(classes)))
    column = {label: i for i, label in enumerate(classes)}
    for source, label in enumerate(trained_classes):
        expanded[:, column[label]] = probabilities[:, source]
    return expanded


def run_dqe(
    vectors: np.ndarray,
    labels: np.ndarray,
    fit_predict: FitPredict,
    *,
    ratio: float = 0.5,
    criterion: str = "centroid",
    seed: int = 0,
    both_directions: bool = False,
    noise_rule: Literal["neighbor", "confident_learning"] = "neighbor",
    policy: Literal["drop_flagged", "drop_pair"] = "drop_flagged",
    noise_probabilities: np.ndarray | None = None,
    max_flagged_share: float = 1.0,
) -> DqeOutcome:
    """Run DQE once: select, fit on ``sampled``, predict ``unsampled``, triage, curate.

    With ``both_directions`` a second model fitted on ``unsampled`` predicts ``sampled`` (a two-fold cross-fit),
    so that every row gets an out-of-sample prediction; the rows it flags noisy leave the curated set too (and,
    under ``drop_pair``, their neighbours), as in the Spark ``curate`` stage. ``noise_rule="confident_learning"``
    (needs both directions) calls a wrong row noisy when confident learning on those probabilities flags its
    label, instead of when its nearest neighbour's label differs (``triage.noise_rule`` in the Spark stage).
    ``noise_probabilities`` (one row per row, one column per sorted label) gives that rule out-of-sample
    probabilities from other fits, e.g. two random stratified folds, instead of the two directions' own: greedy
    selection puts atypical, often mislabelled, rows into ``sampled``, which makes the diverse halves poorer folds
    for confident learning than exchangeable ones (bench/README.md). The curation still triages the diverse halves'
    mistakes; only the noise test changes. Not in the Spark stages yet. ``max_flagged_share`` caps, per label,
    the share of its rows that rule may flag (:func:`~dqe.algorithms.confident.flag_quotas`;
    ``triage.max_flagged_share`` in the Spark stage).
    """
    if noise_rule not in ("neighbor", "confident_learning"):
        raise ValueError(f"noise_rule must be 'neighbor' or 'confident_learning', got {noise_rule!r}")
    if noise_rule == "confident_learning" and not both_directions and noise_probabilities is None:
        raise ValueError(
            "noise_rule='confident_learning' needs a probability for every row: both_directions=True or "
            "noise_probabilities"
        )
    if noise_probabilities is not None and noise_rule != "confident_learning":
        raise ValueError("noise_probabilities are only read by noise_rule='confident_learning'")
    if max_flagged_share != 1.0 and noise_rule != "confident_learning":
        raise ValueError("max_flagged_share is only read by noise_rule='confident_learning'")
    check_max_flagged_share(max_flagged_share)
    label_array = np.asarray(labels, dtype=object)
    classes = np.asarray(sorted(set(label_array.tolist())), dtype=object)
    if noise_probabilities is not None:
        noise_probabilities = _checked(
            noise_probabilities, len(label_array), len(classes), source="noise_probabilities must be"
        )
        if np.isnan(noise_probabilities).any():
            raise ValueError("noise_probabilities must hold an out-of-sample probability for every row; found NaN")
    sampled = select_per_label(vectors, label_array, ratio=ratio, criterion=criterion, seed=seed)
    train, held_out = np.flatnonzero(sampled), np.flatnonzero(~sampled)
    probabilities = np.full((len(label_array), len(classes)), np.nan)
    probabilities[held_out] = _checked(fit_predict(train, held_out), len(held_out), len(classes))
    if both_directions:
        probabilities[train] = _checked(fit_predict(held_out, train), len(train), len(classes))
    predicted = np.full(len(label_array), None, dtype=object)
    predicted[held_out] = classes[probabilities[held_out].argmax(axis=1)]
    mislabelled = None
    if noise_rule == "confident_learning":
        tested = probabilities if noise_probabilities is None else noise_probabilities
        mislabelled = label_issues(np.searchsorted(classes, label_array), tested, max_flagged_share)
    forward = categorize(vectors, label_array, sampled, predicted, mislabelled=mislabelled)
    result = curate(forward, label_array, sampled, policy=policy)
    reverse = None
    if both_directions:
        predicted_back = np.full(len(label_array), None, dtype=object)
        predicted_back[train] = classes[probabilities[train].argmax(axis=1)]
        # The rule triages the "unsampled" side, so the roles of the two halves are swapped for this direction.
        reverse = categorize(vectors, label_array, ~sampled, predicted_back, mislabelled=mislabelled)
        fates = result.fates.copy()
        drop_reverse_noise(fates, reverse, policy)
        result = Curation(positions=np.flatnonzero(fates["curated"].to_numpy()).astype(np.int64), fates=fates)
    return DqeOutcome(sampled=sampled, forward=forward, reverse=reverse, curation=result, probabilities=probabilities)


def _checked(
    probabilities: np.ndarray, n_rows: int, n_classes: int, source: str = "fit_predict must return"
) -> np.ndarray:
    array = np.asarray(probabilities)
    if array.shape != (n_rows, n_classes) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"{source} class probabilities of shape ({n_rows}, {n_classes}): one row per predicted "
            f"position, one column per label (sorted); got shape {array.shape} of {array.dtype}"
        )
    return array.astype(np.float64)
