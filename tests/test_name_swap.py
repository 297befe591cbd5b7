"""Name-replaced test sets and training-time name swapping, on synthetic records and on MNRE."""

from __future__ import annotations

import random
from pathlib import Path

from rocmre.data.dataset import LabelSet, RelationDataset
from rocmre.data.name_swap import (
    NamePool,
    label_types,
    name_style,
    name_swap,
    name_swapped,
    name_swapped_test,
    normalise_name,
    replace_names,
    swap_entity_names,
    train_name_pool,
    unseen_name_pool,
)
from rocmre.data.record import Entity, RelationRecord, check_entity_span

LABELS = LabelSet(["None", "/per/loc/place_of_birth", "/per/per/peer", "/per/org/member_of"], "None")


def rec(text: str, head: str, tail: str, relation: str, source: str = "f:1") -> RelationRecord:
    tokens = text.split()

    def ent(name: str) -> Entity:
        words = name.split()
        start = next(i for i in range(len(tokens)) if tokens[i:i + len(words)] == words)
        return Entity(name, start, start + len(words))

    return RelationRecord(tokens, ent(head), ent(tail), relation, source=source)


def ds(records: list[RelationRecord], split: str) -> RelationDataset:
    return RelationDataset(records, LABELS, "synthetic", split)


TRAIN = ds([
    rec("Anna Berg was born in Oslo", "Anna Berg", "Oslo", "/per/loc/place_of_birth"),
    rec("Carl met Anna Berg today", "Carl", "Anna Berg", "/per/per/peer"),
    rec("Dana plays for Rovers FC", "Dana", "Rovers FC", "/per/org/member_of"),
    rec("Carl likes Oslo and the Hidden Name", "Carl", "Oslo", "None"),
], "train")
VAL = ds([rec("Eli Moor was born in Kyoto City", "Eli Moor", "Kyoto City", "/per/loc/place_of_birth")], "val")
TEST = ds([
    rec("Anna Berg ! Anna Berg was born in Oslo", "Anna Berg", "Oslo", "/per/loc/place_of_birth", "t:1"),
    rec("Fay met Gus", "Fay", "Gus", "/per/per/peer", "t:2"),
    rec("Carl visited Oslo", "Carl", "Oslo", "None", "t:3"),
    rec("Hidden Name met Zed", "Hidden Name", "Zed", "/per/per/peer", "t:4"),
    rec("Ivo was born in Lima", "Ivo", "Lima", "/per/loc/place_of_birth", "t:5"),
], "test")


def valid(r: RelationRecord) -> None:
    for e, f in ((r.head, "head"), (r.tail, "tail")):
        check_entity_span(r.tokens, e, path=None, line=None, field_name=f)


def test_label_types_and_styles() -> None:
    assert label_types("/per/loc/place_of_birth", "None") == ("person", "location")
    assert label_types("/misc/misc/part_of", "None") == ("miscellaneous", "miscellaneous")
    assert label_types("/org/org/subsidiary", "None") == ("organization", "organization")
    assert label_types("None", "None") is None
    assert label_types(None, "None") is None
    assert label_types("founded_by", "None") is None
    assert [name_style(n) for n in ("@Titans", ".@Jack_1", "# Bears", "Anna Berg")] == ["tag", "tag", "tag", "plain"]
    assert normalise_name("  Anna   BERG ") == "anna berg"


def test_replace_names_recomputes_spans_and_replaces_every_mention() -> None:
    r = TEST.records[0]
    new = replace_names(r, "Xavier de la Cruz", "Rio")
    assert new is not None
    assert new.tokens == ["Xavier", "de", "la", "Cruz", "!", "Xavier", "de", "la", "Cruz", "was", "born", "in", "Rio"]
    assert (new.head.name, new.head.span) == ("Xavier de la Cruz", (0, 4))  # the first mention is the span
    assert (new.tail.name, new.tail.span) == ("Rio", (12, 13))
    valid(new)
    assert new.relation == r.relation and new.source.startswith("t:1 | name swap: head 'Anna Berg' -> ")
    assert "1 more mention" in new.source
    assert r.tokens[0] == "Anna" and r.head.name == "Anna Berg"  # the original is untouched
    only_tail = replace_names(TEST.records[4], None, "New Delhi")
    assert only_tail is not None and only_tail.text == "Ivo was born in New Delhi" and only_tail.head.name == "Ivo"
    valid(only_tail)
    assert replace_names(r, None, None) is r


