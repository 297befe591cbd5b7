"""Descriptions of Wikidata relations (``P26``) from FewRel's ``pid2name.json``: ``"{name}: {description}"``
(editors' notes cleaned) and, with ``templates=True``, ``"{head} {name} {tail}."``. :data:`EXTRA_PROPERTIES` covers
the Re-DocRED properties missing from that file; ``None`` gets hand-written texts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rocmre.data.relation_corpora import NEGATIVE_LABEL, PID2NAME, read_pid2name, relations_root
from rocmre.descriptions.store import Description, RelationDescriptions

#: Wikidata name and description of the Re-DocRED properties missing from FewRel's pid2name.json
EXTRA_PROPERTIES: dict[str, tuple[str, str]] = {
    "P569": ("date of birth", "date on which the subject was born"),
    "P570": ("date of death", "date on which the subject died"),
    "P571": ("inception", "time when an entity begins to exist"),
    "P576": ("dissolved, abolished or demolished date", "point in time at which the subject ceased to exist"),
    "P577": ("publication date", "date or point in time when a work was first published or released"),
    "P580": ("start time", "time an entity begins to exist or a statement starts being valid"),
    "P582": ("end time", "time an entity ceases to exist or a statement stops being valid"),
    "P585": ("point in time", "time and date something took place, existed or a statement was true"),
    "P1198": ("unemployment rate", "portion of a workforce population that is not employed"),
}
EXTRA_PROVENANCE = {"method": "hand", "author": "rocmre maintainers", "date": "2026-12-07", "edited": False,
                    "note": "the property's Wikidata name and description, written by hand (not in pid2name.json)"}
TEMPLATE_PROVENANCE = {"method": "template", "author": "rocmre maintainers", "date": "2026-12-07",
                       "note": "Wikidata statement read as subject-property-value"}
NEGATIVE_TEXTS = ("The sentence mentions both entities but states no relation between them.",
                  "No relation is expressed between the two entities.")
NEGATIVE_TEMPLATES = ("{head} and {tail} are both mentioned in this sentence.",)

_NOTE_STARTS = ("use ", "see ", "do not ", "don't ", "should not ", "deprecated", "inverse ", "for ", "it's not ",
                "not to be confused", "also use ", "expected values", "if ", "preferably ", "in case of ")
#: editors' notes: [...], parentheses naming properties or items or saying "use ...", "- do not use ..."
_NOTE = re.compile(r"\s*\[[^\]]*\]|\s*\((?:[^()]*\b[PQ]\d+\b[^()]*|use [^()]*)\)|\s+-\s+(?:do not|don't) use[^;.]*")
#: a comma clause naming a property (", inverse of P710 or P1923")
_REF_CLAUSE = re.compile(r",[^,;.()]*\bP\d+\b[^;.()]*")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(?:\s+|$)")


def _is_note(clause: str) -> bool:
    return clause.lower().startswith(_NOTE_STARTS) or bool(re.search(r"\bP\d+\b|\b[Uu]se\b", clause))


def clean_description(text: str) -> str:
    """A Wikidata description without editors' usage notes: ``[...]`` notes and parentheses naming properties or
    items (``(P749)``, ``(use ...)``) removed, and sentences or ``;`` clauses of usage advice (``Use P276 ...``,
    ``see ...``, ``for ...``) dropped. Falls back to the first sentence if nothing else is left."""
    stripped, previous = text, None
    while stripped != previous:  # nested parentheses: inner first
        previous, stripped = stripped, _NOTE.sub("", stripped)
    stripped = _REF_CLAUSE.sub("", stripped).strip()
    sentences = [s.strip() for s in _SENTENCE_END.split(stripped) if s.strip()]
    kept = []
    for sentence in sentences:
        clauses = [c.strip() for c in sentence.split(";") if c.strip() and not _is_note(c.strip())]
        if clauses:
            kept.append("; ".join(clauses))
    return ". ".join(kept or sentences[:1]).strip(" ,")


def property_descriptions(pid: str, name: str, description: str, *, templates: bool = True,
                          provenance: Mapping[str, Any] | None = None) -> list[Description]:
    """The descriptions of one property (see the module docstring)."""
    cleaned = clean_description(description) if description and description != "None" else ""
    prov = dict(provenance or {"method": "wikidata", "source": PID2NAME, "property": pid})
    if cleaned != description:
        prov["original"] = description
    out = [Description(f"{name}: {cleaned}" if cleaned else name, prov)]
    if templates:
        out.append(Description(f"{{head}} {name} {{tail}}.", dict(TEMPLATE_PROVENANCE, property=pid)))
    return out


def wikidata_descriptions(relations: Iterable[str], pid2name: Mapping[str, tuple[str, str]], *,
                          templates: bool = True, name: str = "wikidata") -> RelationDescriptions:
    """Descriptions for ``relations`` (property ids, and the negative label ``None`` if listed). A property in
    neither ``pid2name`` nor :data:`EXTRA_PROPERTIES` raises KeyError."""
    out = RelationDescriptions(name=name, negative_label=NEGATIVE_LABEL)
    hand = {"method": "hand", "author": "rocmre maintainers", "date": "2026-12-07", "edited": False}
    rels = list(relations)
    missing = [r for r in rels if r != NEGATIVE_LABEL and r not in pid2name and r not in EXTRA_PROPERTIES]
    if missing:
        raise KeyError(f"no Wikidata name for {missing}: not in {PID2NAME} nor in EXTRA_PROPERTIES")
    out.add(NEGATIVE_LABEL, [Description(t, dict(hand)) for t in
                             (*NEGATIVE_TEXTS, *(NEGATIVE_TEMPLATES if templates else ()))])
    for pid in rels:
        if pid == NEGATIVE_LABEL:
            continue
        if pid in pid2name and pid2name[pid][0] != "None":
            texts = property_descriptions(pid, *pid2name[pid], templates=templates)
        else:
            texts = property_descriptions(pid, *EXTRA_PROPERTIES[pid], templates=templates,
                                          provenance=dict(EXTRA_PROVENANCE, property=pid))
        out.add(pid, texts)
    return out


def load_wikidata_descriptions(relations: Iterable[str], root: str | Path | None = None, *,
                               templates: bool = True) -> RelationDescriptions:
    """:func:`wikidata_descriptions` with ``pid2name.json`` read from the relation corpora's folder."""
    return wikidata_descriptions(relations, read_pid2name(relations_root(root) / PID2NAME), templates=templates)
