"""Trainers: the shared interface and its errors, and real training of every backend on the CPU.

- ``linear`` on SST-2 (MiniLM embeddings), checked on a held-out slice;
- ``encoder`` on the offline all-MiniLM-L6-v2 for a few steps;
- ``causal_lm`` on a tiny randomly initialised Qwen2 with a BPE tokenizer trained here (no downloads);
- DeepSpeed ZeRO-2 and ZeRO-3 in this process and with two processes through pyspark's DeepspeedTorchDistributor
  (tiny models, a few steps), and a rank that crashes after rank 0 has saved;
- the MLflow pyfunc through ``spark_udf``, including unparsable generative outputs.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# DeepSpeed compiles a native op on first use (minutes on two cores): keep it across test runs.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / "work" / "torch_extensions"))

from dqe.config import PROJECT_ROOT, TrainConfig  # noqa: E402
from dqe.errors import ConfigError, DqeError, InputError  # noqa: E402
from dqe.trainers import CausalLMTrainer, EncoderTrainer, LinearTrainer, load_trainer, make_trainer  # noqa: E402
from dqe.trainers.base import Predictions  # noqa: E402
from dqe.trainers.causal_lm import SYSTEM_PROMPT, USER_PROMPT, parse_label  # noqa: E402
from dqe.trainers.distributed import TRAINING_LOG_FILE, _tolerate_crash_after_completion  # noqa: E402

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
ZERO2 = str(PROJECT_ROOT / "conf" / "deepspeed" / "zero2.json")
ZERO3 = str(PROJECT_ROOT / "conf" / "deepspeed" / "zero3.json")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# -- tiny models and data ------------------------------------------------------------------------------------------
def keyword_rows(n: int, seed: int) -> tuple[list[str], list[str]]:
    """A task a tiny model learns in a few steps: the label follows from one keyword."""
    rng = random.Random(seed)
    words = {"fruit": ["apple", "banana", "cherry", "mango"], "vehicle": ["car", "truck", "bus", "train"]}
    texts, labels = [], []
    for _ in range(n):
        label = rng.choice(sorted(words))
        texts.append(f"i saw a {rng.choice(words[label])} {rng.choice(['today', 'yesterday', 'there'])}")
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Qwen2 (random weights) with a byte-level BPE tokenizer and a ChatML template, saved to a folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny_qwen")
    texts, _ = keyword_rows(200, seed=1)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        [*texts, SYSTEM_PROMPT, USER_PROMPT, "fruit", "vehicle"],
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer BERT (random weights, 64 wide) with the bundled MiniLM tokenizer: the encoder path at low cost."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dqe.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def sst2() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = pd.read_parquet(SHARED_DATA / "sst2" / "train.parquet").sample(n=800, random_state=0)
    return rows.iloc[:600], rows.iloc[600:]


def assert_valid(predictions: Predictions, n: int) -> None:
    assert len(predictions) == n
    assert predictions.probabilities.shape == (n, len(predictions.classes))
    np.testing.assert_allclose(predictions.probabilities.sum(axis=1), 1.0, atol=1e-6)
    for row, label in enumerate(predictions.labels):
        if label is None:
            assert not predictions.parse_ok[row] and predictions.confidence[row] == 0.0
        else:
            assert label in predictions.classes and predictions.parse_ok[row]
            column = predictions.classes.index(label)
            assert predictions.confidence[row] == pytest.approx(predictions.probabilities[row, column])


# -- interface and errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("positive", "positive"),
        ("  Positive. ", "positive"),
        ("The answer is negative", "negative"),
        ("very negative", "very negative"),  # not "negative", which it contains
        ("positive or negative", None),
        ("neutral", None),
        ("", None),
        ("positively", None),  # a label must be a whole word
    ],
)
def test_parse_label(output: str, expected: str | None) -> None:
    assert parse_label(output, ["negative", "positive", "very negative"]) == expected


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        ([], [], "empty"),
        (["a", "b"], ["x", "x"], "single class"),
        (["a", "b"], ["x"], "2 texts but 1 labels"),
        (["a", None], ["x", "y"], "position 1"),
        (["a", "b"], ["x", ""], "non-empty strings"),
        ("just one string", ["x"], "not a single string"),
    ],
)
def test_bad_training_input_is_rejected_with_a_clear_message(texts, labels, message) -> None:
    with pytest.raises(InputError, match=message):
        LinearTrainer().fit(texts, labels, embeddings=np.zeros((len(labels), 4)))


def test_embeddings_must_match_the_texts() -> None:
    with pytest.raises(InputError, match="one vector per text"):
        LinearTrainer().fit(["a", "b", "c"], ["x", "y", "x"], embeddings=np.zeros((2, 4)))
    with pytest.raises(InputError, match="NaN"):
        LinearTrainer().fit(["a", "b"], ["x", "y"], embeddings=np.full((2, 4), np.nan))
    fitted = LinearTrainer().fit(["a", "b", "c", "d"], ["x", "y", "x", "y"], embeddings=np.eye(4))
    with pytest.raises(InputError, match="3 dimensions; this model was fitted on 4"):
        fitted.predict(["a"], embeddings=np.zeros((1, 3)))


def test_unseen_labels_and_unfitted_trainers_are_reported() -> None:
    with pytest.raises(DqeError, match="not fitted"):
        LinearTrainer().predict(["a"])
    fitted = LinearTrainer().fit(["a", "b", "c", "d"], ["x", "y", "x", "y"], embeddings=np.eye(4))
    predictions = fitted.predict(["a", "b"], embeddings=np.eye(4)[:2])
    with pytest.raises(InputError, match="never seen in training: 'z'"):
        predictions.accuracy(["x", "z"])
    with pytest.raises(InputError, match="1 true labels for 2 predictions"):
        predictions.accuracy(["x"])
    assert len(fitted.predict([])) == 0


def test_configuration_mistakes_are_reported() -> None:
    with pytest.raises(ConfigError, match="chat model"):
        make_trainer(TrainConfig(backend="causal_lm"))
    with pytest.raises(ConfigError, match="does not exist"):
        make_trainer(TrainConfig(backend="encoder", deepspeed_config="conf/deepspeed/zero9.json"))
    trainer = make_trainer(TrainConfig(backend="encoder", num_processes=2))
    with pytest.raises(ConfigError, match="needs train.distributor=spark"):
        trainer.fit(["a", "b"], ["x", "y"])


def test_a_chat_model_needs_room_for_the_text(tiny_chat_model: str) -> None:
    trainer = CausalLMTrainer(base_model=tiny_chat_model, max_length=16)
    with pytest.raises(InputError, match="max_length=16 is too small"):
        trainer.fit(*keyword_rows(8, seed=0))


# -- linear ---------------------------------------------------------------------------------------------------------
def test_linear_learns_sst2_and_embeds_texts_itself(sst2, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from dqe.models import resolve_model

    train, held_out = sst2
    encoder = SentenceTransformer(resolve_model("bundled"), device="cpu")
    vectors = encoder.encode(train["text"].tolist(), batch_size=64, normalize_embeddings=True)
    trainer = make_trainer(TrainConfig(backend="linear")).fit(train["text"], train["label"], vectors)
    assert trainer.classes_ == ["negative", "positive"]

    predictions = trainer.predict(held_out["text"].tolist())  # no vectors: the trainer embeds the texts
    assert_valid(predictions, len(held_out))
    majority = held_out["label"].value_counts(normalize=True).max()
    assert predictions.accuracy(held_out["label"]) > max(0.7, majority + 0.1)
    assert trainer.history_[0]["epoch"] == 1 and trainer.metrics_["calibration_folds"] == 5

    loaded = load_trainer(trainer.save(tmp_path / "linear"))
    again = loaded.predict(held_out["text"].tolist())
    assert again.labels == predictions.labels
    np.testing.assert_allclose(again.probabilities, predictions.probabilities, atol=1e-5)


# -- encoder --------------------------------------------------------------------------------------------------------
def test_encoder_fine_tunes_the_bundled_minilm(sst2, tmp_path: Path) -> None:
    train, held_out = sst2
    texts, labels = train["text"].tolist()[:16], train["label"].tolist()[:16]
    config = TrainConfig(backend="encoder", epochs=4, batch_size=8, max_length=48, learning_rate=3e-4)
    trainer = make_trainer(config, work_dir=tmp_path / "work").fit(texts, labels)

    losses = [epoch["train_loss"] for epoch in trainer.history_]
    assert len(losses) == 4 and len(trainer.step_history_) == 8
    assert losses[-1] < losses[0]
    assert trainer.metrics_["deepspeed_zero_stage"] == -1
    assert trainer.score(texts, labels) >= 0.75  # it fits what it saw

    predictions = trainer.predict(held_out["text"].tolist()[:40])
    assert_valid(predictions, 40)
    loaded = load_trainer(trainer.save(tmp_path / "encoder"))
    np.testing.assert_allclose(
        loaded.predict(held_out["text"].tolist()[:40]).probabilities, predictions.probabilities, atol=1e-5
    )


def _weights_changed(trained: EncoderTrainer | CausalLMTrainer, base_folder: str) -> bool:
    """Whether training moved the backbone away from the checkpoint it started from."""
    import torch
    from safetensors.torch import load_file

    base = load_file(str(Path(base_folder) / "model.safetensors"))
    trained_state = trained._model.state_dict()
    shared = [name for name in base if any(k.endswith(name) for k in trained_state)]
    for name in shared:
        match = next(k for k in trained_state if k.endswith(name))
        if not torch.allclose(base[name].float(), trained_state[match].float().cpu()):
            return True
    return False


def test_encoder_with_deepspeed_zero2_in_process(tiny_bert: str, tmp_path: Path) -> None:
    texts, labels = keyword_rows(32, seed=0)
    config = TrainConfig(
        backend="encoder", base_model=tiny_bert, max_steps=3, batch_size=8, max_length=16, deepspeed_config=ZERO2
    )
    trainer = make_trainer(config, work_dir=tmp_path).fit(texts, labels)
    assert trainer.metrics_["deepspeed_zero_stage"] == 2
    assert trainer.metrics_["train_processes"] == 1 and len(trainer.step_history_) == 3
    assert np.isfinite([step["loss"] for step in trainer.step_history_]).all()
    assert _weights_changed(trainer, tiny_bert)
    assert_valid(trainer.predict(texts[:8]), 8)


def test_the_seed_fixes_the_new_classification_head(tiny_bert: str, tmp_path: Path) -> None:
    """Two fits with one seed agree however much of the global RNG was drawn between them; another seed differs."""
    import torch

    texts, labels = keyword_rows(16, seed=0)

    def probabilities(seed: int) -> np.ndarray:
        config = TrainConfig(
            backend="encoder", base_model=tiny_bert, max_steps=1, batch_size=8, max_length=16, seed=seed
        )
        trainer = make_trainer(config, work_dir=tmp_path / f"seed{seed}").fit(texts, labels)
        return trainer.predict(texts).probabilities

    first = probabilities(seed=3)
    torch.rand(1000)  # what other code in the process might draw
    np.testing.assert_allclose(probabilities(seed=3), first, atol=1e-6)
    assert not np.allclose(probabilities(seed=4), first, atol=1e-4)


# -- causal_lm ------------------------------------------------------------------------------------------------------
def test_causal_lm_learns_to_answer_with_a_label(tiny_chat_model: str, tmp_path: Path) -> None:
    texts, labels = keyword_rows(64, seed=0)
    held_out, held_out_labels = keyword_rows(24, seed=2)
    config = TrainConfig(
        backend="causal_lm", base_model=tiny_chat_model, epochs=4, batch_size=8, max_length=96, learning_rate=3e-3
    )
    trainer = make_trainer(config, work_dir=tmp_path / "work", predict_batch_size=16).fit(texts, labels)
    losses = [epoch["train_loss"] for epoch in trainer.history_]
    assert losses[-1] < 0.6 * losses[0]

    predictions = trainer.predict(held_out)
    assert_valid(predictions, len(held_out))
    assert predictions.instruction_following_rate >= 0.9
    assert all(label == output for label, output in zip(predictions.labels, predictions.raw_output) if label)

    loaded = load_trainer(trainer.save(tmp_path / "causal"))
    again = loaded.predict(held_out)
    assert again.raw_output == predictions.raw_output
    np.testing.assert_allclose(again.probabilities, predictions.probabilities, atol=1e-5)
    assert np.isfinite(again.accuracy(held_out_labels))


def test_label_scores_match_an_unbatched_computation(tiny_chat_model: str, tmp_path: Path) -> None:
    """Left padding and the kept logits must not change any label's score."""
    import torch

    texts, labels = keyword_rows(16, seed=0)
    trainer = CausalLMTrainer(base_model=tiny_chat_model, max_steps=1, batch_size=4, work_dir=str(tmp_path))
    trainer.fit(texts, labels)
    trainer.predict_batch_size = 3  # batches that mix prompt lengths and labels
    prompts = [trainer._codec.prompt_ids(trainer._tokenizer, text) for text in ["a car", texts[0], "i saw a mango"]]
    batched = trainer._score_labels(prompts)

    expected = np.empty_like(batched)
    with torch.inference_mode():
        for row, prompt in enumerate(prompts):
            for column, label in enumerate(trainer.classes_):
                answer = trainer._codec.answer_ids[label]
                logits = trainer._model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
                log_probs = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
                expected[row, column] = float(log_probs[torch.arange(len(answer)), torch.tensor(answer)].sum())
    expected = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(batched, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)


