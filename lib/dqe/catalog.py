"""Table names, produced in one place.

Unity Catalog (``storage.catalog`` set): ``catalog.schema.table``. Local runs: ``schema.table`` in the session's
metastore, with data under ``storage.warehouse_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dqe.config import DqeConfig


class Table(str, Enum):
    """Every table dqe reads or writes. A stage writes only its own tables."""

    BRONZE = "bronze"
    TEST = "test_set"
    CLEAN = "clean"
    QUARANTINE = "quarantine"
    NEAR_DUPLICATES = "near_duplicates"
    EMBEDDINGS = "embeddings"
    SELECTION = "selection"
    PREDICTIONS = "predictions"
    TRIAGE = "triage"
    FLAGGED_NOISE = "flagged_noise"
    JUDGE_CACHE = "judge_cache"
    REVIEWS = "reviews"
    CURATION = "curation"
    CURATED = "curated"
    EVALUATION = "evaluation"
    RUNS = "runs"


# The values of the selection table's ``split`` column: the diverse half the model is trained on, and the rest.
SPLITS = ("sampled", "unsampled")


@dataclass(frozen=True)
class Catalog:
    catalog: str | None
    schema: str

    @classmethod
    def from_config(cls, config: DqeConfig) -> "Catalog":
        return cls(catalog=config.storage.catalog, schema=config.schema)

    @property
    def namespace(self) -> str:
        return f"{self.catalog}.{self.schema}" if self.catalog else self.schema

    def name(self, table: Table | str) -> str:
        value = table.value if isinstance(table, Table) else table
        return f"{self.namespace}.{value}"
