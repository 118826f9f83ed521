"""Does the curation work on real data? DQE at small scale, and label-noise detection against cleanlab.

Part ``dqe`` (issue 7 §1): on each shared dataset, the same trainer fitted on (a) all clean rows, (b) the
DQE-curated set with the ``centroid`` rule, (c) the same with ``kcenter``, (d) a random subset of the size of (b)
(resp. (c)); test accuracy and macro-F1, the fraction of rows used, the paired t-test and McNemar p-values of the
curated model against (a) and (d), and wall times; (e) the centroid procedure run in both directions
(a second model fitted on ``unsampled`` predicts ``sampled``; its noisy rows leave the set too); and (f) the same
with ``noise_rule="confident_learning"`` (noisy = confident learning flags the label on the two fits'
out-of-sample probabilities, instead of a differently labelled nearest neighbour); and, only when asked for
(``--variants centroid_full_steps``, encoder only), (b) and (d) trained for as many optimizer steps as (a) instead of
the same epochs, to tell fewer rows from fewer steps. Part ``noise`` (§2): 10% and 20% of the training labels
flipped, uniformly or class-conditionally; the rows flagged by DQE (one direction, both directions, and both directions with the confident-learning
noise rule) and by
``cleanlab.filter.find_label_issues`` on 5-fold out-of-fold probabilities of the same model (at DQE's cost, on
2 random stratified folds; and, to separate the rule from the folds, on DQE's own two halves as folds) are scored
against the known flips,
and the test accuracy after training on each method's cleaned set (for DQE: its curated set, and beyond the
paper every row but the flagged ones) is compared with the noisy full set and with the truly clean rows.

The procedure is :func:`dqe.algorithms.procedure.run_dqe` (the in-memory form of the Spark stages: per-label
greedy selection of half the rows, fit on it, predict the rest, triage, curate), with the project's trainers.

Splits (fixed, seed 0; the seeds vary the greedy start, the random subset, the noise and the models):
MR, CR, SUBJ: a stratified 80/20 split of the only split. AG News: its 7,600 rows split 80/20 the same way.
SST-2, SST-5, TREC: the official train/test. IMDb: stratified 5,000 of train and 5,000 of test (embedding all
50,000 long reviews takes longer than the rest together on two cores). Training rows pass through
:func:`dqe.algorithms.cleaning.clean_pandas` (missing texts, exact duplicates, label conflicts out); test rows are
normalised the same way. Embeddings: the bundled all-MiniLM-L6-v2, cached under ``bench/.cache/quality/``.

    .venv/bin/python bench/quality.py                                  # everything with the linear model
    .venv/bin/python bench/quality.py --model encoder --datasets cr trec --seeds 0 --parts dqe
    .venv/bin/python bench/quality.py --model encoder --datasets cr --seeds 0 --parts noise --noise-rates 0.2
    .venv/bin/python bench/quality.py --quick                          # smoke run on 600 rows of two datasets
    .venv/bin/python bench/quality.py --tables                         # only rewrite the README tables
    .venv/bin/python bench/quality.py --model encoder --encoder-epochs 2  # the whole encoder grid (GPU: --device auto)
    .venv/bin/python bench/quality.py --model encoder --encoder-epochs 2 --datasets imdb --seeds 1 --parts dqe \
        --variants kcenter   # adds kcenter to a stored seed: refits only the full set, which must reproduce
    .venv/bin/python bench/quality.py --model encoder --encoder-epochs 2 --datasets trec --parts dqe \
        --variants centroid_full_steps   # (b) and (d) for the full set's steps, added to the stored seeds

Results merge into ``bench/results/quality.json`` (keyed by part, model, dataset and settings, so runs with
different ``--model`` or ``--datasets`` add up) and the tables in ``bench/README.md`` are rewritten from it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from dqe.algorithms import stats
from dqe.algorithms.cleaning import clean_pandas, normalize_label, normalize_text
from dqe.algorithms.confident import label_issues
from dqe.algorithms.procedure import probabilities_over, run_dqe
from dqe.algorithms.triage_rule import NOISY, curate
from dqe.config import CleanConfig, EmbedConfig, TrainConfig
from dqe.errors import DqeError
from dqe.trainers.base import resolve_device

BENCH_DIR = Path(__file__).resolve().parent
SHARED_DATA = BENCH_DIR.parents[1] / "shared" / "data"
CACHE_DIR = BENCH_DIR / ".cache" / "quality"
RESULTS = BENCH_DIR / "results" / "quality.json"
README = BENCH_DIR / "README.md"
SPLIT_SEED = 0
IMDB_ROWS = 5_000
NOISE_RATES = (0.1, 0.2)
NOISE_KINDS = ("uniform", "class_conditional")
EXAMPLES = 5  # most similar noisy pairs kept per run, to read what DQE flags
# The ``_capped`` methods flag at most half of any label's rows: past half, the label's rows no longer say what the
# class is, so probabilities learnt from them are no evidence against its genuine rows. Fixed before any run, not
# chosen on a test split.
CAPPED_SHARE = 0.5


# ---------------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    name: str
    split: str  # how the test rows were obtained, for the results
    train_texts: np.ndarray
    train_labels: np.ndarray
    train_vectors: np.ndarray
    test_texts: np.ndarray
    test_labels: np.ndarray
    test_vectors: np.ndarray
    removed_by_clean: int


def _read(name: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(SHARED_DATA / name / f"{split}.parquet", columns=["id", "text", "label"])


def _stratified_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        frame, test_size=test_fraction, stratify=frame["label"].fillna(""), random_state=SPLIT_SEED
    )
    return train.sort_index(), test.sort_index()


def _subsample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return _stratified_split(frame, rows / len(frame))[1] if rows < len(frame) else frame


def raw_splits(name: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if name in ("mr", "cr", "subj"):
        return (*_stratified_split(_read(name, "train"), 0.2), "stratified 80/20 of train (seed 0)")
    if name == "ag_news":
        return (*_stratified_split(_read(name, "test"), 0.2), "stratified 80/20 of the 7,600 rows (seed 0)")
    if name == "imdb":
        train, test = _subsample(_read(name, "train"), IMDB_ROWS), _subsample(_read(name, "test"), IMDB_ROWS)
        return train, test, f"stratified {IMDB_ROWS:,} of train and {IMDB_ROWS:,} of test (seed 0)"
    return _read(name, "train"), _read(name, "test"), "official train/test"


def embed_cached(texts: list[str], threads: int) -> np.ndarray:
    """``threads`` must be the run's own budget: ``encode`` sets torch's thread count for the whole process, and a
    run started with ``--threads 1`` beside another that embeds with every core then trains with two OpenMP threads
    per process on two cores, about three times slower. Only a cache miss imports the embedding stage (and Spark
    with it), so a machine without Spark runs the bench on embeddings cached elsewhere."""
    digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
    path = CACHE_DIR / f"{digest}.npy"
    if not path.exists():
        from dqe.embed import encode

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        vectors, _ = encode(texts, EmbedConfig(torch_threads_per_worker=threads))
        np.save(path, vectors)
        print(f"  embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s", flush=True)
    return np.load(path)


def load_dataset(name: str, threads: int, limit: int | None = None) -> Dataset:
    train, test, split = raw_splits(name)
    if limit:
        train, test = _subsample(train, limit), _subsample(test, max(limit // 4, 50))
    bronze = pd.DataFrame(
        {"row_id": train["id"].to_numpy(), "text": train["text"].to_numpy(), "label": train["label"].to_numpy()}
    )
    bronze["parse_error"] = None
    cleaned = clean_pandas(bronze, CleanConfig(), labels=None)
    kept = cleaned[cleaned["reason"].isna()].sort_values("row_id").reset_index(drop=True)
    test_texts = test["text"].map(normalize_text, na_action="ignore")
    test_labels = test["label"].map(normalize_label, na_action="ignore")
    usable = test_texts.fillna("").ne("") & test_labels.fillna("").ne("") & test_labels.isin(set(kept["label_norm"]))
    train_texts = kept["text_norm"].to_numpy(dtype=object)
    test_texts = test_texts[usable].to_numpy(dtype=object)
    return Dataset(
        name=name,
        split=split,
        train_texts=train_texts,
        train_labels=kept["label_norm"].to_numpy(dtype=object),
        train_vectors=embed_cached(list(train_texts), threads),
        test_texts=test_texts,
        test_labels=test_labels[usable].to_numpy(dtype=object),
        test_vectors=embed_cached(list(test_texts), threads),
        removed_by_clean=int(cleaned["reason"].notna().sum()),
    )


# -------------------------------------------------------------------------------------------------------- models


def classes_of(labels: np.ndarray) -> np.ndarray:
    """The sorted distinct labels: the column order of every probability matrix here, as in ``run_dqe``."""
    return np.asarray(sorted(set(labels.tolist())), dtype=object)


class Model:
    """One trainer configuration; ``fit`` returns the fitted trainer and its training seconds. ``device``
    ("cpu" or "cuda") is where the encoder trains and every model predicts."""

    def __init__(self, backend: str, seed: int, encoder_epochs: int, device: str = "cpu"):
        self.backend, self.seed, self.encoder_epochs, self.device = backend, seed, encoder_epochs, device

    def _trainer(self, max_steps: int):
        from dqe.trainers import make_trainer

        if self.backend == "linear":
            # Calibration changes confidences only, never the predicted label (see dqe.trainers.linear).
            config = TrainConfig(backend="linear", linear_calibrate=False, seed=self.seed)
        else:
            config = TrainConfig(
                backend="encoder",
                epochs=self.encoder_epochs,
                max_steps=max_steps,
                batch_size=32,
                max_length=64,
                learning_rate=1e-4,
                seed=self.seed,
                use_gpu=self.device == "cuda",
            )
        return make_trainer(config, work_dir=CACHE_DIR / "train", device=self.device)

    def fit(self, texts: np.ndarray, labels: np.ndarray, vectors: np.ndarray, max_steps: int = -1):
        trainer = self._trainer(max_steps)
        started = time.perf_counter()
        trainer.fit(list(texts), list(labels), vectors if self.backend == "linear" else None)
        return trainer, time.perf_counter() - started

    def predict(self, trainer, texts: np.ndarray, vectors: np.ndarray):
        return trainer.predict(list(texts), vectors if self.backend == "linear" else None)

    def fit_predict_on(self, data: Dataset, labels: np.ndarray):
        """The strategy :func:`run_dqe` calls: fit on some training rows, give class probabilities for others."""
        classes = list(classes_of(labels))

        def fit_predict(train: np.ndarray, predict: np.ndarray) -> np.ndarray:
            trainer, _ = self.fit(data.train_texts[train], labels[train], data.train_vectors[train])
            found = self.predict(trainer, data.train_texts[predict], data.train_vectors[predict])
            return probabilities_over(classes, list(trainer.classes_), found.probabilities)

        return fit_predict

    def test_correctness(
        self, data: Dataset, rows: np.ndarray, labels: np.ndarray, max_steps: int = -1
    ) -> HeldOutResult:
        """Fit on ``rows`` (for ``max_steps`` optimizer steps when positive, cycling through the rows, instead of
        ``encoder_epochs`` epochs) and score on the test split."""
        trainer, seconds = self.fit(data.train_texts[rows], labels[rows], data.train_vectors[rows], max_steps)
        predicted = np.asarray(self.predict(trainer, data.test_texts, data.test_vectors).labels, dtype=object)
        return HeldOutResult(predicted == data.test_labels, predicted, seconds, len(trainer.step_history_))


class HeldOutResult(NamedTuple):
    correct: np.ndarray
    predicted: np.ndarray
    seconds: float
    steps: int  # optimizer steps (0 for ``linear``, which is not trained by steps)


def scores(data: Dataset, correct: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(correct.mean()),
        "macro_f1": stats.macro_f1(data.test_labels, predicted),
    }


def recall_by_class(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Test recall of each true class: macro-F1 can fall by a whole class while accuracy hardly moves (a rare class
    that a cleaning removed), and this says which class it was."""
    return {str(label): float(np.mean(predicted[truth == label] == label)) for label in classes_of(truth)}


