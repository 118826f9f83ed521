"""The whole DQE procedure in memory: select a diverse half per label, fit on it, predict the rest, triage the
mistakes, build the curated set (Zeng et al., COLING 2025; METHODS.md §1).

The Spark stages do the same at scale, partition by partition; this module is the single-machine version for
notebooks and benchmarks, and it reuses the same pieces (:func:`~dqe.algorithms.greedy.greedy_select`,
:func:`~dqe.algorithms.triage_rule.categorize`, :func:`~dqe.algorithms.triage_rule.curate`). The model is a
strategy: any ``fit_predict(train_positions, predict_positions) -> predicted labels`` callable, so the same
procedure runs with the linear trainer on embeddings or a fine-tuned encoder::

    def fit_predict(train, predict):
        model = LinearTrainer().fit(texts[train], labels[train], vectors[train])
        return np.asarray(model.predict(texts[predict], vectors[predict]).labels, dtype=object)

    outcome = run_dqe(vectors, labels, fit_predict, criterion="centroid", seed=0, both_directions=True)
    outcome.curation.positions                # rows to train on
    outcome.flagged                           # rows flagged noisy (either direction)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import pandas as pd

from dqe.algorithms.greedy import check_criterion, greedy_select
from dqe.algorithms.triage_rule import NOISY, Curation, categorize, curate, drop_reverse_noise

FitPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DqeOutcome:
    """What one run of the procedure decided.

    ``sampled``: bool per row. ``forward``: triage of the wrong unsampled rows (``categorize``'s frame).
    ``reverse``: triage of the wrong sampled rows when the procedure also ran the other way (a model fitted on
    ``unsampled`` predicting ``sampled``), else None. ``curation``: the curated set, with rows flagged noisy in
    either direction left out.
    """

    sampled: np.ndarray
    forward: pd.DataFrame
    reverse: pd.DataFrame | None
    curation: Curation

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


def run_dqe(
    vectors: np.ndarray,
    labels: np.ndarray,
    fit_predict: FitPredict,
    *,
    ratio: float = 0.5,
    criterion: str = "centroid",
    seed: int = 0,
    both_directions: bool = False,
    policy: Literal["drop_flagged", "drop_pair"] = "drop_flagged",
) -> DqeOutcome:
    """Run DQE once: select, fit on ``sampled``, predict ``unsampled``, triage, curate.

    With ``both_directions`` a second model fitted on ``unsampled`` predicts ``sampled`` (a two-fold cross-fit),
    so that every row gets an out-of-sample prediction; the rows it flags noisy leave the curated set too (and,
    under ``drop_pair``, their neighbours), as in the Spark ``curate`` stage.
    """
    label_array = np.asarray(labels, dtype=object)
    sampled = select_per_label(vectors, label_array, ratio=ratio, criterion=criterion, seed=seed)
    train, held_out = np.flatnonzero(sampled), np.flatnonzero(~sampled)
    predicted = np.full(len(label_array), None, dtype=object)
    predicted[held_out] = fit_predict(train, held_out)
    forward = categorize(vectors, label_array, sampled, predicted)
    result = curate(forward, label_array, sampled, policy=policy)
    reverse = None
    if both_directions:
        predicted_back = np.full(len(label_array), None, dtype=object)
        predicted_back[train] = fit_predict(held_out, train)
        # The rule triages the "unsampled" side, so the roles of the two halves are swapped for this direction.
        reverse = categorize(vectors, label_array, ~sampled, predicted_back)
        fates = result.fates.copy()
        drop_reverse_noise(fates, reverse, policy)
        result = Curation(positions=np.flatnonzero(fates["curated"].to_numpy()).astype(np.int64), fates=fates)
    return DqeOutcome(sampled=sampled, forward=forward, reverse=reverse, curation=result)
