"""Relation descriptions stored as data: texts, type signatures, examples and provenance per relation.

File format (JSON, ``"format": "rocmre-descriptions/1"``)::

    {"format": "rocmre-descriptions/1", "name": "mnre", "negative_label": "None",
     "relations": {"/per/org/member_of": {
        "head_types": ["person"], "tail_types": ["organization"],
        "descriptions": [{"text": "The person is a member of the organization.",
                          "provenance": {"method": "hand", "date": "2026-11-27", "edited": false}}]}}}

Types come from :data:`rocmre.data.entity_types.ENTITY_TYPES` (empty: any). A description may be a
``{head}``/``{tail}`` template; optional per relation: ``examples`` (pairs in the input format of ``rocmre
predict``), ``score_offset`` and ``none_margin`` (see docs/new-relations.md).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.data.inputs import PairInput, PairInputError, as_pair
from rocmre.data.record import DataFormatError

FORMAT = "rocmre-descriptions/1"
#: the placeholders a description template may use
PLACEHOLDERS = ("head", "tail")
#: the keys an example may have (a pair as ``rocmre predict`` reads it; ``tokens`` is a token-list ``text``)
EXAMPLE_KEYS = ("text", "tokens", "head", "tail", "image", "head_type", "tail_type", "id")
_BRACED = re.compile(r"\{([^{}]*)\}")


def is_template(text: str) -> bool:
    """Whether a description names the pair's entities (``{head}`` or ``{tail}``)."""
    return "{head}" in text or "{tail}" in text


def check_template(text: str) -> None:
    """``ValueError`` unless every brace in ``text`` is one of the placeholders ``{head}`` / ``{tail}``."""
    bad = [m.group(0) for m in _BRACED.finditer(text) if m.group(1) not in PLACEHOLDERS]
    if bad:
        raise ValueError(f"unknown placeholder {bad[0]}: a description template may use only {{head}} and {{tail}}")
    if "{" in _BRACED.sub("", text) or "}" in _BRACED.sub("", text):
        raise ValueError("unbalanced brace: a description template may use only the placeholders {head} and {tail}")


def fill_template(text: str, head: str, tail: str) -> str:
    """A template with its placeholders replaced by the pair's head and tail mentions."""
    return text.replace("{head}", head).replace("{tail}", tail)


#: the numbers a relation may carry besides its texts (see the module docstring), each 0 unless set
RELATION_NUMBERS = ("score_offset", "none_margin")


def checked_number(value: Any, what: str = "score_offset") -> float:
    """One of a relation's :data:`RELATION_NUMBERS` as a float; anything but a finite number raises (``what``
    names it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return float(value)


def example_to_pair(example: Mapping[str, Any]) -> PairInput:
    """A stored example as a :class:`~rocmre.data.inputs.PairInput` (``tokens`` wins over ``text``, as in JSONL
    files); ``PairInputError`` for unknown keys or missing fields."""
    unknown = sorted(str(k) for k in example if k not in EXAMPLE_KEYS)
    if unknown:
        raise PairInputError(None, f"unknown field(s) {unknown} in an example; accepted: {', '.join(EXAMPLE_KEYS)}")
    fields = {k: v for k, v in example.items() if k not in ("tokens", "id")}
    if "tokens" in example:
        fields["text"] = example["tokens"]
    return as_pair(fields)


@dataclass
class Description:
    text: str
    provenance: dict[str, Any] = field(default_factory=lambda: {"method": "hand"})


@dataclass
class RelationEntry:
    descriptions: list[Description]
    head_types: list[str] = field(default_factory=list)
    tail_types: list[str] = field(default_factory=list)
    #: labelled pairs (JSON objects in ``rocmre predict``'s input format) whose mean pair vector is a prototype
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: added to the relation's score before the decision rule's other steps (see the module docstring)
    score_offset: float = 0.0
    #: the extra margin over the negative label the relation must clear to be the answer (see the module docstring)
    none_margin: float = 0.0

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.descriptions]

    def numbers(self) -> dict[str, float]:
        """The relation's :data:`RELATION_NUMBERS` that are set (not 0), as stored in a descriptions file."""
        return {key: getattr(self, key) for key in RELATION_NUMBERS if getattr(self, key)}


