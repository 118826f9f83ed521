"""``dqe run``: every stage in order, resumable.

A stage is skipped when its last successful run (in the ``runs`` table) used the same configuration sections,
every table it read is still at the version it read, every table it wrote is still at the version it wrote, and
no earlier stage ran in this invocation (a re-trained model makes inference stale even though no table changed).
``--force`` runs everything. A failure of any kind raises :class:`~dqe.errors.StageError` naming the stage, with
the original error as its ``__cause__``; tables written by earlier stages, and the previous versions of the
failing stage's tables, stay intact (Delta writes are atomic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from pyspark.sql import SparkSession

from dqe.catalog import Catalog
from dqe.config import DqeConfig
from dqe.errors import SPARK_ERRORS, DqeError, StageError, describe_spark_error
from dqe.lakehouse import is_current, stage_fingerprint


@dataclass(frozen=True)
class PipelineStep:
    """One step: the stage name in the ``runs`` table and the call."""

    name: str
    call: Callable[[SparkSession, DqeConfig], Any]


def pipeline_steps(config: DqeConfig) -> list[PipelineStep]:
    from dqe.clean import clean
    from dqe.curate import curate
    from dqe.embed import embed
    from dqe.evaluate import evaluate
    from dqe.infer import infer
    from dqe.ingest import ingest
    from dqe.report import report
    from dqe.select import select
    from dqe.train import train
    from dqe.triage import triage

    steps = [
        PipelineStep("ingest", ingest),
        PipelineStep("clean", clean),
        PipelineStep("embed", embed),
        PipelineStep("select", select),
        PipelineStep("train_sampled", partial(train, split="sampled")),
        PipelineStep("infer_unsampled", partial(infer, split="unsampled")),
    ]
    if config.triage.both_directions:
        steps += [
            PipelineStep("train_unsampled", partial(train, split="unsampled")),
            PipelineStep("infer_sampled", partial(infer, split="sampled")),
        ]
    steps += [
        PipelineStep("triage", triage),
        PipelineStep("curate", curate),
        PipelineStep("evaluate", evaluate),
        PipelineStep("report", report),
    ]
    return steps


def _between(steps: list[PipelineStep], first: str | None, last: str | None) -> list[PipelineStep]:
    """Steps from stage ``first`` to stage ``last`` (``train`` covers ``train_sampled`` and ``train_unsampled``)."""
    stages = [step.name.split("_")[0] for step in steps]
    for name in (first, last):
        if name is not None and name not in stages:
            raise DqeError(f"unknown stage {name!r}; stages: {', '.join(dict.fromkeys(stages))}")
    start = stages.index(first) if first else 0
    stop = len(stages) - stages[::-1].index(last) if last else len(stages)
    return steps[start:stop]


def run_pipeline(
    spark: SparkSession,
    config: DqeConfig,
    force: bool = False,
    first: str | None = None,
    last: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the pipeline; returns each stage's summary (``"skipped"`` for stages whose outputs were current)."""
    catalog = Catalog.from_config(config)
    steps = _between(pipeline_steps(config), first, last)
    summaries: dict[str, Any] = {}
    upstream_ran = False
    started = time.perf_counter()
    for number, step in enumerate(steps, 1):
        prefix = f"[{number}/{len(steps)}] {step.name:<16}"
        if not force and not upstream_ran and is_current(spark, catalog, step.name, stage_fingerprint(config, step.name)):
            echo(f"{prefix} skipped (outputs are current)")
            summaries[step.name] = "skipped"
            continue
        echo(f"{prefix} running …")
        step_started = time.perf_counter()
        try:
            summaries[step.name] = step.call(spark, config)
        except DqeError as exc:
            raise StageError(f"stage {step.name} failed: {exc} (earlier tables are intact)") from exc
        except SPARK_ERRORS as exc:
            raise StageError(
                f"stage {step.name} failed: {describe_spark_error(exc)} (earlier tables are intact)"
            ) from exc
        except Exception as exc:
            # A bug or an unforeseen input, not a message written for users: name its type too.
            raise StageError(
                f"stage {step.name} failed: {type(exc).__name__}: {exc} (earlier tables are intact)"
            ) from exc
        upstream_ran = True
        echo(f"{prefix} done in {time.perf_counter() - step_started:.1f}s")
    echo(f"pipeline finished in {time.perf_counter() - started:.1f}s")
    report_summary = summaries.get("report")
    if isinstance(report_summary, dict) and "html" in report_summary:
        echo(f"report: {report_summary['html']}")
    return summaries
