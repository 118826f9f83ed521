"""Embed: ``clean`` → ``embeddings`` (row_id, vector, model, dim, text_hash, truncated), L2-normalised.

An iterator pandas UDF loads the sentence-transformers model once per Python worker (CUDA with fp16 when a GPU
is present, else the CPU) and encodes in configured batches. Incremental: a row whose (row_id, text, model) is
already in ``embeddings`` is not embedded again; new or changed rows are MERGEd on ``row_id``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dqe.catalog import Catalog, Table
from dqe.config import DqeConfig, EmbedConfig
from dqe.lakehouse import last_commit, stage_fingerprint, stage_run, table_exists
from dqe.models import BUNDLED, resolve_model

EMBEDDING_SCHEMA = "row_id string, vector array<float>, model string, dim int, text_hash string, truncated boolean"


def model_identifier(cfg: EmbedConfig) -> str:
    """The name stored with each vector: changing it re-embeds everything."""
    return "sentence-transformers/all-MiniLM-L6-v2" if cfg.model == BUNDLED else cfg.model


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from dqe.errors import ConfigError

        raise ConfigError("embed.device is 'cuda' but no CUDA device is visible to this worker")
    return requested


@lru_cache(maxsize=2)
def load_encoder(model: str, device: str, threads: int):
    """One model per Python worker process (Spark reuses workers, so this runs once per worker)."""
    import torch
    from sentence_transformers import SentenceTransformer

    if device == "cpu":
        torch.set_num_threads(threads)
    encoder = SentenceTransformer(resolve_model(model), device=device)
    if device == "cuda":
        encoder.half()
    return encoder


def encode(texts: list[str], cfg: EmbedConfig) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 vectors and, per text, whether it was longer than the model's max length."""
    encoder = load_encoder(cfg.model, pick_device(cfg.device), cfg.torch_threads_per_worker)
    lengths = [len(ids) for ids in encoder.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
    vectors = encoder.encode(
        texts, batch_size=cfg.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return vectors.astype(np.float32), np.asarray(lengths) > encoder.max_seq_length


def embed_frame(rows: DataFrame, cfg: EmbedConfig) -> DataFrame:
    """row_id, text → the embeddings schema, through an iterator pandas UDF."""
    model_name = model_identifier(cfg)

    @F.pandas_udf("struct<vector: array<float>, truncated: boolean>")
    def embed_texts(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for texts in batches:
            vectors, truncated = encode(texts.tolist(), cfg)
            yield pd.DataFrame({"vector": list(vectors), "truncated": truncated})

    embedded = rows.withColumn("e", embed_texts("text"))
    return embedded.select(
        "row_id",
        F.col("e.vector").alias("vector"),
        F.lit(model_name).alias("model"),
        F.size("e.vector").alias("dim"),
        F.sha2("text", 256).alias("text_hash"),
        F.col("e.truncated").alias("truncated"),
    )


def rows_to_embed(clean: DataFrame, existing: DataFrame | None, model_name: str) -> DataFrame:
    """Clean rows without a current vector for this model and text."""
    candidates = clean.select("row_id", "text", F.sha2("text", 256).alias("text_hash"))
    if existing is None:
        return candidates.select("row_id", "text")
    current = existing.where(F.col("model") == model_name).select("row_id", "text_hash")
    return candidates.join(current, ["row_id", "text_hash"], "left_anti").select("row_id", "text")


def embed(spark: SparkSession, config: DqeConfig) -> dict[str, object]:
    from delta.tables import DeltaTable

    cfg = config.embed
    catalog = Catalog.from_config(config)
    target = catalog.name(Table.EMBEDDINGS)
    model_name = model_identifier(cfg)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.max_records_per_batch))
    with stage_run(spark, catalog, "embed", stage_fingerprint(config, "embed")) as run:
        clean = run.read(spark, catalog.name(Table.CLEAN))
        existing = run.read(spark, target) if table_exists(spark, target) else None
        todo = rows_to_embed(clean, existing, model_name).localCheckpoint()
        pending = todo.count()
        parallelism = spark.sparkContext.defaultParallelism
        batch_rows = max(cfg.batch_size * 16, 1)
        partitions = max(parallelism, min(pending // batch_rows + 1, parallelism * 8))
        vectors = embed_frame(todo.repartition(partitions, "row_id"), cfg).localCheckpoint()
        truncated = vectors.where("truncated").count()
        if existing is None:
            run.write(vectors, target)
        elif pending:
            (
                DeltaTable.forName(spark, target)
                .alias("t")
                .merge(vectors.alias("s"), "t.row_id = s.row_id")
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )
            run.outputs[target] = last_commit(spark, target)[0]
        else:
            run.outputs[target] = run.inputs[target]
    return {"embedded": pending, "reused": clean.count() - pending, "truncated": truncated, "model": model_name}
