"""Offline checks of the Databricks Asset Bundle (databricks.yml + resources/*.yml) and conf/databricks.yaml.

The bundle is resolved per target the way ``databricks bundle validate`` would for the parts dqe relies on: the
``include:`` files are merged, the target's variables and resource overrides applied, and every ``${...}``
reference substituted (``var.*`` from the variables, ``bundle.*``/``workspace.*`` with placeholders). Each job is
then parsed by the typed models of the ``databricks-bundles`` package, which reject unknown fields and bad enum
values, and each task is checked against its entry point: the file exists, it is the stage it claims to be, and
its parameters pass ``dqe.cli.build_parser()`` and ``dqe.config.load_config``. No Spark.
"""

from __future__ import annotations

import copy
import glob
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.bundles.jobs import Job, JobPermission

from dqe.cli import STAGES, build_parser
from dqe.config import load_config
from dqe.tracking import registered_model_name, registry_uri, resolve_tracking_uri

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_FILE = ROOT / "databricks.yml"
GPU_STAGES = {"embed", "train", "infer"}
# Placeholders for what the CLI knows only at deploy time.
USER = "someone@example.com"
FILE_PATH = "/Workspace/Users/someone@example.com/.bundle/dqe/{target}/files"
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-\[\]]+)\}")
# L40S nodes on AWS (g6e.xlarge … g6e.4xlarge hold one GPU each).
L40S_NODE = re.compile(r"^g6e\.(x|2x|4x)large$")


# ---------------------------------------------------------------- loading and resolving the bundle


