"""The interface every trainer backend implements, and the input checks they all share.

A trainer is a scikit-learn style estimator over texts::

    trainer = make_trainer(config.train)                 # linear | encoder | causal_lm
    trainer.fit(texts, labels, embeddings=None)          # returns the trainer
    predictions = trainer.predict(texts)                 # a Predictions
    trainer.classes_                                     # the label names, sorted; probability columns follow it
    trainer.save(folder)
    same = load_trainer(folder)                          # dqe.trainers.load_trainer picks the backend

``embeddings`` are the stored sentence vectors of the texts (one row per text). The ``linear`` backend uses them
when given and embeds the texts itself otherwise; the Hugging Face backends read the texts and ignore them.

After ``fit``, ``history_`` holds one dict of metrics per epoch (``epoch`` plus e.g. ``train_loss``),
``step_history_`` one dict per logged optimizer step (empty for ``linear``), and ``metrics_`` a summary of the run
(rows, seconds, examples per second).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd

from dqe.errors import DqeError, InputError

MANIFEST_FILE = "dqe_trainer.json"
FORMAT_VERSION = 1
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Predictions:
    """Predictions for n texts over the classes the trainer was fitted on.

    ``labels[i]`` is None when a generative model's output named no label (``parse_ok[i]`` False); its raw text is
    kept in ``raw_output[i]`` and ``confidence[i]`` is 0. ``probabilities`` has one column per class, in
    ``classes`` order; each row sums to 1.
    """

    classes: list[str]
    labels: list[str | None]
    confidence: np.ndarray
    probabilities: np.ndarray
    raw_output: list[str]
    parse_ok: np.ndarray

    @classmethod
    def empty(cls, classes: list[str]) -> Predictions:
        return cls(
            classes=list(classes),
            labels=[],
            confidence=np.zeros(0),
            probabilities=np.zeros((0, len(classes))),
            raw_output=[],
            parse_ok=np.zeros(0, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def instruction_following_rate(self) -> float:
        """Share of outputs that named exactly one label (always 1 for the classifier backends)."""
        return float(self.parse_ok.mean()) if len(self) else float("nan")

    def accuracy(self, true_labels: Sequence[str]) -> float:
        """Share of predictions equal to ``true_labels``; unparsable outputs count as wrong.

        Raises InputError when the lengths differ or a true label was never seen in training: such a row can only
        be wrong, and an evaluation that contains it almost always compares against the wrong model or data.
        """
        true = list(true_labels)
        if len(true) != len(self):
            raise InputError(f"{len(true)} true labels for {len(self)} predictions: the lengths must match")
        check_known_labels(true, self.classes)
        if not true:
            return float("nan")
        return float(np.mean([p == t for p, t in zip(self.labels, true)]))

    def to_frame(self) -> pd.DataFrame:
        """One row per text: predicted_label, confidence, probabilities (list in ``classes`` order), raw_output,
        parse_ok — the output columns of the MLflow model."""
        return pd.DataFrame(
            {
                "predicted_label": pd.Series(self.labels, dtype=object),
                "confidence": self.confidence.astype(np.float64),
                "probabilities": [row.astype(np.float64).tolist() for row in self.probabilities],
                "raw_output": pd.Series(self.raw_output, dtype=object),
                "parse_ok": self.parse_ok.astype(bool),
            }
        )


class TextClassifier(ABC):
    """A text classifier that can be fitted, used for predictions, saved and loaded (see the module docstring).

    Backends implement ``_fit``, ``_predict``, ``_save_artifacts``, ``_restore`` and ``settings``; the public
    methods here validate the input once for all of them.
    """

    backend: ClassVar[str]
    predict_batch_size: int = 64

    def __init__(self, device: Device = "auto") -> None:
        self.device = device
        self.classes_: list[str] = []
        self.history_: list[dict[str, float]] = []
        self.step_history_: list[dict[str, float]] = []
        self.metrics_: dict[str, float] = {}

    # -- the interface -------------------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str], embeddings: Any = None) -> TextClassifier:
        texts, labels, vectors = check_training_input(texts, labels, embeddings)
        self.classes_ = sorted(set(labels))
        self._fit(texts, labels, vectors)
        return self

    def predict(self, texts: Sequence[str], embeddings: Any = None) -> Predictions:
        self._check_fitted()
        texts, vectors = check_prediction_input(texts, embeddings)
        if not texts:
            return Predictions.empty(self.classes_)
        return self._predict(texts, vectors)

    def score(self, texts: Sequence[str], labels: Sequence[str], embeddings: Any = None) -> float:
        """Accuracy on labelled texts (scikit-learn's ``score``)."""
        return self.predict(texts, embeddings).accuracy(labels)

    def save(self, path: str | Path) -> Path:
        """Write the fitted trainer to a folder that :func:`dqe.trainers.load_trainer` reads back."""
        self._check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_artifacts(folder)
        manifest = {
            "format_version": FORMAT_VERSION,
            "backend": self.backend,
            "classes": self.classes_,
            "settings": self.settings(),
            "history": self.history_,
            "step_history": self.step_history_,
            "metrics": self.metrics_,
        }
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | Path, device: Device = "auto") -> TextClassifier:
        folder = Path(path)
        manifest = read_manifest(folder)
        if manifest["backend"] != cls.backend:
            raise DqeError(f"{folder} holds a {manifest['backend']!r} trainer, not {cls.backend!r}")
        trainer = cls(**manifest["settings"], device=device)
        trainer.classes_ = list(manifest["classes"])
        trainer.history_ = manifest["history"]
        trainer.step_history_ = manifest["step_history"]
        trainer.metrics_ = manifest["metrics"]
        trainer._restore(folder)
        return trainer

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The constructor arguments (JSON values, without ``device``) that rebuild this trainer."""

    # -- what backends implement ---------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, texts: list[str], labels: list[str], embeddings: np.ndarray | None) -> None: ...

    @abstractmethod
    def _predict(self, texts: list[str], embeddings: np.ndarray | None) -> Predictions: ...

    @abstractmethod
    def _save_artifacts(self, folder: Path) -> None: ...

    @abstractmethod
    def _restore(self, folder: Path) -> None: ...

    @property
    def accepts_embeddings(self) -> bool:
        """Whether ``predict`` uses stored embeddings (so that callers know to pass them)."""
        return False

    def _check_fitted(self) -> None:
        if not self.classes_:
            raise DqeError(f"this {self.backend} trainer is not fitted: call fit() or load a saved one first")


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise DqeError(f"{folder} is not a saved dqe trainer: {MANIFEST_FILE} is missing")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DqeError(
            f"{path}: format version {manifest.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    return manifest


def resolve_device(device: Device) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DqeError("device 'cuda' was requested but torch sees no CUDA device")
    return device


# -- input checks --------------------------------------------------------------------------------------------------
def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text at position {i} is {type(text).__name__}, not a string (missing text?)")
    return texts


def _check_embeddings(embeddings: Any, n: int) -> np.ndarray | None:
    if embeddings is None or n == 0:
        return None
    try:
        # Row by row, so that a pandas Series or list of arrays (as read from a table) works like a matrix.
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in embeddings])
    except (TypeError, ValueError) as exc:
        raise InputError(f"embeddings must be vectors of one length: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[0] != n:
        raise InputError(f"embeddings have shape {matrix.shape}; expected one vector per text ({n} rows)")
    if not np.isfinite(matrix).all():
        raise InputError("embeddings contain NaN or infinite values")
    return matrix


def check_training_input(
    texts: Sequence[str], labels: Sequence[str], embeddings: Any = None
) -> tuple[list[str], list[str], np.ndarray | None]:
    texts = _check_texts(texts)
    labels = list(labels)
    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels: each text needs exactly one label")
    if not texts:
        raise InputError("the training set is empty: nothing to fit")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise InputError(f"label at position {i} is {label!r}: labels must be non-empty strings (label names)")
    counts = Counter(labels)
    if len(counts) < 2:
        raise InputError(
            f"the training set has a single class ({next(iter(counts))!r}, {len(labels)} rows): "
            "a classifier needs at least two"
        )
    return texts, labels, _check_embeddings(embeddings, len(texts))


def check_prediction_input(texts: Sequence[str], embeddings: Any = None) -> tuple[list[str], np.ndarray | None]:
    texts = _check_texts(texts)
    return texts, _check_embeddings(embeddings, len(texts))


def check_known_labels(labels: Sequence[str], classes: Sequence[str]) -> None:
    unseen = sorted(set(labels) - set(classes))
    if unseen:
        shown = ", ".join(repr(label) for label in unseen[:5]) + (" …" if len(unseen) > 5 else "")
        raise InputError(
            f"{len(unseen)} label(s) never seen in training: {shown} (the model knows {len(classes)}: "
            f"{', '.join(classes[:10])}{' …' if len(classes) > 10 else ''})"
        )
