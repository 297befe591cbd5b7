"""Where rocmre keeps what it computes (image features, entity types, converted models, LLM outputs), and where
it looks for datasets."""

from __future__ import annotations

import os
from pathlib import Path

#: The variable naming the data folder (the folder that holds ``mnre/``, ``more/``, ...).
DATA_ENV = "ROCMRE_DATA"
#: Folders tried, relative to the current directory, when ``$ROCMRE_DATA`` is not set.
DATA_DIR_CANDIDATES = ("data", "../shared/data")
DATA_DIR_HINT = (f"set {DATA_ENV} to the folder that holds the datasets (export {DATA_ENV}=/path/to/data), pass "
                 "--data-dir DIR, or run `rocmre data download mnre --to DIR`")


def default_cache_dir() -> Path:
    """``$ROCMRE_CACHE`` if set, else ``~/.cache/rocmre`` (never beside the data, which may be read-only)."""
    env = os.environ.get("ROCMRE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rocmre"


def find_data_dir() -> Path | None:
    """``$ROCMRE_DATA`` if set, else ``./data`` if it exists, else ``../shared/data`` if it exists, else None."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    for candidate in DATA_DIR_CANDIDATES:
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


def default_data_dir() -> Path:
    """The data folder (see :func:`find_data_dir`); raises :class:`FileNotFoundError` saying how to set it.
    A ``$ROCMRE_DATA`` that names no folder is an error too (rather than silently trying other folders)."""
    found = find_data_dir()
    if found is None:
        raise FileNotFoundError(f"no data folder: ${DATA_ENV} is not set and neither ./data nor ../shared/data "
                                f"exists; {DATA_DIR_HINT}")
    if not found.is_dir():
        raise FileNotFoundError(f"${DATA_ENV}={found} is not a folder; {DATA_DIR_HINT}")
    return found


def resolve_data_path(path: str | Path | None, data_dir: str | Path | None = None) -> Path:
    """Where a dataset path points: ``None`` is the data folder; a relative path is tried from the current directory,
    then under the data folder; else :class:`FileNotFoundError` naming both."""
    if path is None:
        if data_dir is not None:
            return Path(data_dir).expanduser()
        return default_data_dir()
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; {DATA_DIR_HINT}")
        return p
    base = Path(data_dir).expanduser() if data_dir is not None else find_data_dir()
    if base is not None and (base / p).exists():
        return base / p
    looked = f"./{p}" + (f" or {base / p}" if base is not None else "")
    where = f"the data folder {base}" if base is not None else f"the data folder (${DATA_ENV} is not set)"
    raise FileNotFoundError(f"dataset {str(p)!r} not found (looked for {looked}; relative paths are looked up in "
                            f"the current folder and in {where}); {DATA_DIR_HINT}")