def test_causal_lm_with_deepspeed_zero3_in_process(tiny_chat_model: str, tmp_path: Path) -> None:
    texts, labels = keyword_rows(16, seed=0)
    config = TrainConfig(
        backend="causal_lm", base_model=tiny_chat_model, max_steps=2, batch_size=4, max_length=96,
        learning_rate=1e-3, deepspeed_config=ZERO3,
    )  # fmt: skip
    trainer = make_trainer(config, work_dir=tmp_path).fit(texts, labels)
    assert trainer.metrics_["deepspeed_zero_stage"] == 3
    # ZeRO-3 partitions the weights: what the driver loads must be the gathered, full-size model.
    assert _weights_changed(trainer, tiny_chat_model)
    assert_valid(trainer.predict(texts[:6]), 6)


# -- through Spark ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "deepspeed_config", "zero_stage", "local_mode"),
    [("encoder", ZERO2, 2, True), ("causal_lm", ZERO3, 3, True), ("encoder", ZERO2, 2, False)],
    # local_mode=False is the Databricks path (train.spark_local_mode: false): the ranks run as Spark barrier
    # tasks on the executors, not as processes beside the driver.
    ids=["encoder-zero2", "causal_lm-zero3", "encoder-zero2-as-spark-tasks"],
)
def test_two_processes_through_the_spark_deepspeed_distributor(
    spark,
    tiny_bert: str,
    tiny_chat_model: str,
    tmp_path: Path,
    backend: str,
    deepspeed_config: str,
    zero_stage: int,
    local_mode: bool,
) -> None:
    texts, labels = keyword_rows(32, seed=0)
    config = TrainConfig(
        backend=backend,
        base_model=tiny_bert if backend == "encoder" else tiny_chat_model,
        max_steps=2,
        batch_size=4,
        max_length=96,
        learning_rate=1e-3,
        deepspeed_config=deepspeed_config,
        distributor="spark",
        num_processes=2,
    )
    trainer = make_trainer(config, work_dir=tmp_path, spark_local_mode=local_mode).fit(texts, labels)
    assert trainer.metrics_["train_processes"] == 2
    assert trainer.metrics_["deepspeed_zero_stage"] == zero_stage
    assert len(trainer.step_history_) == 2
    assert _weights_changed(trainer, config.base_model)
    assert_valid(trainer.predict(texts[:6]), 6)