def _merge(base: Any, override: Any) -> Any:
    """Deep merge as the bundle loader does: mappings key by key, task/cluster lists by their key, other lists
    replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            merged[key] = _merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        for key in ("task_key", "job_cluster_key"):
            if all(isinstance(x, dict) and key in x for x in base + override) and base + override:
                merged = {item[key]: copy.deepcopy(item) for item in base}
                for item in override:
                    merged[item[key]] = _merge(merged.get(item[key], {}), item)
                return list(merged.values())
    return copy.deepcopy(override)


def _with_origin(resources: dict[str, Any], origin: Path) -> dict[str, Any]:
    """Tag every job with the file that defined it: relative paths in a job are relative to that file."""
    for job in resources.get("jobs", {}).values():
        job["__origin__"] = str(origin)
    return resources


def load_raw_bundle() -> dict[str, Any]:
    raw = yaml.safe_load(BUNDLE_FILE.read_text(encoding="utf-8"))
    raw["resources"] = _with_origin(raw.get("resources", {}), BUNDLE_FILE)
    for pattern in raw.get("include", []):
        files = sorted(glob.glob(str(ROOT / pattern)))
        assert files, f"include pattern {pattern!r} matches no file"
        for path in files:
            extra = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            assert set(extra) <= {"resources", "variables", "targets"}, f"{path}: unexpected top-level keys"
            raw["resources"] = _merge(raw["resources"], _with_origin(extra.get("resources", {}), Path(path)))
    return raw


def _variable_values(raw: dict[str, Any], target: str) -> dict[str, Any]:
    values = {}
    for name, spec in raw.get("variables", {}).items():
        assert isinstance(spec, dict) and "default" in spec, f"variable {name} needs a default"
        assert spec.get("description"), f"variable {name} needs a description"
        values[name] = spec["default"]
    for name, value in (raw["targets"][target].get("variables") or {}).items():
        assert name in values, f"target {target} sets undeclared variable {name}"
        values[name] = value["default"] if isinstance(value, dict) else value
    return values


def _substitute(node: Any, lookup: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, lookup) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, lookup) for v in node]
    if not isinstance(node, str):
        return node
    for _ in range(10):  # variables may refer to other references
        whole = REFERENCE.fullmatch(node)
        if whole:
            assert whole.group(1) in lookup, f"unresolved reference ${{{whole.group(1)}}}"
            node = lookup[whole.group(1)]
            if not isinstance(node, str):
                return node
            continue

        def replace(match: re.Match[str]) -> str:
            assert match.group(1) in lookup, f"unresolved reference ${{{match.group(1)}}}"
            return str(lookup[match.group(1)])

        node, count = REFERENCE.subn(replace, node)
        if not count:
            return node
    raise AssertionError(f"reference loop in {node!r}")


def resolve(target: str) -> dict[str, Any]:
    """The bundle as deployed to ``target``: includes merged, target overrides applied, references substituted."""
    raw = load_raw_bundle()
    assert target in raw["targets"], f"no target {target!r}"
    settings = raw["targets"][target]
    bundle = {k: v for k, v in raw.items() if k not in ("targets", "variables", "include")}
    for key in ("resources", "run_as", "permissions", "workspace", "artifacts"):
        if key in settings:
            bundle[key] = _merge(bundle.get(key, {} if key != "permissions" else []), settings[key])
    user_short = USER.split("@")[0]
    lookup: dict[str, Any] = {
        "bundle.name": raw["bundle"]["name"],
        "bundle.target": target,
        "workspace.current_user.userName": USER,
        "workspace.current_user.short_name": user_short,
        "workspace.file_path": FILE_PATH.format(target=target),
        "workspace.root_path": FILE_PATH.format(target=target).rsplit("/files", 1)[0],
    }
    lookup.update({f"var.{k}": v for k, v in _variable_values(raw, target).items()})
    return _substitute(bundle, lookup)


def local_path(path: str, target: str) -> Path:
    """A deployed path (under ${workspace.file_path}) → the same file in this checkout."""
    prefix = FILE_PATH.format(target=target)
    assert path.startswith(prefix + "/"), f"{path} is not under the bundle's files"
    return ROOT / path[len(prefix) + 1 :]


def jobs(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = bundle.get("resources", {}).get("jobs", {})
    assert found, "the bundle defines no job"
    return found


def job_spec(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "__origin__"}


TARGETS = ["dev", "prod"]


@pytest.fixture(scope="module", params=TARGETS)
def deployed(request) -> tuple[str, dict[str, Any]]:
    return request.param, resolve(request.param)


@pytest.fixture(scope="module")
def pipeline(deployed) -> tuple[str, dict[str, Any]]:
    target, bundle = deployed
    assert "dqe_pipeline" in jobs(bundle)
    return target, jobs(bundle)["dqe_pipeline"]


# ---------------------------------------------------------------- bundle-level settings


def test_bundle_targets_and_artifact():
    raw = load_raw_bundle()
    assert raw["bundle"]["name"] == "dqe"
    targets = raw["targets"]
    assert set(targets) == {"dev", "prod"}
    assert targets["dev"]["mode"] == "development" and targets["dev"].get("default") is True
    assert targets["prod"]["mode"] == "production" and not targets["prod"].get("default")
    # prod runs as a service principal (a variable placeholder) and sets permissions
    assert REFERENCE.fullmatch(targets["prod"]["run_as"]["service_principal_name"])
    assert set(targets["prod"]["run_as"]) == {"service_principal_name"}
    for permission in resolve("prod")["permissions"]:
        JobPermission.from_dict(permission)
    wheel = raw["artifacts"]["default"]
    assert wheel["type"] == "whl" and "--wheel" in wheel["build"]
    assert (BUNDLE_FILE.parent / wheel["path"] / "pyproject.toml").is_file()


def test_every_reference_resolves(deployed):
    target, bundle = deployed
    leftovers = REFERENCE.findall(yaml.safe_dump(bundle))
    assert leftovers == [], f"{target}: unresolved references {leftovers}"
    # the per-developer schema in dev keeps runs of different people apart
    params = jobs(bundle)["dqe_pipeline"]["tasks"][0]["spark_python_task"]["parameters"]
    schema = params[params.index("--set", params.index("--set") + 1) + 1]
    assert schema.startswith("storage.schema=")
    if target == "dev":
        assert "someone" in schema
    else:
        assert "someone" not in schema


# ---------------------------------------------------------------- typed models


def test_jobs_parse_with_typed_models(deployed):
    target, bundle = deployed
    for key, job in jobs(bundle).items():
        parsed = Job.from_dict(job_spec(job))
        assert parsed.name and len(parsed.tasks) == len(job["tasks"]), key
        round_trip = parsed.as_dict()
        assert [t["task_key"] for t in round_trip["tasks"]] == [t["task_key"] for t in job["tasks"]]
        assert {c["job_cluster_key"] for c in round_trip["job_clusters"]} == {"cpu", "gpu"}


def test_typed_models_reject_unknown_fields_and_bad_values(pipeline):
    _, job = pipeline
    spec = job_spec(job)
    with pytest.raises(ValueError, match="bogus_field"):
        Job.from_dict({**spec, "bogus_field": 1})
    task = {**spec["tasks"][0], "bogus_task_field": True}
    with pytest.raises(ValueError, match="bogus_task_field"):
        Job.from_dict({**spec, "tasks": [task]})
    cluster = copy.deepcopy(spec["job_clusters"][0])
    cluster["new_cluster"]["num_worker"] = 2  # a typo of num_workers
    with pytest.raises(ValueError, match="num_worker"):
        Job.from_dict({**spec, "job_clusters": [cluster]})
    schedule = {**spec["schedule"], "pause_status": "SOMETIMES"}
    with pytest.raises(ValueError):
        Job.from_dict({**spec, "schedule": schedule})


# ---------------------------------------------------------------- tasks against their entry points


def _option_values(params: list[str], option: str) -> list[str]:
    return [params[i + 1] for i, p in enumerate(params) if p == option]


def test_tasks_call_their_stage_entry_point_with_accepted_parameters(pipeline):
    target, job = pipeline
    origin = Path(job["__origin__"]).parent
    parser = build_parser()
    for task in job["tasks"]:
        stage = task["task_key"]
        python_task = task["spark_python_task"]
        entry = (origin / python_task["python_file"]).resolve()
        assert entry.is_file(), f"{stage}: {entry} does not exist"
        assert entry.parent == ROOT / "jobs" and entry.stem == stage, f"task {stage} runs {entry.name}"
        calls = re.findall(r"job_main\(\s*[\"'](\w+)[\"']", entry.read_text(encoding="utf-8"))
        assert calls == [stage], f"{entry.name} runs stage {calls}, not {stage!r}"

        params = python_task["parameters"]
        assert all(isinstance(p, str) for p in params), f"{stage}: parameters must be strings"
        args = parser.parse_args([stage, *params])
        assert args.command == stage
        assert args.dataset == "cr"
        overrides = dict(item.split("=", 1) for item in args.overrides)
        assert overrides["storage.catalog"] == "main"
        assert overrides["mlflow.tracking_uri"] == "databricks"
        assert overrides["data_root"].startswith("/Volumes/")
        config_file = local_path(args.config, target)
        assert config_file == ROOT / "conf" / "databricks.yaml"

        # Every --set key must be a config key: load the config with the task's parameters (only the volume,
        # which does not exist here, replaced by the local copy of the data).
        local_overrides = [o if not o.startswith("data_root=") else f"data_root={SHARED_DATA}" for o in args.overrides]
        config = load_config(config_file, dataset=args.dataset, overrides=local_overrides)
        assert config.storage.catalog == "main"
        assert config.mlflow.tracking_uri == "databricks"
        assert registry_uri(config) == "databricks-uc"
        assert len(registered_model_name(config).split(".")) == 3
        expected_experiment = "/Shared/dqe-prod" if target == "prod" else f"/Users/{USER}/dqe-dev"
        assert config.mlflow.experiment == expected_experiment

        wheels = [lib["whl"] for lib in task.get("libraries", []) if "whl" in lib]
        assert wheels, f"{stage}: the project wheel is not attached"
        for wheel in wheels:
            assert (origin / wheel).resolve().parent == ROOT / "dist", f"{stage}: {wheel} is not the built wheel"


def test_task_graph_is_the_pipeline(pipeline):
    _, job = pipeline
    tasks = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in job["tasks"]}
    assert len(tasks) == len(job["tasks"]), "duplicate task keys"
    assert set(tasks) == set(STAGES), f"tasks {sorted(tasks)} vs stages {sorted(STAGES)}"
    for key, deps in tasks.items():
        for dep in deps:
            assert dep in tasks, f"{key} depends on unknown task {dep}"

    ancestors: dict[str, set[str]] = {}

    def visit(key: str, path: tuple[str, ...]) -> set[str]:
        assert key not in path, f"dependency cycle: {' -> '.join(path + (key,))}"
        if key not in ancestors:
            found: set[str] = set()
            for dep in tasks[key]:
                found |= {dep} | visit(dep, path + (key,))
            ancestors[key] = found
        return ancestors[key]

    order = list(STAGES)
    for index, stage in enumerate(order):
        # every earlier stage must have finished before a stage starts
        assert visit(stage, ()) == set(order[:index]), f"{stage} runs after {sorted(visit(stage, ()))}"


def test_schedule_paused_in_dev_only(pipeline):
    target, job = pipeline
    schedule = job["schedule"]
    assert schedule["pause_status"] == ("PAUSED" if target == "dev" else "UNPAUSED")
    fields = schedule["quartz_cron_expression"].split()
    assert len(fields) in (6, 7) and "?" in (fields[3], fields[5]), "not a Quartz cron expression"
    assert schedule["timezone_id"]


def test_gpu_stages_run_on_the_l40s_cluster(pipeline):
    target, job = pipeline
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    for key, cluster in clusters.items():
        # dqe runs from the wheel, which holds no conf/: the project root is the bundle's files folder
        root = cluster["spark_env_vars"]["DQE_PROJECT_ROOT"]
        assert root == FILE_PATH.format(target=target), key
        assert local_path(f"{root}/conf/datasets/cr.yaml", target).is_file()
        assert cluster["data_security_mode"] == "SINGLE_USER", "Unity Catalog + ML runtime need dedicated mode"

    def is_gpu(cluster: dict[str, Any]) -> bool:
        return "gpu-ml" in cluster["spark_version"]

    for task in job["tasks"]:
        assert "new_cluster" not in task and "existing_cluster_id" not in task
        cluster = clusters[task["job_cluster_key"]]
        assert cluster["spark_version"].startswith("17.3.x-"), "DBR 17.3 LTS (Spark 4.0, as locally)"
        if task["task_key"] in GPU_STAGES:
            assert is_gpu(cluster), f"{task['task_key']} needs the GPU cluster"
            assert L40S_NODE.match(cluster["node_type_id"]), cluster["node_type_id"]
            assert cluster["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
            assert cluster["spark_conf"]["spark.executor.resource.gpu.amount"] == "1"
        else:
            assert not is_gpu(cluster), f"{task['task_key']} wastes a GPU cluster"
            assert not cluster["node_type_id"].startswith(("g", "p")), cluster["node_type_id"]
        assert int(cluster["spark_conf"]["spark.sql.execution.arrow.maxRecordsPerBatch"]) > 0


def test_training_ranks_match_the_gpus():
    """train.num_processes (one rank per GPU) equals the GPU cluster's workers, one L40S each."""
    config = load_config(ROOT / "conf" / "databricks.yaml", dataset="cr")
    for target in TARGETS:
        job = jobs(resolve(target))["dqe_pipeline"]
        gpu = {c["job_cluster_key"]: c for c in job["job_clusters"]}["gpu"]
        assert int(gpu["new_cluster"]["num_workers"]) == config.train.num_processes, target
        # The job passes the GPU count on, so that changing the gpu_workers variable alone keeps them equal.
        train_task = next(t for t in job["tasks"] if t["task_key"] == "train")
        parameters = train_task["spark_python_task"]["parameters"]
        overrides = [parameters[i + 1] for i, p in enumerate(parameters) if p == "--set"]
        assert f"train.num_processes={gpu['new_cluster']['num_workers']}" in overrides, target