def count_by_class(labels: np.ndarray, classes: np.ndarray) -> dict[str, int]:
    """Rows of each of ``classes``, zero included: a class a cleaning emptied must show as 0, not go missing."""
    return {str(label): int(np.sum(labels == label)) for label in classes}


def versus(correct: np.ndarray, other: np.ndarray) -> dict[str, float]:
    return {
        "p_ttest": stats.paired_t_test(correct, other).p_value,
        "p_mcnemar": stats.mcnemar_test(correct, other).p_value,
    }


# ------------------------------------------------------------------------------------------------- part 1: DQE


@dataclass(frozen=True)
class Variant:
    criterion: str
    both_directions: bool = False
    noise_rule: str = "neighbor"
    # Train the curated set and its random subset for as many optimizer steps as the full set gets, instead of the
    # same epochs: separates "fewer rows" from "fewer steps" (encoder only; the linear model has no steps).
    full_set_steps: bool = False


VARIANTS = {
    "centroid": Variant("centroid"),
    "kcenter": Variant("kcenter"),
    "centroid_both": Variant("centroid", both_directions=True),
    "centroid_both_cl": Variant("centroid", both_directions=True, noise_rule="confident_learning"),
    "centroid_full_steps": Variant("centroid", full_set_steps=True),
}
STEPPED_VARIANTS = [name for name, variant in VARIANTS.items() if variant.full_set_steps]


