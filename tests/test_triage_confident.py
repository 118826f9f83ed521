"""triage.noise_rule = confident_learning in the Spark stage: the distributed flags equal the numpy ones, and the
stage calls exactly the flagged wrong rows noisy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dqe.algorithms.confident import label_issues
from dqe.algorithms.triage_rule import categorize
from dqe.catalog import Catalog, Table
from dqe.triage import confident_learning_flags, triage

from test_triage_stage import _trec_rows, _write_inputs


def _probabilities(rng: np.random.Generator, given: np.ndarray, n_classes: int) -> np.ndarray:
    """Softmax of noisy logits leaning to the given label, with a tenth of the rows leaning elsewhere."""
    logits = rng.normal(size=(len(given), n_classes)) * 1.5
    leaning = np.where(rng.random(len(given)) < 0.1, rng.integers(0, n_classes, len(given)), given)
    logits[np.arange(len(given)), leaning] += 2.0
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def _maps(probabilities: np.ndarray, classes: list[str], unseen: np.ndarray) -> list[dict[str, float]]:
    """Probability maps as ``predictions`` holds them; rows in ``unseen`` come from a model that never saw the
    last class (the map lacks it, its probability is 0)."""
    maps = []
    for row, values in enumerate(probabilities):
        entries = dict(zip(classes, values.tolist()))
        if unseen[row]:
            entries.pop(classes[-1])
        maps.append(entries)
    return maps


def _scored_with_ties(spark, rng: np.random.Generator, classes: list[str]):
    given = rng.integers(0, len(classes), 400)
    probabilities = _probabilities(rng, given, len(classes))
    unseen = rng.random(400) < 0.2
    probabilities[unseen, -1] = 0.0
    # 120 copies of random rows: equal margins, some of them across a cell's cut, so the tie-break decides.
    rows = np.r_[:400, rng.integers(0, 400, 120)]
    given, probabilities, unseen = given[rows], probabilities[rows], unseen[rows]
    n_rows = len(given)
    pos = rng.permutation(n_rows) * 3  # positions as the stage makes them: unique, not consecutive
    frame = pd.DataFrame(
        {
            "row_id": [f"r{i:04d}" for i in range(n_rows)],
            "pos": pos,
            "label": [classes[g] for g in given],
            "probabilities": _maps(probabilities, classes, unseen),
        }
    )
    scored = spark.createDataFrame(
        frame, "row_id string, pos long, label string, probabilities map<string, double>"
    ).repartition(4)
    order = np.argsort(pos)  # the in-memory rule breaks margin ties by position in its input
    return scored, frame["row_id"].to_numpy(), given, probabilities, order


def test_distributed_flags_equal_label_issues(spark):
    classes = ["a", "b", "c", "d"]
    scored, row_ids, given, probabilities, order = _scored_with_ties(spark, np.random.default_rng(11), classes)
    got = {r.row_id for r in confident_learning_flags(scored, classes).collect()}

    expected = set(row_ids[order][label_issues(given[order], probabilities[order])])
    assert len(expected) > 20
    assert got == expected
    backwards = order[::-1]  # ties to the higher position instead: the fixture's ties reach the cuts
    assert set(row_ids[backwards][label_issues(given[backwards], probabilities[backwards])]) != expected


def test_distributed_flags_apply_the_same_per_label_cap(spark):
    classes = ["a", "b", "c", "d"]
    scored, row_ids, given, probabilities, order = _scored_with_ties(spark, np.random.default_rng(11), classes)
    got = {r.row_id for r in confident_learning_flags(scored, classes, max_flagged_share=0.1).collect()}

    expected = set(row_ids[order][label_issues(given[order], probabilities[order], max_flagged_share=0.1)])
    uncapped = set(row_ids[order][label_issues(given[order], probabilities[order])])
    assert 10 < len(expected) < len(uncapped)
    assert got == expected


@pytest.mark.parametrize("share", [1.0, 0.2])
def test_stage_calls_exactly_the_flagged_wrong_rows_noisy(spark, make_config, share):
    raw = _trec_rows(600)
    rng = np.random.default_rng(5)
    labels = raw["label"].to_numpy(dtype=object)
    classes = sorted(set(labels))
    given = np.searchsorted(np.asarray(classes, dtype=object), labels)
    probabilities = _probabilities(rng, given, len(classes))
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    vectors = rng.normal(size=(len(raw), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sampled = rng.random(len(raw)) < 0.5
    config = make_config(
        "trec", "triage.both_directions=true", "triage.noise_rule=confident_learning", f"triage.max_flagged_share={share}"
    )
    maps = _maps(probabilities, classes, np.zeros(len(raw), dtype=bool))
    row_ids = _write_inputs(spark, config, raw, vectors, sampled, predicted, maps)
    triage(spark, config)
    got = spark.table(Catalog.from_config(config).name(Table.TRIAGE)).toPandas()

    flags = label_issues(given, probabilities, share)  # row_ids sort like positions, so ties break alike
    assert flags.sum() > 20
    if share < 1.0:  # the configured cap reaches the stage and binds
        assert flags.sum() < label_issues(given, probabilities).sum()
    noisy_row_ids = set(got.loc[got["category"] == "noisy", "row_id"])
    assert noisy_row_ids == {row_ids[i] for i in np.flatnonzero(flags)}
    for direction, training in (("forward", sampled), ("reverse", ~sampled)):
        expected = categorize(vectors, labels, training, np.where(training, None, predicted), mislabelled=flags)
        part = got[got["direction"] == direction].sort_values("row_id")
        assert part["row_id"].tolist() == [row_ids[i] for i in expected["row"]]
        assert part["category"].tolist() == expected["category"].tolist()
        assert part["neighbor_row_id"].tolist() == [row_ids[i] for i in expected["neighbor"]]