def _two_ranks_where_rank_one_aborts(output_dir: str, rank_zero_saves: bool):
    """A rank function for TorchDistributor: rank 1 dies of SIGABRT, as the DeepSpeed teardown crash does; first it
    waits for rank 0's training log when rank 0 writes one. Nested, so cloudpickle ships it by value."""

    def rank() -> None:
        import os
        import time
        from pathlib import Path

        log = Path(output_dir) / TRAINING_LOG_FILE
        if os.environ["RANK"] == "0":
            if rank_zero_saves:
                log.write_text("{}", encoding="utf-8")
            return
        deadline = time.monotonic() + 60
        while rank_zero_saves and not log.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.abort()

    return rank


@pytest.mark.parametrize("rank_zero_saves", [True, False], ids=["after-rank-0-saved", "before-rank-0-saved"])
def test_a_rank_crash_is_tolerated_only_once_rank_zero_has_saved(
    spark, tmp_path: Path, caplog: pytest.LogCaptureFixture, rank_zero_saves: bool
) -> None:
    # The DeepSpeed distributor runs torchrun itself and raises on its exit status; the plain TorchDistributor's
    # wrapper drops that status, so a crash there surfaces only when rank 0 wrote nothing.
    from pyspark.ml.deepspeed.deepspeed_distributor import DeepspeedTorchDistributor

    launcher = DeepspeedTorchDistributor(numGpus=2, nnodes=1, localMode=True, useGpu=False, deepspeedConfig=ZERO2)
    rank = _two_ranks_where_rank_one_aborts(str(tmp_path), rank_zero_saves)
    launch = functools.partial(launcher.run, rank)
    if rank_zero_saves:
        with caplog.at_level(logging.WARNING, logger="dqe.trainers.distributed"):
            _tolerate_crash_after_completion(launch, tmp_path)
        assert "failed after rank 0 had saved" in caplog.text
        assert "return code" in caplog.text  # the launcher did fail: the warning carries its report
    else:
        with pytest.raises(RuntimeError, match="return code"):
            _tolerate_crash_after_completion(launch, tmp_path)


