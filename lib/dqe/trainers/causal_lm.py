"""``causal_lm``: generative instruction tuning of a chat model, as in the DQE paper (Qwen2.5-7B-Instruct there).

Training: each row becomes a chat — a system message, a user message listing the label set and holding the text,
and the label name as the assistant's answer followed by the tokenizer's end-of-sequence token. The loss covers the
answer tokens only (the prompt's label ids are -100). Texts are truncated so that prompt and longest answer fit in
``train.max_length`` tokens; the same truncation applies at prediction time.

Prediction:

- ``raw_output``: greedy generation after the prompt, decoded without special tokens.
- ``labels``: the label named by the output — an exact match, else a case-insensitive match of the whole output,
  else the single label name found in it as a whole word (a longer name such as "very negative" wins over the
  "negative" it contains). Anything else is unparsable: label None, ``parse_ok`` False (the instruction-following
  rate is the share of parsable outputs).
- ``probabilities``: every label is scored as a continuation of the prompt — the summed log-probability of its
  answer tokens, end-of-sequence included — and the scores are normalised with a softmax over the label set. This
  costs one forward pass per (text, label) pair: cheap for a handful of labels, expensive for hundreds.
- ``confidence``: the probability of the generated label (0 when the output named none).

``train.base_model`` must be a chat model (its tokenizer needs a chat template), e.g. ``Qwen/Qwen2.5-7B-Instruct``
or a local folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dqe.errors import ConfigError, DqeError, InputError
from dqe.trainers.base import Predictions, resolve_device
from dqe.trainers.distributed import HuggingFaceTrainer, TrainingJob, TrainingParts

SYSTEM_PROMPT = "You are a careful annotator. You classify texts and answer with a label name only."
USER_PROMPT = (
    "Classify the text into exactly one of these labels: {labels}.\nAnswer with the label only.\n\nText:\n{text}"
)
IGNORED_LABEL_ID = -100
# Generation may run a few tokens past the longest label, so that raw_output shows what the model said instead.
EXTRA_NEW_TOKENS = 4
# A private-use character marks the text's place in the rendered chat template.
_TEXT_SLOT = "\ue000"


@dataclass(frozen=True)
class PromptCodec:
    """Token ids of the prompt around the text, and of each label's answer, for one tokenizer and label set."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    answer_ids: dict[str, list[int]]
    text_budget: int

    @classmethod
    def build(cls, tokenizer: Any, classes: Sequence[str], max_length: int) -> PromptCodec:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"the tokenizer of {tokenizer.name_or_path!r} has no chat template: the causal_lm backend needs an "
                "instruction-tuned chat model (train.base_model), e.g. Qwen/Qwen2.5-7B-Instruct"
            )
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"the tokenizer of {tokenizer.name_or_path!r} has no end-of-sequence token")
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(labels=", ".join(classes), text=_TEXT_SLOT)},
        ]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if rendered.count(_TEXT_SLOT) != 1:
            raise DqeError(f"the chat template of {tokenizer.name_or_path!r} does not keep the user message intact")
        prefix, suffix = rendered.split(_TEXT_SLOT)
        answers = {label: _encode(tokenizer, label) + [tokenizer.eos_token_id] for label in classes}
        prefix_ids, suffix_ids = _encode(tokenizer, prefix), _encode(tokenizer, suffix)
        longest_answer = max(len(ids) for ids in answers.values())
        budget = max_length - len(prefix_ids) - len(suffix_ids) - longest_answer
        if budget < 1:
            raise InputError(
                f"train.max_length={max_length} is too small: the prompt with {len(classes)} labels takes "
                f"{len(prefix_ids) + len(suffix_ids)} tokens and the longest answer {longest_answer}, which leaves "
                "no room for the text"
            )
        return cls(prefix_ids=prefix_ids, suffix_ids=suffix_ids, answer_ids=answers, text_budget=budget)

    @property
    def longest_answer(self) -> int:
        return max(len(ids) for ids in self.answer_ids.values())

    def prompt_ids(self, tokenizer: Any, text: str) -> list[int]:
        return self.prefix_ids + _encode(tokenizer, text)[: self.text_budget] + self.suffix_ids

    def training_example(self, tokenizer: Any, text: str, label: str) -> dict[str, list[int]]:
        prompt, answer = self.prompt_ids(tokenizer, text), self.answer_ids[label]
        return {
            "input_ids": prompt + answer,
            "attention_mask": [1] * (len(prompt) + len(answer)),
            "labels": [IGNORED_LABEL_ID] * len(prompt) + answer,
        }


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def parse_label(output: str, classes: Sequence[str]) -> str | None:
    """The label an output names, or None (see the module docstring for the rules)."""
    text = output.strip()
    if text in classes:
        return text
    folded = text.casefold().strip(" \t\n.!\"'`")
    by_folded = {label.casefold(): label for label in classes}
    if folded in by_folded:
        return by_folded[folded]
    named = [
        label for label in classes if re.search(rf"(?<!\w){re.escape(label.casefold())}(?!\w)", folded) is not None
    ]
    named = [
        label for label in named if not any(label != other and label.casefold() in other.casefold() for other in named)
    ]
    return named[0] if len(named) == 1 else None


