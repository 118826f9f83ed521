"""Trainers: text classifiers behind one scikit-learn style interface, chosen by ``train.backend``.

======================  ==================================================================================
``linear``              logistic regression on sentence embeddings (:mod:`dqe.trainers.linear`)
``encoder``             fine-tuned encoder + classification head (:mod:`dqe.trainers.encoder`)
``causal_lm``           instruction-tuned chat model answering with the label (:mod:`dqe.trainers.causal_lm`)
======================  ==================================================================================

The interface is :class:`~dqe.trainers.base.TextClassifier` (``fit``, ``predict`` → :class:`Predictions`,
``classes_``, ``save``) plus :func:`load_trainer`; the Hugging Face backends launch their training as described in
:mod:`dqe.trainers.distributed` (in process or through Spark, with or without DeepSpeed).
"""

from __future__ import annotations

from pathlib import Path

from dqe.config import DqeConfig, PROJECT_ROOT, TrainConfig
from dqe.errors import ConfigError
from dqe.trainers.base import Device, Predictions, TextClassifier, read_manifest
from dqe.trainers.causal_lm import CausalLMTrainer
from dqe.trainers.encoder import EncoderTrainer
from dqe.trainers.linear import LinearTrainer

BACKENDS: dict[str, type[TextClassifier]] = {
    LinearTrainer.backend: LinearTrainer,
    EncoderTrainer.backend: EncoderTrainer,
    CausalLMTrainer.backend: CausalLMTrainer,
}

__all__ = [
    "BACKENDS",
    "CausalLMTrainer",
    "EncoderTrainer",
    "LinearTrainer",
    "Predictions",
    "TextClassifier",
    "load_trainer",
    "make_trainer",
    "resolve_deepspeed_config",
    "trainer_for",
]


def make_trainer(
    train_config: TrainConfig,
    *,
    embedding_model: str = "bundled",
    work_dir: str | Path | None = None,
    project_root: Path = PROJECT_ROOT,
    device: Device = "auto",
    predict_batch_size: int = 64,
    spark_local_mode: bool = True,
) -> TextClassifier:
    """An unfitted trainer for ``train_config.backend``.

    ``embedding_model``: the sentence-transformers model of the stored embeddings (``linear`` embeds texts that
    come without vectors with it). ``work_dir``: scratch space for training output and the DeepSpeed op cache.
    ``project_root``: relative ``train.deepspeed_config`` paths are resolved against it. ``device``: where
    predictions run. ``spark_local_mode``: with ``train.distributor=spark``, run the ranks on the driver (True) or
    as Spark tasks (False).
    """
    if train_config.backend == "linear":
        return LinearTrainer(
            c=train_config.linear_c,
            calibrate=train_config.linear_calibrate,
            embedding_model=embedding_model,
            predict_batch_size=predict_batch_size,
            seed=train_config.seed,
            device=device,
        )
    trainer_class = BACKENDS[train_config.backend]
    return trainer_class(
        base_model=train_config.base_model,
        epochs=train_config.epochs,
        max_steps=train_config.max_steps,
        batch_size=train_config.batch_size,
        learning_rate=train_config.learning_rate,
        max_length=train_config.max_length,
        weight_decay=train_config.weight_decay,
        seed=train_config.seed,
        deepspeed_config=resolve_deepspeed_config(train_config.deepspeed_config, project_root),
        use_gpu=train_config.use_gpu,
        distributor=train_config.distributor,
        num_processes=train_config.num_processes,
        spark_local_mode=spark_local_mode,
        predict_batch_size=predict_batch_size,
        work_dir=str(work_dir) if work_dir else None,
        device=device,
    )


def trainer_for(config: DqeConfig) -> TextClassifier:
    """The configured trainer, unfitted, with the project's embedding model, work folder, prediction device and
    batch size, and the configured placement of distributed ranks."""
    return make_trainer(
        config.train,
        embedding_model=config.embed.model,
        work_dir=config.storage.work_dir,
        project_root=config.project_root,
        device=config.infer.device,
        predict_batch_size=config.infer.batch_size,
        spark_local_mode=config.train.spark_local_mode,
    )


def resolve_deepspeed_config(path: str | None, project_root: Path = PROJECT_ROOT) -> str | None:
    """An absolute path to an existing DeepSpeed JSON config, or None for no DeepSpeed."""
    if not path:
        return None
    resolved = Path(path) if Path(path).is_absolute() else (project_root / path).resolve()
    if not resolved.is_file():
        raise ConfigError(f"train.deepspeed_config: {resolved} does not exist (e.g. conf/deepspeed/zero2.json)")
    return str(resolved)


def load_trainer(path: str | Path, device: Device = "auto") -> TextClassifier:
    """Load a trainer saved with ``save``, whatever its backend."""
    backend = read_manifest(Path(path))["backend"]
    if backend not in BACKENDS:
        raise ConfigError(f"{path}: unknown trainer backend {backend!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[backend].load(path, device=device)
