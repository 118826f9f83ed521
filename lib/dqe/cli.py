"""The ``dqe`` command and the shared entry point of ``jobs/*.py``.

Every stage command takes the same options: ``--config`` (default ``conf/default.yaml``), ``--dataset`` (merges
``conf/datasets/<name>.yaml``) and ``--set section.key=value`` overrides; ``train`` and ``infer`` also take
``--split``, so the reverse direction of ``triage.both_directions`` can run outside ``dqe run`` too. Errors that
users can fix are printed as one clear line (exit code 2); they never surface only as a Java stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable, Sequence

from dqe.errors import SPARK_ERRORS, DqeError, describe_spark_error

# stage name → "module:function"; each function takes (spark, config) and returns a JSON-able summary.
STAGES: dict[str, str] = {
    "ingest": "dqe.ingest:ingest",
    "clean": "dqe.clean:clean",
    "embed": "dqe.embed:embed",
    "select": "dqe.select:select",
    "train": "dqe.train:train",
    "infer": "dqe.infer:infer",
    "triage": "dqe.triage:triage",
    "curate": "dqe.curate:curate",
    "evaluate": "dqe.evaluate:evaluate",
    "report": "dqe.report:report",
}
# Stages that work on one split: its default and what it means there.
SPLIT_STAGES: dict[str, tuple[str, str]] = {
    "train": ("sampled", "the split to fit on (unsampled: the reverse-direction model)"),
    "infer": ("unsampled", "the split to predict (sampled: by the model trained on unsampled)"),
}


def stage_function(stage: str) -> Callable[..., Any]:
    module_name, function_name = STAGES[stage].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="base YAML config (default: conf/default.yaml)")
    parser.add_argument("--dataset", default=None, help="dataset config to merge: conf/datasets/<name>.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dqe", description="Data-quality engine for labelled text (DQE on Spark)")
    commands = parser.add_subparsers(dest="command", required=True)
    from dqe.catalog import SPLITS

    for stage in STAGES:
        stage_parser = commands.add_parser(stage, help=f"run the {stage} stage")
        add_config_arguments(stage_parser)
        if stage in SPLIT_STAGES:
            default, meaning = SPLIT_STAGES[stage]
            stage_parser.add_argument("--split", choices=SPLITS, default=default, help=f"{meaning}; default {default}")
    run = commands.add_parser("run", help="run the whole pipeline, skipping stages whose outputs are current")
    add_config_arguments(run)
    run.add_argument("--force", action="store_true", help="re-run every stage")
    run.add_argument("--from-stage", default=None, choices=list(STAGES), help="start at this stage")
    run.add_argument("--to-stage", default=None, choices=list(STAGES), help="stop after this stage")
    sql = commands.add_parser("sql", help="run a SQL query against the dataset's tables and print the result")
    add_config_arguments(sql)
    sql.add_argument("query")
    sql.add_argument("--limit", type=int, default=50)
    runs = commands.add_parser("runs", help="list recent MLflow runs")
    add_config_arguments(runs)
    runs.add_argument("-n", type=int, default=10)
    tables = commands.add_parser("tables", help="list the dataset's tables with their names")
    add_config_arguments(tables)
    return parser


def load_from_args(args: argparse.Namespace):
    from dqe.config import load_config

    return load_config(args.config, dataset=args.dataset, overrides=args.overrides)


def run_stage(stage: str, args: argparse.Namespace) -> Any:
    from dqe.spark import get_spark

    config = load_from_args(args)
    spark = get_spark(config)
    options = {"split": args.split} if stage in SPLIT_STAGES else {}
    return stage_function(stage)(spark, config, **options)


RUN_TABLE_HEADER = ("run_id", "start (UTC)", "stage", "split", "backend", "status", "accuracies")


def format_runs(runs: list[dict[str, Any]]) -> str:
    """The ``dqe runs`` table: a header and one aligned line per run (``dqe.tracking.list_runs``), "-" where a run
    has no such tag. Of the metrics only the accuracies are shown, which is what runs are compared by; the MLflow UI
    has the rest."""

    def accuracies(metrics: dict[str, float]) -> str:
        shown = [f"{name}={value:.3f}" for name, value in sorted(metrics.items()) if name.endswith("accuracy")]
        return " ".join(shown) or "-"

    lines = [list(RUN_TABLE_HEADER)] + [
        [
            run["run_id"],
            run["start_time"].strftime("%Y-%m-%d %H:%M:%S"),
            *(run[key] or "-" for key in ("stage", "split", "backend", "status")),
            accuracies(run["metrics"]),
        ]
        for run in runs
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(RUN_TABLE_HEADER))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _print_summary(stage: str, summary: Any) -> None:
    print(f"{stage}: " + json.dumps(summary, indent=2, sort_keys=True, default=str))


def _execute(args: argparse.Namespace) -> None:
    if args.command in STAGES:
        _print_summary(args.command, run_stage(args.command, args))
    elif args.command == "run":
        from dqe.pipeline import run_pipeline
        from dqe.spark import get_spark

        config = load_from_args(args)
        run_pipeline(get_spark(config), config, force=args.force, first=args.from_stage, last=args.to_stage)
    elif args.command == "sql":
        from dqe.spark import get_spark

        config = load_from_args(args)
        spark = get_spark(config)
        from dqe.catalog import Catalog

        # Unqualified table names in the query resolve to the dataset's schema.
        spark.sql(f"USE {Catalog.from_config(config).namespace}")
        spark.sql(args.query).show(args.limit, truncate=80)
    elif args.command == "tables":
        from dqe.catalog import Catalog, Table

        catalog = Catalog.from_config(load_from_args(args))
        for table in Table:
            print(f"{table.value:16s} {catalog.name(table)}")
    elif args.command == "runs":
        from dqe.tracking import list_runs

        config = load_from_args(args)
        runs = list_runs(config, args.n)
        print(format_runs(runs) if runs else f"no runs in MLflow experiment {config.mlflow.experiment!r}")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Per-file download bars of local MLflow artifacts and per-tensor weight-loading bars drown the stage log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    try:
        _execute(args)
    except DqeError as exc:
        print(f"dqe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except SPARK_ERRORS as exc:
        print(f"dqe {args.command}: Spark error: {describe_spark_error(exc)}", file=sys.stderr)
        return 2
    return 0


def job_main(stage: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jobs/<stage>.py``: the same options as ``dqe <stage>``."""
    return main([stage, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
