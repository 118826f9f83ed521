"""The clean stage's rules on one pandas frame, without Spark: the text and label normalisation both share, and
:func:`clean_pandas`, the same rules as :mod:`dqe.clean` in one process (a reference for its tests, the benchmark
baseline, usable in a notebook or on a machine without Spark)."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from dqe.config import CleanConfig

REASONS = (
    "malformed_record",
    "missing_text",
    "missing_label",
    "invalid_encoding",
    "too_long",
    "invalid_label",
    "label_conflict",
    "duplicate",
)
_WHITESPACE = re.compile(r"\s+")
REPLACEMENT_CHAR = "\ufffd"


def normalize_text(text: str | None, lowercase: bool = False) -> str | None:
    """Unicode NFC, whitespace runs collapsed to one space, trimmed; optionally lower-cased."""
    if text is None:
        return None
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return text.lower() if lowercase else text


def normalize_label(label: str | None) -> str | None:
    return None if label is None else normalize_text(label)


def clean_pandas(bronze: pd.DataFrame, cfg: CleanConfig, labels: list[str] | None) -> pd.DataFrame:
    """The same rules in pandas, one process: returns bronze columns plus ``text_norm``, ``label_norm``,
    ``reason``, ``duplicate_of`` (reason None = clean)."""
    df = bronze.copy()
    df["text_norm"] = df["text"].map(lambda t: normalize_text(t, cfg.lowercase), na_action="ignore")
    df["label_norm"] = df["label"].map(normalize_label, na_action="ignore")
    text, label = df["text_norm"], df["label_norm"]
    reason = pd.Series(None, index=df.index, dtype=object)

    def assign(mask: pd.Series, name: str) -> None:
        reason[mask & reason.isna()] = name

    assign(df["parse_error"].notna(), "malformed_record")
    assign(text.isna() | (text == ""), "missing_text")
    assign(label.isna() | (label == ""), "missing_label")
    assign(text.fillna("").str.contains(REPLACEMENT_CHAR, regex=False), "invalid_encoding")
    assign(text.fillna("").str.len() > cfg.max_chars, "too_long")
    if labels is not None:
        assign(~label.isin(labels), "invalid_label")

    valid = df[reason.isna()]
    pair_counts = valid.groupby(["text_norm", "label_norm"]).size().rename("label_count").reset_index()
    labels_per_text = pair_counts.groupby("text_norm")["label_norm"].transform("size")
    conflicted = pair_counts[labels_per_text > 1].copy()
    if cfg.conflict_policy == "majority" and len(conflicted):
        top = conflicted.groupby("text_norm")["label_count"].transform("max")
        ties = conflicted.assign(is_top=conflicted["label_count"] == top).groupby("text_norm")["is_top"].transform("sum")
        conflicted = conflicted[~((conflicted["label_count"] == top) & (ties == 1))]
    conflict_keys = set(zip(conflicted["text_norm"], conflicted["label_norm"]))
    is_conflict = pd.Series(
        [(t, l) in conflict_keys for t, l in zip(df["text_norm"], df["label_norm"])], index=df.index
    )
    assign(is_conflict, "label_conflict")

    kept = df[reason.isna()]
    first = kept.groupby(["text_norm", "label_norm"])["row_id"].transform("min")
    duplicate_of = pd.Series(None, index=df.index, dtype=object)
    is_dup = kept["row_id"] != first
    duplicate_of[is_dup[is_dup].index] = first[is_dup]
    assign(duplicate_of.notna(), "duplicate")
    df["reason"] = reason.astype(object).where(reason.notna(), None)
    df["duplicate_of"] = duplicate_of.astype(object).where(duplicate_of.notna(), None)
    return df
