"""One-line prediction on raw input: ``RelationExtractor.from_pretrained(DIR).predict(text, head, tail, image)``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.data.record import Entity, RelationRecord, entity_tokens_match
from rocmre.descriptions.store import Description, RelationDescriptions
from rocmre.modeling.model import RelationModel
from rocmre.modeling.runtime import ModelRuntime

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

TextInput = str | Sequence[str]
EntityInput = str | tuple[int, int] | Sequence[int] | Mapping[str, Any]
ImageInput = str | Path | bytes | Image.Image | None


class EntityNotFoundError(ValueError):
    """The head or tail cannot be located in the text, or is ambiguous; ``candidates`` lists the options."""

    def __init__(self, message: str, candidates: list[Any] | None = None) -> None:
        self.candidates = candidates or []
        super().__init__(message)


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words and punctuation, as MNRE tokenises tweets, with character offsets."""
    tokens, offsets = [], []
    for m in TOKEN_PATTERN.finditer(text):
        tokens.append(m.group())
        offsets.append(m.span())
    return tokens, offsets


@dataclass
class RelationCandidate:
    relation: str
    score: float
    description: str | None = None


@dataclass
class Prediction:
    """The retrieved relation, its score, the description that matched, and the top-k alternatives."""

    relation: str
    score: float
    description: str | None
    top_k: list[RelationCandidate]
    head: dict[str, Any]
    tail: dict[str, Any]
    has_image: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairInput:
    """One input to :meth:`RelationExtractor.predict_batch`."""

    text: TextInput
    head: EntityInput
    tail: EntityInput
    image: ImageInput = None
    head_type: str | None = None
    tail_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RelationExtractor:
    """A trained model with everything needed to run it on new sentences and images."""

    def __init__(self, model: RelationModel, cache_dir: str | Path | None = None) -> None:
        self.model = model.eval()
        self.runtime = ModelRuntime(model, Path(cache_dir) if cache_dir else None)

    @classmethod
    def from_pretrained(cls, directory: str | Path, descriptions: str | Path | RelationDescriptions | None = None,
                        device: str = "cpu", cache_dir: str | Path | None = None) -> RelationExtractor:
        """Load a model folder; ``descriptions`` (a file or set) replaces its relation set at load time."""
        if descriptions is not None and not isinstance(descriptions, RelationDescriptions):
            descriptions = RelationDescriptions.load(descriptions)
        return cls(RelationModel.from_pretrained(directory, descriptions, device), cache_dir)

    def save_pretrained(self, directory: str | Path) -> None:
        from rocmre.inference.model_card import write_model_card

        self.model.save_pretrained(directory)
        write_model_card(directory)

    # -- relations ----------------------------------------------------------------------------
    @property
    def relations(self) -> list[str]:
        return self.model.relation_labels

    def describe_relations(self) -> dict[str, list[str]]:
        """Each relation's descriptions (ROC) or an empty list (classifier)."""
        d = self.model.descriptions
        return {r: (d.texts(r) if r in d else []) for r in self.relations}

    def add_relations(self, relations: Mapping[str, Sequence[str] | Mapping[str, Any]],
                      provenance: Mapping[str, Any] | None = None) -> list[str]:
        """Add relations (or descriptions to existing ones) without retraining: ``{name: [descriptions...]}`` or
        ``{name: {"descriptions": [...], "head_types": [...], "tail_types": [...]}}``. Returns the new names."""
        current = self.model.descriptions
        updated = RelationDescriptions(dict(current.relations), name=current.name,
                                       negative_label=current.negative_label)
        updated.relations = {k: type(v)(list(v.descriptions), list(v.head_types), list(v.tail_types))
                             for k, v in current.relations.items()}
        added = []
        for name, spec in relations.items():
            if isinstance(spec, Mapping):
                texts, head_types, tail_types = spec.get("descriptions", []), spec.get("head_types", ()), \
                    spec.get("tail_types", ())
            else:
                texts, head_types, tail_types = spec, (), ()
            if isinstance(texts, str):
                texts = [texts]
            prov = dict(provenance or {"method": "hand", "added_at_inference": True})
            updated.add(name, [Description(str(t), dict(prov)) for t in texts], head_types=head_types,
                        tail_types=tail_types)
            if name not in current:
                added.append(name)
        self.model.set_descriptions(updated)
        return added

    def remove_relations(self, names: Iterable[str]) -> None:
        """Remove relations from retrieval (the negative label cannot be removed)."""
        names = list(names)
        if self.model.config.negative_label in names:
            raise ValueError(f"the negative label {self.model.config.negative_label!r} cannot be removed")
        unknown = [n for n in names if n not in self.relations]
        if unknown:
            raise KeyError(f"unknown relations {unknown}; known: {self.relations}")
        keep = [r for r in self.relations if r not in names]
        self.model.set_descriptions(self.model.descriptions.subset(keep))

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, text: TextInput, head: EntityInput, tail: EntityInput, image: ImageInput = None,
                top_k: int = 3, head_type: str | None = None, tail_type: str | None = None) -> Prediction:
        """The relation from ``head`` to ``tail``.

        ``text`` is a string or a token list. ``head``/``tail`` are an entity string (must occur exactly once),
        a ``(start, end)`` span (characters for a string, tokens for a token list), or a dict with ``name`` and
        ``start``/``end`` (token) or ``char_start``/``char_end``; a tail may instead be an image object
        ``{"name": ..., "box": [cx, cy, w, h]}``. ``image`` is a path, bytes, a PIL image or None. Entity
        types are tagged automatically unless given.
        """
        return next(self.predict_batch([PairInput(text, head, tail, image, head_type, tail_type)], top_k=top_k))

    def predict_batch(self, items: Iterable[PairInput | Mapping[str, Any]], batch_size: int = 32, top_k: int = 3,
                      show_progress: bool = False, total: int | None = None) -> Iterator[Prediction]:
        """Predictions for many inputs, in order; batches internally and streams its results."""
        buffer: list[PairInput] = []
        bar = tqdm(total=total, desc="predicting", disable=not show_progress, unit="pair")
        for item in items:
            buffer.append(item if isinstance(item, PairInput) else PairInput(**item))
            if len(buffer) >= batch_size:
                yield from self._predict_chunk(buffer, top_k)
                bar.update(len(buffer))
                buffer = []
        if buffer:
            yield from self._predict_chunk(buffer, top_k)
            bar.update(len(buffer))
        bar.close()

    def to_record(self, item: PairInput) -> RelationRecord:
        """Resolve an input's text, entities and types into a record (raises on bad input)."""
        if isinstance(item.text, str):
            tokens, offsets = tokenize(item.text)
            char_text = item.text
        else:
            tokens, offsets, char_text = [str(t) for t in item.text], None, None
        if not tokens:
            raise ValueError("the text is empty")
        head = resolve_entity(item.head, tokens, offsets, char_text, "head", item.head_type)
        tail = resolve_entity(item.tail, tokens, offsets, char_text, "tail", item.tail_type)
        if head.is_object:
            raise ValueError("the head must be a text span")
        return RelationRecord(tokens, head, tail)

    def _predict_chunk(self, items: list[PairInput], top_k: int) -> list[Prediction]:
        records = [self.to_record(it) for it in items]
        feats = self.runtime.featurize(records, with_labels=False)
        for f, it in zip(feats, items, strict=True):
            f.image = it.image if it.image is None or isinstance(it.image, bytes | Image.Image) else Path(it.image)
        scored = self.runtime.score(feats, batch_size=len(feats))
        labels = self.relations
        descs = self.describe_relations()
        out = []
        for i, (rec, f) in enumerate(zip(records, feats, strict=True)):
            row = scored.scores[i]
            order = row.argsort()[::-1][: max(1, top_k)]
            cands = []
            for j in order:
                text = None
                if scored.best_description is not None and descs[labels[j]]:
                    text = descs[labels[j]][int(scored.best_description[i, j])]
                cands.append(RelationCandidate(labels[j], float(row[j]), text))
            best = cands[0]
            out.append(Prediction(best.relation, best.score, best.description, cands,
                                  _entity_info(rec.head, rec.tokens, f.head_type),
                                  _entity_info(rec.tail, rec.tokens, f.tail_type), f.image is not None))
        return out


