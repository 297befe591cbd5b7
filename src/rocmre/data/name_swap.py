"""Entity names the model never saw: a name-replaced test set, and name swapping as a training augmentation.
:func:`name_swapped` replaces, in a seeded copy of a split, head and tail names seen in training by unseen names of
the same entity type (from the label's type signature, or a tagger for negative records). :func:`swap_entity_names`
is the training-time version, drawing from :func:`train_name_pool`."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocmre.data.dataset import RelationDataset
from rocmre.data.record import RelationRecord

#: MNRE label type abbreviations -> rocmre entity types (see rocmre.data.entity_types.ENTITY_TYPES).
TYPE_ABBREVIATIONS: dict[str, str] = {"per": "person", "org": "organization", "loc": "location",
                                      "misc": "miscellaneous"}

#: The seed of the committed name-replaced MNRE test set (benchmarks/mnre.py).
DEFAULT_SEED = 2025

#: Types a name can be swapped for (a tagger's "unknown" or "object" is never swapped).
SWAPPABLE_TYPES = frozenset(TYPE_ABBREVIATIONS.values())

#: Draws tried before giving up on finding a replacement name that is not already in the text.
_MAX_DRAWS = 50

#: ``f(records) -> [(head type, tail type)]`` for records whose label implies no types.
EntityTyper = Callable[[Sequence[RelationRecord]], list[tuple[str, str]]]


def normalise_name(name: str) -> str:
    """The key names are compared by: whitespace-collapsed and case-folded."""
    return " ".join(name.split()).casefold()


def name_style(name: str) -> str:
    """``"tag"`` for Twitter handles and hashtags (``@x``, ``.@x``, ``# x``), else ``"plain"``: replacements keep
    the style, so a person written as a handle gets another handle."""
    stripped = name.lstrip(".-\"'")
    return "tag" if stripped[:1] in ("@", "#") else "plain"


def label_types(relation: str | None, negative_label: str) -> tuple[str, str] | None:
    """(head type, tail type) implied by an MNRE label such as ``/per/loc/place_of_birth``; None when the label
    is the negative label, absent, or has no type signature."""
    if relation is None or relation == negative_label:
        return None
    parts = relation.strip("/").split("/")
    if len(parts) < 3 or parts[0] not in TYPE_ABBREVIATIONS or parts[1] not in TYPE_ABBREVIATIONS:
        return None
    return TYPE_ABBREVIATIONS[parts[0]], TYPE_ABBREVIATIONS[parts[1]]


@dataclass
class NamePool:
    """Replacement names by entity type and style, each name under one type (its most frequent one)."""

    names: dict[str, dict[str, list[str]]]  # type -> style -> sorted names
    name_types: dict[str, str]  # normalised name -> type
    negative_label: str = "None"

    @classmethod
    def from_records(cls, records: Iterable[RelationRecord], negative_label: str,
                     keep: Callable[[str], bool] | None = None) -> NamePool:
        """Names of the records' text entities, typed by their labels' type signatures; ``keep(name)`` filters."""
        votes: dict[str, Counter[str]] = defaultdict(Counter)
        surface: dict[str, str] = {}
        for r in records:
            types = label_types(r.relation, negative_label)
            if types is None:
                continue
            for ent, typ in ((r.head, types[0]), (r.tail, types[1])):
                if ent.is_object or not ent.name.split():
                    continue
                key = normalise_name(ent.name)
                votes[key][typ] += 1
                surface.setdefault(key, " ".join(ent.name.split()))
        names: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        name_types: dict[str, str] = {}
        for key in sorted(votes):
            typ = min(votes[key], key=lambda t: (-votes[key][t], t))  # most votes, then alphabetical
            name_types[key] = typ
            if keep is None or keep(surface[key]):
                names[typ][name_style(surface[key])].append(surface[key])
        return cls({t: {s: sorted(v) for s, v in by.items()} for t, by in names.items()}, name_types, negative_label)

    def sizes(self) -> dict[str, int]:
        """Names per type."""
        return {t: sum(len(v) for v in by.values()) for t, by in sorted(self.names.items())}

    def type_of(self, name: str) -> str | None:
        return self.name_types.get(normalise_name(name))

    def draw(self, typ: str, style: str, rng: random.Random, avoid: set[str]) -> str | None:
        """A random name of ``typ`` (same style when the pool has one) whose normalised form is not in ``avoid``."""
        by_style = self.names.get(typ, {})
        candidates = by_style.get(style) or [n for s in sorted(by_style) for n in by_style[s]]
        if not candidates:
            return None
        for _ in range(_MAX_DRAWS):
            name = candidates[rng.randrange(len(candidates))]
            if normalise_name(name) not in avoid:
                return name
        return None


def train_name_pool(train: RelationDataset, negative_label: str | None = None) -> NamePool:
    """The pool for training-time swapping: the training split's own names (only), typed by their labels."""
    neg = negative_label or (train.labels.negative_label if train.labels is not None else "None")
    return NamePool.from_records(train.records, neg)


class _TrainText:
    """Membership test for names in the training split: as an entity name, or anywhere in a training text."""

    def __init__(self, train: RelationDataset) -> None:
        self.entity_names = {normalise_name(e.name) for r in train.records for e in (r.head, r.tail) if not e.is_object}
        self.text = "\n".join(" " + " ".join(r.tokens).casefold() + " " for r in train.records)

    def __contains__(self, name: str) -> bool:
        key = normalise_name(name)
        return key in self.entity_names or f" {key} " in self.text


def unseen_name_pool(sources: Sequence[RelationDataset], train: RelationDataset,
                     negative_label: str | None = None) -> NamePool:
    """Names of ``sources`` (e.g. the val and test splits) that never occur in the training split, neither as an
    entity name nor as a token sequence of a training text, typed by their labels."""
    neg = negative_label or (train.labels.negative_label if train.labels is not None else "None")
    seen = _TrainText(train)
    return NamePool.from_records([r for d in sources for r in d.records], neg, keep=lambda n: n not in seen)


def _occurrences(tokens: Sequence[str], span: tuple[int, int]) -> list[tuple[int, int]]:
    """Every position of the span's token sequence in ``tokens`` (the span itself included)."""
    words = list(tokens[span[0]:span[1]])
    n = len(words)
    return [(i, i + n) for i in range(len(tokens) - n + 1) if list(tokens[i:i + n]) == words]


def replace_names(record: RelationRecord, head: str | None, tail: str | None,
                  types: tuple[str | None, str | None] | None = None) -> RelationRecord | None:
    """A copy of ``record`` with the head and/or tail name (where not None) replaced at every mention, spans
    recomputed and the change noted in ``source``; None when the two spans overlap (no sound replacement).
    ``types`` (head, tail), when given, are written into both entities' ``type`` (replaced or not)."""
    if head is None and tail is None:
        return record
    done = _replace(record, head, tail, types)
    return done[0] if done is not None else None


def _replace(record: RelationRecord, head: str | None, tail: str | None,
             types: tuple[str | None, str | None] | None) -> tuple[RelationRecord, int] | None:
    """:func:`replace_names`, also returning how many mentions beyond the two entity spans were replaced."""
    text_tail = not record.tail.is_object
    if text_tail:
        (hs, he), (ts, te) = record.head.span, record.tail.span
        if hs < te and ts < he:
            return None
    # intervals to rewrite: (start, end, new tokens, role); the two entities' own spans first
    chosen: list[tuple[int, int, list[str], str]] = [
        (*record.head.span, head.split() if head is not None else list(record.tokens[slice(*record.head.span)]),
         "head")]
    if text_tail:
        chosen.append((*record.tail.span, tail.split() if tail is not None else
                       list(record.tokens[slice(*record.tail.span)]), "tail"))
    extras = []
    for ent, new in ((record.head, head), (record.tail, tail)):
        if new is None or ent.is_object:
            continue
        extras += [(s, e, new.split(), "") for s, e in _occurrences(record.tokens, ent.span) if (s, e) != ent.span]
    for s, e, words, role in sorted(extras):
        if all(e <= cs or ce <= s for cs, ce, _, _ in chosen):
            chosen.append((s, e, words, role))
    tokens: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 0
    for s, e, words, role in sorted(chosen):
        tokens += record.tokens[pos:s]
        start = len(tokens)
        tokens += words
        if role:
            spans[role] = (start, len(tokens))
        pos = e
    tokens += record.tokens[pos:]
    head_type, tail_type = types if types is not None else (None, None)
    new_head = dataclasses.replace(record.head, name=head if head is not None else record.head.name,
                                   start=spans["head"][0], end=spans["head"][1],
                                   type=head_type or record.head.type)
    new_tail = record.tail
    if text_tail:
        new_tail = dataclasses.replace(record.tail, name=tail if tail is not None else record.tail.name,
                                       start=spans["tail"][0], end=spans["tail"][1],
                                       type=tail_type or record.tail.type)
    notes = [f"{role} {old!r} -> {new!r}" for role, old, new in
             (("head", record.head.name, head), ("tail", record.tail.name, tail)) if new is not None]
    mentions = len(chosen) - (2 if text_tail else 1)
    note = "; ".join(notes) + (f"; {mentions} more mention(s)" if mentions else "")
    return dataclasses.replace(record, tokens=tokens, head=new_head, tail=new_tail, crop_paths=list(record.crop_paths),
                               source=f"{record.source} | name swap: {note}"), mentions


def _pick(record: RelationRecord, types: tuple[str | None, str | None], pool: NamePool,
          rng: random.Random) -> tuple[str | None, str | None]:
    """Replacement names for head and tail (None: keep), distinct from each other and from the record's text."""
    avoid = {normalise_name(e.name) for e in (record.head, record.tail) if not e.is_object}
    text = " " + " ".join(record.tokens).casefold() + " "
    chosen: list[str | None] = []
    for ent, typ in zip((record.head, record.tail), types, strict=True):
        if ent.is_object or typ not in SWAPPABLE_TYPES:
            chosen.append(None)
            continue
        for _ in range(_MAX_DRAWS):
            name = pool.draw(typ, name_style(ent.name), rng, avoid)
            if name is None or f" {normalise_name(name)} " not in text:
                break
            avoid.add(normalise_name(name))
            name = None
        if name is not None:
            avoid.add(normalise_name(name))
        chosen.append(name)
    return chosen[0], chosen[1]


def swap_entity_names(record: RelationRecord, rng: random.Random, pool: NamePool, prob: float,
                      types: tuple[str, str] | None = None) -> RelationRecord:
    """Training augmentation: with probability ``prob``, replace the head and tail names by random same-type names
    from ``pool``; the record itself is not changed. Negative records are typed by ``types`` (also written into the new
    entities), else by the pool; an untyped name is kept."""
    if prob <= 0 or rng.random() >= prob:
        return record
    implied = label_types(record.relation, pool.negative_label)
    if implied is None:
        implied = types if types is not None else (pool.type_of(record.head.name),
                                                    None if record.tail.is_object else pool.type_of(record.tail.name))
    head, tail = _pick(record, implied, pool, rng)
    if head is None and tail is None:
        return record
    swapped = replace_names(record, head, tail, types)
    return swapped if swapped is not None else record


@dataclass
class NameSwapStatistics:
    """What :func:`name_swap` did."""

    seed: int
    strict: bool = False  # every relation record was to change, not only those holding a training name
    records: int = 0
    with_train_name: int = 0  # records whose head or tail name occurs in the training split
    changed: int = 0
    changed_negative: int = 0  # changed records with the negative label
    heads_replaced: int = 0
    tails_replaced: int = 0
    extra_mentions_replaced: int = 0
    kept_untyped: int = 0  # records with a training name but no swappable type for either entity
    kept_overlapping: int = 0  # head and tail spans overlap
    kept_no_name: int = 0  # no pool name of the type that is not already in the text
    still_with_train_name: int = 0  # changed records with a kept entity whose name occurs in training
    negative_records_typed_by: str = "training labels"  # how names of negative records got their types
    pool_sizes: dict[str, int] = field(default_factory=dict)
    changed_indices: list[int] = field(default_factory=list)

    def to_dict(self, indices: bool = False) -> dict:
        d = dataclasses.asdict(self)
        if not indices:
            d.pop("changed_indices")
        return d


def name_swap(dataset: RelationDataset, train: RelationDataset, seed: int = DEFAULT_SEED, *,
              pool_sources: Sequence[RelationDataset] | None = None, entity_types: EntityTyper | None = None,
              negative_label: str | None = None, strict: bool = False) -> tuple[RelationDataset, NameSwapStatistics]:
    """The name-replaced copy of ``dataset`` (same order and length) and what was changed; names come from
    ``pool_sources`` (default ``dataset``) and never occur in ``train``. By default the records holding a name seen
    in training change; ``strict=True`` changes every relation record instead (not the negative ones), whatever
    its names and their style (plain names, handles, hashtags): the names a new user's text brings."""
    neg = negative_label or (dataset.labels.negative_label if dataset.labels is not None else
                             train.labels.negative_label if train.labels is not None else "None")
    seen = _TrainText(train)
    pool = unseen_name_pool(pool_sources if pool_sources is not None else [dataset], train, neg)
    train_types = train_name_pool(train, neg)
    stats = NameSwapStatistics(seed, records=len(dataset), pool_sizes=pool.sizes(),
                               negative_records_typed_by="training labels, then the entity tagger"
                               if entity_types is not None else "training labels")
    with_train_name = [i for i, r in enumerate(dataset.records) if any(
        not e.is_object and normalise_name(e.name) in seen.entity_names for e in (r.head, r.tail))]
    stats.strict = strict
    stats.with_train_name = len(with_train_name)
    eligible = ([i for i, r in enumerate(dataset.records) if r.relation not in (neg, None)] if strict
                else with_train_name)
    typed: dict[int, tuple[str | None, str | None]] = {}
    for i in eligible:
        r = dataset.records[i]
        typed[i] = label_types(r.relation, neg) or (
            train_types.type_of(r.head.name), None if r.tail.is_object else train_types.type_of(r.tail.name))
    untyped = [i for i in eligible if None in typed[i]]
    if entity_types is not None and untyped:
        for i, tags in zip(untyped, entity_types([dataset.records[i] for i in untyped]), strict=True):
            typed[i] = (typed[i][0] or tags[0], typed[i][1] or tags[1])
    rng = random.Random(seed)
    out = list(dataset.records)
    for i in eligible:
        r = dataset.records[i]
        types = typed[i]
        if not any(t in SWAPPABLE_TYPES for t in types):
            stats.kept_untyped += 1
            continue
        head, tail = _pick(r, types, pool, rng)
        if head is None and tail is None:
            stats.kept_no_name += 1
            continue
        done = _replace(r, head, tail, None)
        if done is None:
            stats.kept_overlapping += 1
            continue
        out[i], extra = done
        stats.changed += 1
        stats.changed_indices.append(i)
        stats.changed_negative += r.relation == neg
        stats.heads_replaced += head is not None
        stats.tails_replaced += tail is not None
        stats.extra_mentions_replaced += extra
        kept = [e for e, n in ((r.head, head), (r.tail, tail)) if n is None and not e.is_object]
        stats.still_with_train_name += any(normalise_name(e.name) in seen.entity_names for e in kept)
    swapped = RelationDataset(out, dataset.labels, dataset.name, f"{dataset.split}-name-swap", list(dataset.problems))
    return swapped, stats


def name_swapped(dataset: RelationDataset, train: RelationDataset, seed: int = DEFAULT_SEED,
                 **kwargs) -> RelationDataset:
    """The name-replaced copy of ``dataset`` (see :func:`name_swap`, which also returns the statistics)."""
    return name_swap(dataset, train, seed, **kwargs)[0]


def tagger_entity_types(tagger: str = "spacy", cache_dir: str | Path | None = None) -> EntityTyper:
    """An :data:`EntityTyper` using the project's entity tagger through its on-disk type cache (the same types
    the models see, and no tagging at all where the cache already holds the records)."""
    from rocmre.data.entity_types import TypeCache
    from rocmre.paths import default_cache_dir

    cache = TypeCache(tagger, Path(cache_dir) if cache_dir is not None else default_cache_dir())

    def types(records: Sequence[RelationRecord]) -> list[tuple[str, str]]:
        items = [(r.tokens, [r.head.span] + ([] if r.tail.is_object else [r.tail.span])) for r in records]
        tagged = cache.types(items)
        return [(t[0], t[1] if len(t) > 1 else "object") for t in tagged]

    return types


def name_swapped_test(train: RelationDataset, val: RelationDataset, test: RelationDataset, seed: int = DEFAULT_SEED,
                      tagger: str = "spacy", cache_dir: str | Path | None = None, strict: bool = False
                      ) -> tuple[RelationDataset, NameSwapStatistics]:
    """The committed construction of the benchmark's name-replaced test set: replacement names from the val and
    test splits' names that never occur in training, negative records typed by training labels then ``tagger``
    (``"none"``: training labels only); ``strict``: every relation record changed (see :func:`name_swap`)."""
    typer = tagger_entity_types(tagger, cache_dir) if tagger != "none" else None
    return name_swap(test, train, seed, pool_sources=[val, test], entity_types=typer, strict=strict)
