"""Readers of the public Wikidata relation corpora (FewRel, Wiki80, Re-DocRED), their descriptions and stats,
on small hand-written fixtures (tests/fixtures/relations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rocmre.data.record import DataFormatError
from rocmre.data.relation_corpora import (
    clean_tokens,
    expand_exclusions,
    load_relation_corpora,
    mnre_counterparts,
    read_fewrel,
    read_redocred,
    read_relation_corpus,
    read_wiki80,
)
from rocmre.descriptions.store import RelationDescriptions, is_template
from rocmre.descriptions.wikidata import EXTRA_PROPERTIES, clean_description, load_wikidata_descriptions

ROOT = Path(__file__).parent / "fixtures" / "relations"
BAD = ROOT / "bad"
PID_OF = {"spouse": "P26"}


def spans(record) -> tuple[str, str, str | None]:
    return " ".join(record.tokens[slice(*record.head.span)]), " ".join(record.tokens[slice(*record.tail.span)]), \
        record.relation


def test_clean_tokens_moves_spans():
    assert clean_tokens(["a", " ", "b", "\n ", "c"], [(0, 1), (2, 5)]) == (["a", "b", "c"], [(0, 1), (1, 3)])


def test_fewrel_first_mentions_whitespace_and_names():
    ds = read_fewrel(ROOT / "fewrel" / "val_wiki.json")
    assert [spans(r) for r in ds] == [("Ada Lovelace", "William King", "P26"), ("Marie Curie", "Pierre Curie", "P26"),
                                      ("Victor Hugo", "Paris", "P19")]
    curie = ds[1]
    assert "\u00a0" not in curie.tokens and curie.tail.span == (5, 7) and curie.tail.name == "Pierre Curie"
    assert ds[2].tail.span == (2, 3)  # the first of Paris's two mentions
    assert ds[0].source.endswith("val_wiki.json:P26[0]") and ds[0].head.type is None and not ds[0].has_image
    assert ds.labels.labels == ["None", "P19", "P26"] and ds.labels.negative_label == "None"


@pytest.mark.parametrize("name, field, words", [
    ("fewrel_span.json", "P26[1].t[2][0]", "out of range for 2 tokens"),
    ("fewrel_gap.json", "P26[0].h[2][0]", "token indices [0, 2] are not contiguous"),
    ("fewrel_missing.json", "P26[0].t", "missing"),
    ("fewrel_key.json", "spouse", "not a Wikidata property id"),
])
def test_fewrel_errors_name_file_and_field(name, field, words):
    with pytest.raises(DataFormatError) as e:
        read_fewrel(BAD / name)
    assert e.value.path == str(BAD / name) and e.value.field == field and words in str(e.value)


def test_wiki80_dedupes_across_files_and_maps_types():
    splits = read_relation_corpus(ROOT, "wiki80")
    assert {k: len(v) for k, v in splits.items()} == {"dev": 4, "train_0.1": 1, "train_0.01": 1}
    dev = splits["dev"]
    assert [r.relation for r in dev] == ["P26", "P26", "P131", "P17"]
    gdansk, toulouse = dev[2], dev[3]
    assert gdansk.tokens == ["Gdańsk", "is", "in", "Pomerania", "."] and gdansk.tail.span == (3, 4)
    assert (gdansk.head.type, gdansk.tail.type) == ("location", "unknown")  # GPE, UNK
    assert toulouse.tail.type == "miscellaneous" and dev[0].head.name == "Ada Lovelace"  # DATE; cased from tokens
    assert spans(splits["train_0.1"][0]) == ("Pomerania", "Gdańsk", "P150")  # its copy of Toulouse was dropped
    # a split read alone is deduplicated the same way
    assert len(read_relation_corpus(ROOT / "wiki80", "wiki80", ["train_0.1"])["train_0.1"]) == 1
    assert read_relation_corpus(ROOT, "wiki80", entity_types=False)["dev"][2].head.type is None


def test_wiki80_errors_name_line_and_field():
    path = BAD / "wiki80.txt"
    ds = read_wiki80(path, PID_OF, on_error="skip")
    assert [spans(r) for r in ds] == [("A", "b", "P26")]
    where = [(p.source, p.message) for p in ds.problems]
    assert [s for s, _ in where] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    expected = ["field 't.pos': span [1, 5) is out of range for 2 tokens", "invalid JSON",
                "field 'relation': relation 'employer' is not the name of one Wikidata property",
                "field 'h.pos': span [0, 1) covers 'A', not the entity name 'x'", "field 't': missing"]
    for (_, message), words in zip(where, expected, strict=True):
        assert words in message
    with pytest.raises(DataFormatError, match=r"wiki80\.txt:2, field 't\.pos'"):
        read_wiki80(path, PID_OF)


def test_redocred_sentence_pairs_and_natural_none():
    ds = read_redocred(ROOT / "re-docred" / "dev_revised.json")
    labelled = [spans(r) for r in ds if r.relation != "None"]
    # P131 Lyon -> Auvergne-Rhône-Alpes shares no sentence: left out; the two labels of Bocuse -> 1926 both kept
    assert labelled == [("Lyon", "France", "P17"), ("Auvergne - Rhône - Alpes", "France", "P17"),
                        ("France", "Auvergne - Rhône - Alpes", "P150"), ("Paul Bocuse", "Lyon", "P19"),
                        ("Paul Bocuse", "1926", "P569"), ("Paul Bocuse", "1926", "P585")]
    assert ds[3].head.span == (0, 2) and ds[3].tail.span == (5, 6) and ds[3].tokens[0] == "Paul"  # Lyon in sent 2
    assert (ds[3].head.type, ds[4].tail.type) == ("person", "miscellaneous")
    # pairs with a label in either direction are never None; only Lyon/1926 is left, both ways
    assert [spans(r) for r in ds if r.relation == "None"] == [("Lyon", "1926", "None"), ("1926", "Lyon", "None")]
    assert ds[0].source.endswith("dev_revised.json:doc0.labels[0]")
    assert len(read_redocred(ROOT / "re-docred" / "dev_revised.json", none_ratio=0)) == 6


def test_redocred_none_sample_is_seeded():
    path = ROOT / "re-docred" / "test_revised.json"
    draws = {s: [spans(r) for r in read_redocred(path, none_ratio=1.0, seed=s)] for s in range(6)}
    assert all(len(d) == 2 and d[0] == ("Frida Kahlo", "Coyoacán", "P551") for d in draws.values())
    assert draws[0] == [spans(r) for r in read_redocred(path, none_ratio=1.0, seed=0)]
    assert len({d[1] for d in draws.values()}) > 1  # the seed picks which of the 4 None pairs
    assert len(read_redocred(path, none_ratio=10.0)) == 5


@pytest.mark.parametrize("name, field, words", [
    ("redocred_label.json", "[1].labels[0].t", "document 1 ('Kahlo'): entity 7 is not one of the 3 entities"),
    ("redocred_pos.json", "[1].vertexSet[1][0].pos",
     "document 1 ('Kahlo'): span [4, 12] is not [start, end) within sentence 0 (9 tokens)"),
    ("redocred_type.json", "[1].vertexSet[2][0].type", "unknown entity type 'CITY'"),
])
def test_redocred_errors_name_document_and_field(name, field, words):
    with pytest.raises(DataFormatError) as e:
        read_redocred(BAD / name)
    assert e.value.path == str(BAD / name) and e.value.field == field and words in str(e.value)
    skipped = read_redocred(BAD / name, on_error="skip")
    assert len(skipped.problems) == 1 and len(skipped) > 0


def test_load_relation_corpora_dedupes_excludes_and_splits():
    out = load_relation_corpora(ROOT, none_ratio=0.5, val_fraction=0.0)
    train = out["train"]
    assert not out["val"].records
    # Wiki80's Ada Lovelace / William King line repeats FewRel's: kept once
    assert sum(spans(r) == ("Ada Lovelace", "William King", "P26") for r in train) == 1
    # FewRel 4, Wiki80 6 - 1 duplicate, Re-DocRED dev 8 + test 1, less one pair that holds two relations (kept once,
    # with its rarer relation: one_label_per_pair)
    assert len(train) == 4 + 5 + 8 + 1 - 1
    # (P585's only pair also holds another relation, which one_label_per_pair keeps: P585 is gone)
    assert train.labels.labels == ["None", "P17", "P19", "P26", "P131", "P150", "P551", "P569"]
    kept = load_relation_corpora(ROOT, ["fewrel", "redocred"], ["/per/loc/place_of_birth", "P17"],
                                 val_fraction=0.0)["train"]
    assert {r.relation for r in kept} == {"None", "P26", "P131", "P150", "P551", "P569"}


def test_load_relation_corpora_val_is_stratified_and_seeded():
    a = load_relation_corpora(ROOT, val_fraction=0.4, seed=3)
    b = load_relation_corpora(ROOT, val_fraction=0.4, seed=3)
    assert [r.source for r in a["val"]] == [r.source for r in b["val"]]
    assert len(a["train"]) + len(a["val"]) == 17 and a["train"].labels == a["val"].labels
    train_rels = {r.relation for r in a["train"]}
    assert {r.relation for r in a["val"]} <= train_rels  # every relation keeps a training record
    assert train_rels == set(a["train"].labels.labels) - {"None"} | {"None"}


def test_exclusions_expand_mnre_relations():
    assert expand_exclusions(["/per/per/parent", "P17"]) == {"P22", "P25", "P40", "P17"}
    assert expand_exclusions(["/per/per/peer"]) == set()
    with pytest.raises(ValueError, match="neither a Wikidata property id"):
        expand_exclusions(["spouse"])
    mapping = mnre_counterparts()
    mnre = json.loads((Path(__file__).parents[1] / "src/rocmre/resources/descriptions/mnre.json").read_text())
    assert set(mapping) == set(mnre["relations"])  # every MNRE relation is reviewed, even with no counterpart


def test_wikidata_descriptions():
    descs = load_wikidata_descriptions(["None", "P26", "P569"], ROOT)
    assert descs.labels == ["None", "P26", "P569"] and descs.negative_label == "None"
    first, template = descs.relations["P26"].descriptions
    assert first.text == "spouse: the subject has the object as their spouse (husband, wife, partner, etc.)"
    assert first.provenance["method"] == "wikidata" and "P451" in first.provenance["original"]
    assert template.text == "{head} spouse {tail}." and template.provenance["method"] == "template"
    assert descs.texts("P569")[0] == "date of birth: " + EXTRA_PROPERTIES["P569"][1]
    assert descs.relations["P569"].descriptions[0].provenance["method"] == "hand"
    assert any(is_template(t) for t in descs.texts("None"))
    plain = load_wikidata_descriptions(["None", "P26"], ROOT, templates=False)
    assert not any(is_template(t) for lab in plain.labels for t in plain.texts(lab))
    again = RelationDescriptions.from_dict(descs.to_dict())  # valid in the stored format
    assert again.texts("P26") == descs.texts("P26")
    with pytest.raises(KeyError, match="P999"):
        load_wikidata_descriptions(["P999"], ROOT)


@pytest.mark.parametrize("raw, cleaned", [
    ("sovereign state of this item; don't use on humans", "sovereign state of this item"),
    ('person(s) who wrote the music [for lyricist, use "lyrics by" (P676)]', "person(s) who wrote the music"),
    ("most specific known (e.g. city instead of country) birth location", "most specific known (e.g. city instead "
     "of country) birth location"),
    ("event a person was a participant in, inverse of P710 or P1923", "event a person was a participant in"),
    ("winner of an event - do not use for awards (use P166 instead)", "winner of an event"),
])
def test_clean_description(raw, cleaned):
    assert clean_description(raw) == cleaned


def test_data_stats_cli_on_relation_corpora():
    from typer.testing import CliRunner

    from rocmre.cli import app

    r = CliRunner().invoke(app, ["data", "stats", str(ROOT / "re-docred"), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["format"] == "redocred" and d["negative_label"] == "None"
    assert [(s["split"], s["records"], s["label_counts"]["None"]) for s in d["splits"]] == [("dev", 8, 2),
                                                                                          ("test", 1, 0)]
    r = CliRunner().invoke(app, ["data", "stats", str(ROOT), "--format", "relations"])
    assert r.exit_code == 0, r.output
    assert "format relations" in r.stdout and "train" in r.stdout and "P26" in r.stdout
    r = CliRunner().invoke(app, ["data", "stats", str(ROOT / "wiki80"), "--split", "dev"])
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("dev "))
    assert r.exit_code == 0 and row[1] == "4"
    r = CliRunner().invoke(app, ["data", "stats", str(BAD.parent / "fewrel"), "--split", "train"])
    assert r.exit_code != 0 and "unknown fewrel split" in r.output