def dqe_runs(data: Dataset, model: Model, variants: list[str], stored_full: dict | None = None) -> list[dict]:
    """Records of the full-set fit and of each variant with its random subset. With ``stored_full`` (the full-set
    record of a stored seed that this run adds variants to) the fresh full-set fit must reproduce it, since the
    new variants' p-values against (a) pair them with this fit."""
    everything = np.arange(len(data.train_labels))
    full = model.test_correctness(data, everything, data.train_labels)
    records = [{"variant": "full", "rows": len(everything), "fraction": 1.0, "train_seconds": full.seconds,
                "train_steps": full.steps, **scores(data, full.correct, full.predicted)}]
    if stored_full is not None and records[0]["accuracy"] != stored_full["accuracy"]:
        raise SystemExit(
            f"the full-set fit gave accuracy {records[0]['accuracy']:.4f}, the stored one "
            f"{stored_full['accuracy']:.4f} (seeded CPU fits reproduce across thread counts, but not the seed-0 runs "
            "from before the seeding fix, nor necessarily across machines), so the new variants cannot be paired "
            "with the stored ones; re-run with --variants centroid too"
        )
    for variant in variants:
        spec = VARIANTS[variant]
        started = time.perf_counter()
        outcome = run_dqe(
            data.train_vectors, data.train_labels, model.fit_predict_on(data, data.train_labels),
            criterion=spec.criterion, seed=model.seed, both_directions=spec.both_directions,
            noise_rule=spec.noise_rule,
        )
        procedure_seconds = time.perf_counter() - started
        curated = outcome.curation.positions
        max_steps = full.steps if spec.full_set_steps else -1
        cur = model.test_correctness(data, curated, data.train_labels, max_steps)
        random_rows = np.sort(np.random.default_rng([model.seed, len(curated)]).choice(everything, len(curated), replace=False))
        rand = model.test_correctness(data, random_rows, data.train_labels, max_steps)
        categories = outcome.forward["category"].value_counts().to_dict()
        noisy = outcome.forward[outcome.forward["category"] == NOISY].nlargest(EXAMPLES, "similarity")
        examples = [
            {
                "text": data.train_texts[row], "label": data.train_labels[row],
                "neighbor_text": data.train_texts[neighbor], "neighbor_label": data.train_labels[neighbor],
                "similarity": round(float(similarity), 4),
            }
            for row, neighbor, similarity in zip(noisy["row"], noisy["neighbor"], noisy["similarity"])
        ]
        records.append(
            {
                "variant": f"dqe_{variant}",
                "rows": len(curated),
                "fraction": len(curated) / len(everything),
                "train_seconds": cur.seconds,
                "train_steps": cur.steps,
                "procedure_seconds": procedure_seconds,
                "categories": {key: int(categories.get(key, 0)) for key in ("uncovered", "difficult", "noisy")},
                "noisy_examples": examples,
                "reverse_noisy": int((outcome.reverse["category"] == NOISY).sum()) if spec.both_directions else None,
                **scores(data, cur.correct, cur.predicted),
                "vs_full": versus(cur.correct, full.correct),
                "vs_random": versus(cur.correct, rand.correct),
            }
        )
        records.append(
            {
                "variant": f"random_{variant}",
                "rows": len(random_rows),
                "fraction": len(random_rows) / len(everything),
                "train_seconds": rand.seconds,
                "train_steps": rand.steps,
                **scores(data, rand.correct, rand.predicted),
            }
        )
    return records


def added_to_stored(stored: list[dict], records: list[dict]) -> list[dict]:
    """A stored seed's records with this run's variants added (or replaced); its full-set record stays."""
    added = {r["variant"] for r in records} - {"full"}
    return [r for r in stored if r["variant"] not in added] + [r for r in records if r["variant"] != "full"]


# ----------------------------------------------------------------------------------------------- part 2: noise


def label_partners(vectors: np.ndarray, labels: np.ndarray) -> dict[object, object]:
    """A fixed confusion between similar labels: classes matched in pairs by the cosine similarity of their mean
    embeddings (most similar pair first); in each pair the first label (sorted) flips to the second. With an odd
    number of classes the unmatched one flips to its most similar class."""
    classes = classes_of(labels)
    means = np.stack([vectors[labels == c].mean(axis=0) for c in classes])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    similarity = means @ means.T
    np.fill_diagonal(similarity, -np.inf)
    partners: dict[object, object] = {}
    unmatched = set(range(len(classes)))
    for flat in np.argsort(-similarity, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(classes))
        if i < j and i in unmatched and j in unmatched:
            partners[classes[i]] = classes[j]
            unmatched -= {i, j}
    for i in unmatched:
        partners[classes[i]] = classes[int(np.argmax(similarity[i]))]
    return partners


