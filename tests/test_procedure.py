"""The in-memory DQE procedure (dqe.algorithms.procedure): selection per label, both directions, curation."""

from __future__ import annotations

import numpy as np
import pytest

from dqe.algorithms.confident import label_issues
from dqe.algorithms.procedure import probabilities_over, run_dqe, select_per_label
from dqe.algorithms.triage_rule import DIFFICULT, NOISY, UNCOVERED
from dqe.trainers.linear import LinearTrainer


def blobs(n_per_class: int = 40, classes: int = 3, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3.0
    vectors = np.concatenate([centre + rng.standard_normal((n_per_class, dim)) for centre in centres])
    labels = np.repeat(np.array([f"c{i}" for i in range(classes)], dtype=object), n_per_class)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


def one_nearest_neighbour(vectors: np.ndarray, labels: np.ndarray):
    """A real (if simple) model for the strategy slot: all probability on the label of the most similar
    training row."""
    classes = sorted(set(labels.tolist()))

    def fit_predict(train: np.ndarray, predict: np.ndarray) -> np.ndarray:
        nearest = np.argmax(vectors[predict] @ vectors[train].T, axis=1)
        return (labels[train][nearest][:, None] == np.asarray(classes, dtype=object)[None, :]).astype(float)

    return fit_predict


def linear_model(vectors: np.ndarray, labels: np.ndarray):
    """The project's linear trainer in the strategy slot, with real probabilities."""
    classes = sorted(set(labels.tolist()))
    texts = [f"t{i}" for i in range(len(labels))]

    def fit_predict(train: np.ndarray, predict: np.ndarray) -> np.ndarray:
        model = LinearTrainer(calibrate=False).fit([texts[i] for i in train], list(labels[train]), vectors[train])
        found = model.predict([texts[i] for i in predict], vectors[predict])
        return probabilities_over(classes, list(model.classes_), found.probabilities)

    return fit_predict


def test_select_per_label_keeps_the_ratio_of_every_label():
    vectors, labels = blobs(n_per_class=41)
    labels[:5] = "rare"  # 5 rows: round(0.3 * 5) = 2 (banker's rounding of 1.5)
    sampled = select_per_label(vectors, labels, ratio=0.3, criterion="kcenter", seed=3)
    for label in set(labels):
        members = labels == label
        assert sampled[members].sum() == round(0.3 * members.sum())


def test_select_per_label_is_deterministic_for_a_seed_and_varies_with_it():
    vectors, labels = blobs()
    first = select_per_label(vectors, labels, seed=1)
    assert np.array_equal(first, select_per_label(vectors, labels, seed=1))
    assert any(not np.array_equal(first, select_per_label(vectors, labels, seed=s)) for s in range(2, 6))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"criterion": "median"}, "unknown criterion"), ({"ratio": 1.0}, "ratio"), ({"ratio": 0.0}, "ratio")],
)
def test_select_per_label_rejects_bad_settings(kwargs, message):
    vectors, labels = blobs()
    with pytest.raises(ValueError, match=message):
        select_per_label(vectors, labels, **kwargs)


def test_select_per_label_needs_one_label_per_vector():
    vectors, labels = blobs()
    with pytest.raises(ValueError, match="one label per vector"):
        select_per_label(vectors, labels[:-1])


def test_forward_run_curates_sampled_plus_uncovered_and_difficult_minus_noisy():
    vectors, labels = blobs(seed=4)
    labels = labels.copy()
    flipped = np.arange(0, len(labels), 8)
    labels[flipped] = np.where(labels[flipped] == "c0", "c1", "c0")  # the errors the rule should find
    outcome = run_dqe(vectors, labels, one_nearest_neighbour(vectors, labels), seed=2)

    assert outcome.reverse is None
    assert not outcome.sampled[outcome.forward["row"]].any()
    assert len(outcome.forward) > 0
    kept = set(np.flatnonzero(outcome.sampled)) | set(
        outcome.forward.loc[outcome.forward["category"] != NOISY, "row"]
    )
    assert set(outcome.curation.positions) == kept - set(outcome.flagged)
    assert set(outcome.flagged) == set(outcome.forward.loc[outcome.forward["category"] == NOISY, "row"])