def test_pyfunc_through_spark_udf_keeps_unparsable_outputs(spark, tiny_chat_model: str, tmp_path: Path) -> None:
    """log → load → spark_udf gives what the trainer gives in process, nulls and raw outputs included."""
    import mlflow
    from pyspark.sql import functions as F

    from dqe.trainers.pyfunc import SPARK_RESULT_TYPE, log_trainer

    texts, labels = keyword_rows(16, seed=0)
    # One step from random weights: most outputs name no label.
    trainer = CausalLMTrainer(base_model=tiny_chat_model, max_steps=1, batch_size=4, work_dir=str(tmp_path))
    trainer.fit(texts, labels)
    in_process = trainer.predict(texts)
    assert not in_process.parse_ok.all()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("pyfunc", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_trainer(trainer)
    assert info.metadata["classes"] == trainer.classes_
    assert [c.name for c in info.signature.inputs.inputs] == ["text", "vector"]

    loaded = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": texts}))
    predict = mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type=SPARK_RESULT_TYPE, env_manager="local")
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(texts)), "text": texts}))
    through_spark = frame.withColumn("p", predict(F.struct("text"))).select("i", "p.*").orderBy("i").toPandas()
    for result in (loaded, through_spark):
        assert [None if pd.isna(v) else v for v in result["predicted_label"]] == in_process.labels
        assert result["raw_output"].tolist() == in_process.raw_output
        assert result["parse_ok"].tolist() == in_process.parse_ok.tolist()
        np.testing.assert_allclose(np.stack(result["probabilities"]), in_process.probabilities, atol=1e-5)


def test_trainer_for_takes_rank_placement_and_prediction_device_from_config() -> None:
    from dqe.config import load_config
    from dqe.trainers import trainer_for

    config = load_config(PROJECT_ROOT / "conf" / "databricks.yaml", dataset="cr", overrides=["infer.device=cpu"])
    trainer = trainer_for(config)
    assert isinstance(trainer, EncoderTrainer) and trainer.deepspeed_config == ZERO2
    assert trainer.spark_local_mode is False and trainer.device == "cpu"