def test_overlapping_spans_are_not_replaced() -> None:
    r = RelationRecord(["New", "York", "City"], Entity("New York City", 0, 3), Entity("York", 1, 2), "None")
    assert replace_names(r, "Lima", "Peru") is None


def test_pools_keep_types_and_drop_training_names() -> None:
    pool = unseen_name_pool([VAL, TEST], TRAIN)
    everything = {n for by in pool.names.values() for v in by.values() for n in v}
    # "Hidden Name" occurs in a training text, so it is left out
    assert everything == {"Eli Moor", "Kyoto City", "Fay", "Gus", "Zed", "Ivo", "Lima"}
    assert pool.type_of("Kyoto City") == "location" and pool.type_of("fay") == "person"
    assert pool.sizes() == {"location": 2, "person": 5}
    train_pool = train_name_pool(TRAIN)
    assert train_pool.type_of("Rovers FC") == "organization" and train_pool.type_of("Carl") == "person"
    assert train_pool.draw("location", "plain", random.Random(0), {"oslo"}) is None
    assert train_pool.draw("location", "tag", random.Random(0), set()) == "Oslo"  # falls back to any style


def test_name_swap_changes_records_with_training_names_only() -> None:
    swapped, stats = name_swap(TEST, TRAIN, seed=3, pool_sources=[VAL, TEST])
    assert len(swapped) == len(TEST) and swapped.split == "test-name-swap"
    assert stats.with_train_name == 2  # records 0 and 2 (Anna Berg / Oslo, Carl / Oslo)
    assert stats.changed_indices == [0, 2] and stats.changed == 2 and stats.changed_negative == 1
    train_names = {"anna berg", "oslo", "carl", "dana", "rovers fc"}
    pool = unseen_name_pool([VAL, TEST], TRAIN)
    for i in stats.changed_indices:
        new, old = swapped.records[i], TEST.records[i]
        valid(new)
        assert new.relation == old.relation
        assert normalise_name(new.head.name) not in train_names and normalise_name(new.tail.name) not in train_names
        assert pool.type_of(new.head.name) == "person" and pool.type_of(new.tail.name) == "location"
        assert new.head.name not in old.text and "name swap" in new.source
    for i in (1, 3, 4):
        assert swapped.records[i] is TEST.records[i]
    assert stats.heads_replaced == stats.tails_replaced == 2 and stats.extra_mentions_replaced == 1
    again, _ = name_swap(TEST, TRAIN, seed=3, pool_sources=[VAL, TEST])
    assert [r.tokens for r in again] == [r.tokens for r in swapped]
    assert name_swapped(TEST, TRAIN, seed=3, pool_sources=[VAL, TEST]).records[0].tokens == swapped.records[0].tokens


def test_negative_records_use_the_tagger_for_names_training_labels_do_not_type() -> None:
    test = ds([rec("Carl saw Wobble here", "Carl", "Wobble", "None")], "test")
    kept, stats = name_swap(test, TRAIN, pool_sources=[VAL, TEST])
    assert stats.changed == 1 and kept.records[0].tail.name == "Wobble"  # Wobble: no type, kept
    assert stats.negative_records_typed_by == "training labels"
    calls = []

    def tagger(records):
        calls.append(len(records))
        return [("unknown", "location") for _ in records]

    tagged, stats = name_swap(test, TRAIN, pool_sources=[VAL, TEST], entity_types=tagger)
    assert calls == [1] and tagged.records[0].tail.name in {"Kyoto City", "Lima"}
    assert tagged.records[0].head.name != "Carl"  # the training label type wins over the tagger's "unknown"
    none_typed, stats = name_swap(test, TRAIN, pool_sources=[VAL, TEST], entity_types=lambda rs: [("x", "y")] * len(rs))
    assert stats.changed == 1
    untyped = ds([rec("Zorro saw Wobble", "Zorro", "Wobble", "None")], "test")
    _, stats = name_swap(untyped, ds([*TRAIN.records, rec("Zorro ran", "Zorro", "ran", "None")], "train"))
    assert stats.with_train_name == 1 and stats.kept_untyped == 1 and stats.changed == 0
    assert "changed_indices" not in stats.to_dict() and stats.to_dict(indices=True)["changed_indices"] == []


