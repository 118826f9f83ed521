"""End to end: `dqe run` on the real CR dataset with the linear trainer (slow: minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dqe.catalog import Catalog, Table
from dqe.errors import StageError
from dqe.lakehouse import table_version
from dqe.pipeline import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(spark, make_config):
    config = make_config("cr")
    lines: list[str] = []
    summaries = run_pipeline(spark, config, echo=lines.append)
    return config, summaries, lines


def test_pipeline_writes_every_table_and_the_report(spark, finished):
    config, summaries, lines = finished
    catalog = Catalog.from_config(config)
    for table in (Table.BRONZE, Table.CLEAN, Table.QUARANTINE, Table.EMBEDDINGS, Table.SELECTION, Table.PREDICTIONS, Table.TRIAGE, Table.CURATION, Table.EVALUATION):
        assert spark.catalog.tableExists(catalog.name(table)), table
    noisy_pairs = spark.sql(f"SELECT * FROM {catalog.name(Table.FLAGGED_NOISE)}").collect()
    assert noisy_pairs and all(r.label != r.neighbor_label for r in noisy_pairs)
    report = Path(summaries["report"]["html"])
    assert report.is_file() and "Evaluation on the test split" in report.read_text()
    assert {"accuracy.png", "projection.png", "categories_per_label.png"} <= set(summaries["report"]["pngs"])
    assert lines[-1].startswith("report: ")
    variants = {r["variant"]: r for r in summaries["evaluate"]["variants"]}
    assert set(variants) == {"full", "curated", "random"}
    assert variants["curated"]["rows"] == variants["random"]["rows"] < variants["full"]["rows"]
    assert variants["full"]["accuracy"] > 0.7  # CR sentiment with MiniLM features, well above the 64% majority


def test_second_run_skips_current_stages(spark, finished):
    config = finished[0]
    lines: list[str] = []
    summaries = run_pipeline(spark, config, echo=lines.append)
    assert set(summaries.values()) == {"skipped"}
    changed = config.model_copy(update={"triage": config.triage.model_copy(update={"noisy_policy": "drop_pair"})})
    summaries = run_pipeline(spark, changed, echo=lines.append)
    assert [name for name, s in summaries.items() if s == "skipped"] == [
        "ingest", "clean", "embed", "select", "train_sampled", "infer_unsampled"
    ]


def test_failure_names_the_stage_and_keeps_earlier_tables(spark, finished):
    config = finished[0]
    catalog = Catalog.from_config(config)
    before = table_version(spark, catalog.name(Table.SELECTION))
    broken = config.model_copy(
        update={"train": config.train.model_copy(update={"backend": "encoder", "deepspeed_config": "conf/deepspeed/missing.json"})}
    )
    with pytest.raises(StageError, match=r"stage train_sampled failed: .*missing.json"):
        run_pipeline(spark, broken, first="train", last="train", echo=lambda _: None)
    assert table_version(spark, catalog.name(Table.SELECTION)) == before
    assert spark.table(catalog.name(Table.SELECTION)).count() > 0
