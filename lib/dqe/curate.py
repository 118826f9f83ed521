"""Curate: ``triage`` + ``selection`` (+ ``reviews``) → ``curation`` (every clean row's fate) and the ``curated``
view (the rows to train on): sampled + uncovered + difficult − noisy, by
:func:`dqe.algorithms.triage_rule.curate` with the configured ``triage.noisy_policy``.

Beyond the paper:

- rows flagged ``noisy`` by the reverse direction (errors on ``sampled``) leave the set too (``noisy_dropped``;
  with ``drop_pair`` their neighbour as well);
- a reviewer's latest verdict in ``reviews`` (from the triage-explorer notebook) overrides the automatic fate:
  ``drop`` → ``review_dropped``, ``keep`` → ``review_kept``, ``relabel`` → ``review_relabelled`` with
  ``new_label``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from dqe.algorithms.triage_rule import curate as curate_rows, drop_reverse_noise
from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig
from dqe.lakehouse import StageRun, stage_fingerprint, stage_run, table_exists

CURATION_SCHEMA = "row_id string, label string, original_label string, fate string, curated boolean"
REVIEW_FATES = {"drop": "review_dropped", "keep": "review_kept", "relabel": "review_relabelled"}


def _apply_reviews(frame: pd.DataFrame, reviews: pd.DataFrame) -> None:
    for review in reviews.itertuples(index=False):
        hit = frame["row_id"] == review.row_id
        if not hit.any():
            continue
        frame.loc[hit, "fate"] = REVIEW_FATES[review.verdict]
        frame.loc[hit, "curated"] = review.verdict != "drop"
        if review.verdict == "relabel" and isinstance(review.new_label, str) and review.new_label:
            frame.loc[hit, "label"] = review.new_label


def _latest_reviews(spark: SparkSession, run: StageRun, name: str) -> pd.DataFrame:
    if not table_exists(spark, name):
        return pd.DataFrame(columns=["row_id", "verdict", "new_label"])
    latest = Window.partitionBy("row_id").orderBy(F.col("reviewed_at").desc())
    return (
        run.read(spark, name)
        .where(F.col("verdict").isin(list(REVIEW_FATES)))
        .withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .select("row_id", "verdict", "new_label")
        .toPandas()
    )


def curate(spark: SparkSession, config: DqeConfig) -> dict[str, object]:
    catalog = Catalog.from_config(config)
    with stage_run(spark, catalog, "curate", stage_fingerprint(config, "curate")) as run:
        clean = run.read(spark, catalog.name(Table.CLEAN))
        rows = (
            clean.select("row_id", "label")
            .join(run.read(spark, catalog.name(Table.SELECTION)).select("row_id", "split"), "row_id")
            .orderBy("row_id")
            .toPandas()
        )
        position = pd.Series(np.arange(len(rows)), index=rows["row_id"])
        triaged = run.read(spark, catalog.name(Table.TRIAGE)).toPandas()
        triaged["row"] = position.reindex(triaged["row_id"]).to_numpy()
        triaged["neighbor"] = position.reindex(triaged["neighbor_row_id"]).to_numpy()
        forward = triaged[triaged["direction"] == "forward"]
        policy = config.triage.noisy_policy
        verdicts = None
        if policy == "relabel":
            noisy = forward[forward["category"] == "noisy"]
            verdicts = pd.DataFrame({"row": noisy["row"], "verdict": noisy["judge_verdict"], "label": noisy["judge_label"]})
        labels = rows["label"].to_numpy(dtype=object)
        result = curate_rows(
            forward[["row", "category", "neighbor"]].astype({"row": "int64", "neighbor": "int64"}),
            labels,
            (rows["split"] == "sampled").to_numpy(),
            policy=policy,
            verdicts=verdicts,
        )
        fates = result.fates.sort_values("row").reset_index(drop=True)
        drop_reverse_noise(fates, triaged[triaged["direction"] == "reverse"], policy)
        frame = pd.DataFrame(
            {
                "row_id": rows["row_id"],
                "label": fates["label"].astype(str),
                "original_label": rows["label"],
                "fate": fates["fate"],
                "curated": fates["curated"].astype(bool),
            }
        )
        _apply_reviews(frame, _latest_reviews(spark, run, catalog.name(Table.REVIEWS)))
        curation = spark.createDataFrame(frame, CURATION_SCHEMA).join(clean.select("row_id", "text"), "row_id")
        run.write(curation.select("row_id", "text", "label", "original_label", "fate", "curated"), catalog.name(Table.CURATION))
        spark.sql(
            f"CREATE OR REPLACE VIEW {catalog.name(Table.CURATED)} AS "
            f"SELECT row_id, text, label, fate FROM {catalog.name(Table.CURATION)} WHERE curated"
        )
    summary = frame.groupby("fate").size().to_dict()
    summary["curated"] = int(frame["curated"].sum())
    summary["clean"] = len(frame)
    return summary
