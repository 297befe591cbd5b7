"""Data layer: one record type, readers for MNRE, MORE and JSONL, and the image policy."""

from __future__ import annotations

import os
from pathlib import Path

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.images import MissingImagePolicy
from rocmre.data.jsonl import read_jsonl
from rocmre.data.mnre import read_mnre
from rocmre.data.more import read_more
from rocmre.data.record import DataFormatError, Entity, RelationRecord

__all__ = [
    "DataFormatError", "Entity", "LabelSet", "MissingImagePolicy", "Problem", "RelationDataset", "RelationRecord",
    "detect_format", "load_split", "read_jsonl", "read_mnre", "read_more", "resolve_data_path",
]


def resolve_data_path(path: str | Path | None) -> Path:
    """An explicit path, else ``$ROCMRE_DATA``; relative paths are tried as given, then under ``$ROCMRE_DATA``."""
    env = os.environ.get("ROCMRE_DATA")
    if path is None:
        if not env:
            raise FileNotFoundError("no data path given: pass --data-dir or set ROCMRE_DATA to a local copy")
        return Path(env)
    p = Path(path)
    if not p.exists() and env and not p.is_absolute() and (Path(env) / p).exists():
        return Path(env) / p
    return p


def detect_format(path: Path) -> str:
    """``jsonl``, ``more`` or ``mnre`` for a file or folder."""
    if path.is_file() and path.suffix == ".jsonl":
        return "jsonl"
    if path.is_dir() and ((path / "txt" / "valid.txt").is_file() or (path / "txt" / "train.txt").is_file()):
        return "more"
    return "mnre"


def load_split(path: str | Path, split: str = "train", fmt: str = "auto", **kwargs) -> RelationDataset:
    """Read ``split`` of the dataset at ``path`` (a JSONL file is its own split)."""
    p = resolve_data_path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    if fmt == "jsonl":
        return read_jsonl(p, **kwargs)
    if fmt == "more":
        return read_more(p, split, **kwargs)
    if fmt == "mnre":
        return read_mnre(p, split, **kwargs)
    raise ValueError(f"unknown data format {fmt!r}; expected auto, mnre, more or jsonl")