class RelationDescriptions:
    """An ordered mapping relation name -> descriptions and type signature."""

    def __init__(self, relations: Mapping[str, RelationEntry] | None = None, *, name: str = "",
                 negative_label: str | None = None) -> None:
        self.relations: dict[str, RelationEntry] = dict(relations or {})
        self.name = name
        self.negative_label = negative_label
        #: bumped by :meth:`add` and :meth:`remove` (edit a set through them: what is derived from it is kept
        #: per revision, see :meth:`labels_with_examples`)
        self.revision = 0
        self._with_examples: tuple[tuple[int, int], list[str]] | None = None

    # -- access -------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.relations)

    def __contains__(self, label: object) -> bool:
        return label in self.relations

    def __len__(self) -> int:
        return len(self.relations)

    def texts(self, label: str) -> list[str]:
        return self.relations[label].texts

    def labels_with_examples(self) -> list[str]:
        """The relations that have labelled examples, in order (kept per :attr:`revision`: a scan of ten thousand
        relations on every prediction batch costs more than the batch's retrieval)."""
        key = (self.revision, len(self.relations))
        if self._with_examples is None or self._with_examples[0] != key:
            self._with_examples = (key, [label for label, entry in self.relations.items() if entry.examples])
        return list(self._with_examples[1])

    def numbers(self, key: str, labels: Iterable[str]) -> list[float]:
        """Each label's ``score_offset`` or ``none_margin`` (``key``; 0 for a label without an entry)."""
        return [getattr(self.relations[lab], key) if lab in self.relations else 0.0 for lab in labels]

    def set_number(self, key: str, label: str, value: float) -> None:
        """Set one relation's ``score_offset`` or ``none_margin`` (``key``) to a finite number."""
        if key not in RELATION_NUMBERS:
            raise ValueError(f"a relation's numbers are {RELATION_NUMBERS}, not {key!r}")
        if label not in self.relations:
            raise KeyError(f"unknown relation {label!r}; known: {self.labels}")
        setattr(self.relations[label], key, checked_number(value, f"relation {label!r}: {key}"))
        self.revision += 1

    def subset(self, labels: Iterable[str]) -> RelationDescriptions:
        """A copy holding only ``labels`` (in that order); unknown labels raise KeyError."""
        labels = list(labels)
        missing = [lab for lab in labels if lab not in self.relations]
        if missing:
            raise KeyError(f"no descriptions for {missing}")
        return RelationDescriptions({lab: self.relations[lab] for lab in labels}, name=self.name,
                                    negative_label=self.negative_label)

    # -- editing ------------------------------------------------------------------------------
    def add(self, label: str, texts: Iterable[str | Description], *, head_types: Iterable[str] = (),
            tail_types: Iterable[str] = (), provenance: Mapping[str, Any] | None = None,
            examples: Iterable[Mapping[str, Any]] = ()) -> None:
        """Add a relation, or append descriptions (and examples) to an existing one.
        ``examples`` are stored as given (JSON objects; :meth:`RelationExtractor.add_relations` checks them)."""
        descs = [t if isinstance(t, Description) else Description(str(t), dict(provenance or {"method": "hand"}))
                 for t in texts]
        descs = [d for d in descs if d.text.strip()]
        examples = [dict(e) for e in examples]
        if not descs and (label not in self.relations or not examples):
            raise ValueError(f"relation {label!r} needs at least one non-empty description")
        for t in (*head_types, *tail_types):
            if t not in ENTITY_TYPES:
                raise ValueError(f"unknown entity type {t!r}; expected one of {ENTITY_TYPES}")
        self.revision += 1
        if label in self.relations:
            self.relations[label].descriptions.extend(descs)
            self.relations[label].examples.extend(examples)
        else:
            self.relations[label] = RelationEntry(descs, list(head_types), list(tail_types), examples)

    def remove(self, label: str) -> None:
        if label not in self.relations:
            raise KeyError(f"unknown relation {label!r}; known: {self.labels}")
        self.revision += 1
        del self.relations[label]

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "negative_label": self.negative_label,
            "relations": {
                label: {
                    "head_types": e.head_types,
                    "tail_types": e.tail_types,
                    "descriptions": [{"text": d.text, "provenance": d.provenance} for d in e.descriptions],
                } | ({"examples": e.examples} if e.examples else {}) | e.numbers()
                for label, e in self.relations.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> RelationDescriptions:
        if data.get("format") != FORMAT:
            raise DataFormatError(f"expected format {FORMAT!r}, got {data.get('format')!r}", source, None, "format")
        rels = data.get("relations")
        if not isinstance(rels, Mapping) or not rels:
            raise DataFormatError("must be a non-empty object of relations", source, None, "relations")
        out = cls(name=str(data.get("name", "")), negative_label=data.get("negative_label"))
        for label, entry in rels.items():
            where = f"relations.{label}"
            if not isinstance(entry, Mapping):
                raise DataFormatError("must be an object", source, None, where)
            raw = entry.get("descriptions")
            if not isinstance(raw, list) or not raw:
                raise DataFormatError("needs a non-empty list of descriptions", source, None, f"{where}.descriptions")
            descs = []
            for i, d in enumerate(raw):
                if isinstance(d, str):
                    d = {"text": d}
                if not isinstance(d, Mapping) or not str(d.get("text", "")).strip():
                    raise DataFormatError("each description needs a non-empty 'text'", source, None,
                                          f"{where}.descriptions[{i}]")
                if is_template(str(d["text"])):
                    try:
                        check_template(str(d["text"]))
                    except ValueError as e:
                        raise DataFormatError(str(e), source, None, f"{where}.descriptions[{i}]") from None
                descs.append(Description(str(d["text"]).strip(), dict(d.get("provenance") or {"method": "hand"})))
            for key in ("head_types", "tail_types"):
                for t in entry.get(key, []) or []:
                    if t not in ENTITY_TYPES:
                        raise DataFormatError(f"unknown entity type {t!r}; expected one of {ENTITY_TYPES}",
                                              source, None, f"{where}.{key}")
            examples = entry.get("examples", []) or []
            if not isinstance(examples, list):
                raise DataFormatError("must be a list of example objects", source, None, f"{where}.examples")
            for i, ex in enumerate(examples):
                if not isinstance(ex, Mapping):
                    raise DataFormatError("an example is an object with text (or tokens), head and tail", source,
                                          None, f"{where}.examples[{i}]")
            numbers = {}
            for key in RELATION_NUMBERS:
                try:
                    numbers[key] = checked_number(entry.get(key, 0.0), key)
                except (TypeError, ValueError) as e:
                    raise DataFormatError(str(e), source, None, f"{where}.{key}") from None
            out.relations[label] = RelationEntry(descs, list(entry.get("head_types", []) or []),
                                                 list(entry.get("tail_types", []) or []),
                                                 [dict(ex) for ex in examples], **numbers)
        if out.negative_label is not None and out.negative_label not in out.relations:
            raise DataFormatError(f"negative label {out.negative_label!r} has no descriptions", source, None,
                                  "negative_label")
        return out

    @classmethod
    def load(cls, path: str | Path) -> RelationDescriptions:
        """Load a descriptions file, or a built-in set by name (``"mnre"``, ``"more"``)."""
        p = Path(path)
        if not p.exists() and str(path) in builtin_names():
            return load_builtin(str(path))
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"descriptions file not found: {p} (built-in sets: {builtin_names()})") from None
        except json.JSONDecodeError as e:
            raise DataFormatError(f"not valid JSON: {e.msg}", p, e.lineno, None) from None
        return cls.from_dict(data, str(p))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def builtin_names() -> list[str]:
    root = resources.files("rocmre") / "resources" / "descriptions"
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


def load_builtin(name: str) -> RelationDescriptions:
    """The description set shipped with rocmre for a benchmark (``mnre``, ``more``)."""
    f = resources.files("rocmre") / "resources" / "descriptions" / f"{name}.json"
    if not f.is_file():
        raise FileNotFoundError(f"no built-in descriptions named {name!r}; available: {builtin_names()}")
    return RelationDescriptions.from_dict(json.loads(f.read_text(encoding="utf-8")), f"<builtin {name}>")
