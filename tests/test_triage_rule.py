from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dqe.algorithms.neighbors import NO_NEIGHBOR, reduce_best, top1_neighbors
from dqe.algorithms.triage_rule import assign_categories, categorize, curate


def unit(angle_degrees: float) -> list[float]:
    angle = np.deg2rad(angle_degrees)
    return [float(np.cos(angle)), float(np.sin(angle))]


@pytest.fixture
def toy():
    """Three well-separated pairs of rows on the unit circle, one per category.

    Pair (0, 1): row 1 is wrong, neighbour 0 is sampled with the same label   -> difficult
    Pair (2, 3): row 3 is wrong, neighbour 2 is unsampled with the same label -> uncovered
    Pair (4, 5): row 5 is wrong, neighbour 4 has another label               -> noisy
    Row 6 is unsampled and predicted correctly; row 2 as well.
    """
    embeddings = np.array([unit(0), unit(5), unit(90), unit(95), unit(180), unit(185), unit(270)]) * 3.0
    labels = np.array(["pos", "pos", "neg", "neg", "pos", "neg", "neg"])
    sampled = np.array([True, False, False, False, True, False, False])
    predicted = np.array([None, "neg", "neg", "pos", None, "pos", "neg"], dtype=object)
    return embeddings, labels, sampled, predicted


def brute_force_categorize(embeddings, labels, sampled, predicted) -> pd.DataFrame:
    vectors = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    records = []
    for row in range(len(labels)):
        if sampled[row] or predicted[row] == labels[row]:
            continue
        similarity = (vectors * vectors[row]).sum(axis=1)
        similarity[row] = -np.inf
        neighbor = int(np.flatnonzero(similarity == similarity.max())[0])
        if labels[neighbor] != labels[row]:
            category = "noisy"
        else:
            category = "difficult" if sampled[neighbor] else "uncovered"
        records.append((row, category, neighbor))
    return pd.DataFrame(records, columns=["row", "category", "neighbor"])


def test_each_category_on_hand_built_rows(toy):
    triage = categorize(*toy)
    assert list(triage.columns) == ["row", "category", "neighbor", "similarity"]
    assert triage["row"].tolist() == [1, 3, 5]
    assert triage["category"].tolist() == ["difficult", "uncovered", "noisy"]
    assert triage["neighbor"].tolist() == [0, 2, 4]
    np.testing.assert_allclose(triage["similarity"], np.cos(np.deg2rad(5)), rtol=1e-6)


def test_neighbour_is_searched_among_sampled_and_unsampled_rows_alike(toy):
    embeddings, labels, sampled, predicted = toy
    # Move row 6 (unsampled, correct) right next to row 1: it becomes the nearest neighbour.
    embeddings = embeddings.copy()
    embeddings[6] = unit(4)
    labels = labels.copy()
    labels[6] = "pos"
    predicted = predicted.copy()
    predicted[6] = "pos"
    triage = categorize(embeddings, labels, sampled, predicted).set_index("row")
    assert triage.loc[1, "neighbor"] == 6
    assert triage.loc[1, "category"] == "uncovered"


def test_ties_between_duplicate_vectors_pick_the_lowest_position():
    embeddings = np.array([unit(10), unit(0), unit(10), unit(10), unit(10)])
    labels = np.array([1, 0, 1, 2, 1])
    sampled = np.array([False, True, True, True, False])
    predicted = np.array([1, 0, 0, 0, 0])
    # Row 4 is wrong; rows 0, 2, 3 are exact duplicates of it. The lowest position, 0, is unsampled, same label.
    triage = categorize(embeddings, labels, sampled, predicted)
    assert triage.to_dict("records") == [
        {"row": 4, "category": "uncovered", "neighbor": 0, "similarity": pytest.approx(1.0)}
    ]
    # Without row 0 the tie goes to 2 (sampled, same label) rather than 3 (another label).
    triage = categorize(embeddings[1:], labels[1:], sampled[1:], predicted[1:])
    assert triage[["row", "category", "neighbor"]].values.tolist() == [[3, "difficult", 1]]


def test_faiss_rule_matches_brute_force_on_random_data():
    rng = np.random.default_rng(11)
    n_rows = 400
    embeddings = rng.normal(size=(n_rows, 6)) * rng.uniform(0.5, 3.0, size=(n_rows, 1))
    embeddings[300:320] = embeddings[20]  # a block of duplicates
    labels = rng.integers(0, 3, size=n_rows)
    sampled = rng.random(n_rows) < 0.5
    predicted = np.where(rng.random(n_rows) < 0.4, rng.integers(0, 3, size=n_rows), labels)
    triage = categorize(embeddings, labels, sampled, predicted)
    expected = brute_force_categorize(embeddings, labels, sampled, predicted)
    assert len(triage) > 30
    pd.testing.assert_frame_equal(triage[["row", "category", "neighbor"]], expected, check_dtype=False)
    assert set(triage["category"]) == {"noisy", "difficult", "uncovered"}


