"""The DQE triage rule and the curated training set it leads to (Zeng et al., COLING 2025; METHODS.md §1).

Each unsampled row the model got wrong is explained by its single most cosine-similar other row among *all* rows
(ties to the lowest position):

- ``noisy``: the neighbour's label differs, so one of the two is probably mislabelled (or, with another noise
  rule such as confident learning, that rule flags the row: see :func:`assign_categories`);
- ``difficult``: same label and the neighbour was sampled, so the model saw its like and still fails;
- ``uncovered``: same label and the neighbour was not sampled, so nothing like it was in training.

The curated set is ``sampled + uncovered + difficult - noisy``; correctly predicted unsampled rows stay out, as in
the paper. :func:`curate` records a fate for every row so nothing leaves without a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from dqe.algorithms.neighbors import NO_NEIGHBOR, l2_normalized, top1_neighbors

NOISY, DIFFICULT, UNCOVERED = "noisy", "difficult", "uncovered"
CATEGORIES = (NOISY, DIFFICULT, UNCOVERED)

# Fates of rows in the curated set.
FATE_SAMPLED = "sampled"
FATE_UNCOVERED = UNCOVERED
FATE_DIFFICULT = DIFFICULT
FATE_RELABELLED = "relabelled"  # kept with the label the judge proposed
FATE_NOISY_KEPT = "noisy_kept"  # a noisy row whose own label the judge upheld
# Fates of rows left out.
FATE_NOISY_DROPPED = "noisy_dropped"
FATE_NOISY_PAIR_DROPPED = "noisy_pair_dropped"  # the other row of a noisy pair, under policy="drop_pair"
FATE_RELABEL_CONFLICT = "relabel_conflict"  # verdicts from different pairs disagree on the row's label
FATE_CORRECT_UNSAMPLED = "correct_unsampled_excluded"

USABLE_VERDICTS = ("a", "b")


def _check_vector(values: object, n_rows: int | None, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (n_rows is not None and array.shape[0] != n_rows):
        expected = "one entry per row" if n_rows is None else f"one entry per row ({n_rows})"
        raise ValueError(f"{name} must be a 1-D array with {expected}, got shape {array.shape}")
    return array


def _check_mask(values: object, n_rows: int, name: str, meaning: str) -> np.ndarray:
    array = _check_vector(values, n_rows, name)
    if array.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array (True = {meaning}), got dtype {array.dtype}")
    return array


def _check_sampled(sampled: object, n_rows: int) -> np.ndarray:
    return _check_mask(sampled, n_rows, "sampled", "in the sampled half")


def assign_categories(
    labels: np.ndarray,
    sampled: np.ndarray,
    rows: np.ndarray,
    neighbors: np.ndarray,
    mislabelled: np.ndarray | None = None,
) -> np.ndarray:
    """Category of each wrong row given its neighbour's position: the rule alone, for callers that searched
    neighbours themselves (e.g. partition by partition with :func:`~dqe.algorithms.neighbors.reduce_best`).

    ``mislabelled`` (bool per row, e.g. :func:`dqe.algorithms.confident.label_issues`) replaces the paper's noise
    test: a wrong row is noisy when it is flagged there, whatever its neighbour's label; the others are difficult
    or uncovered by where their neighbour is."""
    if (neighbors == NO_NEIGHBOR).any():
        raise ValueError("every wrong row needs a neighbour; found NO_NEIGHBOR")
    noisy = labels[rows] != labels[neighbors] if mislabelled is None else mislabelled[rows]
    return np.where(noisy, NOISY, np.where(sampled[neighbors], DIFFICULT, UNCOVERED)).astype(object)


def categorize(
    embeddings: object,
    labels: object,
    sampled: object,
    predicted: object,
    *,
    index: Literal["flat", "ivf"] = "flat",
    nlist: int = 1024,
    nprobe: int = 16,
    mislabelled: object | None = None,
) -> pd.DataFrame:
    """Triage every unsampled row whose prediction differs from its label.

    Parameters
    ----------
    embeddings : array of shape (n_rows, n_dims)
        Row embeddings; rows are L2-normalised here, so similarity is cosine whatever their scale.
    labels : array of shape (n_rows,)
        Gold labels (any comparable values, e.g. strings or ints).
    sampled : bool array of shape (n_rows,)
        True for rows in the sampled (training) half.
    predicted : array of shape (n_rows,)
        Predictions; only the unsampled entries are read (sampled entries may be anything, e.g. None).
    index, nlist, nprobe :
        Passed to :func:`~dqe.algorithms.neighbors.top1_neighbors`. With ``"ivf"`` the rare row whose probed
        lists hold no other row is searched again exactly, so every wrong row gets a neighbour.
    mislabelled : bool array of shape (n_rows,), optional
        Rows another noise rule flagged (see :func:`assign_categories`); by default the neighbour's label decides.

    Returns
    -------
    pandas.DataFrame
        One row per wrong unsampled row, ordered by ``row``: ``row`` (int64 position), ``category`` (``noisy``,
        ``difficult`` or ``uncovered``), ``neighbor`` (int64 position) and ``similarity`` (float64 cosine).
    """
    vectors = l2_normalized(embeddings)
    n_rows = vectors.shape[0]
    label_array = _check_vector(labels, n_rows, "labels")
    sampled_array = _check_sampled(sampled, n_rows)
    predicted_array = _check_vector(predicted, n_rows, "predicted")
    if pd.isna(label_array).any():
        raise ValueError(f"labels has missing values at positions {np.flatnonzero(pd.isna(label_array))[:5].tolist()}")
    unsampled = ~sampled_array
    missing = unsampled & pd.isna(predicted_array)
    if missing.any():
        raise ValueError(f"predicted is missing for unsampled rows {np.flatnonzero(missing)[:5].tolist()}")

    flags = None if mislabelled is None else _check_mask(mislabelled, n_rows, "mislabelled", "flagged noisy")
    wrong = np.flatnonzero(unsampled & (predicted_array != label_array))
    if wrong.size and n_rows < 2:
        raise ValueError("triage needs at least 2 rows: a wrong row is explained by another row")
    found = top1_neighbors(vectors[wrong], vectors, query_ids=wrong, index=index, nlist=nlist, nprobe=nprobe)
    unanswered = found.ids == NO_NEIGHBOR
    if unanswered.any():
        exact = top1_neighbors(vectors[wrong[unanswered]], vectors, query_ids=wrong[unanswered])
        found.ids[unanswered] = exact.ids
        found.similarities[unanswered] = exact.similarities
    return pd.DataFrame(
        {
            "row": wrong.astype(np.int64),
            "category": assign_categories(label_array, sampled_array, wrong, found.ids, flags),
            "neighbor": found.ids,
            "similarity": found.similarities,
        }
    )


@dataclass(frozen=True)
class Curation:
    """The curated training set.

    ``positions``: sorted int64 positions of the rows to train on. ``fates``: one row per input row with
    ``row``, ``fate`` (see the ``FATE_*`` constants), ``curated`` (bool) and ``label`` (the training label: the
    original one, or the judge's for ``relabelled`` rows).
    """

    positions: np.ndarray
    fates: pd.DataFrame


def _check_triage(triage: pd.DataFrame, sampled: np.ndarray) -> None:
    missing = {"row", "category", "neighbor"} - set(triage.columns)
    if missing:
        raise ValueError(f"triage is missing columns {sorted(missing)}; pass the frame categorize() returns")
    n_rows = sampled.shape[0]
    for column in ("row", "neighbor"):
        values = triage[column].to_numpy()
        if values.size and (values.min() < 0 or values.max() >= n_rows):
            raise ValueError(f"triage.{column} holds positions outside [0, {n_rows})")
    if triage["row"].duplicated().any():
        raise ValueError("triage.row must be unique: one triage result per wrong row")
    if sampled[triage["row"].to_numpy()].any():
        raise ValueError("triage.row holds sampled rows; only unsampled rows are triaged")
    unknown = set(triage["category"]) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"triage.category holds unknown categories {sorted(unknown)}; expected {list(CATEGORIES)}")


def _judged_labels(
    noisy: pd.DataFrame, verdicts: pd.DataFrame, labels: np.ndarray
) -> tuple[dict[int, set[object]], set[int]]:
    """Labels the judge's usable verdicts give rows, and the noisy rows whose own pair has no usable verdict.

    Verdict ``a`` says the wrong row is mislabelled (its corrected label is the verdict's ``label``) and upholds
    its neighbour's label; ``b`` says the reverse. A verdict is usable when it is ``a``/``b`` and names a label
    that differs from the mislabelled row's current one.
    """
    missing = {"row", "verdict", "label"} - set(verdicts.columns)
    if missing:
        raise ValueError(f"verdicts is missing columns {sorted(missing)}; expected row, verdict, label")
    if verdicts["row"].duplicated().any():
        raise ValueError("verdicts.row must be unique: one verdict per noisy row")
    known_labels = set(labels.tolist())
    by_row = {int(r.row): (r.verdict, r.label) for r in verdicts.itertuples(index=False)}
    proposals: dict[int, set[object]] = {}
    unjudged: set[int] = set()
    for row, neighbor in zip(noisy["row"].tolist(), noisy["neighbor"].tolist()):
        verdict, label = by_row.get(row, (None, None))
        if verdict not in USABLE_VERDICTS or pd.isna(label):
            unjudged.add(row)
            continue
        if label not in known_labels:
            # Usually a type mismatch (the judge's "2" against integer labels): a bug, not a judgement.
            raise ValueError(f"verdict label {label!r} for row {row} is not one of the dataset's labels")
        mislabelled, upheld = (row, neighbor) if verdict == "a" else (neighbor, row)
        if label == labels[mislabelled]:
            unjudged.add(row)
            continue
        proposals.setdefault(mislabelled, set()).add(label)
        proposals.setdefault(upheld, set()).add(labels[upheld])
    return proposals, unjudged


def curate(
    triage: pd.DataFrame,
    labels: object,
    sampled: object,
    *,
    policy: Literal["drop_flagged", "drop_pair", "relabel"] = "drop_flagged",
    verdicts: pd.DataFrame | None = None,
) -> Curation:
    """Build the curated set ``sampled + uncovered + difficult - noisy`` and give every row its fate.

    Parameters
    ----------
    triage : pandas.DataFrame
        The frame :func:`categorize` returns (``row``, ``category``, ``neighbor`` positions).
    labels : array of shape (n_rows,)
    sampled : bool array of shape (n_rows,)
    policy : {"drop_flagged", "drop_pair", "relabel"}
        What to do with a noisy pair (wrong row ``a``, its differently labelled neighbour ``b``):

        - ``drop_flagged``: leave the wrong row out (``noisy_dropped``); the neighbour keeps its own fate. This
          is the paper's rule.
        - ``drop_pair``: also leave the neighbour out (``noisy_pair_dropped``), even a sampled one, since either
          row may carry the wrong label.
        - ``relabel``: follow the judge. Verdict ``a``: the wrong row joins the set with the judge's label
          (``relabelled``). Verdict ``b``: the wrong row joins with its own label (``noisy_kept``) and the
          neighbour takes the judge's label (``relabelled``; it stays in or out of the set as before). Without a
          usable verdict the wrong row is left out as under ``drop_flagged``, whatever other pairs say about it.
          A row given different labels by different pairs is left out (``relabel_conflict``).
    verdicts : pandas.DataFrame, optional
        Required by ``relabel``, ignored otherwise: one row per noisy row with ``row`` (the wrong row's
        position), ``verdict`` (``a``, ``b``, ``ambiguous`` or ``error``) and ``label`` (the corrected label of
        the mislabelled row, of the same type as ``labels``, or missing).

    Returns
    -------
    Curation
        Rows outside noisy pairs keep their base fate: ``sampled``, ``uncovered``, ``difficult`` (kept) or
        ``correct_unsampled_excluded`` (unsampled and predicted correctly, left out as in DQE).
    """
    label_array = _check_vector(labels, None, "labels")
    n_rows = label_array.shape[0]
    sampled_array = _check_sampled(sampled, n_rows)
    _check_triage(triage, sampled_array)
    if policy not in ("drop_flagged", "drop_pair", "relabel"):
        raise ValueError(f"policy must be 'drop_flagged', 'drop_pair' or 'relabel', got {policy!r}")

    fate = np.where(sampled_array, FATE_SAMPLED, FATE_CORRECT_UNSAMPLED).astype(object)
    fate[triage["row"].to_numpy()] = triage["category"].to_numpy()
    training_label = label_array.astype(object)
    noisy = triage[triage["category"] == NOISY]
    flagged = noisy["row"].to_numpy()

    if policy == "relabel":
        if verdicts is None:
            raise ValueError("policy='relabel' needs the judge's verdicts (enable triage.judge)")
        proposals, unjudged = _judged_labels(noisy, verdicts, label_array)
        fate[flagged] = FATE_NOISY_KEPT
        for row, proposed in proposals.items():
            if row in unjudged:
                continue
            if len(proposed) > 1:
                fate[row] = FATE_RELABEL_CONFLICT
            elif (label := next(iter(proposed))) != label_array[row]:
                fate[row] = FATE_RELABELLED
                training_label[row] = label
        fate[sorted(unjudged)] = FATE_NOISY_DROPPED
    else:
        if policy == "drop_pair":
            fate[noisy["neighbor"].to_numpy()] = FATE_NOISY_PAIR_DROPPED
        fate[flagged] = FATE_NOISY_DROPPED

    was_eligible = sampled_array.copy()
    was_eligible[triage["row"].to_numpy()] = True  # wrong unsampled rows are candidates for the set
    curated = np.isin(fate, [FATE_SAMPLED, FATE_UNCOVERED, FATE_DIFFICULT, FATE_NOISY_KEPT]) | (
        (fate == FATE_RELABELLED) & was_eligible
    )
    fates = pd.DataFrame({"row": np.arange(n_rows, dtype=np.int64), "fate": fate, "curated": curated})
    fates["label"] = training_label
    return Curation(positions=np.flatnonzero(curated).astype(np.int64), fates=fates)


def drop_reverse_noise(fates: pd.DataFrame, reverse: pd.DataFrame, policy: str) -> None:
    """Take the rows flagged noisy by the reverse direction (errors on ``sampled``) out of the curated set, in
    place: ``fates`` is :attr:`Curation.fates`, ``reverse`` the triage of that direction. Under ``drop_pair``
    their neighbours leave too; rows already out keep their fate."""
    noisy = reverse[reverse["category"] == NOISY]
    for rows, fate in ((noisy["row"], FATE_NOISY_DROPPED), (noisy["neighbor"], FATE_NOISY_PAIR_DROPPED)):
        if fate == FATE_NOISY_PAIR_DROPPED and policy != "drop_pair":
            continue
        hit = fates["row"].isin(rows.to_numpy()) & fates["curated"]
        fates.loc[hit, "fate"] = fate
        fates.loc[hit, "curated"] = False