def _entity_info(e: Entity, tokens: list[str], etype: str) -> dict[str, Any]:
    info: dict[str, Any] = {"name": e.name, "type": etype}
    if e.is_object:
        info["box"] = list(e.box or ())
    else:
        info["start"], info["end"] = e.span
    return info


def resolve_entity(spec: EntityInput, tokens: list[str], offsets: list[tuple[int, int]] | None,
                   text: str | None, role: str, etype: str | None) -> Entity:
    """An :class:`Entity` from an entity string, a span or a dict (see :meth:`RelationExtractor.predict`)."""
    if etype is not None and etype not in ENTITY_TYPES:
        raise ValueError(f"{role}_type {etype!r} is not one of {ENTITY_TYPES}")
    if isinstance(spec, Mapping):
        if "box" in spec:
            from rocmre.data.more import parse_box

            box = parse_box(spec["box"], Path(f"<{role}>"), None, "box")
            return Entity(str(spec.get("name", "object")), box=box, type=etype or spec.get("type") or "object")
        etype = etype or spec.get("type")
        if "char_start" in spec:
            return resolve_entity((int(spec["char_start"]), int(spec["char_end"])), tokens, offsets, text, role, etype)
        if "start" in spec:
            start, end = int(spec["start"]), int(spec["end"])
            return _token_entity(tokens, start, end, role, etype, spec.get("name"))
        if "name" in spec:
            return resolve_entity(str(spec["name"]), tokens, offsets, text, role, etype)
        raise ValueError(f"{role}: give 'name', 'start'/'end', 'char_start'/'char_end' or 'box'")
    if isinstance(spec, str):
        return _find_entity(spec, tokens, offsets, text, role, etype)
    if isinstance(spec, Sequence) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        start, end = int(spec[0]), int(spec[1])
        if offsets is None:
            return _token_entity(tokens, start, end, role, etype, None)
        covered = [i for i, (s, e) in enumerate(offsets) if s < end and start < e]
        if not covered or offsets[covered[0]][0] != start or offsets[covered[-1]][1] != end:
            raise EntityNotFoundError(f"{role}: character span [{start}, {end}) does not fall on token boundaries")
        return Entity(text[start:end] if text else " ".join(tokens[covered[0]:covered[-1] + 1]),
                      covered[0], covered[-1] + 1, etype)
    raise TypeError(f"{role}: unsupported entity specification {spec!r}")