def test_partitioned_search_then_reduce_gives_the_same_categories():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(240, 5))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[[30, 130, 230]] = vectors[12]
    labels = rng.integers(0, 2, size=240)
    sampled = rng.random(240) < 0.5
    predicted = np.where(rng.random(240) < 0.5, 1 - labels, labels)
    predicted[12] = 1 - labels[12]
    sampled[12] = False
    triage = categorize(vectors, labels, sampled, predicted)

    wrong = triage["row"].to_numpy()
    partials = [
        top1_neighbors(vectors[wrong], vectors[part], query_ids=wrong, corpus_ids=part)
        for part in np.array_split(np.arange(240), 3)
    ]
    neighbors = reduce_best(partials).ids
    np.testing.assert_array_equal(neighbors, triage["neighbor"])
    np.testing.assert_array_equal(assign_categories(labels, sampled, wrong, neighbors), triage["category"])
    assert triage.set_index("row").loc[12, "neighbor"] == 30


def test_ivf_index_still_gives_every_wrong_row_a_neighbour():
    # Four tight clusters and one outlier that k-means gives a list of its own: probing one list finds nothing.
    rng = np.random.default_rng(4)
    clusters = [np.eye(6)[i] + 0.02 * rng.normal(size=(50, 6)) for i in range(4)]
    embeddings = np.vstack([*clusters, np.eye(6)[[4]]])
    labels = np.arange(201) % 2
    sampled = np.zeros(201, dtype=bool)
    predicted = 1 - labels
    alone = top1_neighbors(embeddings[[200]], embeddings, query_ids=[200], index="ivf", nlist=5, nprobe=1)
    assert alone.ids[0] == NO_NEIGHBOR
    triage = categorize(embeddings, labels, sampled, predicted, index="ivf", nlist=5, nprobe=1)
    exact = categorize(embeddings, labels, sampled, predicted)
    assert len(triage) == 201
    assert triage.set_index("row").loc[200, "neighbor"] == exact.set_index("row").loc[200, "neighbor"]
    assert (triage["neighbor"] != triage["row"]).all()


def test_nothing_wrong_gives_an_empty_frame(toy):
    embeddings, labels, sampled, _ = toy
    triage = categorize(embeddings, labels, sampled, labels)
    assert triage.empty and list(triage.columns) == ["row", "category", "neighbor", "similarity"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e, l, s, p: (e[:, 0], l, s, p), "embeddings must be a 2-D array"),
        (lambda e, l, s, p: (e, l[:-1], s, p), r"labels must be a 1-D array with one entry per row \(7\)"),
        (lambda e, l, s, p: (e, l, s.astype(int), p), "sampled must be a boolean array"),
        (lambda e, l, s, p: (e, l, s, p[:3]), "predicted must be a 1-D array"),
        (lambda e, l, s, p: (np.where(np.arange(7)[:, None] == 2, np.inf, e), l, s, p), "NaN or infinite"),
        (lambda e, l, s, p: (np.where(np.arange(7)[:, None] == 2, 0.0, e), l, s, p), "row 2 is all zeros"),
        (lambda e, l, s, p: (e, l, s, np.where(np.arange(7) == 3, None, p)), r"predicted is missing .*\[3\]"),
        (lambda e, l, s, p: (e, np.where(np.arange(7) == 0, None, l), s, p), "labels has missing values"),
    ],
)
def test_invalid_inputs_are_rejected(toy, change, message):
    with pytest.raises(ValueError, match=message):
        categorize(*change(*toy))


# --- curation -------------------------------------------------------------------------------------------------


@pytest.fixture
def triaged(toy):
    embeddings, labels, sampled, predicted = toy
    return categorize(embeddings, labels, sampled, predicted), labels, sampled


def fates_of(curation) -> dict[int, str]:
    return dict(zip(curation.fates["row"], curation.fates["fate"]))


def test_drop_flagged_is_sampled_plus_uncovered_plus_difficult(triaged):
    triage, labels, sampled = triaged
    curation = curate(triage, labels, sampled, policy="drop_flagged")
    np.testing.assert_array_equal(curation.positions, [0, 1, 3, 4])
    assert fates_of(curation) == {
        0: "sampled",
        1: "difficult",
        2: "correct_unsampled_excluded",
        3: "uncovered",
        4: "sampled",
        5: "noisy_dropped",
        6: "correct_unsampled_excluded",
    }
    assert curation.fates["curated"].tolist() == [True, True, False, True, True, False, False]
    assert curation.fates["label"].tolist() == labels.tolist()


