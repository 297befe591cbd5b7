"""rocmre's own JSON Lines format, for users' data (training files and ``rocmre predict`` input).

One JSON object per line::

    {"tokens": ["Obama", "visits", "Paris"],          # or "text": "Obama visits Paris"
     "head": {"name": "Obama", "start": 0, "end": 1, "type": "person"},      # type is optional
     "tail": {"name": "Paris", "start": 2, "end": 3},
     "image": "images/1.jpg",                          # optional; relative to the JSONL file's folder
     "relation": "/per/loc/place_of_residence"}        # optional at prediction time

Other entity forms and the parsing: :mod:`rocmre.data.inputs` and docs/data.md. A UTF-8 byte-order mark is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.images import MissingImagePolicy
from rocmre.data.inputs import record_from_json
from rocmre.data.mnre import OnError
from rocmre.data.record import DataFormatError, Entity, RelationRecord


class BlankLine(DataFormatError):
    """A blank line, reported by :func:`iter_jsonl` with ``blank_lines=True``."""


def iter_jsonl(path: str | Path, *, blank_lines: bool = False
               ) -> Iterator[tuple[int, Mapping[str, Any] | DataFormatError]]:
    """(line number, parsed object or the error for that line), streaming. Blank lines are passed over, or, with
    ``blank_lines=True``, reported as a ``"blank line"`` error (so that every input line gets an answer)."""
    path = Path(path)
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                if blank_lines:
                    yield lineno, BlankLine("blank line", path, lineno)
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                yield lineno, DataFormatError(f"invalid JSON ({e.msg} at column {e.colno})", path, lineno)
                continue
            except RecursionError:
                yield lineno, DataFormatError("invalid JSON (nested too deeply)", path, lineno)
                continue
            if not isinstance(obj, dict):
                yield lineno, DataFormatError(f"expected an object, got {type(obj).__name__}", path, lineno)
                continue
            yield lineno, obj


def read_records(path: Path, build: Callable[[dict[str, Any], int], RelationRecord], on_error: OnError = "raise"
                 ) -> tuple[list[RelationRecord], list[Problem]]:
    """``build(object, line)`` for every JSON line of ``path``; a bad line raises, or with ``on_error="skip"`` is
    counted as a problem naming ``path:line``."""
    records: list[RelationRecord] = []
    problems: list[Problem] = []
    for lineno, obj in iter_jsonl(path):
        try:
            if isinstance(obj, DataFormatError):
                raise obj
            records.append(build(obj, lineno))
        except DataFormatError as e:
            if on_error == "raise":
                raise
            problems.append(Problem(f"{path}:{lineno}", str(e)))
    return records, problems


def read_jsonl(path: str | Path, *, negative_label: str = "None", labels: list[str] | None = None,
               missing_image: MissingImagePolicy | str = "mark", on_error: OnError = "raise") -> RelationDataset:
    """Read a JSONL file. ``labels`` (with ``negative_label`` among them) fixes the label set; by default it is
    the labels found in the file plus ``negative_label``."""
    path = Path(path)
    policy = MissingImagePolicy(missing_image)
    records, problems = read_records(path, lambda obj, lineno: record_from_json(obj, path, lineno, path.parent,
                                                                                  policy), on_error)
    if labels is None:
        seen = {r.relation for r in records if r.relation is not None}
        labels = [negative_label, *sorted(seen - {negative_label})]
    dataset = RelationDataset(records, LabelSet(list(labels), negative_label), name=path.stem,
                              split=path.stem, problems=problems, source=str(path))
    dataset.check_labels(on_error)
    return dataset


def record_to_json(record: RelationRecord) -> dict[str, Any]:
    """The JSONL object for a record (the inverse of :func:`rocmre.data.inputs.record_from_json`)."""

    def ent(e: Entity) -> dict[str, Any]:
        out: dict[str, Any] = {"name": e.name}
        if e.is_object:
            out["box"] = list(e.box or ())
        else:
            out["start"], out["end"] = e.span
        if e.type:
            out["type"] = e.type
        return out

    obj: dict[str, Any] = {"tokens": record.tokens, "head": ent(record.head), "tail": ent(record.tail)}
    if record.image_path is not None:
        obj["image"] = str(record.image_path)
    elif record.image_id:
        obj["image"] = record.image_id  # the image the record names, though its file is missing
    if record.relation is not None:
        obj["relation"] = record.relation
    return obj
