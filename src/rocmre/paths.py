"""Where rocmre keeps what it computes (image features, entity types, converted models, LLM outputs)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ROCMRE_CACHE`` if set, else ``~/.cache/rocmre`` (never beside the data, which may be read-only)."""
    env = os.environ.get("ROCMRE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rocmre"
