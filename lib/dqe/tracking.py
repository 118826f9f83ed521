"""MLflow at the edge: where runs and models are tracked, how registered models are named, and the run list.

- Tracking URI: ``mlflow.tracking_uri``. A local SQLite URI or folder with a relative path (the default
  ``sqlite:///work/mlflow.db``) is resolved against the project root, so every working directory sees one store;
  its artifacts go to ``mlartifacts/`` beside the database. ``databricks`` is used as it is.
- Registry: the tracking store; on Databricks with ``storage.catalog`` set, Unity Catalog (``databricks-uc``), where
  model names are ``catalog.schema.name``.
- Model names: ``mlflow.registered_model_name`` with ``{dataset}`` filled in. One registered model per dataset holds
  the models trained on either split; the alias ``trained_on_<split>`` points at the latest of each, so
  ``models:/dqe_cr_classifier@trained_on_sampled`` is the model that predicts the unsampled rows.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dqe.catalog import Catalog
from dqe.config import DqeConfig

_SQLITE_PREFIX = "sqlite:///"


def resolve_tracking_uri(config: DqeConfig) -> str:
    uri = config.mlflow.tracking_uri
    if uri.startswith(_SQLITE_PREFIX):
        # sqlite:///relative/path is relative to the working directory; sqlite:////absolute stays as it is.
        return _SQLITE_PREFIX + str((config.project_root / uri[len(_SQLITE_PREFIX) :]).resolve())
    if "://" not in uri and not uri.startswith("databricks"):
        return str((config.project_root / uri).resolve())
    return uri


def registry_uri(config: DqeConfig) -> str:
    tracking = resolve_tracking_uri(config)
    if tracking == "databricks" and config.storage.catalog:
        return "databricks-uc"
    return tracking


def _local_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it (MLflow's default, ./mlruns, depends on the working directory);
    other stores keep their own default."""
    if tracking_uri.startswith(_SQLITE_PREFIX):
        return (Path(tracking_uri[len(_SQLITE_PREFIX) :]).parent / "mlartifacts").as_uri()
    return None


def configure_mlflow(config: DqeConfig) -> str:
    """Point MLflow at the configured tracking store and registry, creating the experiment if needed; return its id."""
    import mlflow

    tracking_uri = resolve_tracking_uri(config)
    if tracking_uri.startswith(_SQLITE_PREFIX):
        Path(tracking_uri[len(_SQLITE_PREFIX) :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri(config))
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        experiment_id = mlflow.create_experiment(
            config.mlflow.experiment, artifact_location=_local_artifact_location(tracking_uri)
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def registered_model_name(config: DqeConfig) -> str:
    name = config.mlflow.registered_model_name.format(dataset=config.dataset.name)
    if config.storage.catalog:
        return f"{Catalog.from_config(config).namespace}.{name}"
    return name


def split_alias(split: str) -> str:
    """The registry alias of the latest model trained on ``split``."""
    return f"trained_on_{split}"


def model_uri_for_split(config: DqeConfig, trained_on: str) -> str:
    return f"models:/{registered_model_name(config)}@{split_alias(trained_on)}"


def list_runs(config: DqeConfig, n: int = 20) -> list[dict[str, Any]]:
    """The latest ``n`` runs of the configured experiment, newest first, for ``dqe runs``.

    Each run is a dict: run_id, run_name, status, start_time (UTC datetime), duration_s (None while running),
    stage, split, backend, dataset (from the run's ``dqe.*`` tags; None when absent) and metrics (name → value).
    """
    import mlflow

    configure_mlflow(config)
    runs = mlflow.search_runs(
        experiment_names=[config.mlflow.experiment],
        max_results=n,
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    summaries = []
    for run in runs:
        info, tags = run.info, run.data.tags
        summaries.append(
            {
                "run_id": info.run_id,
                "run_name": info.run_name,
                "status": info.status,
                "start_time": datetime.fromtimestamp(info.start_time / 1000, tz=timezone.utc),
                "duration_s": (info.end_time - info.start_time) / 1000 if info.end_time else None,
                "stage": tags.get("dqe.stage"),
                "split": tags.get("dqe.split"),
                "backend": tags.get("dqe.backend"),
                "dataset": tags.get("dqe.dataset"),
                "metrics": dict(run.data.metrics),
            }
        )
    return summaries


def pinned_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` → ``models:/name/<version>`` (the version the alias points at now); other URIs as
    they are. Predictions record the pinned URI: an alias moves when a newer model is trained."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    name, alias = model_uri[len("models:/") :].rsplit("@", 1)
    return f"models:/{name}/{MlflowClient().get_model_version_by_alias(name, alias).version}"