def test_every_task_retries_and_times_out(pipeline):
    _, job = pipeline
    for task in job["tasks"]:
        key = task["task_key"]
        assert int(task["max_retries"]) >= 1, key
        assert int(task["min_retry_interval_millis"]) >= 60_000, key
        assert 0 < int(task["timeout_seconds"]) <= int(job["timeout_seconds"]), key
    assert job["email_notifications"]["on_failure"] and all("@" in a for a in job["email_notifications"]["on_failure"])
    assert job["max_concurrent_runs"] == 1


def test_prod_job_permissions(deployed):
    target, bundle = deployed
    job = jobs(bundle)["dqe_pipeline"]
    levels = {p["level"] for p in job.get("permissions", [])}
    if target == "prod":
        assert "CAN_MANAGE_RUN" in levels
        assert bundle["run_as"]["service_principal_name"] == "00000000-0000-0000-0000-000000000000"
    else:
        assert "run_as" not in bundle


# ---------------------------------------------------------------- conf/databricks.yaml


def test_databricks_config_validates():
    config = load_config(ROOT / "conf" / "databricks.yaml", dataset="cr")
    assert config.dataset.name == "cr"
    assert config.storage.catalog and config.schema == "dqe_cr"
    assert resolve_tracking_uri(config) == "databricks"
    assert registry_uri(config) == "databricks-uc"
    name = registered_model_name(config)
    assert name == "main.dqe_cr.dqe_cr_classifier" and len(name.split(".")) == 3
    assert config.embed.device == "auto"
    assert config.train.distributor == "spark" and config.train.use_gpu and config.train.num_processes >= 2
    # placeholders are overridden by the job like any other key
    changed = load_config(
        ROOT / "conf" / "databricks.yaml", dataset="cr", overrides=["storage.catalog=ml_prod", "storage.schema=dq"]
    )
    assert registered_model_name(changed) == "ml_prod.dq.dqe_cr_classifier"
