"""Pair inputs: the one place that turns user input (a text, two entities, an image) into a :class:`RelationRecord`.
Used by the JSONL readers, the Python API and the service (accepted forms: docs/data.md). A text is a string
(tokenised by :func:`tokenize`, ``\\w+|[^\\w\\s]``) or a token list; an entity a name, a span, a dict or (tail only)
an image box; an image a path, bytes, a numpy array, a PIL image or ``None``. Bad input raises
:class:`PairInputError`/:class:`PairInputTypeError` naming the ``field``; :func:`pair_from_json` turns them into
:class:`~rocmre.data.record.DataFormatError` located by file, line and field."""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.data.images import MissingImagePolicy
from rocmre.data.record import DataFormatError, Entity, RelationRecord, entity_tokens_match

#: the one tokenisation rule for raw text (training files and prediction alike): @handles and clitics ('s, 're)
#: stay whole, every other punctuation mark is its own token. It reproduces MNRE's own tokens for 10,112 of its
#: 12,247 training sentences (the plain ``\w+|[^\w\s]`` rule: 717).
TOKEN_PATTERN = re.compile(r"@\w+|'\w+|\w+|[^\w\s]")

TextInput = str | Sequence[str]
EntityInput = str | tuple[int, int] | Sequence[int] | Mapping[str, Any]
ImageInput = str | os.PathLike | bytes | bytearray | np.ndarray | Image.Image | None
#: What an image becomes after :func:`normalise_image`.
NormalImage = Path | bytes | Image.Image | None

ENTITY_KEYS = ("name", "start", "end", "char_start", "char_end", "box", "type")
PAIR_KEYS = ("text", "head", "tail", "image", "head_type", "tail_type", "extra")
ENTITY_EXPECTED = ("expected an entity name string, a (start, end) span, or a dict with "
                   "name/start/end/char_start/char_end/box")
IMAGE_EXPECTED = "expected a file path, bytes, a uint8 numpy array, a PIL image or None"


class PairInputError(ValueError):
    """Bad pair input: ``field`` names the part (``head``, ``tail.box``, ``text``, ...), ``reason`` what is wrong."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class PairInputTypeError(TypeError):
    """Pair input of the wrong type; ``field`` and ``reason`` as in :class:`PairInputError`."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class EntityNotFoundError(PairInputError):
    """The head or tail cannot be located in the text, or is ambiguous; ``candidates`` lists the options."""

    def __init__(self, message: str, candidates: list[Any] | None = None, *, field: str | None = None,
                 reason: str | None = None) -> None:
        self.candidates = list(candidates or [])
        ValueError.__init__(self, message)
        self.field = field
        self.reason = reason if reason is not None else message


def _not_found(role: str, reason: str, candidates: list[Any] | None = None) -> EntityNotFoundError:
    return EntityNotFoundError(f"{role}: {reason}", candidates, field=role, reason=reason)


def describe_value(value: Any) -> str:
    """A short, safe description of a value for an error message (never a bare ``<object at 0x...>``)."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    return type(value).__name__


def positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` >= 1 (numpy integers accepted); ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {describe_value(value)}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {int(value)}")
    return int(value)


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The one tokenisation rule for raw text: words and single punctuation marks, with character offsets."""
    tokens, offsets = [], []
    for m in TOKEN_PATTERN.finditer(text):
        tokens.append(m.group())
        offsets.append(m.span())
    return tokens, offsets


@dataclass
class PairInput:
    """One entity pair as a user gives it; ``extra`` carries a JSONL line's ``id``, ``relation`` and ``image_id``."""

    text: TextInput
    head: EntityInput
    tail: EntityInput
    image: ImageInput = None
    head_type: str | None = None
    tail_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def as_pair(item: PairInput | Mapping[str, Any]) -> PairInput:
    """A :class:`PairInput` (from itself or a dict with its fields) with its image normalised."""
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in PAIR_KEYS)
        if unknown:
            raise PairInputError(None, f"unknown field(s) {unknown} in a pair; accepted: {', '.join(PAIR_KEYS)}")
        for key in ("text", "head", "tail"):
            if key not in item:
                raise PairInputError(key, "missing")
        item = PairInput(**item)
    elif not isinstance(item, PairInput):
        raise PairInputTypeError(None, f"expected a PairInput or a dict with text/head/tail, got "
                                       f"{describe_value(item)}")
    image = normalise_image(item.image)
    return item if image is item.image else replace(item, image=image)