def inject_noise(
    labels: np.ndarray, vectors: np.ndarray, kind: str, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the flipped mask: exactly ``round(rate · n)`` rows flipped (fewer only if the source
    classes of the class-conditional confusion hold fewer rows)."""
    rng = np.random.default_rng([seed, int(rate * 1000), NOISE_KINDS.index(kind)])
    classes = classes_of(labels)
    n_flip = round(rate * len(labels))
    noisy = labels.copy()
    if kind == "uniform":
        rows = rng.choice(len(labels), n_flip, replace=False)
        for row in rows:
            noisy[row] = rng.choice(classes[classes != labels[row]])
    else:
        partners = label_partners(vectors, labels)
        candidates = np.flatnonzero(np.isin(labels, list(partners)))
        rows = rng.choice(candidates, min(n_flip, len(candidates)), replace=False)
        noisy[rows] = [partners[label] for label in labels[rows]]
    return noisy, noisy != labels


def flag_scores(flagged: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    hit = int(flipped[flagged].sum())
    precision = hit / len(flagged) if len(flagged) else 0.0
    recall = hit / int(flipped.sum()) if flipped.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": int(len(flagged)), "precision": precision, "recall": recall, "f1": f1}


class SharedFits:
    """A ``fit_predict`` strategy whose calls are memoised by their (train, predict) rows. The DQE runs of one
    noise setting select the same two halves, so they share their two fits; ``reused_seconds`` is the fitting
    time a run saved, added back to its time so every method is charged for the fits it uses."""

    def __init__(self, fit_predict):
        self.fit_predict, self.found, self.reused_seconds = fit_predict, {}, 0.0

    def __call__(self, train: np.ndarray, predict: np.ndarray) -> np.ndarray:
        key = (train.tobytes(), predict.tobytes())
        if key in self.found:
            self.reused_seconds += self.found[key][1]
        else:
            started = time.perf_counter()
            self.found[key] = (self.fit_predict(train, predict), time.perf_counter() - started)
        return self.found[key][0]


def out_of_fold_probabilities(fit_predict, labels: np.ndarray, seed: int, n_folds: int = 5) -> np.ndarray:
    """Class probabilities (sorted labels) of every row from the model fitted on the other stratified folds: the
    input ``cleanlab.filter.find_label_issues`` expects, from the same model family as DQE's fits."""
    from sklearn.model_selection import StratifiedKFold

    classes = classes_of(labels)
    probabilities = np.full((len(labels), len(classes)), np.nan)
    for train, held_out in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(labels, labels):
        probabilities[held_out] = fit_predict(train, held_out)
    return probabilities


def cleanlab_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Positions ``cleanlab.filter.find_label_issues`` flags, given out-of-sample probabilities over the sorted
    labels."""
    from cleanlab.filter import find_label_issues

    classes = classes_of(labels)
    return np.flatnonzero(find_label_issues(np.searchsorted(classes, labels), probabilities))


def noise_runs(data: Dataset, model: Model, kind: str, rate: float) -> list[dict]:
    noisy, flipped = inject_noise(data.train_labels, data.train_vectors, kind, rate, model.seed)
    everything = np.arange(len(noisy))
    fits = SharedFits(model.fit_predict_on(data, noisy))
    started = time.perf_counter()
    outcome = run_dqe(
        data.train_vectors, noisy, fits, criterion="centroid", seed=model.seed, both_directions=True
    )
    both_seconds = time.perf_counter() - started
    halves_fit_seconds = sum(seconds for _, seconds in fits.found.values())
    started, reused = time.perf_counter(), fits.reused_seconds
    learned = run_dqe(
        data.train_vectors, noisy, fits, criterion="centroid", seed=model.seed,
        both_directions=True, noise_rule="confident_learning",
    )
    learned_seconds = time.perf_counter() - started + fits.reused_seconds - reused
    started, reused = time.perf_counter(), fits.reused_seconds
    capped = run_dqe(
        data.train_vectors, noisy, fits, criterion="centroid", seed=model.seed,
        both_directions=True, noise_rule="confident_learning", max_flagged_share=CAPPED_SHARE,
    )
    capped_seconds = time.perf_counter() - started + fits.reused_seconds - reused
    forward_flags = np.sort(outcome.forward.loc[outcome.forward["category"] == NOISY, "row"].to_numpy())
    forward_set = curate(outcome.forward, noisy, outcome.sampled).positions
    started = time.perf_counter()
    five_fold_probabilities = out_of_fold_probabilities(fits, noisy, model.seed)
    five_folds_fit_seconds = time.perf_counter() - started
    issues = cleanlab_issues(noisy, five_fold_probabilities)
    cleanlab_seconds = time.perf_counter() - started
    # The same confident-learning filter (dqe's, equal to cleanlab's uncapped) with the per-label cap.
    started = time.perf_counter()
    issues_capped = np.flatnonzero(
        label_issues(np.searchsorted(classes_of(noisy), noisy), five_fold_probabilities, CAPPED_SHARE)
    )
    cleanlab_capped_seconds = time.perf_counter() - started + five_folds_fit_seconds
    # cleanlab at DQE's cost: two random stratified folds, i.e. two half-size fits like DQE's two directions.
    started = time.perf_counter()
    two_fold_probabilities = out_of_fold_probabilities(fits, noisy, model.seed, n_folds=2)
    issues_two_folds = cleanlab_issues(noisy, two_fold_probabilities)
    two_folds_seconds = time.perf_counter() - started
    # DQE's curation with the noise test moved onto those random folds (four half-size fits in all).
    started, reused = time.perf_counter(), fits.reused_seconds
    on_random_folds = run_dqe(
        data.train_vectors, noisy, fits, criterion="centroid", seed=model.seed,
        both_directions=True, noise_rule="confident_learning", noise_probabilities=two_fold_probabilities,
    )
    random_folds_seconds = time.perf_counter() - started + fits.reused_seconds - reused + two_folds_seconds
    # The same confident-learning filter on DQE's own two halves as folds: is the gap the rule or the folds?
    started = time.perf_counter()
    issues_on_halves = cleanlab_issues(noisy, learned.probabilities)
    halves_seconds = time.perf_counter() - started + halves_fit_seconds
    methods = {
        "noisy_full": (everything, None, None),
        # The forward direction alone is one of the two fits of the two-way run.
        "dqe_forward": (forward_set, forward_flags, both_seconds / 2),
        "dqe_both": (outcome.curation.positions, outcome.flagged, both_seconds),
        # Beyond the paper: DQE as a pure noise filter, every row but the flagged ones.
        "dqe_both_filter": (np.setdiff1d(everything, outcome.flagged), outcome.flagged, both_seconds),
        # Beyond the paper: the same two fits, noisy = confident learning on their out-of-sample probabilities.
        "dqe_both_cl": (learned.curation.positions, learned.flagged, learned_seconds),
        "dqe_both_cl_filter": (np.setdiff1d(everything, learned.flagged), learned.flagged, learned_seconds),
        # Beyond that: the same, with at most CAPPED_SHARE of each label's rows flagged.
        "dqe_both_cl_capped": (capped.curation.positions, capped.flagged, capped_seconds),
        # Beyond that: the same curation, noisy = confident learning on two random stratified folds instead.
        "dqe_both_cl_random_folds": (on_random_folds.curation.positions, on_random_folds.flagged, random_folds_seconds),
        "cleanlab": (np.setdiff1d(everything, issues), issues, cleanlab_seconds),
        "cleanlab_capped": (np.setdiff1d(everything, issues_capped), issues_capped, cleanlab_capped_seconds),
        "cleanlab_2fold": (np.setdiff1d(everything, issues_two_folds), issues_two_folds, two_folds_seconds),
        "cleanlab_on_dqe_halves": (np.setdiff1d(everything, issues_on_halves), issues_on_halves, halves_seconds),
        "oracle_clean": (np.flatnonzero(~flipped), None, None),
    }
    noisy_full = model.test_correctness(data, everything, noisy)
    classes = classes_of(noisy)
    records = []
    for method, (rows, flags, flag_seconds) in methods.items():
        fit = noisy_full if method == "noisy_full" else model.test_correctness(data, rows, noisy)
        correct, predicted = fit.correct, fit.predicted
        record = {
            "method": method,
            "flipped": int(flipped.sum()),
            "train_rows": int(len(rows)),
            "flipped_in_train_rows": int(flipped[rows].sum()),
            # What each class can be learnt from: the rows it kept whose label is right.
            "right_labels_by_class": count_by_class(noisy[rows][~flipped[rows]], classes),
            # ... and what it must learn against: the kept rows given its label by the injected noise.
            "wrong_labels_by_class": count_by_class(noisy[rows][flipped[rows]], classes),
            **scores(data, correct, predicted),
            "test_recall_by_class": recall_by_class(data.test_labels, predicted),
        }
        if flags is not None:
            record.update(flag_scores(flags, flipped))
            record["flag_seconds"] = flag_seconds
        if method != "noisy_full":
            record["vs_noisy_full"] = versus(correct, noisy_full.correct)
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------------------ results


def load_results() -> dict:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"runs": {}}


def save_results(results: dict, touched: set[tuple[str, str]]) -> None:
    """Write this run's ``touched`` (key, seed) cells into the results file as it is now (another run may have
    added its own since this one started, even other seeds of the same key). An exclusive lock makes the
    read-merge-write atomic, so runs can go on side by side."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = load_results()
        for key, seed in touched:
            ours = results["runs"][key]
            run = merged["runs"].setdefault(key, {"seeds": {}, "machine": {}})
            run.update({field: value for field, value in ours.items() if field not in ("seeds", "machine")})
            run["seeds"][seed] = ours["seeds"][seed]
            run.setdefault("machine", {})[seed] = ours["machine"][seed]
        RESULTS.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")