def test_drop_pair_also_drops_the_sampled_neighbour(triaged):
    triage, labels, sampled = triaged
    curation = curate(triage, labels, sampled, policy="drop_pair")
    np.testing.assert_array_equal(curation.positions, [0, 1, 3])
    assert fates_of(curation)[4] == "noisy_pair_dropped"
    assert fates_of(curation)[5] == "noisy_dropped"


def verdicts(*records) -> pd.DataFrame:
    return pd.DataFrame(records, columns=["row", "verdict", "label"])


def test_relabel_verdict_a_keeps_the_wrong_row_with_the_judges_label(triaged):
    triage, labels, sampled = triaged
    curation = curate(triage, labels, sampled, policy="relabel", verdicts=verdicts((5, "a", "pos")))
    np.testing.assert_array_equal(curation.positions, [0, 1, 3, 4, 5])
    fates = curation.fates.set_index("row")
    assert fates.loc[5, "fate"] == "relabelled" and fates.loc[5, "label"] == "pos"
    assert fates.loc[4, "fate"] == "sampled" and fates.loc[4, "label"] == "pos"


def test_relabel_verdict_b_relabels_the_neighbour_and_keeps_the_wrong_row(triaged):
    triage, labels, sampled = triaged
    curation = curate(triage, labels, sampled, policy="relabel", verdicts=verdicts((5, "b", "neg")))
    np.testing.assert_array_equal(curation.positions, [0, 1, 3, 4, 5])
    fates = curation.fates.set_index("row")
    assert fates.loc[4, "fate"] == "relabelled" and fates.loc[4, "label"] == "neg"
    assert fates.loc[5, "fate"] == "noisy_kept" and fates.loc[5, "label"] == "neg"


@pytest.mark.parametrize(
    "verdict_rows",
    [
        [(5, "ambiguous", None)],
        [(5, "error", None)],
        [(5, "a", None)],
        [(5, "a", "neg")],  # "mislabelled" but the proposed label is the one it already has
        [],
    ],
)
def test_relabel_without_a_usable_verdict_drops_the_flagged_row(triaged, verdict_rows):
    triage, labels, sampled = triaged
    curation = curate(triage, labels, sampled, policy="relabel", verdicts=verdicts(*verdict_rows))
    np.testing.assert_array_equal(curation.positions, [0, 1, 3, 4])
    assert fates_of(curation)[5] == "noisy_dropped"


def test_relabel_conflicting_verdicts_drop_the_disputed_row():
    # Rows 1 and 2 are both wrong and both point at sampled row 0 with a different label.
    triage = pd.DataFrame({"row": [1, 2], "category": ["noisy", "noisy"], "neighbor": [0, 0]})
    labels = np.array(["a", "b", "c"])
    sampled = np.array([True, False, False])
    curation = curate(triage, labels, sampled, policy="relabel", verdicts=verdicts((1, "b", "b"), (2, "b", "c")))
    fates = curation.fates.set_index("row")
    assert fates.loc[0, "fate"] == "relabel_conflict" and not fates.loc[0, "curated"]
    assert fates.loc[1, "fate"] == "noisy_kept" and fates.loc[2, "fate"] == "noisy_kept"
    np.testing.assert_array_equal(curation.positions, [1, 2])


def test_relabelled_neighbour_outside_the_set_stays_outside():
    # Row 1 is wrong; its neighbour 2 is unsampled and was predicted correctly.
    triage = pd.DataFrame({"row": [1], "category": ["noisy"], "neighbor": [2]})
    labels = np.array(["x", "x", "y"])
    sampled = np.array([True, False, False])
    curation = curate(triage, labels, sampled, policy="relabel", verdicts=verdicts((1, "b", "x")))
    fates = curation.fates.set_index("row")
    assert fates.loc[2, "fate"] == "relabelled" and not fates.loc[2, "curated"]
    np.testing.assert_array_equal(curation.positions, [0, 1])


def test_curate_rejects_bad_inputs(triaged):
    triage, labels, sampled = triaged
    with pytest.raises(ValueError, match="needs the judge's verdicts"):
        curate(triage, labels, sampled, policy="relabel")
    with pytest.raises(ValueError, match="policy must be"):
        curate(triage, labels, sampled, policy="keep_all")
    with pytest.raises(ValueError, match="holds sampled rows"):
        curate(triage.assign(row=[0, 3, 5]), labels, sampled)
    with pytest.raises(ValueError, match="missing columns"):
        curate(triage.drop(columns="neighbor"), labels, sampled)
    with pytest.raises(ValueError, match="unknown categories"):
        curate(triage.assign(category="odd"), labels, sampled)
    with pytest.raises(ValueError, match="outside"):
        curate(triage.assign(neighbor=[0, 2, 70]), labels, sampled)
    with pytest.raises(ValueError, match="not one of the dataset's labels"):
        curate(triage, labels, sampled, policy="relabel", verdicts=verdicts((5, "a", "POS")))
