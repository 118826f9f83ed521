from __future__ import annotations

from pathlib import Path

import pytest

from dqe.catalog import Catalog, Table
from dqe.config import load_config
from dqe.errors import ConfigError


def test_dataset_file_merges_over_defaults():
    config = load_config(dataset="trec")
    assert config.dataset.name == "trec"
    assert config.dataset.test is not None
    assert config.select.ratio == 0.5
    assert Path(config.source_path(config.dataset.train)).is_file()


def test_unknown_key_names_key_and_file():
    with pytest.raises(ConfigError) as err:
        load_config(dataset="cr", overrides=["clean.lowercas=true"])
    assert "clean.lowercas: unknown key" in str(err.value)
    assert "override" in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path: Path):
    conf = tmp_path / "conf"
    (conf / "datasets").mkdir(parents=True)
    (conf / "default.yaml").write_text("select:\n  ratio: lots\n")
    (conf / "datasets" / "x.yaml").write_text("dataset:\n  name: x\n  train: {path: /nonexistent.parquet}\n")
    with pytest.raises(ConfigError) as err:
        load_config(dataset="x", conf_dir=conf)
    message = str(err.value)
    assert "select.ratio" in message and str(conf / "default.yaml") in message


def test_missing_source_path_is_reported(tmp_path: Path):
    with pytest.raises(ConfigError, match="dataset.train.path: .*does not exist"):
        load_config(dataset="cr", overrides=[f"dataset.train.path={tmp_path}/missing.parquet"])


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ConfigError, match="known: .*cr"):
        load_config(dataset="nope")


def test_invalid_yaml_is_reported(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_table_names_local_and_unity_catalog():
    local = Catalog.from_config(load_config(dataset="cr"))
    assert local.name(Table.CLEAN) == "dqe_cr.clean"
    uc = Catalog.from_config(load_config(dataset="cr", overrides=["storage.catalog=main", "storage.schema=quality"]))
    assert uc.name(Table.QUARANTINE) == "main.quality.quarantine"


def test_relative_paths_resolve_against_project_root():
    config = load_config(dataset="cr")
    assert config.storage.warehouse_dir.is_absolute()
    assert config.storage.warehouse_dir == (config.project_root / "work" / "warehouse").resolve()


def test_fingerprint_changes_only_with_its_sections():
    a = load_config(dataset="cr")
    b = load_config(dataset="cr", overrides=["select.ratio=0.4"])
    assert a.fingerprint("dataset", "clean") == b.fingerprint("dataset", "clean")
    assert a.fingerprint("select") != b.fingerprint("select")


def test_infer_device_and_threads_validate():
    defaults = load_config(dataset="cr").infer
    assert defaults.device == "auto" and defaults.torch_threads_per_worker == 1
    config = load_config(dataset="cr", overrides=["infer.device=cuda", "infer.torch_threads_per_worker=4"])
    assert config.infer.device == "cuda" and config.infer.torch_threads_per_worker == 4
    with pytest.raises(ConfigError, match=r"infer\.device: .*'auto', 'cpu' or 'cuda'.*override"):
        load_config(dataset="cr", overrides=["infer.device=tpu"])
    with pytest.raises(ConfigError, match=r"infer\.torch_threads_per_worker: .*greater than or equal to 1"):
        load_config(dataset="cr", overrides=["infer.torch_threads_per_worker=0"])


def test_train_spark_local_mode_validates():
    assert load_config(dataset="cr").train.spark_local_mode is True
    assert load_config(dataset="cr", overrides=["train.spark_local_mode=false"]).train.spark_local_mode is False
    with pytest.raises(ConfigError, match=r"train\.spark_local_mode: .*valid boolean"):
        load_config(dataset="cr", overrides=["train.spark_local_mode=sometimes"])


def test_confident_learning_noise_rule_needs_both_directions():
    with pytest.raises(ConfigError, match="set triage.both_directions to true"):
        load_config(dataset="cr", overrides=["triage.noise_rule=confident_learning"])
    config = load_config(
        dataset="cr", overrides=["triage.noise_rule=confident_learning", "triage.both_directions=true"]
    )
    assert config.triage.noise_rule == "confident_learning"
    assert load_config(dataset="cr").triage.noise_rule == "neighbor"
    with pytest.raises(ConfigError, match="noise_rule"):
        load_config(dataset="cr", overrides=["triage.noise_rule=knn"])


def test_max_flagged_share_is_a_share_and_needs_the_confident_learning_rule():
    rule = ["triage.noise_rule=confident_learning", "triage.both_directions=true"]
    assert load_config(dataset="cr", overrides=[*rule, "triage.max_flagged_share=0.5"]).triage.max_flagged_share == 0.5
    assert load_config(dataset="cr").triage.max_flagged_share == 1.0
    with pytest.raises(ConfigError, match="max_flagged_share"):
        load_config(dataset="cr", overrides=[*rule, "triage.max_flagged_share=0"])
    with pytest.raises(ConfigError, match="read only by noise_rule 'confident_learning'"):
        load_config(dataset="cr", overrides=["triage.max_flagged_share=0.5"])