def _token_entity(tokens: list[str], start: int, end: int, role: str, etype: str | None, name: str | None) -> Entity:
    if not (0 <= start < end <= len(tokens)):
        raise EntityNotFoundError(f"{role}: token span [{start}, {end}) is out of range for {len(tokens)} tokens")
    covered = " ".join(tokens[start:end])
    if name is not None and not entity_tokens_match(tokens[start:end], name):
        raise EntityNotFoundError(f"{role}: token span [{start}, {end}) covers {covered!r}, not {name!r}")
    return Entity(name or covered, start, end, etype)


def _find_entity(name: str, tokens: list[str], offsets: list[tuple[int, int]] | None, text: str | None,
                 role: str, etype: str | None) -> Entity:
    wanted = tokenize(name)[0] if offsets is not None else name.split()
    if not wanted:
        raise EntityNotFoundError(f"{role}: empty entity string")
    hits = [i for i in range(len(tokens) - len(wanted) + 1) if tokens[i:i + len(wanted)] == wanted]
    if not hits:
        lower = [t.lower() for t in wanted]
        hits = [i for i in range(len(tokens) - len(wanted) + 1)
                if [t.lower() for t in tokens[i:i + len(wanted)]] == lower]
    if not hits:
        candidates = sorted({t for t in tokens if t[:1].isupper()})
        raise EntityNotFoundError(f"{role} {name!r} does not occur in the text; capitalised words there: "
                                  f"{candidates}", candidates)
    if len(hits) > 1:
        spans = [(i, i + len(wanted)) for i in hits]
        raise EntityNotFoundError(f"{role} {name!r} occurs {len(hits)} times (token spans {spans}): pass a span",
                                  spans)
    i = hits[0]
    return Entity(name, i, i + len(wanted), etype)