def _mean_std(values: list[float], digits: int = 4) -> str:
    array = np.asarray(values, dtype=float)
    if len(array) == 1:
        return f"{array[0]:.{digits}f}"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


def records_by(run: dict, field: str) -> dict[str, list[dict]]:
    """A run's records of every seed, grouped by ``field`` (the variant or the method), in the order of the seed
    with the most records: a method added to the bench later lists where the code puts it, not last."""
    grouped: dict[str, list[dict]] = {}
    for seed_records in sorted(run["seeds"].values(), key=len, reverse=True):
        for record in seed_records:
            grouped.setdefault(record[field], []).append(record)
    return grouped


def _accuracy(records: list[dict], seeds: int | None = None) -> str:
    """Mean ± std accuracy of ``records``; with ``seeds`` (the run's count), says when they cover fewer seeds."""
    if not records:
        return "–"
    fewer = f" ({len(records)} of {seeds} seeds)" if seeds and len(records) < seeds else ""
    return _mean_std([r["accuracy"] for r in records]) + fewer


def _p_values(records: list[dict], side: str) -> str:
    return " / ".join(_mean_std([r[side][test] for r in records], 3) for test in ("p_ttest", "p_mcnemar"))


def runs_of(results: dict, part: str, model: str) -> list[dict]:
    """The runs of one part and model, in the order of ``DATASETS`` (then noise kind and rate)."""
    chosen = [run for run in results["runs"].values() if run["part"] == part and run["model"] == model]
    return sorted(chosen, key=lambda run: (DATASETS.index(run["dataset"]), run["kind"] or "", run["rate"] or 0))