def normalise_image(image: Any, field_name: str = "image") -> NormalImage:
    """A path becomes a ``Path``, ``bytearray``/``memoryview`` ``bytes``, a numpy array a PIL image (checked later)."""
    if image is None or isinstance(image, bytes | Image.Image):
        return image
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path.strip():
            raise PairInputError(field_name, "empty path")
        return Path(path)
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise PairInputTypeError(field_name, f"a numpy image must have dtype uint8, got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or 0 in image.shape:
            raise PairInputError(field_name, f"a numpy image must be H x W, H x W x 3 or H x W x 4 with H, W > 0; "
                                             f"got shape {tuple(image.shape)}")
        return Image.fromarray(np.ascontiguousarray(image))
    raise PairInputTypeError(field_name, f"{IMAGE_EXPECTED}; got {describe_value(image)}")


def normalise_text(text: Any, field_name: str = "text") -> tuple[list[str], list[tuple[int, int]] | None, str | None]:
    """(tokens, character offsets or None, the raw string or None) for a string or a token list."""
    if isinstance(text, str):
        tokens, offsets = tokenize(text)
        if not tokens:
            raise PairInputError(field_name, "empty: no words or punctuation")
        return tokens, offsets, text
    if isinstance(text, list | tuple):
        if not text:
            raise PairInputError(field_name, "empty token list")
        for i, t in enumerate(text):
            if not isinstance(t, str):
                raise PairInputTypeError(f"{field_name}[{i}]", f"expected a token string, got {describe_value(t)}")
            if not t.strip():
                raise PairInputError(f"{field_name}[{i}]", "empty token")
        return list(text), None, None
    raise PairInputTypeError(field_name, f"expected a string or a list of token strings; got {describe_value(text)}")


def check_entity_type(etype: Any, field_name: str) -> str | None:
    """``etype`` if it is None or one of :data:`ENTITY_TYPES`."""
    if etype is None:
        return None
    if not isinstance(etype, str):
        raise PairInputTypeError(field_name, f"expected one of {list(ENTITY_TYPES)}, got {describe_value(etype)}")
    if etype not in ENTITY_TYPES:
        raise PairInputError(field_name, f"{etype!r} is not one of {list(ENTITY_TYPES)}")
    return etype


def _index(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PairInputTypeError(field_name, f"must be an integer, got {describe_value(value)}")
    return int(value)


def resolve_entity(spec: Any, tokens: list[str], offsets: list[tuple[int, int]] | None, text: str | None,
                   role: str, etype: str | None) -> Entity:
    """An :class:`Entity` from any accepted entity form (``etype`` wins over a dict's ``type``)."""
    etype = check_entity_type(etype, f"{role}_type")
    if isinstance(spec, str):
        if not spec.strip():
            raise PairInputError(role, "empty entity string")
        return _find_entity(spec, tokens, offsets, role, etype)
    if isinstance(spec, Mapping):
        return _dict_entity(spec, tokens, offsets, text, role, etype)
    if isinstance(spec, list | tuple | np.ndarray):
        values = list(np.asarray(spec).ravel()) if isinstance(spec, np.ndarray) else list(spec)
        if len(values) != 2:
            raise PairInputError(role, f"a span is (start, end): 2 integers, got {len(values)} values")
        start, end = _index(values[0], f"{role}[0]"), _index(values[1], f"{role}[1]")
        if offsets is None:
            return _token_entity(tokens, start, end, role, etype, None)
        return _char_entity(text or "", offsets, tokens, start, end, role, etype, None)
    raise PairInputTypeError(role, f"{ENTITY_EXPECTED}; got {describe_value(spec)}")


def _dict_entity(spec: Mapping[str, Any], tokens: list[str], offsets: list[tuple[int, int]] | None,
                 text: str | None, role: str, etype: str | None) -> Entity:
    unknown = sorted(str(k) for k in spec if k not in ENTITY_KEYS)
    if unknown:
        raise PairInputError(role, f"unknown key(s) {unknown}; accepted: {', '.join(ENTITY_KEYS)}")
    name = spec.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise PairInputTypeError(f"{role}.name", f"must be a string, got {describe_value(name)}")
        if not name.strip():
            raise PairInputError(f"{role}.name", "empty")
    etype = etype or check_entity_type(spec.get("type"), f"{role}.type")
    token_keys = [k for k in ("start", "end") if k in spec]
    char_keys = [k for k in ("char_start", "char_end") if k in spec]
    if "box" in spec:
        if token_keys or char_keys:
            raise PairInputError(role, "give a 'box' or offsets, not both")
        from rocmre.data.more import parse_box

        try:
            box = parse_box(spec["box"], Path(f"<{role}>"), None, "box")
        except DataFormatError as e:
            raise PairInputError(f"{role}.box", e.reason) from None
        return Entity(name or "object", box=box, type=etype or "object")
    if token_keys and char_keys:
        raise PairInputError(role, "give token offsets (start/end) or character offsets (char_start/char_end), "
                                   "not both")
    for keys, (a, b) in ((token_keys, ("start", "end")), (char_keys, ("char_start", "char_end"))):
        if keys and len(keys) == 1:
            given, other = (a, b) if keys[0] == a else (b, a)
            raise PairInputError(role, f"'{given}' is given without '{other}': give both")
    if token_keys:
        start, end = _index(spec["start"], f"{role}.start"), _index(spec["end"], f"{role}.end")
        return _token_entity(tokens, start, end, role, etype, name)
    if char_keys:
        if offsets is None:
            raise PairInputError(role, "char_start/char_end need the text as a string; with a token list give "
                                       "start/end")
        start, end = _index(spec["char_start"], f"{role}.char_start"), _index(spec["char_end"], f"{role}.char_end")
        return _char_entity(text or "", offsets, tokens, start, end, role, etype, name)
    if name is not None:
        return _find_entity(name, tokens, offsets, role, etype)
    raise PairInputError(role, "give 'name' (to locate), 'start'/'end' (token offsets), 'char_start'/'char_end' "
                               "(character offsets) or 'box'")


def _token_entity(tokens: list[str], start: int, end: int, role: str, etype: str | None, name: str | None) -> Entity:
    if not (0 <= start < end <= len(tokens)):
        raise _not_found(role, f"token span [{start}, {end}) is out of range for {len(tokens)} tokens")
    covered = " ".join(tokens[start:end])
    if name is not None and not entity_tokens_match(tokens[start:end], name):
        raise _not_found(role, f"token span [{start}, {end}) covers {covered!r}, not {name!r}")
    return Entity(name or covered, start, end, etype)


def _char_entity(text: str, offsets: list[tuple[int, int]], tokens: list[str], start: int, end: int, role: str,
                 etype: str | None, name: str | None) -> Entity:
    if not (0 <= start < end <= len(text)):
        raise _not_found(role, f"character span [{start}, {end}) is out of range for a text of {len(text)} "
                               "characters")
    covered = [i for i, (s, e) in enumerate(offsets) if s < end and start < e]
    if not covered or offsets[covered[0]][0] != start or offsets[covered[-1]][1] != end:
        raise _not_found(role, f"character span [{start}, {end}) ({text[start:end]!r}) does not fall on token "
                               "boundaries")
    first, last = covered[0], covered[-1] + 1
    if name is not None and not entity_tokens_match(tokens[first:last], name):
        raise _not_found(role, f"character span [{start}, {end}) covers {text[start:end]!r}, not {name!r}")
    return Entity(name or text[start:end], first, last, etype)


def _find_entity(name: str, tokens: list[str], offsets: list[tuple[int, int]] | None, role: str,
                 etype: str | None) -> Entity:
    """Locate ``name``: as a token sequence in a string text, as tokens that join to it in a token list."""
    if offsets is not None:
        wanted = tokenize(name)[0]

        def hits(fold: bool) -> list[tuple[int, int]]:
            norm = (lambda ts: [t.lower() for t in ts]) if fold else list
            target, n = norm(wanted), len(wanted)
            return [(i, i + n) for i in range(len(tokens) - n + 1) if norm(tokens[i:i + n]) == target]
    else:
        joined = "".join(name.split())

        def hits(fold: bool) -> list[tuple[int, int]]:
            target = joined.lower() if fold else joined
            found = []
            for i in range(len(tokens)):
                acc = ""
                for j in range(i, len(tokens)):
                    acc += "".join(tokens[j].split())
                    if len(acc) >= len(target):
                        if (acc.lower() if fold else acc) == target:
                            found.append((i, j + 1))
                        break
            return found

    spans = hits(False) or hits(True)
    if not spans:
        candidates = sorted({t for t in tokens if t[:1].isupper()})
        raise _not_found(role, f"{name!r} does not occur in the text; capitalised words there: {candidates}",
                         candidates)
    if len(spans) > 1:
        raise _not_found(role, f"{name!r} occurs {len(spans)} times (token spans {spans}): pass a span", spans)
    return Entity(name, spans[0][0], spans[0][1], etype)


def check_pair_spans(head: Entity, tail: Entity) -> None:
    """Reject a text head that is an image object, and head/tail spans that are equal or cross (nesting is fine)."""
    if head.is_object:
        raise PairInputError("head", "the head must be a text span, not an image object (box)")
    if tail.is_object:
        return
    (hs, he), (ts, te) = head.span, tail.span
    if (hs, he) == (ts, te):
        raise PairInputError("tail", f"the head and the tail are the same span [{hs}, {he}) ({head.name!r}): a "
                                     "relation needs two different mentions")
    nested = (hs <= ts and te <= he) or (ts <= hs and he <= te)
    if hs < te and ts < he and not nested:
        raise PairInputError("tail", f"the head span [{hs}, {he}) and the tail span [{ts}, {te}) partly overlap; "
                                     "spans may nest but not cross")


def pair_to_record(pair: PairInput | Mapping[str, Any], relation: str | None = None,
                   source: str = "") -> RelationRecord:
    """Resolve a pair's text, entities, types and image into a record; raises on bad input (see module doc)."""
    pair = as_pair(pair)
    tokens, offsets, char_text = normalise_text(pair.text)
    head = resolve_entity(pair.head, tokens, offsets, char_text, "head", pair.head_type)
    if head.is_object:
        raise PairInputError("head", "the head must be a text span, not an image object (box)")
    tail = resolve_entity(pair.tail, tokens, offsets, char_text, "tail", pair.tail_type)
    image = pair.image
    image_id = pair.extra.get("image_id")
    if tail.is_object and image is None and not image_id:
        raise PairInputError("tail", "an image-object tail (box) needs an image")
    check_pair_spans(head, tail)
    image_path = None
    if isinstance(image, Path):
        image_id = image_id or str(image)
        image_path = image if image.is_file() else None
    return RelationRecord(tokens, head, tail, relation, image_id, image_path, [], source)


# -- JSONL objects ---------------------------------------------------------------------------------------------------
def _from_json(obj: Any, path: str | Path, line: int, base_dir: Path | None,
               missing_image: MissingImagePolicy | str) -> tuple[PairInput, RelationRecord]:
    if not isinstance(obj, Mapping):
        raise DataFormatError(f"expected a JSON object, got {type(obj).__name__}", path, line)
    policy = MissingImagePolicy("mark" if missing_image == "ignore" else missing_image)
    try:
        if "tokens" in obj:
            normalise_text(obj["tokens"], "tokens")
            text = obj["tokens"]
        elif "text" in obj:
            if not isinstance(obj["text"], str):
                raise PairInputTypeError("text", f"expected a string, got {describe_value(obj['text'])}")
            text = obj["text"]
        else:
            raise PairInputError("text", "missing: give 'text' (a string) or 'tokens' (a list of strings)")
        for key in ("head", "tail"):
            if key not in obj:
                raise PairInputError(key, "missing")
        for key in ("head_type", "tail_type"):
            check_entity_type(obj.get(key), key)
        relation = obj.get("relation")
        if relation is not None and not isinstance(relation, str):
            raise PairInputTypeError("relation", f"must be a string, got {describe_value(relation)}")
        extra: dict[str, Any] = {k: obj[k] for k in ("id", "relation") if obj.get(k) is not None}
        image = obj.get("image")
        image_path = None
        if image is not None:
            if not isinstance(image, str) or not image.strip():
                raise PairInputTypeError("image", f"must be a path string, got {describe_value(image)}")
            candidate = Path(image) if Path(image).is_absolute() or base_dir is None else base_dir / image
            if candidate.is_file():
                image_path = candidate
            elif policy is MissingImagePolicy.ERROR:
                raise PairInputError("image", f"image not found: {candidate}")
            extra["image_id"] = image
        pair = PairInput(text, obj["head"], obj["tail"], image_path, obj.get("head_type"), obj.get("tail_type"), extra)
        record = pair_to_record(pair, relation, f"{path}:{line}")
    except (PairInputError, PairInputTypeError) as e:
        raise DataFormatError(e.reason, path, line, e.field) from None
    return pair, record


def pair_from_json(obj: Any, path: str | Path, line: int, base_dir: Path | None,
                   missing_image: MissingImagePolicy | str = "mark") -> PairInput:
    """The pair of one JSONL object, checked in full; :class:`DataFormatError` otherwise.
    ``tokens`` wins over ``text``; ``image`` is relative to ``base_dir``. A missing image is an error under
    ``missing_image="error"``; under ``"mark"`` (alias ``"ignore"``) the pair has none and ``extra["image_id"]`` keeps
    it."""
    return _from_json(obj, path, line, base_dir, missing_image)[0]


def record_from_json(obj: Any, path: str | Path, line: int, base_dir: Path | None,
                     missing_image: MissingImagePolicy | str = "mark") -> RelationRecord:
    """The record of one JSONL object (as :func:`pair_from_json`, then :func:`pair_to_record`), sourced
    ``path:line``."""
    return _from_json(obj, path, line, base_dir, missing_image)[1]
