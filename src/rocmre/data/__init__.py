"""Data layer: one record type, readers for MNRE, MORE and JSONL, and the image policy."""

from __future__ import annotations

from pathlib import Path

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.images import MissingImagePolicy
from rocmre.data.inputs import PairInput, pair_from_json, pair_to_record, tokenize
from rocmre.data.jsonl import read_jsonl
from rocmre.data.mnre import read_mnre
from rocmre.data.more import read_more
from rocmre.data.record import DataFormatError, Entity, RelationRecord
from rocmre.paths import resolve_data_path as _resolve

__all__ = [
    "DataFormatError", "Entity", "LabelSet", "MissingImagePolicy", "PairInput", "Problem", "RelationDataset",
    "RelationRecord", "detect_format", "load_split", "pair_from_json", "pair_to_record", "read_jsonl", "read_mnre",
    "read_more", "resolve_data_path", "tokenize",
]


def resolve_data_path(path: str | Path | None, data_dir: str | Path | None = None) -> Path:
    """An explicit path, else the data folder (``data_dir``, ``$ROCMRE_DATA``, ``./data`` or ``../shared/data``);
    relative paths are tried as given, then under the data folder (see :func:`rocmre.paths.resolve_data_path`)."""
    return _resolve(path, data_dir)


def detect_format(path: Path) -> str:
    """``jsonl``, ``more`` or ``mnre`` for a file or folder."""
    if path.is_file() and path.suffix == ".jsonl":
        return "jsonl"
    if path.is_dir() and ((path / "txt" / "valid.txt").is_file() or (path / "txt" / "train.txt").is_file()):
        return "more"
    return "mnre"


def load_split(path: str | Path, split: str = "train", fmt: str = "auto", *, require_records: bool = False,
               **kwargs) -> RelationDataset:
    """Read ``split`` of the dataset at ``path`` (a JSONL file is its own split); ``require_records=True`` raises
    :class:`DataFormatError` for an empty split."""
    p = resolve_data_path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    if fmt == "jsonl":
        dataset = read_jsonl(p, **kwargs)
    elif fmt == "more":
        dataset = read_more(p, split, **kwargs)
    elif fmt == "mnre":
        dataset = read_mnre(p, split, **kwargs)
    else:
        raise ValueError(f"unknown data format {fmt!r}; expected auto, mnre, more or jsonl")
    if require_records:
        dataset.require_nonempty(split if fmt != "jsonl" else None, source=dataset.source or str(p))
    return dataset
