"""The train and infer stages on Spark + Delta + MLflow: a slice of CR as ``clean``, a half/half ``selection`` and
MiniLM ``embeddings`` built here; the ``linear`` backend trains in seconds."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dqe.catalog import Catalog, Table  # noqa: E402
from dqe.errors import InputError, StageError  # noqa: E402
from dqe.lakehouse import ensure_schema, table_version, write_table  # noqa: E402

ROWS = 240
SELECTION_SCHEMA = "row_id string, label string, split string, partition int, rank int, criterion string, run_id string"


def write_selection(spark, config, selection: pd.DataFrame) -> None:
    frame = selection.assign(rank=pd.array(selection["rank"], dtype="Int64"))
    write_table(spark.createDataFrame(frame, SELECTION_SCHEMA), Catalog.from_config(config).name(Table.SELECTION))


@pytest.fixture(scope="module")
def config(make_config):
    return make_config("cr", "train.backend=linear")


@pytest.fixture(scope="module")
def tables(spark, config):
    """clean, selection (even positions sampled) and embeddings for ROWS random non-empty CR rows."""
    from sentence_transformers import SentenceTransformer

    from dqe.embed import model_identifier
    from dqe.models import resolve_model

    catalog = Catalog.from_config(config)
    ensure_schema(spark, catalog)
    source = pd.read_parquet(config.source_path(config.dataset.train))
    source = source[source["text"].str.strip() != ""].drop_duplicates("text").sample(n=ROWS, random_state=0)
    clean = pd.DataFrame(
        {"row_id": source["id"], "text": source["text"], "label": source["label"], "source": "cr/train.parquet"}
    )
    write_table(spark.createDataFrame(clean), catalog.name(Table.CLEAN))

    selection = pd.DataFrame(
        {
            "row_id": clean["row_id"],
            "label": clean["label"],
            "split": ["sampled" if i % 2 == 0 else "unsampled" for i in range(len(clean))],
            "partition": 0,
            "rank": [i // 2 if i % 2 == 0 else None for i in range(len(clean))],
            "criterion": "centroid",
            "run_id": "test",
        }
    )
    write_selection(spark, config, selection)

    encoder = SentenceTransformer(resolve_model("bundled"), device="cpu")
    vectors = encoder.encode(clean["text"].tolist(), batch_size=64, normalize_embeddings=True)
    embeddings = spark.createDataFrame(
        pd.DataFrame({"row_id": clean["row_id"], "vector": [v.tolist() for v in vectors]}),
        "row_id string, vector array<float>",
    ).join(spark.createDataFrame(clean[["row_id", "text"]]), "row_id")
    write_table(
        embeddings.select(
            "row_id",
            "vector",
            F.lit(model_identifier(config.embed)).alias("model"),
            F.lit(vectors.shape[1]).alias("dim"),
            F.sha2("text", 256).alias("text_hash"),
            F.lit(False).alias("truncated"),
        ),
        catalog.name(Table.EMBEDDINGS),
    )
    return {"clean": clean, "selection": selection}


@pytest.fixture(scope="module")
def trained(spark, config, tables):
    from dqe.train import train

    return train(spark, config)


@pytest.fixture(scope="module")
def unsampled_predicted(spark, config, trained):
    from dqe.infer import infer

    return infer(spark, config)


@pytest.fixture(scope="module")
def both_directions(spark, config, unsampled_predicted):
    from dqe.infer import infer
    from dqe.train import train

    trained_on_unsampled = train(spark, config, split="unsampled")
    return trained_on_unsampled, infer(spark, config, split="sampled")


def predictions(spark, config) -> pd.DataFrame:
    return spark.table(Catalog.from_config(config).name(Table.PREDICTIONS)).toPandas()


def test_train_logs_and_registers_the_model(spark, config, tables, trained) -> None:
    import mlflow
    from mlflow import MlflowClient

    from dqe.tracking import list_runs, registered_model_name

    catalog = Catalog.from_config(config)
    assert trained["split"] == "sampled" and trained["train_rows"] == ROWS // 2
    assert trained["classes"] == ["negative", "positive"]
    run = MlflowClient().get_run(trained["mlflow_run_id"])
    assert run.data.tags["dqe.split"] == "sampled" and run.data.tags["dqe.backend"] == "linear"
    for table in (Table.CLEAN, Table.SELECTION, Table.EMBEDDINGS):
        name = catalog.name(table)
        assert run.data.params[f"input.{name}"] == str(table_version(spark, name))
    assert run.data.params["train.backend"] == "linear"
    assert run.data.metrics["train_accuracy"] > 0.8

    artifacts = MlflowClient().download_artifacts(trained["mlflow_run_id"], "config.json")
    with open(artifacts) as handle:
        assert json.load(handle)["dataset"]["name"] == "cr"

    name = registered_model_name(config)
    assert name == "dqe_cr_classifier"
    by_alias = MlflowClient().get_model_version_by_alias(name, "trained_on_sampled")
    assert str(by_alias.version) == trained["model_version"] and by_alias.tags["dqe.split"] == "sampled"
    info = mlflow.models.get_model_info(trained["alias_uri"])
    assert info.metadata["classes"] == ["negative", "positive"] and info.metadata["trained_on_split"] == "sampled"

    listed = list_runs(config, n=5)
    assert listed[0]["run_id"] == trained["mlflow_run_id"]
    assert listed[0]["stage"] == "train" and listed[0]["split"] == "sampled"


def test_infer_writes_one_prediction_per_unsampled_row(spark, config, tables, trained, unsampled_predicted) -> None:
    from mlflow import MlflowClient

    from dqe.infer import infer

    result = unsampled_predicted
    assert result["model_uri"] == trained["model_uri"]  # the alias, pinned to its version
    whole = predictions(spark, config)
    assert whole["row_id"].is_unique
    table = whole[whole["split"] == "unsampled"]
    unsampled = tables["selection"].query("split == 'unsampled'")
    assert len(table) == len(unsampled) == result["rows"]
    assert set(table["row_id"]) == set(unsampled["row_id"])
    assert (table["model_uri"] == trained["model_uri"]).all()
    assert (table["training_run_id"] == trained["mlflow_run_id"]).all()

    truth = tables["clean"].set_index("row_id")["label"]
    assert (table["label"] == table["row_id"].map(truth)).all()
    for _, row in table.iterrows():
        probabilities = dict(row["probabilities"])
        assert set(probabilities) == {"negative", "positive"}
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert row["predicted_label"] == max(probabilities, key=probabilities.get)
        assert row["confidence"] == pytest.approx(probabilities[row["predicted_label"]])
    accuracy = float((table["predicted_label"] == table["label"]).mean())
    assert result["accuracy"] == pytest.approx(accuracy)
    assert accuracy > table["label"].value_counts(normalize=True).max()  # better than the majority class
    metrics = MlflowClient().get_run(trained["mlflow_run_id"]).data.metrics
    assert metrics["unsampled_accuracy"] == pytest.approx(accuracy)
    assert metrics["unsampled_instruction_following_rate"] == 1.0

    again = infer(spark, config)  # re-running replaces the split's rows, never duplicates them
    after = predictions(spark, config)
    assert again["version"] > result["version"] and after["row_id"].is_unique
    assert (after["split"] == "unsampled").sum() == len(unsampled)


def test_both_directions_give_every_row_one_prediction(spark, config, tables, trained, both_directions) -> None:
    other, result = both_directions
    assert other["train_rows"] == ROWS - ROWS // 2 and other["model_version"] != trained["model_version"]
    assert result["model_uri"] == other["model_uri"]  # by default a split is predicted by the other's model

    table = predictions(spark, config)
    assert len(table) == ROWS and table["row_id"].is_unique
    split_of = tables["selection"].set_index("row_id")["split"]
    assert (table["split"] == table["row_id"].map(split_of)).all()
    model_of_split = table.groupby("split")["model_uri"].unique().to_dict()
    assert list(model_of_split["sampled"]) == [other["model_uri"]]
    assert list(model_of_split["unsampled"]) == [trained["model_uri"]]


def test_spark_inference_matches_the_model_in_process(spark, config, tables, trained, unsampled_predicted) -> None:
    import mlflow

    table = predictions(spark, config).query(f"model_uri == '{trained['model_uri']}'").set_index("row_id")
    rows = tables["clean"].set_index("row_id").loc[table.index]
    local = mlflow.pyfunc.load_model(trained["model_uri"]).predict(pd.DataFrame({"text": rows["text"].tolist()}))
    # In process the texts are embedded again; the stage passed the stored vectors: the same model and vectors.
    assert local["predicted_label"].tolist() == table["predicted_label"].tolist()
    np.testing.assert_allclose(local["confidence"].to_numpy(), table["confidence"].to_numpy(), atol=1e-4)


def test_a_new_selection_drops_predictions_of_the_old_one(spark, config, tables, both_directions) -> None:
    from dqe.infer import infer

    assert set(predictions(spark, config)["split"]) == {"sampled", "unsampled"}
    flipped = tables["selection"].assign(
        split=tables["selection"]["split"].map({"sampled": "unsampled", "unsampled": "sampled"})
    )
    write_selection(spark, config, flipped)
    try:
        infer(spark, config, split="unsampled")
        table = predictions(spark, config)
        # Only the rows now unsampled remain: the sampled rows' predictions belonged to the old selection.
        assert set(table["split"]) == {"unsampled"} and len(table) == ROWS // 2
        assert set(table["row_id"]) == set(flipped.query("split == 'unsampled'")["row_id"])
    finally:
        write_selection(spark, config, tables["selection"])


def test_stage_errors_are_clear(spark, config, tables, trained, make_config) -> None:
    from dqe.infer import infer
    from dqe.train import train

    with pytest.raises(InputError, match="split must be one of sampled, unsampled"):
        train(spark, config, split="everything")
    fresh = make_config("cr", "mlflow.registered_model_name=nothing_{dataset}")
    with pytest.raises(StageError, match="run dqe train first"):
        infer(spark, fresh)
    with pytest.raises(StageError, match="needs table .*clean.*run the earlier stage"):
        train(spark, fresh)
