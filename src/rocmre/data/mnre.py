"""Readers for MNRE in the layouts users have.
* HVPNeT / MKGformer ``RE_data``: ``txt/ours_{split}.txt``, ``txt/ours_rel2id.json``, ``txt/mre_{split}_dict.pth``
  (record index -> visual-grounding crop names), ``img_org/{split}/``, ``img_vg/{split}/crops/``.
* The official release: ``mnre_txt/mnre_{train,val ,test}.txt`` (the dev file's name really has a space).
* MNRE-1 (the first release): ``ours_{split}.txt`` with 31 labels and ``none`` in lower case."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.images import MissingImagePolicy, resolve_image
from rocmre.data.literal import (
    entity_name,
    iter_literal_lines,
    load_torch_index,
    parse_literal,
    parse_span,
    parse_tokens,
    require,
)
from rocmre.data.record import DataFormatError, Entity, RelationRecord, check_entity_span

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "dev": "val", "test": "test"}
OnError = Literal["raise", "skip"]


BOM = "\ufeff"


def iter_data_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of each non-blank line; a UTF-8 byte-order mark is ignored."""
    for lineno, text in iter_literal_lines(path):
        if lineno == 1 and text.startswith(BOM):
            text = text.lstrip(BOM).strip()
            if not text:
                continue
        yield lineno, text


def normalise_split(split: str) -> str:
    try:
        return SPLIT_ALIASES[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected one of train, val, test") from None


def find_mnre_text(root: Path, split: str) -> Path:
    """The text file of ``split`` under ``root``, in any supported layout."""
    split = normalise_split(split)
    names = [f"txt/ours_{split}.txt", f"ours_{split}.txt", f"RE_data/txt/ours_{split}.txt",
             f"mnre/RE_data/txt/ours_{split}.txt", f"mnre_txt/mnre_{split}.txt", f"mnre_{split}.txt"]
    if split == "val":
        names += ["mnre_txt/mnre_val .txt", "mnre_val .txt", "official/mnre_txt/mnre_val .txt"]
    names += [f"official/mnre_txt/mnre_{split}.txt"]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"no MNRE {split} file under {root} (looked for {', '.join(names[:6])}, ...). "
        "Point rocmre at a local copy with --data-dir or the ROCMRE_DATA variable, or run `rocmre data download mnre`.")


def _layout_root(text_file: Path) -> Path:
    """The folder that holds ``txt/`` (RE_data) or the text files themselves."""
    return text_file.parent.parent if text_file.parent.name in ("txt", "mnre_txt") else text_file.parent


def find_label_map(text_file: Path) -> Path | None:
    for cand in (text_file.parent / "ours_rel2id.json", text_file.parent / "rel2id.json"):
        if cand.is_file():
            return cand
    return None


def _key_line(text: str, key: str) -> int | None:
    """The 1-based line where ``key`` first appears as a JSON string in ``text``."""
    i = text.find(json.dumps(key))
    if i < 0:
        i = text.find(json.dumps(key, ensure_ascii=False))
    return text.count("\n", 0, i) + 1 if i >= 0 else None