def _load_tokenizer(folder: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:  # many chat models ship without one; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _left_padded(sequences: list[list[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """input_ids, attention_mask and position_ids with every sequence ending at the last column."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, width - len(sequence) :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


class CausalLMTrainer(HuggingFaceTrainer):
    backend = "causal_lm"

    def __init__(self, base_model: str | None = None, **kwargs: Any) -> None:
        if base_model in (None, "bundled"):
            raise ConfigError(
                "the causal_lm backend needs train.base_model set to a chat model (e.g. Qwen/Qwen2.5-7B-Instruct or a "
                "local folder); 'bundled' is a sentence encoder"
            )
        super().__init__(base_model=base_model, **kwargs)
        self._codec: PromptCodec | None = None

    def _load_pretrained(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        device = resolve_device(self.device)
        bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        self._tokenizer = _load_tokenizer(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16 if bf16 else torch.float32)
        self._model = model.to(device).eval()
        self._codec = PromptCodec.build(self._tokenizer, self.classes_, self.max_length)

    def _predict(self, texts: list[str], embeddings: np.ndarray | None) -> Predictions:
        prompts = [self._codec.prompt_ids(self._tokenizer, text) for text in texts]
        raw_output = self._generate(prompts)
        labels = [parse_label(output, self.classes_) for output in raw_output]
        probabilities = self._score_labels(prompts)
        index = {label: i for i, label in enumerate(self.classes_)}
        confidence = np.array(
            [probabilities[row, index[label]] if label is not None else 0.0 for row, label in enumerate(labels)]
        )
        return Predictions(
            classes=list(self.classes_),
            labels=labels,
            confidence=confidence,
            probabilities=probabilities,
            raw_output=raw_output,
            parse_ok=np.array([label is not None for label in labels], dtype=bool),
        )

    def _batches_by_length(self, sequences: list[list[int]]) -> list[np.ndarray]:
        # Batches of similar length carry little padding.
        order = np.argsort([len(s) for s in sequences], kind="stable")
        return [order[i : i + self.predict_batch_size] for i in range(0, len(order), self.predict_batch_size)]

    def _generate(self, prompts: list[list[int]]) -> list[str]:
        import torch

        outputs = [""] * len(prompts)
        with torch.inference_mode():
            for rows in self._batches_by_length(prompts):
                input_ids, attention_mask, _ = _left_padded([prompts[i] for i in rows], self._tokenizer.pad_token_id)
                generated = self._model.generate(
                    input_ids=input_ids.to(self._model.device),
                    attention_mask=attention_mask.to(self._model.device),
                    max_new_tokens=self._codec.longest_answer + EXTRA_NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=self._tokenizer.pad_token_id,
                    eos_token_id=self._tokenizer.eos_token_id,
                )
                new_tokens = generated[:, input_ids.shape[1] :].cpu()
                for row, tokens in zip(rows, new_tokens):
                    outputs[row] = self._tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return outputs

    def _score_labels(self, prompts: list[list[int]]) -> np.ndarray:
        """Softmax over the label set of each label's summed answer-token log-probability."""
        import torch

        answers = [self._codec.answer_ids[label] for label in self.classes_]
        pairs = [(row, label) for row in range(len(prompts)) for label in range(len(answers))]
        sequences = [prompts[row] + answers[label] for row, label in pairs]
        scores = np.empty(len(pairs))
        # Left padding ends every sequence at the last column, so the answers' logits are the last few positions.
        keep = self._codec.longest_answer + 1
        with torch.inference_mode():
            for batch in self._batches_by_length(sequences):
                input_ids, attention_mask, position_ids = _left_padded(
                    [sequences[i] for i in batch], self._tokenizer.pad_token_id
                )
                logits = self._model(
                    input_ids=input_ids.to(self._model.device),
                    attention_mask=attention_mask.to(self._model.device),
                    position_ids=position_ids.to(self._model.device),
                    logits_to_keep=keep,
                ).logits.float()
                log_probs = torch.log_softmax(logits[:, :-1], dim=-1).cpu()
                targets = input_ids[:, -(keep - 1) :]
                token_scores = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                for position, pair_index in enumerate(batch):
                    answer_length = len(answers[pairs[pair_index][1]])
                    scores[pair_index] = float(token_scores[position, -answer_length:].sum())
        by_label = scores.reshape(len(prompts), len(answers))
        shifted = np.exp(by_label - by_label.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def training_parts(job: TrainingJob) -> TrainingParts:
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    tokenizer = _load_tokenizer(job.base_model)
    # Right padding in training: positions then count from the first real token, as in left-padded prediction.
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(job.base_model)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    codec = PromptCodec.build(tokenizer, job.classes, job.max_length)
    examples = [codec.training_example(tokenizer, text, label) for text, label in zip(job.texts, job.labels)]
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORED_LABEL_ID)
    return TrainingParts(model=model, tokenizer=tokenizer, examples=examples, collator=collator)