def dqe_table(results: dict, model: str) -> str:
    lines = [
        "| dataset | train rows | full acc | centroid acc | kcenter acc | centroid both-directions acc | "
        "centroid both + CL acc (rows used) | "
        "random (centroid size) acc | centroid rows used | centroid vs full macro-F1 | "
        "centroid vs full p (t / McNemar) | centroid vs random p (t / McNemar) | "
        "full fit s / centroid procedure + fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs_of(results, "dqe", model):
        by_variant = records_by(run, "variant")
        full, cen, kc, both, learned, rnd = (
            by_variant.get(v, [])
            for v in ("full", "dqe_centroid", "dqe_kcenter", "dqe_centroid_both", "dqe_centroid_both_cl", "random_centroid")
        )
        learned_cell = f"{_accuracy(learned, len(full))} ({_mean_std([r['fraction'] for r in learned], 3)})" if learned else "–"
        lines.append(
            f"| {run['dataset']} | {full[0]['rows']} | {_accuracy(full)} | {_accuracy(cen)} | {_accuracy(kc, len(full))} | "
            f"{_accuracy(both, len(full))} | {learned_cell} | {_accuracy(rnd)} | {_mean_std([r['fraction'] for r in cen], 3)} | "
            f"{_mean_std([r['macro_f1'] for r in cen], 3)} vs {_mean_std([r['macro_f1'] for r in full], 3)} | "
            f"{_p_values(cen, 'vs_full')} | {_p_values(cen, 'vs_random')} | "
            f"{_mean_std([r['train_seconds'] for r in full], 1)} / "
            f"{_mean_std([r['procedure_seconds'] + r['train_seconds'] for r in cen], 1)} |"
        )
    return "\n".join(lines)


def curated_outcomes(results: dict, model: str) -> dict[str, list[dict]]:
    """Per curated variant, one entry per (data set, seed) that ran it: its accuracy gaps to the full set and to
    the random subset of its size, in points, and the fraction of rows it used."""
    outcomes: dict[str, list[dict]] = {}
    for run in runs_of(results, "dqe", model):
        for seed, records in run["seeds"].items():
            by_variant = {record["variant"]: record for record in records}
            for variant, curated in by_variant.items():
                if not variant.startswith("dqe_"):
                    continue
                random_subset = by_variant[f"random_{variant.removeprefix('dqe_')}"]
                outcomes.setdefault(variant, []).append({
                    "dataset": run["dataset"], "seed": seed, "fraction": curated["fraction"],
                    "vs_full": 100 * (curated["accuracy"] - by_variant["full"]["accuracy"]),
                    "vs_random": 100 * (curated["accuracy"] - random_subset["accuracy"]),
                })
    return outcomes


def dqe_goal_table(results: dict, model: str) -> str:
    """The goal of part 1 counted over every (data set, seed) run: how often the curated set is at least as
    accurate as the full set and as the random subset of its size, and by how much it differs on average."""
    lines = [
        "| curated with | runs (data set × seed) | curated ≥ full | curated ≥ random of its size | "
        "curated − full, points: mean (range) | data sets whose mean is ≥ full / within 1 point | "
        "curated − random, points: mean | rows used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_variant = curated_outcomes(results, model)
    for variant in (v for v in VARIANT_NAMES if v in by_variant):
        outcomes = by_variant[variant]
        name = VARIANT_NAMES[variant].removeprefix("(b) ").removeprefix("(c) ")
        to_full = np.array([o["vs_full"] for o in outcomes])
        to_random = np.array([o["vs_random"] for o in outcomes])
        fractions = [o["fraction"] for o in outcomes]
        per_dataset: dict[str, list[float]] = {}
        for outcome in outcomes:
            per_dataset.setdefault(outcome["dataset"], []).append(outcome["vs_full"])
        dataset_means = np.array([np.mean(gaps) for gaps in per_dataset.values()])
        # Accuracies are shares of one test set, so a tie is an exact tie; the tolerance only absorbs float rounding.
        lines.append(
            f"| {name} | {len(outcomes)} | {int((to_full > -1e-9).sum())} | {int((to_random > -1e-9).sum())} | "
            f"{to_full.mean():+.2f} ({to_full.min():+.1f} to {to_full.max():+.1f}) | "
            f"{int((dataset_means > -1e-9).sum())} / {int((dataset_means > -1 - 1e-9).sum())} of {len(dataset_means)} | "
            f"{to_random.mean():+.2f} | {min(fractions):.0%}–{max(fractions):.0%} |"
        )
    return "\n".join(lines)


def _p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _share_range(fractions: list[float]) -> str:
    low, high = min(fractions), max(fractions)
    return f"{low:.0%}" if f"{low:.0%}" == f"{high:.0%}" else f"{low:.0%}–{high:.0%}"


def dqe_seed_table(results: dict, model: str) -> str:
    """Seed by seed, for each data set and curation rule of the issue ((b) and (c), and (b) at the full set's steps
    where it ran): the full and curated accuracies, the curated set's gaps to the full set and to the random subset
    of its size with their paired t p-values, and how many ``unsampled`` rows the half-model got wrong and how many
    of those were called noisy."""
    lines = [
        "| dataset | rule | seeds | full acc (train rows) | curated acc (share of rows) | "
        "curated − full, points (t p) | mean | curated − random, points (t p) | mean | "
        "wrong on `unsampled` / of them noisy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs_of(results, "dqe", model):
        ordered = sorted(run["seeds"].items(), key=lambda item: int(item[0]))
        for variant in ("dqe_centroid", "dqe_kcenter", "dqe_centroid_full_steps"):
            per_seed = [
                (seed, by_variant["full"], by_variant[variant], by_variant[f"random_{variant.removeprefix('dqe_')}"])
                for seed, records in ordered
                for by_variant in [{record["variant"]: record for record in records}]
                if variant in by_variant
            ]
            if not per_seed:
                continue
            to_full = [100 * (curated["accuracy"] - full["accuracy"]) for _, full, curated, _ in per_seed]
            to_random = [100 * (curated["accuracy"] - subset["accuracy"]) for _, _, curated, subset in per_seed]
            cells = [
                run["dataset"], f"`{variant.removeprefix('dqe_')}`", " / ".join(seed for seed, *_ in per_seed),
                " / ".join(f"{full['accuracy']:.3f}" for _, full, _, _ in per_seed)
                + f" ({per_seed[0][1]['rows']:,})",
                " / ".join(f"{curated['accuracy']:.3f}" for _, _, curated, _ in per_seed)
                + f" ({_share_range([curated['fraction'] for _, _, curated, _ in per_seed])})",
                " / ".join(f"{gap:+.1f} ({_p_value(curated['vs_full']['p_ttest'])})"
                           for gap, (_, _, curated, _) in zip(to_full, per_seed)),
                f"{np.mean(to_full):+.2f}",
                " / ".join(f"{gap:+.1f} ({_p_value(curated['vs_random']['p_ttest'])})"
                           for gap, (_, _, curated, _) in zip(to_random, per_seed)),
                f"{np.mean(to_random):+.2f}",
                ", ".join(f"{sum(curated['categories'].values()):,} / {curated['categories']['noisy']:,}"
                          for _, _, curated, _ in per_seed),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The variants of part 1 in the order of the issue's (a)-(d), then the procedure's extensions.
VARIANT_NAMES = {
    "full": "(a) all clean rows",
    "dqe_centroid": "(b) DQE `centroid`",
    "dqe_kcenter": "(c) DQE `kcenter`",
    "random_centroid": "(d) random, size of (b)",
    "random_kcenter": "random, size of (c)",
    "dqe_centroid_both": "DQE `centroid`, both directions",
    "random_centroid_both": "random, its size",
    "dqe_centroid_both_cl": "DQE `centroid`, both directions + CL",
    "random_centroid_both_cl": "random, its size",
    "dqe_centroid_full_steps": "DQE `centroid`, the full set's optimizer steps",
    "random_centroid_full_steps": "random, its size and steps",
}


def dqe_detail_table(results: dict, model: str) -> str:
    """Every variant of part 1 on its own row: rows used, accuracy, macro-F1, p-values and wall time."""
    lines = [
        "| dataset | trained on | rows used | accuracy | macro-F1 | vs (a) p (t / McNemar) | "
        "vs random of its size p (t / McNemar) | seconds (procedure + fit) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs_of(results, "dqe", model):
        by_variant = records_by(run, "variant")
        for variant, name in VARIANT_NAMES.items():
            records = by_variant.get(variant)
            if not records:
                continue
            compared = "vs_full" in records[0]
            cells = [
                _mean_std([r["fraction"] for r in records], 3),
                _accuracy(records),
                _mean_std([r["macro_f1"] for r in records]),
                _p_values(records, "vs_full") if compared else "",
                _p_values(records, "vs_random") if compared else "",
                _mean_std([r.get("procedure_seconds", 0.0) + r["train_seconds"] for r in records], 1),
            ]
            lines.append(f"| {run['dataset']} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_table(results: dict, model: str) -> str:
    lines = [
        "| dataset | noise | method | flagged | precision | recall | F1 | flag s | test acc | p t vs noisy full |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs_of(results, "noise", model):
        for method, records in records_by(run, "method").items():
            flags = "flagged" in records[0]
            cells = [
                _mean_std([r["flagged"] for r in records], 0) if flags else "",
                _mean_std([r["precision"] for r in records], 3) if flags else "",
                _mean_std([r["recall"] for r in records], 3) if flags else "",
                _mean_std([r["f1"] for r in records], 3) if flags else "",
                _mean_std([r["flag_seconds"] for r in records], 1) if flags and records[0].get("flag_seconds") is not None else "",
                _mean_std([r["accuracy"] for r in records]),
                _mean_std([r["vs_noisy_full"]["p_ttest"] for r in records], 3) if "vs_noisy_full" in records[0] else "",
            ]
            lines.append(f"| {run['dataset']} | {run['kind']} {int(run['rate'] * 100)}% | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_goal_table(results: dict, model: str) -> str:
    """The goals of part 2 per noise setting and method, over every (data set, seed) run: flag F1 against the known
    flips, and the test accuracy of the method's cleaned set against the noisy full set, with how many runs beat
    it significantly (paired t p < 0.05)."""
    lines = [
        "| noise | method | runs (data set × seed) | F1 mean | flag s mean | accuracy − noisy full, points: mean | "
        "runs above noisy full at p < 0.05 / below it |",
        "|---|---|---|---|---|---|---|",
    ]
    seed_records: dict[tuple[str, float], list[list[dict]]] = {}
    for run in runs_of(results, "noise", model):
        seed_records.setdefault((run["kind"], run["rate"]), []).extend(run["seeds"].values())
    for (kind, rate), record_lists in sorted(seed_records.items()):
        by_method: dict[str, list[tuple[dict, dict]]] = {}
        for records in sorted(record_lists, key=len, reverse=True):  # the code's method order leads, as in records_by
            noisy_full = next(r for r in records if r["method"] == "noisy_full")
            for record in records:
                if record["method"] != "noisy_full":
                    by_method.setdefault(record["method"], []).append((record, noisy_full))
        for method, pairs in by_method.items():
            gains = np.array([100 * (r["accuracy"] - full["accuracy"]) for r, full in pairs])
            significant = np.array([r["vs_noisy_full"]["p_ttest"] < 0.05 for r, _ in pairs])
            flags = "f1" in pairs[0][0]
            cells = [
                f"{kind} {int(rate * 100)}%", method, str(len(pairs)),
                f"{np.mean([r['f1'] for r, _ in pairs]):.3f}" if flags else "",
                f"{np.mean([r['flag_seconds'] for r, _ in pairs]):.1f}" if flags else "",
                f"{gains.mean():+.2f}",
                f"{int((significant & (gains > 0)).sum())} / {int((significant & (gains < 0)).sum())}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme_tables(results: dict) -> None:
    """Rewrite the generated part of bench/README.md (between the quality markers) from the results."""
    begin, end = "<!-- quality:begin (generated by bench/quality.py) -->", "<!-- quality:end -->"
    sections = []
    for model in sorted({run["model"] for run in results["runs"].values()}):
        sections.append(f"#### DQE at small scale, `{model}` model (mean ± std over seeds)\n\n{dqe_table(results, model)}")
        sections.append(
            f"Goal of part 1 over every run of the `{model}` model (curated ≥ full at ≤ 60% of the rows, above random):"
            f"\n\n{dqe_goal_table(results, model)}"
        )
        sections.append(
            f"Seed by seed, `{model}` model (curated − full and curated − random in accuracy points, paired t p):"
            f"\n\n{dqe_seed_table(results, model)}"
        )
        sections.append(
            f"<details><summary>Every variant of the `{model}` model: macro-F1, p-values and time of each</summary>"
            f"\n\n{dqe_detail_table(results, model)}\n\n</details>"
        )
        if any(run["part"] == "noise" and run["model"] == model for run in results["runs"].values()):
            sections.append(f"#### Injected label noise, `{model}` model\n\n{noise_table(results, model)}")
            sections.append(
                f"Goals of part 2 over every run of the `{model}` model (mean over data sets and seeds):"
                f"\n\n{noise_goal_table(results, model)}"
            )
    generated = begin + "\n" + "\n\n".join(sections) + "\n" + end
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    README.write_text(head + generated + rest.split(end, 1)[1])


def machine(device: str) -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


# --------------------------------------------------------------------------------------------------------- main


DATASETS = ("mr", "cr", "subj", "sst2", "sst5", "trec", "ag_news", "imdb")


def run_key(part: str, model: str, dataset: str, kind: str | None, rate: float | None, limit: int | None) -> str:
    """The results file's key of one setting: runs of other models, data sets or settings add up beside it."""
    key = "/".join(str(x) for x in (part, model, dataset, kind, rate) if x is not None)
    return key + f"/limit{limit}" if limit else key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--model", default="linear", choices=("linear", "encoder"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", default=["dqe", "noise"], choices=("dqe", "noise"))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS),
        default=[name for name in VARIANTS if name not in STEPPED_VARIANTS],
        help=f"{', '.join(STEPPED_VARIANTS)}: the encoder only, and only when asked for",
    )
    parser.add_argument("--noise-kinds", nargs="+", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    parser.add_argument("--noise-rates", nargs="+", type=float, default=list(NOISE_RATES), choices=NOISE_RATES)
    parser.add_argument("--encoder-epochs", type=int, default=1)
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where the encoder trains and the models predict (auto: cuda when torch sees a GPU)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="torch threads of this run (two one-thread runs side by side train about 1.2x faster than one "
        "two-thread run on two cores)",
    )
    parser.add_argument("--limit", type=int, default=None, help="subsample each training split to this many rows")
    parser.add_argument("--quick", action="store_true", help="smoke run: 600 rows of cr and trec, one seed")
    parser.add_argument(
        "--tables", action="store_true", help="only rewrite the tables in bench/README.md from the results file"
    )
    args = parser.parse_args(argv)
    if args.tables:
        write_readme_tables(load_results())
        return 0
    if args.quick:
        args.datasets, args.seeds, args.limit = ["cr", "trec"], [0], 600
    if args.model != "encoder" and set(STEPPED_VARIANTS) & set(args.variants):
        parser.error(f"--variants {' '.join(STEPPED_VARIANTS)}: only the encoder trains by optimizer steps")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except DqeError as error:
        parser.error(f"--device: {error}")

    results = load_results() if not args.quick else {"runs": {}}
    adding = "dqe" in args.parts and "centroid" not in args.variants
    if adding:  # checked before any data set loads, not after hours of other seeds
        for name in args.datasets:
            stored = results["runs"].get(run_key("dqe", args.model, name, None, None, args.limit), {"seeds": {}})
            for seed in args.seeds:
                if not any(r["variant"] == "dqe_centroid" for r in stored["seeds"].get(str(seed), [])):
                    parser.error(
                        f"--variants without centroid adds to a stored seed, and {name} seed {seed} has none: "
                        "include centroid, the DQE authors' rule, which the tables compare"
                    )
    touched: set[tuple[str, str]] = set()
    for name in args.datasets:
        print(f"{name}: loading", flush=True)
        data = load_dataset(name, args.threads, args.limit)
        settings = []
        if "dqe" in args.parts:
            settings.append(("dqe", None, None))
        if "noise" in args.parts:
            settings += [("noise", kind, rate) for kind in args.noise_kinds for rate in args.noise_rates]
        for part, kind, rate in settings:
            key = run_key(part, args.model, name, kind, rate, args.limit)
            run = results["runs"].setdefault(
                key,
                {"part": part, "model": args.model, "dataset": name, "kind": kind, "rate": rate, "seeds": {}},
            )
            run.update(
                split=data.split,
                train_rows=len(data.train_labels),
                test_rows=len(data.test_labels),
                removed_by_clean=data.removed_by_clean,
                encoder_epochs=args.encoder_epochs if args.model == "encoder" else None,
            )
            for seed in args.seeds:
                started = time.perf_counter()
                model = Model(args.model, seed, args.encoder_epochs, device)
                adds_to_stored = adding and part == "dqe"
                if adds_to_stored:
                    stored = run["seeds"][str(seed)]
                    stored_full = next(r for r in stored if r["variant"] == "full")
                    records = added_to_stored(stored, dqe_runs(data, model, args.variants, stored_full))
                elif part == "dqe":
                    records = dqe_runs(data, model, args.variants)
                else:
                    records = noise_runs(data, model, kind, rate)
                run["seeds"][str(seed)] = records
                this_run = {**machine(device), "threads": args.threads, "seconds": time.perf_counter() - started}
                machines = run.setdefault("machine", {})
                if adds_to_stored:  # the seed's first run keeps its entry; this one is listed under what it added
                    machines[str(seed)].setdefault("added", {})["+".join(args.variants)] = this_run
                else:
                    machines[str(seed)] = this_run
                summary = {r.get("variant", r.get("method")): round(r["accuracy"], 4) for r in records}
                print(f"  {key} seed {seed}: {summary} ({time.perf_counter() - started:.0f} s)", flush=True)
                touched.add((key, str(seed)))
                if not args.quick:
                    save_results(results, touched)
    if not args.quick and touched:
        write_readme_tables(load_results())  # with what runs beside this one have saved too
    return 0


if __name__ == "__main__":
    sys.exit(main())
