"""Readers for public Wikidata relation corpora (text only): FewRel, Wiki80 and Re-DocRED.
They live in ``$ROCMRE_DATA/relations`` (see its README). Each record's relation is its Wikidata property id (shared
across corpora), the negative label is ``None``; Re-DocRED also yields seeded ``None`` pairs from sentences with no
label. Data entity types map onto :data:`rocmre.data.entity_types.ENTITY_TYPES`. Errors name file, line or key, and
field."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from rocmre.data.dataset import LabelSet, Problem, RelationDataset
from rocmre.data.entity_types import SPACY_TO_TYPE
from rocmre.data.jsonl import read_records
from rocmre.data.mnre import OnError
from rocmre.data.record import DataFormatError, Entity, RelationRecord

NEGATIVE_LABEL = "None"
CORPORA = ("fewrel", "wiki80", "redocred")
#: corpus -> (folder under relations/, split name -> file name), splits in reading order
CORPUS_FILES: dict[str, tuple[str, dict[str, str]]] = {
    "fewrel": ("fewrel", {"val_wiki": "val_wiki.json", "val_nyt": "val_nyt.json"}),
    "wiki80": ("wiki80", {"dev": "dev.txt", "train_0.1": "train_0.1.txt", "train_0.01": "train_0.01.txt"}),
    "redocred": ("re-docred", {"dev": "dev_revised.json", "test": "test_revised.json"}),
}
PID2NAME = "fewrel/pid2name.json"
#: Re-DocRED's entity types -> rocmre's
DOCRED_TYPES = {"PER": "person", "ORG": "organization", "LOC": "location", "TIME": "miscellaneous",
                "NUM": "miscellaneous", "MISC": "miscellaneous"}
DEFAULT_NONE_RATIO = 0.5
_PID = re.compile(r"^P\d+$")
_Key = tuple[tuple[str, ...], tuple[int, int], tuple[int, int], str | None]


# -- shared helpers ---------------------------------------------------------------------------------------------
def _fail(message: str, path: Path, field: str, line: int | None = None) -> DataFormatError:
    return DataFormatError(message, path, line, field)


def _tokens(value: Any, path: Path, field: str, line: int | None = None) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail("expected a non-empty list of tokens", path, field, line)
    if not all(isinstance(t, str) for t in value):
        raise _fail("every token must be a string", path, field, line)
    return value


def clean_tokens(tokens: Sequence[str], spans: Sequence[tuple[int, int]]) -> tuple[list[str], list[tuple[int, int]]]:
    """Drop whitespace-only tokens, moving the ``[start, end)`` spans with them (a span may become empty)."""
    new_index = []
    kept: list[str] = []
    for t in tokens:
        new_index.append(len(kept))
        if t.strip():
            kept.append(t)
    new_index.append(len(kept))
    return kept, [(new_index[s], new_index[e]) for s, e in spans]


def _pair(tokens: list[str], spans: list[tuple[int, int]], names: tuple[str | None, str | None],
          types: tuple[str | None, str | None], where: tuple[Path, str, int | None, str]
          ) -> tuple[list[str], Entity, Entity]:
    """Checked, cleaned tokens and the two entities. ``names`` (when given) must equal the span's text, ignoring
    case and whitespace; the entity's name is the span's own text. ``where``: (file, field prefix, line, the
    span's field under an entity)."""
    path, prefix, line, span_field = where
    for (s, e), role in zip(spans, ("h", "t"), strict=True):
        if not 0 <= s < e <= len(tokens):
            raise _fail(f"span [{s}, {e}) is out of range for {len(tokens)} tokens", path,
                        f"{prefix}{role}{span_field}", line)
    (hs, he), (ts, te) = spans
    if hs < te and ts < he:
        raise _fail(f"head [{hs}, {he}) and tail [{ts}, {te}) overlap", path, f"{prefix}t{span_field}", line)
    for (s, e), name, role in zip(spans, names, ("h", "t"), strict=True):
        if name is not None and "".join(tokens[s:e]).lower() != "".join(name.split()).lower():
            raise _fail(f"span [{s}, {e}) covers {' '.join(tokens[s:e])!r}, not the entity name {name!r}", path,
                        f"{prefix}{role}{span_field}", line)
    kept, (h, t) = clean_tokens(tokens, spans)
    for (s, e), role in zip((h, t), ("h", "t"), strict=True):
        if s == e:
            raise _fail("the span holds only whitespace tokens", path, f"{prefix}{role}{span_field}", line)
    return kept, *(Entity(" ".join(kept[s:e]), s, e, ty) for (s, e), ty in zip((h, t), types, strict=True))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None


def _dataset(records: list[RelationRecord], problems: list[Problem], name: str, split: str,
             path: Path) -> RelationDataset:
    return RelationDataset(records, label_set(records), name=name, split=split, problems=problems, source=str(path))


def label_set(records: Iterable[RelationRecord]) -> LabelSet:
    """``None`` first, then the property ids in numeric order."""
    pids = {r.relation for r in records if r.relation not in (None, NEGATIVE_LABEL)}
    return LabelSet([NEGATIVE_LABEL, *sorted(pids, key=_pid_number)], NEGATIVE_LABEL)


def _pid_number(pid: str) -> tuple[int, str]:
    return (int(pid[1:]), pid) if _PID.match(pid) else (1 << 30, pid)


# -- pid2name ---------------------------------------------------------------------------------------------------
def read_pid2name(path: str | Path) -> dict[str, tuple[str, str]]:
    """FewRel's ``pid2name.json``: property id -> (Wikidata name, Wikidata description)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataFormatError("expected a non-empty {property id: [name, description]} object", path)
    out: dict[str, tuple[str, str]] = {}
    for pid, value in data.items():
        if not _PID.match(pid):
            raise _fail(f"{pid!r} is not a Wikidata property id (P followed by digits)", path, pid)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            raise _fail(f"expected [name, description] strings, got {value!r}", path, pid)
        out[pid] = (value[0], value[1])
    return out


def name_to_pid(pid2name: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Wikidata name -> property id, for the names that belong to one property only."""
    owners: dict[str, list[str]] = defaultdict(list)
    for pid, (name, _) in pid2name.items():
        owners[name].append(pid)
    return {name: pids[0] for name, pids in owners.items() if len(pids) == 1}


# -- FewRel -----------------------------------------------------------------------------------------------------
def _fewrel_span(ent: Any, path: Path, field: str) -> tuple[str, tuple[int, int]]:
    if not (isinstance(ent, list) and len(ent) == 3 and isinstance(ent[0], str) and isinstance(ent[2], list)
            and ent[2]):
        raise _fail("expected [name, Wikidata id, [[token index, ...], ...]]", path, field)
    first = ent[2][0]
    if not (isinstance(first, list) and first and all(isinstance(i, int) and not isinstance(i, bool) for i in first)):
        raise _fail(f"expected a non-empty list of token indices, got {first!r}", path, f"{field}[2][0]")
    if first != list(range(first[0], first[0] + len(first))):
        raise _fail(f"token indices {first} are not contiguous", path, f"{field}[2][0]")
    return ent[0], (first[0], first[-1] + 1)


def _fewrel_record(obj: Any, pid: str, path: Path, field: str) -> RelationRecord:
    if not isinstance(obj, dict):
        raise _fail(f"expected an object, got {type(obj).__name__}", path, field)
    for key in ("tokens", "h", "t"):
        if key not in obj:
            raise _fail("missing", path, f"{field}.{key}")
    tokens = _tokens(obj["tokens"], path, f"{field}.tokens")
    (hn, hs), (tn, ts) = (_fewrel_span(obj[k], path, f"{field}.{k}") for k in ("h", "t"))
    kept, head, tail = _pair(tokens, [hs, ts], (hn, tn), (None, None), (path, f"{field}.", None, "[2][0]"))
    return RelationRecord(kept, head, tail, pid, source=f"{path}:{field}")


def read_fewrel(path: str | Path, *, on_error: OnError = "raise") -> RelationDataset:
    """One FewRel file (``val_wiki.json``, ``val_nyt.json``); a record's source is ``file:P177[3]``."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataFormatError("expected a non-empty {property id: [instances]} object", path)
    records: list[RelationRecord] = []
    problems: list[Problem] = []
    for pid, instances in data.items():
        try:
            if not _PID.match(pid):
                raise _fail(f"{pid!r} is not a Wikidata property id (P followed by digits)", path, pid)
            if not isinstance(instances, list):
                raise _fail("expected a list of instances", path, pid)
        except DataFormatError as e:
            if on_error == "raise":
                raise
            problems.append(Problem(f"{path}:{pid}", str(e)))
            continue
        for i, obj in enumerate(instances):
            try:
                records.append(_fewrel_record(obj, pid, path, f"{pid}[{i}]"))
            except DataFormatError as e:
                if on_error == "raise":
                    raise
                problems.append(Problem(f"{path}:{pid}[{i}]", str(e)))
    return _dataset(records, problems, "fewrel", path.stem, path)


# -- Wiki80 -----------------------------------------------------------------------------------------------------
def _wiki80_type(label: Any, path: Path, field: str, line: int) -> str:
    if not isinstance(label, str):
        raise _fail(f"expected a string, got {type(label).__name__}", path, field, line)
    return "unknown" if label == "UNK" else SPACY_TO_TYPE.get(label, "miscellaneous")


def _wiki80_record(obj: Mapping[str, Any], pid_of: Mapping[str, str], path: Path, line: int,
                   entity_types: bool) -> RelationRecord:
    tokens = _tokens(obj.get("token"), path, "token", line) if "token" in obj else None
    if tokens is None:
        raise _fail("missing", path, "token", line)
    spans, names, types = [], [], []
    for key in ("h", "t"):
        ent = obj.get(key)
        if not isinstance(ent, dict):
            raise _fail("missing" if ent is None else "expected an object", path, key, line)
        pos = ent.get("pos")
        if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) and not isinstance(p, bool)
                                                                 for p in pos)):
            raise _fail(f"expected [start, end] integers, got {pos!r}", path, f"{key}.pos", line)
        if not isinstance(ent.get("name"), str):
            raise _fail("missing or not a string", path, f"{key}.name", line)
        spans.append((pos[0], pos[1]))
        names.append(ent["name"])
        types.append(_wiki80_type(ent.get("type", "UNK"), path, f"{key}.type", line) if entity_types else None)
    relation = obj.get("relation")
    if not isinstance(relation, str):
        raise _fail("missing or not a string", path, "relation", line)
    if relation not in pid_of:
        raise _fail(f"relation {relation!r} is not the name of one Wikidata property in {PID2NAME}", path,
                    "relation", line)
    kept, head, tail = _pair(tokens, spans, (names[0], names[1]), (types[0], types[1]), (path, "", line, ".pos"))
    return RelationRecord(kept, head, tail, pid_of[relation], source=f"{path}:{line}")


def read_wiki80(path: str | Path, pid_of: Mapping[str, str], *, on_error: OnError = "raise",
                entity_types: bool = True) -> RelationDataset:
    """One Wiki80 file (JSON lines); ``pid_of`` maps Wikidata names to property ids (:func:`name_to_pid`)."""
    path = Path(path)
    records, problems = read_records(path, lambda obj, lineno: _wiki80_record(obj, pid_of, path, lineno, entity_types),
                                     on_error)
    return _dataset(records, problems, "wiki80", path.stem, path)


# -- Re-DocRED --------------------------------------------------------------------------------------------------
class _Doc:
    """One checked DocRED document: sentences, per entity the first mention in each sentence, labels."""

    def __init__(self, doc: Any, i: int, path: Path, entity_types: bool) -> None:
        self.where = f"[{i}]"
        self.path = path
        if not isinstance(doc, dict):
            raise self.fail(f"expected a document object, got {type(doc).__name__}", "")
        self.title = doc.get("title", "")
        sents = doc.get("sents")
        if not isinstance(sents, list) or not sents:
            raise self.fail("expected a non-empty list of sentences", ".sents")
        self.sents = [_tokens(s, path, f"{self.where}.sents[{j}]") for j, s in enumerate(sents)]
        vertex_set = doc.get("vertexSet")
        if not isinstance(vertex_set, list):
            raise self.fail("expected a list of entities", ".vertexSet")
        #: entity -> sentence -> (span, type) of its first mention there
        self.mentions = [self._entity(e, k, entity_types) for k, e in enumerate(vertex_set)]
        labels = doc.get("labels", [])
        if not isinstance(labels, list):
            raise self.fail("expected a list of labels", ".labels")
        self.labels = [self._label(lab, j) for j, lab in enumerate(labels)]

    def fail(self, message: str, field: str) -> DataFormatError:
        title = f" ({self.title!r})" if isinstance(self.title, str) and self.title else ""
        return _fail(f"document {self.where[1:-1]}{title}: {message}", self.path, f"{self.where}{field}")

    def _entity(self, mentions: Any, k: int, entity_types: bool) -> dict[int, tuple[tuple[int, int], str | None]]:
        if not isinstance(mentions, list) or not mentions:
            raise self.fail("expected a non-empty list of mentions", f".vertexSet[{k}]")
        out: dict[int, tuple[tuple[int, int], str | None]] = {}
        for m_i, m in enumerate(mentions):
            field = f".vertexSet[{k}][{m_i}]"
            if not isinstance(m, dict):
                raise self.fail("expected a mention object", field)
            sid, pos = m.get("sent_id"), m.get("pos")
            if not isinstance(sid, int) or isinstance(sid, bool) or not 0 <= sid < len(self.sents):
                raise self.fail(f"sentence {sid!r} is not one of the {len(self.sents)} sentences", f"{field}.sent_id")
            if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos)
                    and 0 <= pos[0] < pos[1] <= len(self.sents[sid])):
                raise self.fail(f"span {pos!r} is not [start, end) within sentence {sid} "
                                f"({len(self.sents[sid])} tokens)", f"{field}.pos")
            etype = m.get("type")
            if etype not in DOCRED_TYPES:
                raise self.fail(f"unknown entity type {etype!r}; expected one of {sorted(DOCRED_TYPES)}",
                                f"{field}.type")
            if sid not in out or tuple(pos) < out[sid][0]:
                out[sid] = ((pos[0], pos[1]), DOCRED_TYPES[etype] if entity_types else None)
        return out

    def _label(self, lab: Any, j: int) -> tuple[int, int, str, list[int]]:
        field = f".labels[{j}]"
        if not isinstance(lab, dict):
            raise self.fail("expected a label object", field)
        for key in ("h", "t"):
            v = lab.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < len(self.mentions):
                raise self.fail(f"entity {v!r} is not one of the {len(self.mentions)} entities", f"{field}.{key}")
        r = lab.get("r")
        if not isinstance(r, str) or not _PID.match(r):
            raise self.fail(f"relation {r!r} is not a Wikidata property id", f"{field}.r")
        evidence = lab.get("evidence", [])
        return lab["h"], lab["t"], r, [e for e in evidence if isinstance(e, int)] if isinstance(evidence, list) else []

    def shared(self, h: int, t: int) -> list[int]:
        """Sentences where both entities are mentioned, their first mentions not overlapping."""
        out = []
        for sid in sorted(self.mentions[h].keys() & self.mentions[t].keys()):
            (hs, he), (ts, te) = self.mentions[h][sid][0], self.mentions[t][sid][0]
            if he <= ts or te <= hs:
                out.append(sid)
        return out

    def record(self, h: int, t: int, sid: int, relation: str, source: str) -> RelationRecord:
        (hspan, htype), (tspan, ttype) = self.mentions[h][sid], self.mentions[t][sid]
        kept, head, tail = _pair(self.sents[sid], [hspan, tspan], (None, None), (htype, ttype),
                                 (self.path, f"{self.where}.sents[{sid}].", None, ""))
        return RelationRecord(kept, head, tail, relation, source=source)


_Candidate = tuple[_Doc, int, int, int, str]


def _docred_pairs(doc: _Doc, path: Path, i: int) -> tuple[list[RelationRecord], list[_Candidate]]:
    """(labelled records, candidate ``None`` pairs as (document, head, tail, sentence, source)) of one document."""
    labelled: list[RelationRecord] = []
    linked = {(h, t) for h, t, _, _ in doc.labels} | {(t, h) for h, t, _, _ in doc.labels}
    for j, (h, t, r, evidence) in enumerate(doc.labels):
        shared = doc.shared(h, t)
        if shared:
            sid = next((s for s in shared if s in evidence), shared[0])
            labelled.append(doc.record(h, t, sid, r, f"{path}:doc{i}.labels[{j}]"))
    candidates: list[_Candidate] = []
    for h in range(len(doc.mentions)):
        for t in range(len(doc.mentions)):
            if h != t and (h, t) not in linked:
                shared = doc.shared(h, t)
                if shared:
                    candidates.append((doc, h, t, shared[0], f"{path}:doc{i}.pair[{h},{t}]"))
    return labelled, candidates


def read_redocred(path: str | Path, *, none_ratio: float = DEFAULT_NONE_RATIO, seed: int = 0,
                  on_error: OnError = "raise", entity_types: bool = True) -> RelationDataset:
    """One Re-DocRED file as sentence-level records: the labelled pairs, then ``None`` pairs (at most
    ``none_ratio`` times as many, sampled with ``seed``), each in document order."""
    path = Path(path)
    if none_ratio < 0:
        raise ValueError(f"none_ratio must be >= 0, got {none_ratio}")
    docs = _load_json(path)
    if not isinstance(docs, list):
        raise DataFormatError(f"expected a list of documents, got {type(docs).__name__}", path)
    labelled: list[RelationRecord] = []
    candidates: list[_Candidate] = []
    problems: list[Problem] = []
    for i, raw in enumerate(docs):
        try:
            pos, neg = _docred_pairs(_Doc(raw, i, path, entity_types), path, i)
        except DataFormatError as e:
            if on_error == "raise":
                raise
            problems.append(Problem(f"{path}:doc{i}", str(e)))
            continue
        labelled += pos
        candidates += neg
    k = min(len(candidates), round(none_ratio * len(labelled)))
    chosen = sorted(random.Random(f"{seed}:{path.name}").sample(range(len(candidates)), k))
    negatives = [candidates[j][0].record(*candidates[j][1:4], NEGATIVE_LABEL, candidates[j][4]) for j in chosen]
    return _dataset(labelled + negatives, problems, "redocred", path.stem, path)


# -- corpora ----------------------------------------------------------------------------------------------------
def relations_root(root: str | Path | None = None) -> Path:
    """The ``relations/`` folder: ``root`` itself, or ``root/relations`` (default root: the data folder)."""
    from rocmre.paths import resolve_data_path

    base = resolve_data_path(root) if root is None else Path(root)
    for cand in (base, base / "relations"):
        if (cand / PID2NAME).is_file():
            return cand
    raise FileNotFoundError(f"no relation corpora under {base} (looked for {PID2NAME} there and in relations/); "
                            "see the README of the shared data's relations/ folder")


def detect_relation_format(path: Path) -> str | None:
    """``relations`` (the folder of all three), ``fewrel``, ``wiki80``, ``redocred`` or None for another dataset."""
    if not path.is_dir():
        return None
    if (path / PID2NAME).is_file():
        return "relations"
    for corpus, (_, files) in CORPUS_FILES.items():
        if all((path / f).is_file() for f in files.values()):
            return corpus
    return None


def corpus_splits(corpus: str) -> list[str]:
    """The split names of a corpus (its files, in reading order)."""
    try:
        return list(CORPUS_FILES[corpus][1])
    except KeyError:
        raise ValueError(f"unknown relation corpus {corpus!r}; expected one of {', '.join(CORPORA)}") from None


def _corpus_folder(path: Path, corpus: str) -> Path:
    """``path`` is the corpus folder itself or the relations folder above it."""
    folder, files = CORPUS_FILES[corpus]
    if any((path / f).is_file() for f in files.values()):
        return path
    return path / folder


def read_relation_corpus(path: str | Path, corpus: str, splits: Sequence[str] | None = None, *,
                         none_ratio: float = DEFAULT_NONE_RATIO, seed: int = 0, on_error: OnError = "raise",
                         entity_types: bool = True, pid2name: str | Path | None = None
                         ) -> dict[str, RelationDataset]:
    """Read the ``splits`` (default: all) of one corpus; Wiki80 files are deduplicated in reading order and need
    ``pid2name``. A missing split file raises FileNotFoundError."""
    path = Path(path)
    names = corpus_splits(corpus)
    splits = list(names if splits is None else splits)
    unknown = [s for s in splits if s not in names]
    if unknown:
        raise ValueError(f"unknown {corpus} split(s) {unknown}; expected some of {', '.join(names)}")
    folder = _corpus_folder(path, corpus)
    pid_of: dict[str, str] = {}
    if corpus == "wiki80":
        p2n = Path(pid2name) if pid2name is not None else folder.parent / PID2NAME
        pid_of = name_to_pid(read_pid2name(p2n))
    out: dict[str, RelationDataset] = {}
    seen: set[_Key] = set()
    for split in [s for s in names if s in splits or corpus == "wiki80"]:
        file = folder / CORPUS_FILES[corpus][1][split]
        if not file.is_file():
            if split not in splits:
                continue
            raise FileNotFoundError(f"no {corpus} {split} file: {file} does not exist")
        if corpus == "fewrel":
            ds = read_fewrel(file, on_error=on_error)
        elif corpus == "wiki80":
            ds = dedupe(read_wiki80(file, pid_of, on_error=on_error, entity_types=entity_types), seen)
        else:
            ds = read_redocred(file, none_ratio=none_ratio, seed=seed, on_error=on_error, entity_types=entity_types)
        if split in splits:
            out[split] = ds
    return {s: out[s] for s in splits}


def record_key(r: RelationRecord) -> _Key:
    """What makes two records duplicates: the same tokens, spans and relation."""
    return tuple(r.tokens), r.head.span, r.tail.span, r.relation


def dedupe(ds: RelationDataset, seen: set[_Key]) -> RelationDataset:
    """The records of ``ds`` whose key is not in ``seen`` (and not repeated), adding their keys to ``seen``."""
    kept = []
    for r in ds.records:
        key = record_key(r)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return RelationDataset(kept, ds.labels, ds.name, ds.split, ds.problems, ds.source)


# -- MNRE counterparts ------------------------------------------------------------------------------------------
def mnre_counterparts() -> dict[str, list[str]]:
    """MNRE relation -> the Wikidata property ids that stand for it (``resources/relations/mnre_wikidata.json``,
    reviewed by hand; an empty list: no counterpart)."""
    f = resources.files("rocmre") / "resources" / "relations" / "mnre_wikidata.json"
    data = json.loads(f.read_text(encoding="utf-8"))
    return {label: list(entry["wikidata"]) for label, entry in data["relations"].items()}


def expand_exclusions(names: Iterable[str]) -> set[str]:
    """Property ids to leave out: each name is a property id (``P26``) or an MNRE relation, which stands for its
    Wikidata counterparts. Anything else raises ValueError."""
    mapping = mnre_counterparts()
    out: set[str] = set()
    for name in names:
        if _PID.match(name):
            out.add(name)
        elif name in mapping:
            out.update(mapping[name])
        else:
            raise ValueError(f"cannot exclude {name!r}: neither a Wikidata property id (P26) nor an MNRE relation "
                             f"({', '.join(sorted(mapping))})")
    return out


# -- pre-training splits ----------------------------------------------------------------------------------------
def _indices_by_relation(records: list[RelationRecord]) -> list[list[int]]:
    """Each relation's record indices (in input order), relations in property-id order: the order seeded draws
    per relation go in."""
    by_rel: dict[str | None, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_rel[r.relation].append(i)
    return [by_rel[rel] for rel in sorted(by_rel, key=lambda x: _pid_number(str(x)))]


def _stratified_val(records: list[RelationRecord], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, val indices): per relation, ``fraction`` of its records (rounded; at least one stays in
    train) drawn with ``seed``; both lists in input order."""
    rng = random.Random(seed)
    val: set[int] = set()
    for idx in _indices_by_relation(records):
        k = min(len(idx) - 1, round(fraction * len(idx)))
        val.update(rng.sample(idx, k) if k > 0 else [])
    return [i for i in range(len(records)) if i not in val], sorted(val)


def one_label_per_pair(records: list[RelationRecord]) -> list[RelationRecord]:
    """One record per (tokens, head, tail): a pair that holds several relations keeps the one with the fewest records
    (ties: the lower property id), so that a contrastive loss never pushes a pair away from a relation it holds."""
    counts: dict[str | None, int] = defaultdict(int)
    for r in records:
        counts[r.relation] += 1
    best: dict[tuple, int] = {}
    for i, r in enumerate(records):
        key = (tuple(r.tokens), r.head.span, r.tail.span)
        j = best.get(key)
        rank = (counts[r.relation], _pid_number(str(r.relation)))
        if j is None or rank < (counts[records[j].relation], _pid_number(str(records[j].relation))):
            best[key] = i
    kept = set(best.values())
    return [r for i, r in enumerate(records) if i in kept]


def cap_per_relation(records: list[RelationRecord], cap: int, seed: int) -> list[RelationRecord]:
    """At most ``cap`` records of each relation (the negative label too), drawn with ``seed``; input order kept."""
    rng = random.Random(seed)
    keep: set[int] = set()
    for idx in _indices_by_relation(records):
        keep.update(idx if len(idx) <= cap else rng.sample(idx, cap))
    return [r for i, r in enumerate(records) if i in keep]


def load_relation_corpora(root: str | Path | None = None, corpora: Sequence[str] = CORPORA,
                          exclude_relations: Iterable[str] = (), *, none_ratio: float = DEFAULT_NONE_RATIO,
                          val_fraction: float = 0.05, seed: int = 0, entity_types: bool = True,
                          on_error: OnError = "raise", max_per_relation: int | None = None
                          ) -> dict[str, RelationDataset]:
    """Every file of ``corpora`` as one pre-training set ``{"train", "val"}``: deduplicated across corpora, one
    relation per pair (:func:`one_label_per_pair`), ``exclude_relations`` dropped (see :func:`expand_exclusions`),
    ``val`` a stratified ``val_fraction`` per relation drawn with ``seed``; with ``max_per_relation``, the training
    split keeps at most that many records of each relation, so that no relation dominates a batch. Both splits share
    one label set (``None`` first)."""
    base = relations_root(root)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    excluded = expand_exclusions(exclude_relations)
    records: list[RelationRecord] = []
    problems: list[Problem] = []
    seen: set[_Key] = set()
    for corpus in corpora:
        for ds in read_relation_corpus(base, corpus, none_ratio=none_ratio, seed=seed, on_error=on_error,
                                       entity_types=entity_types).values():
            kept = dedupe(ds.filter(lambda r: r.relation not in excluded), seen)
            records += kept.records
            problems += ds.problems
    records = one_label_per_pair(records)
    if not records:
        raise DataFormatError(f"no records left in {', '.join(corpora)} after excluding {sorted(excluded)}", base)
    labels = label_set(records)
    train, val = _stratified_val(records, val_fraction, seed)
    train_records = [records[i] for i in train]
    if max_per_relation is not None:
        train_records = cap_per_relation(train_records, max_per_relation, seed)
    return {split: RelationDataset(recs, labels, name="relations", split=split,
                                   problems=list(problems) if split == "train" else [], source=str(base))
            for split, recs in (("train", train_records), ("val", [records[i] for i in val]))}