def test_both_directions_triages_sampled_rows_and_drops_their_noise():
    vectors, labels = blobs(n_per_class=60, seed=5)
    labels = labels.copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), 18, replace=False)
    labels[flipped] = np.where(labels[flipped] == "c0", "c1", "c0")
    forward_only = run_dqe(vectors, labels, one_nearest_neighbour(vectors, labels), seed=7)
    outcome = run_dqe(vectors, labels, one_nearest_neighbour(vectors, labels), seed=7, both_directions=True)

    assert np.array_equal(outcome.sampled, forward_only.sampled)
    assert outcome.forward.equals(forward_only.forward)
    assert outcome.sampled[outcome.reverse["row"]].all()  # the reverse direction examines the sampled half
    # A flipped row sits in another label's cluster, far from its own label's centroid: greedy sampling picks
    # such outliers first, so the forward direction never examines them and only the reverse one finds them.
    assert outcome.sampled[flipped].mean() >= 0.9
    reverse_noisy = set(outcome.reverse.loc[outcome.reverse["category"] == NOISY, "row"])
    assert len(reverse_noisy & set(flipped)) >= 0.9 * len(flipped)
    assert len(set(forward_only.flagged) & set(flipped)) <= 0.1 * len(flipped)
    assert set(outcome.flagged) == set(forward_only.flagged) | reverse_noisy
    assert set(outcome.curation.positions) == set(forward_only.curation.positions) - reverse_noisy
    fates = outcome.curation.fates.set_index("row")["fate"]
    assert (fates[sorted(reverse_noisy)] == "noisy_dropped").all()


def test_drop_pair_also_drops_the_neighbours_of_reverse_noise():
    vectors, labels = blobs(n_per_class=60, seed=6)
    labels = labels.copy()
    labels[::9] = "c2"
    outcome = run_dqe(
        vectors, labels, one_nearest_neighbour(vectors, labels), seed=1, both_directions=True, policy="drop_pair"
    )
    noisy = outcome.reverse[outcome.reverse["category"] == NOISY]
    assert not set(noisy["row"]) & set(outcome.curation.positions)
    assert not set(noisy["neighbor"]) & set(outcome.curation.positions)


def test_linear_calibration_changes_confidences_not_labels():
    vectors, labels = blobs(n_per_class=80, classes=4, seed=8)
    texts = [f"t{i}" for i in range(len(labels))]
    calibrated = LinearTrainer(calibrate=True).fit(texts, labels, vectors)
    plain = LinearTrainer(calibrate=False).fit(texts, labels, vectors)
    queries, _ = blobs(n_per_class=30, classes=4, seed=8)
    first, second = calibrated.predict(texts[:120], queries), plain.predict(texts[:120], queries)
    assert first.labels == second.labels
    assert not np.allclose(first.confidence, second.confidence)
    assert plain.metrics_["calibration_folds"] == 0 and calibrated.metrics_["calibration_folds"] == 5


def flipped_blobs(seed: int, n_flips: int = 24):
    vectors, labels = blobs(n_per_class=80, classes=3, seed=seed)
    labels = labels.copy()
    flipped = np.random.default_rng(seed).choice(len(labels), n_flips, replace=False)
    labels[flipped] = np.where(labels[flipped] == "c0", "c1", "c0")
    return vectors, labels, flipped


def test_confident_learning_rule_flags_what_confident_learning_flags_among_the_wrong_rows():
    vectors, labels, flipped = flipped_blobs(seed=9)
    outcome = run_dqe(
        vectors, labels, linear_model(vectors, labels), seed=3, both_directions=True, noise_rule="confident_learning"
    )
    assert not np.isnan(outcome.probabilities).any()  # both directions: every row has an out-of-sample prediction
    classes = np.asarray(sorted(set(labels.tolist())), dtype=object)
    issues = label_issues(np.searchsorted(classes, labels), outcome.probabilities)
    for frame in (outcome.forward, outcome.reverse):
        noisy = frame["category"] == NOISY
        assert np.array_equal(issues[frame["row"]], noisy.to_numpy())
        assert set(frame.loc[~noisy, "category"]) <= {DIFFICULT, UNCOVERED}
    assert set(outcome.flagged) == set(np.flatnonzero(issues))  # confident learning never flags a right prediction
    assert len(set(outcome.flagged) & set(flipped)) >= 0.8 * len(flipped)
    assert not set(outcome.flagged) & set(outcome.curation.positions)


def test_probabilities_give_the_predictions_the_neighbor_rule_triages():
    vectors, labels, _ = flipped_blobs(seed=10)
    outcome = run_dqe(vectors, labels, linear_model(vectors, labels), seed=0)
    classes = np.asarray(sorted(set(labels.tolist())), dtype=object)
    unsampled = ~outcome.sampled
    assert np.isnan(outcome.probabilities[outcome.sampled]).all()
    wrong = np.flatnonzero(unsampled & (classes[np.nan_to_num(outcome.probabilities).argmax(axis=1)] != labels))
    assert np.array_equal(outcome.forward["row"].to_numpy(), wrong)


def test_confident_learning_needs_both_directions_and_fit_predict_must_return_probabilities():
    vectors, labels = blobs()
    with pytest.raises(ValueError, match="both_directions"):
        run_dqe(vectors, labels, one_nearest_neighbour(vectors, labels), noise_rule="confident_learning")
    with pytest.raises(ValueError, match="noise_rule"):
        run_dqe(vectors, labels, one_nearest_neighbour(vectors, labels), noise_rule="knn")

    def labels_only(train, predict):
        return labels[predict]

    with pytest.raises(ValueError, match=r"class probabilities of shape \(60, 3\)"):
        run_dqe(vectors, labels, labels_only)


