"""Smoke check run at the end of ``scripts/setup.sh``: the stack imports, Delta jars resolve, the model loads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from dqe.config import load_config
    from dqe.models import bundled_model_path
    from dqe.spark import build_local_session

    vector = SentenceTransformer(str(bundled_model_path()), device="cpu").encode(["hello"])
    print(f"embedding model ok: dim {vector.shape[1]}")
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            dataset="cr",
            overrides=[f"storage.work_dir={tmp}", f"storage.warehouse_dir={Path(tmp) / 'wh'}", "spark.hive_metastore=false"],
        )
        spark = build_local_session(config)
        path = str(Path(tmp) / "t")
        spark.range(3).write.format("delta").save(path)
        assert spark.read.format("delta").load(path).count() == 3
        spark.stop()
    print("spark + delta ok")


if __name__ == "__main__":
    main()
