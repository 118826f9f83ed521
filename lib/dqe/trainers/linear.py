"""``linear``: multinomial logistic regression on sentence embeddings.

The cheapest backend and the baseline of the others: logistic regression on the unit-length embeddings
(``train.linear_c`` is its inverse regularisation strength; on all-MiniLM-L6-v2 vectors of SST-2, C=1 did better
than standardised features at any C), with probabilities calibrated by temperature scaling fitted on
out-of-fold predictions (scikit-learn's ``CalibratedClassifierCV(method="temperature", ensemble=False)``), so that
``confidence`` can be read as a probability when triage ranks rows by it. Scaling a row's logits by one
temperature keeps their order, so ``train.linear_calibrate: false`` (about 7× faster to fit: no cross-validation)
gives the same predicted labels with uncalibrated confidences.

Texts without stored embeddings are embedded with the sentence-transformers model the stored ones came from
(``embedding_model``, ``bundled`` = the offline all-MiniLM-L6-v2) and L2-normalised, as the embed stage stores them.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from dqe.errors import InputError
from dqe.models import resolve_model
from dqe.trainers.base import Device, Predictions, TextClassifier, resolve_device

ESTIMATOR_FILE = "estimator.joblib"
CALIBRATION_FOLDS = 5


class LinearTrainer(TextClassifier):
    backend = "linear"

    def __init__(
        self,
        c: float = 1.0,
        calibrate: bool = True,
        embedding_model: str = "bundled",
        predict_batch_size: int = 64,
        seed: int = 0,
        device: Device = "auto",
    ) -> None:
        super().__init__(device)
        self.c = c
        self.calibrate = calibrate
        self.embedding_model = embedding_model
        self.predict_batch_size = predict_batch_size
        self.seed = seed
        self.embedding_dim_: int | None = None
        self._estimator: CalibratedClassifierCV | LogisticRegression | None = None
        self._encoder: Any = None

    def settings(self) -> dict[str, Any]:
        return {
            "c": self.c,
            "calibrate": self.calibrate,
            "embedding_model": self.embedding_model,
            "predict_batch_size": self.predict_batch_size,
            "seed": self.seed,
        }

    @property
    def accepts_embeddings(self) -> bool:
        return True

    def _fit(self, texts: list[str], labels: list[str], embeddings: np.ndarray | None) -> None:
        started = time.perf_counter()
        features = embeddings if embeddings is not None else self._embed(texts)
        target = np.asarray(labels, dtype=object)
        classifier = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        folds = min(CALIBRATION_FOLDS, min(Counter(labels).values())) if self.calibrate else 0
        if folds >= 2:
            self._estimator = CalibratedClassifierCV(
                classifier,
                method="temperature",
                cv=StratifiedKFold(folds, shuffle=True, random_state=self.seed),
                ensemble=False,
            ).fit(features, target)
        else:
            # Not asked for, or a class with a single row cannot appear in every fold: keep the regression's own
            # probabilities.
            self._estimator = classifier.fit(features, target)
        self.embedding_dim_ = int(features.shape[1])
        seconds = time.perf_counter() - started

        probabilities = self._estimator.predict_proba(features)
        index = {label: i for i, label in enumerate(self.classes_)}
        true_columns = np.array([index[label] for label in labels])
        picked = probabilities[np.arange(len(labels)), true_columns]
        self.history_ = [
            {
                "epoch": 1,
                "train_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
                "train_accuracy": float((probabilities.argmax(axis=1) == true_columns).mean()),
            }
        ]
        self.metrics_ = {
            "train_rows": len(texts),
            "train_seconds": seconds,
            "train_examples_per_second": len(texts) / seconds if seconds > 0 else float("nan"),
            "calibration_folds": folds if folds >= 2 else 0,
        }

    def _predict(self, texts: list[str], embeddings: np.ndarray | None) -> Predictions:
        features = embeddings if embeddings is not None else self._embed(texts)
        if features.shape[1] != self.embedding_dim_:
            raise InputError(
                f"embeddings have {features.shape[1]} dimensions; this model was fitted on {self.embedding_dim_} "
                f"(from {self.embedding_model!r})"
            )
        # scikit-learn orders the columns by sorted label, as classes_ is ordered.
        probabilities = self._estimator.predict_proba(features)
        best = probabilities.argmax(axis=1)
        labels = [self.classes_[i] for i in best]
        return Predictions(
            classes=list(self.classes_),
            labels=labels,
            confidence=probabilities[np.arange(len(texts)), best],
            probabilities=probabilities,
            raw_output=labels,
            parse_ok=np.ones(len(texts), dtype=bool),
        )

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(resolve_model(self.embedding_model), device=resolve_device(self.device))
        vectors = self._encoder.encode(
            texts, batch_size=self.predict_batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def _save_artifacts(self, folder: Path) -> None:
        joblib.dump({"estimator": self._estimator, "embedding_dim": self.embedding_dim_}, folder / ESTIMATOR_FILE)

    def _restore(self, folder: Path) -> None:
        saved = joblib.load(folder / ESTIMATOR_FILE)
        self._estimator = saved["estimator"]
        self.embedding_dim_ = saved["embedding_dim"]
