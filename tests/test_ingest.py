"""Bad input reaches users as a clear message or a quarantine row, never only as a Java stack trace."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dqe.catalog import Catalog, Table
from dqe.clean import clean
from dqe.cli import main
from dqe.errors import InputError
from dqe.ingest import ingest


def _config(make_config, path: Path, fmt: str, *extra: str):
    return make_config("cr", f"dataset.train.path={path}", f"dataset.train.format={fmt}", "dataset.holdout_fraction=0", *extra)


def test_unreadable_file(spark, make_config, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(InputError, match=r"cannot read .*broken.parquet as parquet"):
        ingest(spark, _config(make_config, path, "parquet"))


def test_missing_column_lists_available(spark, make_config, tmp_path):
    path = tmp_path / "cols.parquet"
    pd.DataFrame({"id": ["1"], "sentence": ["hi"], "label": ["positive"]}).to_parquet(path)
    with pytest.raises(InputError, match=r"text column 'text' not found .*columns: id, sentence, label"):
        ingest(spark, _config(make_config, path, "parquet"))


def test_wrong_text_type(spark, make_config, tmp_path):
    path = tmp_path / "types.parquet"
    pd.DataFrame({"id": ["1"], "text": [3], "label": ["positive"]}).to_parquet(path)
    with pytest.raises(InputError, match="text column 'text' .* has type bigint, expected string"):
        ingest(spark, _config(make_config, path, "parquet"))


def test_integer_labels_are_accepted_as_strings(spark, make_config, tmp_path):
    path = tmp_path / "intlabels.parquet"
    pd.DataFrame({"id": ["1", "2"], "text": ["a b", "c d"], "label": [0, 1]}).to_parquet(path)
    config = _config(make_config, path, "parquet", "dataset.labels=null")
    ingest(spark, config)
    labels = {r.label for r in spark.table(Catalog.from_config(config).name(Table.BRONZE)).collect()}
    assert labels == {"0", "1"}


def test_empty_input(spark, make_config, tmp_path):
    path = tmp_path / "empty.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: pa.array([], pa.string()) for c in ("id", "text", "label")}), path)
    with pytest.raises(InputError, match="has no rows"):
        ingest(spark, _config(make_config, path, "parquet"))


def test_all_null_labels(spark, make_config, tmp_path):
    path = tmp_path / "nulls.parquet"
    pd.DataFrame({"id": ["1", "2"], "text": ["a", "b"], "label": pd.Series([None, None], dtype=object)}).to_parquet(path)
    with pytest.raises(InputError, match="label column 'label' is null in all 2 rows"):
        ingest(spark, _config(make_config, path, "parquet"))


def test_non_utf8_csv_bytes_are_quarantined(spark, make_config, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"id,text,label\n1,caf\xe9 is nice,positive\n2,plain text,negative\n")
    config = _config(make_config, path, "csv")
    ingest(spark, config)
    counts = clean(spark, config)
    assert counts["invalid_encoding"] == 1 and counts["clean"] == 1


def test_malformed_jsonl_rows_are_quarantined(spark, make_config, tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps({"id": "1", "text": "good row", "label": "positive"}), '{"id": "2", "text": broken', json.dumps({"id": "3", "text": "another", "label": "negative"})]
    path.write_text("\n".join(lines) + "\n")
    config = _config(make_config, path, "jsonl")
    ingest(spark, config)
    counts = clean(spark, config)
    assert counts["malformed_record"] == 1 and counts["clean"] == 2


def test_delta_table_source(spark, make_config, tmp_path):
    path = tmp_path / "source_delta"
    spark.createDataFrame([("1", "from delta", "positive")], "id string, text string, label string").write.format("delta").save(str(path))
    config = _config(make_config, path, "delta")
    assert ingest(spark, config)["bronze"] == 1


def test_cli_reports_clear_error_and_exit_code(spark, make_config, tmp_path, capsys):
    path = tmp_path / "cols2.parquet"
    pd.DataFrame({"id": ["1"], "body": ["hi"], "label": ["positive"]}).to_parquet(path)
    config = make_config("cr")
    code = main(["ingest", "--dataset", "cr", "--set", f"dataset.train.path={path}", "--set", f"storage.schema={config.schema}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dqe ingest: error: text column 'text' not found" in err
    assert "Traceback" not in err and "at org.apache" not in err


def test_cli_reports_config_error(capsys):
    assert main(["clean", "--dataset", "cr", "--set", "clean.max_chars=-1"]) == 2
    assert "clean.max_chars" in capsys.readouterr().err
