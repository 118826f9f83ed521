"""Hugging Face training for the ``encoder`` and ``causal_lm`` backends: one training job, launched in this
process or through Spark, with or without DeepSpeed.

``train.distributor``:

- ``in_process`` — the job runs in the calling process (``train.num_processes`` must be 1). With a DeepSpeed config,
  the launcher environment DeepSpeed expects (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) is set for the duration
  of the job; without it DeepSpeed would look for mpi4py.
- ``spark`` — pyspark's ``DeepspeedTorchDistributor`` (with a DeepSpeed config) or ``TorchDistributor`` (without)
  starts ``train.num_processes`` ranks under torchrun: on the driver (``spark_local_mode=True``) or as Spark barrier
  tasks (``False``; the work folder must then be shared storage, e.g. a Unity Catalog volume).

Every rank runs :func:`run_training_job`. Rank 0 writes the trained model, its tokenizer and the training log to
``job.output_dir``; the caller loads them from there. Nothing comes back through the distributor's return value,
which may come from a rank other than 0. The training log is rank 0's last write: a launcher failure reported after
it exists (a rank crashing on exit) is logged as a warning and the saved model is used.

DeepSpeed configs (``conf/deepspeed/zero2.json``, ``zero3.json``) use "auto" values that the Hugging Face Trainer
fills from the training arguments (batch sizes, gradient clipping, bf16 on GPUs that support it) and leave the
optimizer and scheduler to the Trainer (torch AdamW, linear decay), so no optimizer op is compiled. On the CPU the
Trainer runs with ``use_cpu=True`` (otherwise two processes fail the ``train_batch_size`` check) and
``average_tokens_across_devices=False`` (otherwise the reported loss is doubled). DeepSpeed still compiles its
shared-memory communication op on first use (minutes on two cores): ``TORCH_EXTENSIONS_DIR`` points at a cache under
the work folder unless it is already set. ``train.batch_size`` is the batch per process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from dqe.errors import ConfigError, DqeError
from dqe.models import resolve_model
from dqe.trainers.base import Device, TextClassifier

TRAINING_LOG_FILE = "training_log.json"
MODEL_FOLDER = "model"
BACKEND_MODULES = {"encoder": "dqe.trainers.encoder", "causal_lm": "dqe.trainers.causal_lm"}
Distributor = Literal["in_process", "spark"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingJob:
    """Everything a training rank needs, as plain values: it is pickled into each process."""

    backend: str
    base_model: str
    texts: list[str]
    labels: list[str]
    classes: list[str]
    epochs: int
    max_steps: int
    batch_size: int
    learning_rate: float
    max_length: int
    weight_decay: float
    seed: int
    deepspeed_config: str | None
    use_gpu: bool
    output_dir: str
    torch_extensions_dir: str


@dataclass
class TrainingParts:
    """What a backend contributes to a job: the model to train, its tokenizer, the examples and their collator."""

    model: Any
    tokenizer: Any
    examples: list[dict[str, Any]]
    collator: Any


def run_training_job(job: TrainingJob) -> None:
    """Train as one rank of ``job``; rank 0 saves. Imports stay inside: the distributors run this in fresh
    processes."""
    import importlib

    import torch
    from transformers import Trainer, TrainingArguments, set_seed
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", job.torch_extensions_dir)
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if not job.use_gpu and ranks_here > 1:
        # Ranks on one machine share its cores; more threads per rank than cores only adds contention.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks_here))
    try:
        # TrainingArguments come first: under ZeRO-3 they make from_pretrained partition weights while loading.
        args = TrainingArguments(
            output_dir=str(Path(job.output_dir) / "trainer"),
            num_train_epochs=job.epochs,
            max_steps=job.max_steps,
            per_device_train_batch_size=job.batch_size,
            learning_rate=job.learning_rate,
            weight_decay=job.weight_decay,
            seed=job.seed,
            data_seed=job.seed,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            # The driver logs to MLflow once; Hugging Face's own MLflow callback would open a run per rank.
            report_to="none",
            disable_tqdm=True,
            deepspeed=job.deepspeed_config,
            use_cpu=not job.use_gpu,
            bf16=job.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
            average_tokens_across_devices=False,
            remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        if job.deepspeed_config:
            import deepspeed

            # ZeRO-3 checks its batch sizes against the world size while from_pretrained partitions the weights;
            # on the CPU nothing has told DeepSpeed about the other ranks by then.
            deepspeed.init_distributed()
        # A new classification head is initialised from the global RNG inside from_pretrained, before Trainer
        # seeds anything: without this, the seed fixes the data order but not the head, which then depends on
        # whatever drew random numbers earlier in the process.
        set_seed(job.seed)
        parts: TrainingParts = importlib.import_module(BACKEND_MODULES[job.backend]).training_parts(job)
        trainer = Trainer(model=parts.model, args=args, train_dataset=parts.examples, data_collator=parts.collator)
        result = trainer.train()
        # Collective under ZeRO-3 (the partitioned weights are gathered); only rank 0 writes.
        trainer.save_model(job.output_dir)
        if trainer.is_world_process_zero():
            parts.tokenizer.save_pretrained(job.output_dir)
            log = summarize_log_history(trainer.state.log_history, result.metrics, len(job.texts), args.world_size)
            zero_stage = trainer.deepspeed.zero_optimization_stage() if trainer.is_deepspeed_enabled else None
            # -1 = without DeepSpeed; 0 is DeepSpeed without partitioning.
            log["metrics"]["deepspeed_zero_stage"] = -1 if zero_stage is None else zero_stage
            # Written last and whole (rename is atomic): its presence means rank 0's outputs are complete.
            log_path = Path(job.output_dir) / TRAINING_LOG_FILE
            partial_path = log_path.with_suffix(".partial")
            partial_path.write_text(json.dumps(log), encoding="utf-8")
            os.replace(partial_path, log_path)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # A rank that exits with its process group alive can abort in the group's threads at teardown
            # ("terminate called without an active exception"), and torchrun then kills the other rank mid-write.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    finally:
        # A ZeRO-3 config left registered would make later from_pretrained calls in this process partition weights.
        unset_hf_deepspeed_config()


def summarize_log_history(
    log_history: list[dict[str, Any]], metrics: dict[str, float], rows: int, world_size: int
) -> dict[str, Any]:
    """Per-step losses, their mean per epoch, and the run's summary, from the Trainer's log history."""
    steps = [
        {key: float(entry[key]) for key in ("step", "epoch", "loss", "learning_rate", "grad_norm") if key in entry}
        for entry in log_history
        if "loss" in entry
    ]
    by_epoch: dict[int, list[float]] = {}
    for step in steps:
        # The Trainer reports the fraction of epochs done after the step: 0.25 … 1.0 belong to epoch 1.
        by_epoch.setdefault(max(1, math.ceil(round(step["epoch"], 6))), []).append(step["loss"])
    epochs = [{"epoch": epoch, "train_loss": float(np.mean(losses))} for epoch, losses in sorted(by_epoch.items())]
    return {
        "steps": steps,
        "epochs": epochs,
        "metrics": {
            "train_rows": rows,
            "train_processes": world_size,
            "train_steps": len(steps),
            "train_loss": float(metrics.get("train_loss", float("nan"))),
            "train_seconds": float(metrics.get("train_runtime", float("nan"))),
            "train_examples_per_second": float(metrics.get("train_samples_per_second", float("nan"))),
        },
    }


def launch_training(
    job: TrainingJob, distributor: Distributor = "in_process", num_processes: int = 1, spark_local_mode: bool = True
) -> dict[str, Any]:
    """Run ``job`` as configured and return the training log rank 0 wrote (steps, epochs, metrics)."""
    if distributor == "in_process":
        if num_processes != 1:
            raise ConfigError(
                f"train.num_processes={num_processes} needs train.distributor=spark: "
                "in_process trains in the calling process only"
            )
        if job.deepspeed_config:
            with _single_rank_environment():
                run_training_job(job)
        else:
            run_training_job(job)
    elif distributor == "spark":
        _launch_with_spark(job, num_processes, spark_local_mode)
    else:
        raise ConfigError(f"train.distributor={distributor!r} is not one of in_process, spark")
    log_path = Path(job.output_dir) / TRAINING_LOG_FILE
    if not log_path.is_file():
        raise DqeError(f"training ended without rank 0 writing {log_path}: see the training processes' output")
    return json.loads(log_path.read_text(encoding="utf-8"))


def _launch_with_spark(job: TrainingJob, num_processes: int, local_mode: bool) -> None:
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    try:
        SparkSession.active()
    except PySparkRuntimeError:
        raise ConfigError("train.distributor=spark needs an active Spark session (dqe.spark.get_spark)") from None
    # The ranks are child processes of the launcher: they inherit the extension cache from this environment.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", job.torch_extensions_dir)
    if job.deepspeed_config:
        from pyspark.ml.deepspeed.deepspeed_distributor import DeepspeedTorchDistributor

        launcher = DeepspeedTorchDistributor(
            numGpus=num_processes,
            nnodes=1,
            localMode=local_mode,
            useGpu=job.use_gpu,
            deepspeedConfig=job.deepspeed_config,
        )
    else:
        from pyspark.ml.torch.distributor import TorchDistributor

        launcher = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=job.use_gpu)
    _tolerate_crash_after_completion(lambda: launcher.run(run_training_job, job), Path(job.output_dir))


def _tolerate_crash_after_completion(launch: Callable[[], Any], output_dir: Path) -> None:
    """Run ``launch``; a failure after rank 0 has written its last output is logged, not raised.

    Under DeepSpeed on the CPU a rank sometimes aborts while its process exits, after training and saving are
    done ("terminate called without an active exception" from a communication thread, even with the process
    group destroyed first); torchrun then reports the whole run as failed. The training log is rank 0's last
    write, so with it in place nothing is missing. Without it, the failure is raised as it came.
    """
    try:
        launch()
    except Exception as error:
        if not (output_dir / TRAINING_LOG_FILE).is_file():
            raise
        logger.warning(
            "a training process failed after rank 0 had saved the model and the training log; using them. "
            "The launcher reported: %s",
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )


@contextmanager
def _single_rank_environment() -> Iterator[None]:
    """The variables a launcher would set, for one rank in this process; afterwards the environment is restored
    (accelerate leaves ACCELERATE_USE_DEEPSPEED=true behind, which would make every later Trainer in this process a
    DeepSpeed one). The process group the first job opens stays open: DeepSpeed caches its groups for the life of
    the process, so later jobs here must find the same one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    launcher_variables = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port),
    }
    saved = dict(os.environ)
    os.environ.update({key: value for key, value in launcher_variables.items() if key not in os.environ})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class HuggingFaceTrainer(TextClassifier):
    """Shared by the Hugging Face backends: fitting launches a :class:`TrainingJob`, then loads what rank 0 saved.

    Subclasses provide ``_load_pretrained`` (model and tokenizer from a folder) and ``_predict``, and a module-level
    ``training_parts(job)`` that builds what a rank trains.
    """

    default_base_model = "bundled"

    def __init__(
        self,
        base_model: str | None = None,
        epochs: int = 3,
        max_steps: int = -1,
        batch_size: int = 32,
        learning_rate: float = 5e-5,
        max_length: int = 128,
        weight_decay: float = 0.0,
        seed: int = 0,
        deepspeed_config: str | None = None,
        use_gpu: bool = False,
        distributor: Distributor = "in_process",
        num_processes: int = 1,
        spark_local_mode: bool = True,
        predict_batch_size: int = 64,
        work_dir: str | None = None,
        device: Device = "auto",
    ) -> None:
        super().__init__(device)
        self.base_model = base_model or self.default_base_model
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_length = max_length
        self.weight_decay = weight_decay
        self.seed = seed
        self.deepspeed_config = deepspeed_config
        self.use_gpu = use_gpu
        self.distributor = distributor
        self.num_processes = num_processes
        self.spark_local_mode = spark_local_mode
        self.predict_batch_size = predict_batch_size
        self.work_dir = work_dir
        self._model: Any = None
        self._tokenizer: Any = None

    def settings(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "max_length": self.max_length,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "deepspeed_config": self.deepspeed_config,
            "use_gpu": self.use_gpu,
            "distributor": self.distributor,
            "num_processes": self.num_processes,
            "spark_local_mode": self.spark_local_mode,
            "predict_batch_size": self.predict_batch_size,
        }

    def _fit(self, texts: list[str], labels: list[str], embeddings: np.ndarray | None) -> None:
        work = Path(self.work_dir) if self.work_dir else Path(tempfile.gettempdir()) / "dqe"
        (work / "training").mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"{self.backend}-", dir=work / "training") as output_dir:
            job = TrainingJob(
                backend=self.backend,
                base_model=resolve_model(self.base_model),
                texts=texts,
                labels=labels,
                classes=self.classes_,
                epochs=self.epochs,
                max_steps=self.max_steps,
                batch_size=self.batch_size,
                learning_rate=self.learning_rate,
                max_length=self.max_length,
                weight_decay=self.weight_decay,
                seed=self.seed,
                deepspeed_config=self.deepspeed_config,
                use_gpu=self.use_gpu,
                output_dir=output_dir,
                torch_extensions_dir=str(work / "torch_extensions"),
            )
            log = launch_training(job, self.distributor, self.num_processes, self.spark_local_mode)
            self._load_pretrained(Path(output_dir))
        self.step_history_ = log["steps"]
        self.history_ = log["epochs"]
        # Includes process start-up and model loading, unlike train_seconds (the Trainer's loop only).
        self.metrics_ = {**log["metrics"], "fit_seconds": time.perf_counter() - started}

    def _save_artifacts(self, folder: Path) -> None:
        self._model.save_pretrained(folder / MODEL_FOLDER)
        self._tokenizer.save_pretrained(folder / MODEL_FOLDER)

    def _restore(self, folder: Path) -> None:
        self._load_pretrained(folder / MODEL_FOLDER)

    @abstractmethod
    def _load_pretrained(self, folder: Path) -> None:
        """Load the model (for inference, on ``self.device``) and the tokenizer from ``folder``."""
