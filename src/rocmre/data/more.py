"""Reader for MORE (He et al., ACM MM 2023): the head is a text span, the tail an object in the image.

Layout::

    txt/{train,valid,test}.txt        one dict literal per line
    ent_{split}_dict.pth              {img_id: {object_name: (cx, cy, w, h)}} normalised boxes
    img_org/{split}/<img_id>
    rel2id.json

A record's ``t['name']`` keys into ``ent_dict[img_id]``; the pre-release format also stores the box, as
strings, in ``t['pos']``, which is used when the object is absent from the dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.images import MissingImagePolicy, resolve_image
from rocmre.data.literal import entity_name, load_torch_index, parse_literal, parse_span, parse_tokens, require
from rocmre.data.mnre import OnError, iter_data_lines, read_label_map
from rocmre.data.record import Box, DataFormatError, Entity, RelationRecord, check_entity_span

MORE_SPLITS = {"train": "train", "val": "valid", "valid": "valid", "dev": "valid", "test": "test"}


def parse_box(value: Any, path: Path, line: int | None, field: str) -> Box:
    """A normalised (cx, cy, w, h) box; numbers or numeric strings, each in [0, 1], w and h > 0."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise DataFormatError(f"expected 4 numbers (cx, cy, w, h), got {value!r}", path, line, field)
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DataFormatError(f"box values must be numbers, got {value!r}", path, line, field) from None
    if not all(0.0 <= v <= 1.0 for v in box) or box[2] <= 0 or box[3] <= 0:
        raise DataFormatError(f"box {box} is not normalised to [0, 1] with positive size", path, line, field)
    return box  # type: ignore[return-value]


def read_more(root: str | Path, split: str, *, negative_label: str = "none", image_dir: str | Path | None = None,
              missing_image: MissingImagePolicy | str = "mark", on_error: OnError = "raise") -> RelationDataset:
    """Read one MORE split (``train``, ``val``/``valid``, ``test``) from the folder holding ``txt/``."""
    root = Path(root)
    try:
        name = MORE_SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected train, val or test") from None
    text_file = root / "txt" / f"{name}.txt"
    if not text_file.is_file():
        raise FileNotFoundError(f"no MORE {split} file: {text_file}")
    ent_file = root / f"ent_{name}_dict.pth"
    objects = load_torch_index(ent_file, "object index", "{img_id: {object: box}}") if ent_file.is_file() else {}
    img_dir = Path(image_dir) if image_dir is not None else root / "img_org" / name
    policy = MissingImagePolicy(missing_image)

    records: list[RelationRecord] = []
    problems: list[Problem] = []
    for lineno, text in iter_data_lines(text_file):
        try:
            records.append(_parse_record(text, text_file, lineno, objects, ent_file, img_dir, policy))
        except DataFormatError as e:
            if on_error == "raise":
                raise
            problems.append(Problem(f"{text_file}:{lineno}", str(e)))
    map_file = root / "rel2id.json"
    if map_file.is_file():
        labels = read_label_map(map_file, negative_label)
    else:
        seen = {r.relation for r in records if r.relation}
        labels = LabelSet([negative_label, *sorted(seen - {negative_label})], negative_label)
    dataset = RelationDataset(records, labels, name="more", split=MORE_SPLITS[split].replace("valid", "val"),
                              problems=problems, source=str(text_file))
    dataset.check_labels(on_error)
    return dataset


def _parse_record(text: str, path: Path, line: int, objects: Mapping[str, Mapping[str, Any]], ent_file: Path,
                  img_dir: Path, policy: MissingImagePolicy) -> RelationRecord:
    d = parse_literal(text, path, line)
    tokens = parse_tokens(d, path, line)
    h = require(d, "h", dict, path, line)
    start, end = parse_span(h, path, line, "h")
    head = Entity(entity_name(h, path, line, "h"), start, end)
    check_entity_span(tokens, head, path=path, line=line, field_name="h")
    t = require(d, "t", dict, path, line)
    obj_name = entity_name(t, path, line, "t")
    img_id = require(d, "img_id", str, path, line)
    known = objects.get(img_id, {})
    if obj_name in known:
        box = parse_box(known[obj_name], ent_file, None, f"{img_id}.{obj_name}")
    elif "pos" in t:
        box = parse_box(t["pos"], path, line, "t.pos")
    else:
        raise DataFormatError(f"object {obj_name!r} has no box: not in {ent_file.name} for image {img_id!r} "
                              "and no 't.pos'", path, line, "t.name")
    tail = Entity(obj_name, box=box, type="object")
    relation = require(d, "relation", str, path, line)
    image_path = resolve_image(img_dir, img_id, policy, path=path, line=line)
    return RelationRecord(tokens, head, tail, relation, img_id, image_path, [], f"{path}:{line}")


def write_label_map(labels: list[str], path: Path) -> None:
    """Write a single-line ``rel2id.json`` as MORE ships it."""
    path.write_text(json.dumps({lab: i for i, lab in enumerate(labels)}) + "\n", encoding="utf-8")