def read_label_map(path: Path, negative_label: str | None) -> LabelSet:
    """A ``label -> id`` JSON map, checked to be a permutation of ``0..n-1`` (errors name the label and line)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:
                raise DataFormatError(f"label {k!r} is given twice", path, _key_line(text, k), k)
            seen[k] = v
        return seen

    try:
        mapping = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
    if not isinstance(mapping, dict) or not mapping:
        raise DataFormatError("expected a non-empty {label: id} object", path, 1)
    n = len(mapping)
    owner: dict[int, str] = {}
    for label, i in mapping.items():
        if not isinstance(i, int) or isinstance(i, bool):
            raise DataFormatError(f"id must be an integer, got {i!r}", path, _key_line(text, label), label)
        if not 0 <= i < n:
            raise DataFormatError(f"id {i} is out of range: ids must be 0..{n - 1} without gaps or repeats",
                                  path, _key_line(text, label), label)
        if i in owner:
            raise DataFormatError(f"id {i} is also the id of {owner[i]!r}: ids must be 0..{n - 1} without gaps or "
                                  "repeats", path, _key_line(text, label), label)
        owner[i] = label
    labels = sorted(mapping, key=mapping.__getitem__)
    if negative_label is None:
        negative_label = "None" if "None" in mapping else "none"
    if negative_label not in labels:
        raise DataFormatError(f"negative label {negative_label!r} is not in the label map ({len(labels)} labels)",
                              path, None, "negative_label")
    return LabelSet(labels, negative_label)


def _record_from_dict(d: Mapping[str, Any], path: Path, line: int) -> tuple[list[str], Entity, Entity, str, str]:
    tokens = parse_tokens(d, path, line)
    ents = []
    for key in ("h", "t"):
        ent = require(d, key, dict, path, line)
        start, end = parse_span(ent, path, line, key)
        e = Entity(entity_name(ent, path, line, key), start, end)
        check_entity_span(tokens, e, path=path, line=line, field_name=key)
        ents.append(e)
    relation = require(d, "relation", str, path, line)
    img_id = require(d, "img_id", (str, int), path, line)
    if isinstance(img_id, int):  # MNRE-1 writes some ids as bare numbers: 71532 names "71532.jpg"
        img_id = f"{img_id}.jpg"
    return tokens, ents[0], ents[1], relation, img_id


def read_mnre(root: str | Path, split: str, *, negative_label: str | None = None,
              image_dir: str | Path | None = None, missing_image: MissingImagePolicy | str = "mark",
              on_error: OnError = "raise", label_map: str | Path | None = None) -> RelationDataset:
    """Read one MNRE split from any supported layout; ``negative_label`` defaults to the release's spelling. A missing
    image is marked (or an error under ``missing_image="error"``); ``on_error="skip"`` records bad lines."""
    root = Path(root)
    split = normalise_split(split)
    text_file = find_mnre_text(root, split)
    base = _layout_root(text_file)
    policy = MissingImagePolicy(missing_image)
    img_dir = Path(image_dir) if image_dir is not None else base / "img_org" / split
    crop_dir = base / "img_vg" / split / "crops"
    crop_file = text_file.parent / f"mre_{split}_dict.pth"
    crops = load_torch_index(crop_file, "crop index", "a dict of record index -> crop names") \
        if crop_file.is_file() else {}

    records: list[RelationRecord] = []
    problems: list[Problem] = []
    n_lines = 0
    for lineno, text in iter_data_lines(text_file):
        index = n_lines  # the crop index counts records in file order
        n_lines += 1
        try:
            tokens, head, tail, relation, img_id = _record_from_dict(parse_literal(text, text_file, lineno),
                                                                      text_file, lineno)
            image_path = resolve_image(img_dir, img_id, policy, path=text_file, line=lineno)
        except DataFormatError as e:
            if on_error == "raise":
                raise
            problems.append(Problem(f"{text_file}:{lineno}", str(e)))
            continue
        crop_names = crops.get(index, [])
        crop_paths = [crop_dir / c for c in crop_names if (crop_dir / c).is_file()]
        records.append(RelationRecord(tokens, head, tail, relation, img_id, image_path, crop_paths,
                                      f"{text_file}:{lineno}"))
    if crops and len(crops) != n_lines:
        raise DataFormatError(f"the crop index has {len(crops)} entries but {text_file.name} has {n_lines} records: "
                              "they would misalign", crop_file)

    map_file = Path(label_map) if label_map is not None else find_label_map(text_file)
    if map_file is not None:
        labels = read_label_map(map_file, negative_label)
    else:
        labels = _labels_from_release(base, text_file, records, negative_label)
    dataset = RelationDataset(records, labels, name="mnre", split=split, problems=problems, source=str(text_file))
    dataset.check_labels(on_error)
    return dataset


def _labels_from_release(base: Path, text_file: Path, records: list[RelationRecord],
                         negative_label: str | None) -> LabelSet:
    """Without a label map: the labels of every split file beside ``text_file``, sorted, negative first."""
    seen = {r.relation for r in records if r.relation is not None}
    for sibling in text_file.parent.glob("*.txt"):
        if sibling == text_file:
            continue
        for lineno, text in iter_data_lines(sibling):
            try:
                rel = parse_literal(text, sibling, lineno).get("relation")
            except DataFormatError:
                continue  # reported when that split itself is read
            if isinstance(rel, str):
                seen.add(rel)
    if negative_label is None:
        if "None" in seen:
            negative_label = "None"
        elif "none" in seen:
            negative_label = "none"
        else:
            raise DataFormatError("cannot tell the negative label: pass negative_label explicitly", text_file)
    if negative_label not in seen:
        raise DataFormatError(f"negative label {negative_label!r} does not occur in the data", text_file)
    return LabelSet([negative_label, *sorted(seen - {negative_label})], negative_label)
