"""Triage: wrong predictions → ``triage`` table (uncovered / difficult / noisy) and the ``flagged_noise`` view.

The rule itself is :func:`dqe.algorithms.triage_rule.categorize` (numpy + FAISS). At scale the wrong rows are
few and the corpus is large, so the queries are broadcast, every corpus partition is searched with FAISS
(``mapInPandas``), and the per-partition winners are reduced to one neighbour per query with the same order as
the in-memory rule: highest cosine similarity, then lowest position. The corpus is range-partitioned by
``row_id`` (``spark.sql.shuffle.partitions`` parts) and its positions increase with ``row_id``, so both paths see
the same ties. With ``triage.index = ivf`` every Arrow batch of the corpus gets its own approximate index, and a
query whose probed lists held no other row in any batch is searched again exactly, as in the in-memory rule, so
every wrong row gets a neighbour.

A null ``predicted_label`` (a generative model's output that named no label, ``parse_ok`` false) counts as
wrong, where :func:`~dqe.algorithms.triage_rule.categorize` refuses missing predictions: unparsable output is a
failure of the model on that row, so it is triaged like any other error rather than failing the stage.

``direction``: ``forward`` examines errors on ``unsampled`` of the model trained on ``sampled`` (the paper);
``reverse`` (``triage.both_directions``) examines errors on ``sampled`` of a model trained on ``unsampled``, so
every row gets an out-of-sample check. For a reverse error, *difficult* means the neighbour was in that model's
training split (``unsampled``).

``triage.noise_rule`` decides which wrong rows are *noisy*. ``neighbor`` (the paper's rule): the nearest
neighbour carries another label. That reads labels through a topic embedding, where a same-topic row with a
legitimately different sentiment or question type looks like a contradiction. ``confident_learning`` (with both
directions): confident learning (:mod:`dqe.algorithms.confident`) on the two models' out-of-sample probabilities
flags the row's label; the other wrong rows are *difficult* or *uncovered* by where their neighbour is, and the
neighbour is still recorded for the judge and ``drop_pair``. On injected noise it finds more flipped labels
(``bench/README.md``). Distributed: per-class thresholds and the confident joint are aggregations, each row's
confident class and margins are computed batch by batch in numpy, and the rows to flag per (label, class) cell
are ranked in a window over each batch's winners; only class-by-class matrices reach the driver.

Noisy pairs go to the LLM judge when ``triage.judge.enabled``; verdicts are cached in ``judge_cache``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from dqe.algorithms.confident import (
    UNREACHABLE,
    confident_guesses,
    flag_quotas,
    joint_counts,
    predicts_given_label,
)
from dqe.algorithms.neighbors import NO_NEIGHBOR, reduce_best, top1_neighbors
from dqe.algorithms.triage_rule import categorize
from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig, TriageConfig
from dqe.embed import model_identifier
from dqe.errors import InputError
from dqe.lakehouse import StageRun, stage_fingerprint, stage_run

__all__ = [
    "categorize",
    "confident_learning_flags",
    "triage",
    "positioned_rows",
    "search_partitions",
    "search_neighbors",
]

NEIGHBOR_SCHEMA = "query_pos long, neighbor_pos long, similarity double"
TRAINING_SPLIT = {"forward": "sampled", "reverse": "unsampled"}
PREDICTED_SPLIT = {"forward": "unsampled", "reverse": "sampled"}


def search_partitions(spark: SparkSession) -> int:
    """Corpus partitions for the neighbour search: ``spark.sql.shuffle.partitions``, or one per core where it is
    ``auto`` (Databricks)."""
    setting = spark.conf.get("spark.sql.shuffle.partitions")
    return int(setting) if setting.isdigit() else spark.sparkContext.defaultParallelism


def positioned_rows(clean: DataFrame, selection: DataFrame, embeddings: DataFrame, partitions: int) -> DataFrame:
    """Clean rows with their split, vector and ``pos``, range-partitioned by ``row_id`` into ``partitions`` parts.

    ``pos`` is unique and increases with ``row_id`` but is not consecutive: each part is sorted and
    ``monotonically_increasing_id`` puts the part's index in the high bits. A global ``row_number`` window would
    move the whole corpus into one partition and the search into one task.
    """
    return (
        clean.select("row_id", "label")
        .join(selection.select("row_id", "split"), "row_id")
        .join(embeddings.select("row_id", "vector"), "row_id")
        .repartitionByRange(partitions, "row_id")
        .sortWithinPartitions("row_id")
        .withColumn("pos", F.monotonically_increasing_id())
    )


def _best_neighbors(spark: SparkSession, corpus: DataFrame, queries: pd.DataFrame, cfg: TriageConfig) -> DataFrame:
    """Search every corpus partition for the queries (its Arrow batches reduced with ``reduce_best``), then reduce
    the partitions' winners by the same rule; checkpointed, with one row per query that found a neighbour."""
    query_vectors = np.stack(queries["vector"].to_numpy()).astype(np.float32)
    query_ids = queries["pos"].to_numpy(dtype=np.int64)
    shared = spark.sparkContext.broadcast((query_vectors, query_ids))

    def search(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        vectors, ids = shared.value
        best = None
        for batch in batches:
            if batch.empty:
                continue
            found = top1_neighbors(
                vectors,
                np.stack(batch["vector"].to_numpy()).astype(np.float32),
                query_ids=ids,
                corpus_ids=batch["pos"].to_numpy(dtype=np.int64),
                index=cfg.index,
                nlist=cfg.ivf_nlist,
                nprobe=cfg.ivf_nprobe,
            )
            best = found if best is None else reduce_best([best, found])
        if best is not None:
            keep = best.ids != NO_NEIGHBOR
            yield pd.DataFrame(
                {"query_pos": ids[keep], "neighbor_pos": best.ids[keep], "similarity": best.similarities[keep]}
            )

    partial = corpus.select("pos", "vector").mapInPandas(search, NEIGHBOR_SCHEMA)
    order = Window.partitionBy("query_pos").orderBy(F.col("similarity").desc(), F.col("neighbor_pos").asc())
    return partial.withColumn("_n", F.row_number().over(order)).where("_n = 1").drop("_n").localCheckpoint()


def _unanswered(found: DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    answered = [row.query_pos for row in found.select("query_pos").collect()]
    return queries[~queries["pos"].isin(answered)]


def search_neighbors(spark: SparkSession, corpus: DataFrame, queries: pd.DataFrame, cfg: TriageConfig) -> DataFrame:
    """For each query (pos, vector), the most similar other corpus row: searched per corpus partition, reduced.

    Raises InputError when a query has no other row to be explained by (a corpus of one row).
    """
    found = _best_neighbors(spark, corpus, queries, cfg)
    unanswered = _unanswered(found, queries)
    if cfg.index == "ivf" and not unanswered.empty:
        exact = cfg.model_copy(update={"index": "flat"})
        found = found.unionByName(_best_neighbors(spark, corpus, unanswered, exact))
        unanswered = _unanswered(found, queries)
    if not unanswered.empty:
        raise InputError("triage needs at least 2 rows: a wrong row is explained by another row")
    return found


def _over_classes(probabilities: str, classes: list[str]):
    """A probability map (label → probability) as an array over ``classes`` in that order, built by Spark so the
    Python side stacks whole batches; a class the predicting model never saw has probability 0."""
    return F.array(*[F.coalesce(F.try_element_at(probabilities, F.lit(label)), F.lit(0.0)) for label in classes])


def _matrix(arrays: pd.Series, width: int) -> np.ndarray:
    return np.stack(arrays.to_numpy()) if len(arrays) else np.zeros((0, width))


def _within_quota(
    given: np.ndarray, true_class: np.ndarray, margin: np.ndarray, pos: np.ndarray, quota: np.ndarray
) -> np.ndarray:
    """Indices of the candidates ranked within their (given, true class) cell's quota: largest margin first,
    then lowest ``pos``, as the stage's window ranks them."""
    order = np.lexsort((pos, -margin, true_class, given))
    cell_given, cell_class = given[order], true_class[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (cell_given[1:] != cell_given[:-1]) | (cell_class[1:] != cell_class[:-1])
    first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    return order[np.arange(len(order)) - first < quota[cell_given, cell_class]]


def confident_learning_flags(scored: DataFrame, classes: list[str], max_flagged_share: float = 1.0) -> DataFrame:
    """The ``row_id``s whose label confident learning calls wrong, computed without collecting the probabilities.

    ``scored``: one row per row to judge with ``row_id``, ``pos`` (ties in the margin go to the lower ``pos``),
    ``label`` and its out-of-sample ``probabilities`` (map label → probability). ``classes``: every label,
    sorted. The same set as :func:`dqe.algorithms.confident.label_issues` on the rows in ``pos`` order, with the
    same ``max_flagged_share``.
    """
    spark = scored.sparkSession
    index = {label: i for i, label in enumerate(classes)}
    # Three passes read the probabilities: materialise them once, already as arrays over ``classes``.
    scored = scored.select(
        "row_id",
        "pos",
        "label",
        F.coalesce(F.try_element_at("probabilities", F.col("label")), F.lit(0.0)).alias("own"),
        _over_classes("probabilities", classes).alias("probabilities"),
    ).localCheckpoint()
    means = {r["label"]: r["mean"] for r in scored.groupBy("label").agg(F.avg("own").alias("mean")).collect()}
    thresholds = np.array([means.get(label, UNREACHABLE) for label in classes])
    shared = spark.sparkContext.broadcast((index, thresholds))

    def guess(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        positions, limits = shared.value
        for batch in batches:
            given = batch["label"].map(positions).to_numpy(dtype=np.int64)
            found = confident_guesses(_matrix(batch["probabilities"], len(positions)), limits)
            yield pd.DataFrame({"given": given, "guess": found})

    pairs = scored.select("label", "probabilities").mapInPandas(guess, "given long, guess long")
    counted = pairs.groupBy("given", "guess").count().toPandas()
    joint = joint_counts(
        counted["given"].to_numpy(), counted["guess"].to_numpy(), len(classes), counts=counted["count"].to_numpy()
    )
    label_counts = np.bincount(counted["given"], weights=counted["count"], minlength=len(classes)).astype(np.int64)
    to_remove = flag_quotas(joint, label_counts, max_flagged_share)
    cells = spark.sparkContext.broadcast(to_remove)

    def margins(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        positions, _ = shared.value
        counts = cells.value
        for batch in batches:
            given = batch["label"].map(positions).to_numpy(dtype=np.int64)
            matrix = _matrix(batch["probabilities"], len(positions))
            rows, true_class = np.nonzero(counts[given] > 0)
            margin = matrix[rows, true_class] - matrix[rows, given[rows]]
            pos = batch["pos"].to_numpy(dtype=np.int64)[rows]
            # A row outside its cell's quota within its batch is outside it overall: only the batch's winners
            # are shuffled to the ranking, not every row once per class it could be flagged as.
            kept = _within_quota(given[rows], true_class, margin, pos, counts)
            rows = rows[kept]
            yield pd.DataFrame(
                {
                    "row_id": batch["row_id"].to_numpy()[rows],
                    "pos": pos[kept],
                    "given": given[rows],
                    "true_class": true_class[kept],
                    "margin": margin[kept],
                    "predicts_given": predicts_given_label(given, matrix)[rows],
                }
            )

    candidates = scored.select("row_id", "pos", "label", "probabilities").mapInPandas(
        margins, "row_id string, pos long, given long, true_class long, margin double, predicts_given boolean"
    )
    quota = spark.createDataFrame(
        [(int(i), int(j), int(to_remove[i, j])) for i, j in zip(*np.nonzero(to_remove))],
        "given long, true_class long, quota long",
    )
    order = Window.partitionBy("given", "true_class").orderBy(F.col("margin").desc(), F.col("pos").asc())
    return (
        candidates.withColumn("rank", F.row_number().over(order))
        .join(F.broadcast(quota), ["given", "true_class"])
        .where((F.col("rank") <= F.col("quota")) & ~F.col("predicts_given"))
        .select("row_id")
        .distinct()
    )


def _wrong_rows(rows: DataFrame, predictions: DataFrame, direction: str) -> DataFrame:
    return (
        rows.where(F.col("split") == PREDICTED_SPLIT[direction])
        .join(predictions.where(F.col("split") == PREDICTED_SPLIT[direction]).select("row_id", "predicted_label"), "row_id")
        .where(F.col("predicted_label").isNull() | (F.col("predicted_label") != F.col("label")))
    )


def triage_direction(
    spark: SparkSession,
    rows: DataFrame,
    predictions: DataFrame,
    direction: str,
    cfg: TriageConfig,
    mislabelled: DataFrame | None = None,
) -> DataFrame:
    """Triage one direction's wrong rows; ``mislabelled`` (``row_id``s) replaces the neighbour-label test."""
    wrong = _wrong_rows(rows, predictions, direction).toPandas()
    columns = "row_id string, label string, predicted_label string, split string, category string, neighbor_row_id string, neighbor_label string, neighbor_split string, similarity double, direction string"
    if wrong.empty:
        return spark.createDataFrame([], columns)
    found = search_neighbors(spark, rows, wrong[["pos", "vector"]], cfg)
    neighbor = rows.select(
        F.col("pos").alias("neighbor_pos"),
        F.col("row_id").alias("neighbor_row_id"),
        F.col("label").alias("neighbor_label"),
        F.col("split").alias("neighbor_split"),
    )
    queries = spark.createDataFrame(wrong[["pos", "row_id", "label", "predicted_label", "split"]]).withColumnRenamed("pos", "query_pos")
    joined = found.join(queries, "query_pos").join(neighbor, "neighbor_pos")
    if mislabelled is None:
        noisy = F.col("neighbor_label") != F.col("label")
    else:
        flagged = mislabelled.select("row_id", F.lit(True).alias("_flagged"))
        joined = joined.join(F.broadcast(flagged), "row_id", "left")
        noisy = F.coalesce(F.col("_flagged"), F.lit(False))
    category = (
        F.when(noisy, "noisy")
        .when(F.col("neighbor_split") == TRAINING_SPLIT[direction], "difficult")
        .otherwise("uncovered")
    )
    return joined.select(
        "row_id",
        "label",
        "predicted_label",
        "split",
        category.alias("category"),
        "neighbor_row_id",
        "neighbor_label",
        "neighbor_split",
        "similarity",
        F.lit(direction).alias("direction"),
    )


def _judge_noisy(spark: SparkSession, config: DqeConfig, run: StageRun, catalog: Catalog, triaged: DataFrame) -> DataFrame:
    """Add judge_verdict/judge_label/judge_reason (null when the judge is off or the row is not noisy)."""
    verdict_columns = [F.lit(None).cast("string").alias(c) for c in ("judge_verdict", "judge_label", "judge_reason")]
    if not config.triage.judge.enabled:
        return triaged.select("*", *verdict_columns)
    from dqe.judge import Judge, JudgePair
    from dqe.judge_cache import DeltaJudgeCache

    clean = spark.table(catalog.name(Table.CLEAN)).select("row_id", "text")
    noisy = (
        triaged.where("category = 'noisy'")
        .join(clean, "row_id")
        .join(clean.select(F.col("row_id").alias("neighbor_row_id"), F.col("text").alias("neighbor_text")), "neighbor_row_id")
        .select("row_id", "direction", "text", "label", "neighbor_text", "neighbor_label")
        .toPandas()
    )
    if noisy.empty:
        return triaged.select("*", *verdict_columns)
    labels = config.dataset.labels or sorted(
        r.label for r in spark.table(catalog.name(Table.CLEAN)).select("label").distinct().collect()
    )
    cache = DeltaJudgeCache(spark, catalog.name(Table.JUDGE_CACHE))
    judge = Judge(config.triage.judge, labels, cache=cache, secret_getter=_databricks_secret_getter())
    pairs = [JudgePair(r.text, r.label, r.neighbor_text, r.neighbor_label) for r in noisy.itertuples()]
    verdicts = judge.judge(pairs)
    cache.flush()
    run.outputs[catalog.name(Table.JUDGE_CACHE)] = cache.version()
    result = spark.createDataFrame(
        pd.DataFrame(
            {
                "row_id": noisy["row_id"],
                "direction": noisy["direction"],
                "judge_verdict": [v.verdict for v in verdicts],
                "judge_label": [v.label for v in verdicts],
                "judge_reason": [v.reason for v in verdicts],
            }
        ),
        "row_id string, direction string, judge_verdict string, judge_label string, judge_reason string",
    )
    return triaged.join(result, ["row_id", "direction"], "left")


def _databricks_secret_getter():
    """``dbutils.secrets.get`` on Databricks; None elsewhere (the API key then comes from the environment)."""
    try:
        from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]
    except ImportError:
        return None
    dbutils = DBUtils(SparkSession.getActiveSession())
    return lambda scope, key: dbutils.secrets.get(scope=scope, key=key)


def create_flagged_noise_view(spark: SparkSession, catalog: Catalog) -> None:
    triage_name, clean_name = catalog.name(Table.TRIAGE), catalog.name(Table.CLEAN)
    spark.sql(
        f"""
        CREATE OR REPLACE VIEW {catalog.name(Table.FLAGGED_NOISE)} AS
        SELECT t.row_id, c.text, t.label, t.predicted_label, t.split, t.direction,
               t.neighbor_row_id, n.text AS neighbor_text, t.neighbor_label, t.neighbor_split, t.similarity,
               t.judge_verdict, t.judge_label, t.judge_reason
        FROM {triage_name} t
        JOIN {clean_name} c ON c.row_id = t.row_id
        JOIN {clean_name} n ON n.row_id = t.neighbor_row_id
        WHERE t.category = 'noisy'
        """
    )


def triage(spark: SparkSession, config: DqeConfig) -> dict[str, object]:
    catalog = Catalog.from_config(config)
    with stage_run(spark, catalog, "triage", stage_fingerprint(config, "triage")) as run:
        clean = run.read(spark, catalog.name(Table.CLEAN))
        selection = run.read(spark, catalog.name(Table.SELECTION))
        embeddings = run.read(spark, catalog.name(Table.EMBEDDINGS)).where(
            F.col("model") == model_identifier(config.embed)
        )
        predictions = run.read(spark, catalog.name(Table.PREDICTIONS))
        rows = positioned_rows(clean, selection, embeddings, search_partitions(spark)).localCheckpoint()
        directions = ["forward", "reverse"] if config.triage.both_directions else ["forward"]
        for direction in directions:
            split = PREDICTED_SPLIT[direction]
            expected = rows.where(F.col("split") == split).count()
            covered = rows.where(F.col("split") == split).join(predictions.where(F.col("split") == split), "row_id").count()
            if covered != expected:
                raise InputError(
                    f"triage ({direction}) needs a prediction for every {split} row: {covered} of {expected} have one "
                    f"(run dqe infer{' for the sampled split' if direction == 'reverse' else ''})"
                )
        mislabelled = None
        if config.triage.noise_rule == "confident_learning":
            # Each row's own split is the one it was predicted on: forward predicts unsampled, reverse sampled.
            scored = rows.select("row_id", "pos", "label", "split").join(
                predictions.select("row_id", "split", "probabilities"), ["row_id", "split"]
            )
            classes = sorted(r.label for r in rows.select("label").distinct().collect())
            mislabelled = confident_learning_flags(scored, classes, config.triage.max_flagged_share).localCheckpoint()
        triaged = None
        for direction in directions:
            part = triage_direction(spark, rows, predictions, direction, config.triage, mislabelled)
            triaged = part if triaged is None else triaged.unionByName(part)
        triaged = _judge_noisy(spark, config, run, catalog, triaged.localCheckpoint())
        written = run.write(triaged, catalog.name(Table.TRIAGE))
        create_flagged_noise_view(spark, catalog)
        counts = {
            f"{r['direction']}/{r['category']}": r["count"]
            for r in spark.table(catalog.name(Table.TRIAGE)).groupBy("direction", "category").count().collect()
        }
    return {"wrong_rows": written, **counts}