def test_swap_entity_names_for_training() -> None:
    pool = train_name_pool(TRAIN)
    r = TRAIN.records[2]  # Dana / Rovers FC, member_of
    assert swap_entity_names(r, random.Random(0), pool, 0.0) is r
    new = swap_entity_names(r, random.Random(0), pool, 1.0)
    assert new is not r and new.relation == r.relation
    assert pool.type_of(new.head.name) == "person" and new.head.name != "Dana"
    assert new.tail.name == "Rovers FC"  # the only organisation in the pool: no other name to take
    valid(new)
    assert r.head.name == "Dana"
    typed = swap_entity_names(TRAIN.records[3], random.Random(1), pool, 1.0, types=("person", "location"))
    assert typed.head.type == "person" and typed.head.name != "Carl" and typed.tail.type == "location"
    kept_tail = swap_entity_names(r, random.Random(0), pool, 1.0, types=("person", "organization"))
    assert kept_tail.tail.name == "Rovers FC" and kept_tail.tail.type == "organization"  # typed although kept
    untyped = RelationRecord(["Zorro", "saw", "Wobble"], Entity("Zorro", 0, 1), Entity("Wobble", 2, 3), "None")
    assert swap_entity_names(untyped, random.Random(0), pool, 1.0) is untyped
    rng = random.Random(5)
    changed = sum(swap_entity_names(r, rng, pool, 0.5) is not r for _ in range(400))
    assert 150 < changed < 250


def test_pool_draw_avoids_and_is_seeded() -> None:
    pool = NamePool({"person": {"plain": ["A", "B", "C"]}}, {"a": "person", "b": "person", "c": "person"})
    assert pool.draw("person", "plain", random.Random(0), {"a", "b"}) == "C"
    assert pool.draw("person", "plain", random.Random(0), {"a", "b", "c"}) is None
    assert pool.draw("location", "plain", random.Random(0), set()) is None
    draws = [pool.draw("person", "plain", random.Random(9), set()) for _ in range(3)]
    assert len(set(draws)) == 1


def test_mnre_name_swapped_test(mnre_root: Path) -> None:
    from rocmre.data import load_split

    train, val, test = (load_split(mnre_root, s) for s in ("train", "val", "test"))
    swapped, stats = name_swapped_test(train, val, test, tagger="none")
    assert len(swapped) == len(test) == stats.records
    assert stats.changed > 600 and stats.changed_negative > 0 and stats.kept_no_name == 0
    train_names = {normalise_name(e.name) for r in train for e in (r.head, r.tail)}
    for i in stats.changed_indices:
        new = swapped.records[i]
        valid(new)
        assert new.relation == test.records[i].relation
        replaced = [e for e, old in ((new.head, test.records[i].head), (new.tail, test.records[i].tail))
                    if e.name != old.name]
        assert replaced and all(normalise_name(e.name) not in train_names for e in replaced)
    unchanged = set(range(len(test))) - set(stats.changed_indices)
    assert all(swapped.records[i] is test.records[i] for i in unchanged)
    again, _ = name_swapped_test(train, val, test, tagger="none")
    assert [r.tokens for r in again] == [r.tokens for r in swapped]


def test_strict_name_swap_changes_every_relation_record() -> None:
    swapped, stats = name_swap(TEST, TRAIN, seed=3, pool_sources=[VAL, TEST], strict=True)
    assert stats.strict and stats.with_train_name == 2
    assert stats.changed_indices == [0, 1, 3, 4] and stats.changed_negative == 0  # not the None record 2
    assert swapped.records[2] is TEST.records[2]
    for i in stats.changed_indices:
        valid(swapped.records[i])
        assert swapped.records[i].relation == TEST.records[i].relation
        assert swapped.records[i].text != TEST.records[i].text