def test_probabilities_over_puts_each_trained_class_in_its_column():
    expanded = probabilities_over(["a", "b", "c"], ["c", "a"], np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert np.array_equal(expanded, [[0.1, 0.0, 0.9], [0.8, 0.0, 0.2]])


def random_fold_probabilities(fit_predict, n_rows: int, seed: int) -> np.ndarray:
    """Out-of-sample probabilities from two random halves (exchangeable folds, unlike DQE's diverse halves)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    first, second = np.sort(order[: n_rows // 2]), np.sort(order[n_rows // 2:])
    probabilities = np.empty((n_rows, 3))
    probabilities[second] = fit_predict(first, second)
    probabilities[first] = fit_predict(second, first)
    return probabilities


def test_noise_probabilities_from_other_folds_decide_which_wrong_rows_are_noisy():
    vectors, labels, flipped = flipped_blobs(seed=12)
    model = linear_model(vectors, labels)
    from_folds = random_fold_probabilities(model, len(labels), seed=5)
    own = run_dqe(vectors, labels, model, seed=3, both_directions=True, noise_rule="confident_learning")
    # A row the diverse halves predict right, which these folds are sure is mislabelled.
    right = np.setdiff1d(np.arange(len(labels)), np.concatenate([own.forward["row"], own.reverse["row"]]))[0]
    from_folds[right] = 0.0
    from_folds[right, 2 if labels[right] != "c2" else 0] = 1.0
    outcome = run_dqe(
        vectors, labels, model, seed=3, both_directions=True, noise_rule="confident_learning",
        noise_probabilities=from_folds,
    )
    # The halves, and so the wrong rows that are triaged, are DQE's own; only the noise test changed.
    assert np.array_equal(outcome.sampled, own.sampled)
    assert np.array_equal(outcome.forward["row"], own.forward["row"])
    issues = label_issues(np.searchsorted(np.asarray(["c0", "c1", "c2"], dtype=object), labels), from_folds)
    for frame in (outcome.forward, outcome.reverse):
        assert np.array_equal(issues[frame["row"]], (frame["category"] == NOISY).to_numpy())
    # A row the random folds call mislabelled but the diverse halves predict right is not a DQE mistake: kept.
    wrong = np.concatenate([outcome.forward["row"], outcome.reverse["row"]])
    assert issues[right] and right not in set(outcome.flagged)
    assert set(outcome.flagged) == set(np.flatnonzero(issues)) & set(wrong)
    assert len(set(outcome.flagged) & set(flipped)) >= 0.5 * len(flipped)
    assert not set(outcome.flagged) & set(outcome.curation.positions)


def test_noise_probabilities_are_checked_and_need_the_confident_learning_rule():
    vectors, labels = blobs()
    model = one_nearest_neighbour(vectors, labels)
    probabilities = np.full((len(labels), 3), 1 / 3)
    forward_only = run_dqe(vectors, labels, model, noise_rule="confident_learning", noise_probabilities=probabilities)
    assert forward_only.reverse is None  # with probabilities given, one direction is enough
    with pytest.raises(ValueError, match="only read by noise_rule='confident_learning'"):
        run_dqe(vectors, labels, model, noise_probabilities=probabilities)
    with pytest.raises(ValueError, match=r"noise_probabilities must be class probabilities of shape \(120, 3\)"):
        run_dqe(vectors, labels, model, noise_rule="confident_learning", noise_probabilities=probabilities[:-1])
    probabilities[7, 1] = np.nan
    with pytest.raises(ValueError, match="found NaN"):
        run_dqe(vectors, labels, model, noise_rule="confident_learning", noise_probabilities=probabilities)


def test_max_flagged_share_caps_what_the_confident_learning_rule_flags_per_label():
    vectors, labels, flipped = flipped_blobs(seed=9, n_flips=40)
    model = linear_model(vectors, labels)
    kwargs = dict(seed=3, both_directions=True, noise_rule="confident_learning")
    uncapped = run_dqe(vectors, labels, model, **kwargs)
    capped = run_dqe(vectors, labels, model, max_flagged_share=0.05, **kwargs)
    classes = np.asarray(sorted(set(labels.tolist())), dtype=object)
    expected = label_issues(np.searchsorted(classes, labels), capped.probabilities, max_flagged_share=0.05)
    assert set(capped.flagged) == set(np.flatnonzero(expected))
    assert set(capped.flagged) < set(uncapped.flagged)
    for label in classes:
        assert np.sum(labels[capped.flagged] == label) <= int(0.05 * np.sum(labels == label))
    with pytest.raises(ValueError, match="max_flagged_share is only read by noise_rule='confident_learning'"):
        run_dqe(vectors, labels, model, both_directions=True, max_flagged_share=0.5)
    with pytest.raises(ValueError, match=r"max_flagged_share must be in \(0, 1\]"):
        run_dqe(vectors, labels, model, max_flagged_share=2.0, **kwargs)
