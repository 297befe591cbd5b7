"""rocmre's own JSON Lines format, for users' data.

One JSON object per line::

    {"tokens": ["Obama", "visits", "Paris"],          # or "text": "Obama visits Paris" (split on whitespace)
     "head": {"name": "Obama", "start": 0, "end": 1, "type": "person"},      # type is optional
     "tail": {"name": "Paris", "start": 2, "end": 3},
     "image": "images/1.jpg",                          # optional; relative to the JSONL file's folder
     "relation": "/per/loc/place_of_residence"}        # optional at prediction time

An image-object tail (as in MORE) gives ``"box": [cx, cy, w, h]`` (normalised) instead of start/end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.images import MissingImagePolicy
from rocmre.data.mnre import OnError
from rocmre.data.more import parse_box
from rocmre.data.record import DataFormatError, Entity, RelationRecord, check_entity_span


def parse_jsonl_entity(d: Mapping[str, Any], key: str, tokens: list[str], path: Path | str, line: int) -> Entity:
    ent = d.get(key)
    if not isinstance(ent, Mapping):
        raise DataFormatError("missing or not an object", path, line, key)
    name = ent.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataFormatError("missing or empty", path, line, f"{key}.name")
    etype = ent.get("type")
    if etype is not None and not isinstance(etype, str):
        raise DataFormatError("must be a string", path, line, f"{key}.type")
    if "box" in ent:
        return Entity(name, type=etype or "object", box=parse_box(ent["box"], Path(path), line, f"{key}.box"))
    start, end = ent.get("start"), ent.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise DataFormatError("needs integer 'start' and 'end' token offsets (or a 'box')", path, line, key)
    entity = Entity(name, start, end, etype)
    check_entity_span(tokens, entity, path=path, line=line, field_name=key)
    return entity


def parse_jsonl_record(d: Mapping[str, Any], path: Path | str, line: int, base_dir: Path | None,
                       policy: MissingImagePolicy = MissingImagePolicy.MARK) -> RelationRecord:
    """One record from a parsed JSON object."""
    if "tokens" in d:
        tokens = d["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataFormatError("must be a list of strings", path, line, "tokens")
    elif isinstance(d.get("text"), str):
        tokens = d["text"].split()
    else:
        raise DataFormatError("missing: give 'tokens' or 'text'", path, line, "tokens")
    if not tokens:
        raise DataFormatError("empty token list", path, line, "tokens")
    head = parse_jsonl_entity(d, "head", tokens, path, line)
    if head.is_object:
        raise DataFormatError("the head must be a text span", path, line, "head")
    tail = parse_jsonl_entity(d, "tail", tokens, path, line)
    relation = d.get("relation")
    if relation is not None and not isinstance(relation, str):
        raise DataFormatError("must be a string", path, line, "relation")
    image = d.get("image")
    image_path = None
    if image is not None:
        if not isinstance(image, str):
            raise DataFormatError("must be a path string", path, line, "image")
        candidate = Path(image) if Path(image).is_absolute() or base_dir is None else base_dir / image
        if candidate.is_file():
            image_path = candidate
        elif policy is MissingImagePolicy.ERROR:
            raise DataFormatError(f"image not found: {candidate}", path, line, "image")
    return RelationRecord(tokens, head, tail, relation, image, image_path, [], f"{path}:{line}")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Mapping[str, Any] | DataFormatError]]:
    """(line number, parsed object or the error for that line), streaming."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                yield lineno, DataFormatError(f"invalid JSON ({e.msg} at column {e.colno})", path, lineno)
                continue
            if not isinstance(obj, dict):
                yield lineno, DataFormatError(f"expected an object, got {type(obj).__name__}", path, lineno)
                continue
            yield lineno, obj


def read_jsonl(path: str | Path, *, negative_label: str = "None", labels: list[str] | None = None,
               missing_image: MissingImagePolicy | str = "mark", on_error: OnError = "raise") -> RelationDataset:
    """Read a JSONL file. ``labels`` (with ``negative_label`` among them) fixes the label set; by default it is
    the labels found in the file plus ``negative_label``."""
    path = Path(path)
    policy = MissingImagePolicy(missing_image)
    records: list[RelationRecord] = []
    problems: list[Problem] = []
    for lineno, obj in iter_jsonl(path):
        try:
            if isinstance(obj, DataFormatError):
                raise obj
            records.append(parse_jsonl_record(obj, path, lineno, path.parent, policy))
        except DataFormatError as e:
            if on_error == "raise":
                raise
            problems.append(Problem(f"{path}:{lineno}", str(e)))
    if labels is None:
        seen = {r.relation for r in records if r.relation is not None}
        labels = [negative_label, *sorted(seen - {negative_label})]
    dataset = RelationDataset(records, LabelSet(list(labels), negative_label), name=path.stem,
                              split=path.stem, problems=problems)
    dataset.check_labels(on_error)
    return dataset


def record_to_json(record: RelationRecord) -> dict[str, Any]:
    """The JSONL object for a record (the inverse of :func:`parse_jsonl_record`)."""

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
    if record.relation is not None:
        obj["relation"] = record.relation
    return obj
