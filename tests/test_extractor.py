"""RelationExtractor on raw input, with the tiny ROC and classifier models trained on real MNRE: entity forms,
entity errors, image forms, batching, adding/removing relations, save/load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from rocmre.inference.extractor import EntityNotFoundError, PairInput, Prediction, RelationExtractor

TEXT = "Barack Obama visited Paris with Michelle Obama"
TOKENS = ["Barack", "Obama", "visited", "Paris", "with", "Michelle", "Obama"]
NEW_RELATION = "/per/org/plays_for"
NEW_DESCRIPTIONS = ["The head is an athlete who plays for the tail, a sports team or club.",
                    "The head is on the roster of the tail team."]




def assert_same(a: Prediction, b: Prediction, exact: bool = True) -> None:
    da, db = a.to_dict(), b.to_dict()
    if exact:
        assert da == db
        return
    assert da["relation"] == db["relation"] and da["head"] == db["head"] and da["tail"] == db["tail"]
    assert da["score"] == pytest.approx(db["score"], abs=1e-5)
    assert {c["relation"]: c["score"] for c in da["top_k"]} == pytest.approx(
        {c["relation"]: c["score"] for c in db["top_k"]}, abs=1e-5)


def test_entity_string(extractor: RelationExtractor) -> None:
    pred = extractor.predict(TEXT, "Barack Obama", "Paris", top_k=3)
    assert pred.relation in extractor.relations
    assert pred.relation == pred.top_k[0].relation and pred.score == pred.top_k[0].score
    assert len(pred.top_k) == 3
    assert [c.score for c in pred.top_k] == sorted((c.score for c in pred.top_k), reverse=True)
    assert pred.description is not None and pred.description in extractor.describe_relations()[pred.relation]
    assert pred.head == {"name": "Barack Obama", "type": pred.head["type"], "start": 0, "end": 2}
    assert (pred.tail["start"], pred.tail["end"]) == (3, 4)
    assert pred.has_image is False


@pytest.mark.parametrize(("text", "head", "tail"), [
    (TEXT, (0, 12), (21, 26)),  # character spans on a string
    (TOKENS, (0, 2), (3, 4)),  # token spans on a token list
    (TOKENS, "Barack Obama", "Paris"),  # entity strings on a token list
    (TEXT, {"char_start": 0, "char_end": 12}, {"name": "Paris"}),
    (TEXT, {"name": "Barack Obama", "start": 0, "end": 2}, {"name": "Paris", "start": 3, "end": 4}),
    (TOKENS, {"name": "Barack Obama", "start": 0, "end": 2}, {"name": "Paris"}),
])
def test_entity_forms_agree(extractor: RelationExtractor, text: Any, head: Any, tail: Any) -> None:
    reference = extractor.predict(TEXT, "Barack Obama", "Paris", top_k=4)
    assert_same(extractor.predict(text, head, tail, top_k=4), reference)


def test_given_types_are_used(extractor: RelationExtractor) -> None:
    pred = extractor.predict(TEXT, "Barack Obama", "Paris", head_type="organization", tail_type="person")
    assert (pred.head["type"], pred.tail["type"]) == ("organization", "person")
    pred = extractor.predict(TEXT, {"name": "Barack Obama", "type": "location"}, "Paris")
    assert pred.head["type"] == "location"
    with pytest.raises(ValueError, match="head_type"):
        extractor.predict(TEXT, "Barack Obama", "Paris", head_type="planet")


def test_absent_entity_lists_candidates(extractor: RelationExtractor) -> None:
    with pytest.raises(EntityNotFoundError, match="Angela Merkel") as info:
        extractor.predict(TEXT, "Angela Merkel", "Paris")
    assert {"Barack", "Obama", "Paris", "Michelle"} <= set(info.value.candidates)
    with pytest.raises(EntityNotFoundError, match="tail"):
        extractor.predict(TEXT, "Barack Obama", "London")


def test_ambiguous_entity_lists_spans(extractor: RelationExtractor) -> None:
    with pytest.raises(EntityNotFoundError, match="occurs 2 times") as info:
        extractor.predict(TEXT, "Obama", "Paris")
    assert info.value.candidates == [(1, 2), (6, 7)]
    # a span picks one occurrence
    pred = extractor.predict(TEXT, {"name": "Obama", "start": 6, "end": 7}, "Paris")
    assert (pred.head["start"], pred.head["end"]) == (6, 7)


@pytest.mark.parametrize(("head", "message"), [
    ((0, 5), "token boundaries"),  # "Barac"
    ({"name": "Paris", "start": 0, "end": 2}, "not 'Paris'"),
    ({"start": 5, "end": 9}, "out of range"),
    ({"type": "person"}, "give 'name'"),
    ("", "empty entity"),
])
def test_bad_spans(extractor: RelationExtractor, head: Any, message: str) -> None:
    text = TOKENS if isinstance(head, dict) and "start" in head else TEXT
    with pytest.raises(ValueError, match=message):
        extractor.predict(text, head, "Paris")


def test_image_as_path_bytes_or_pil(extractor: RelationExtractor, image_file: Path) -> None:
    by_path = extractor.predict(TEXT, "Barack Obama", "Paris", image=image_file, top_k=5)
    assert by_path.has_image
    assert_same(extractor.predict(TEXT, "Barack Obama", "Paris", image=str(image_file), top_k=5), by_path)
    assert_same(extractor.predict(TEXT, "Barack Obama", "Paris", image=image_file.read_bytes(), top_k=5), by_path)
    with Image.open(image_file) as img:
        assert_same(extractor.predict(TEXT, "Barack Obama", "Paris", image=img.convert("RGB"), top_k=5), by_path)
    no_image = extractor.predict(TEXT, "Barack Obama", "Paris", top_k=5)
    assert no_image.score != by_path.score  # the image branch is on


def test_image_object_tail(extractor: RelationExtractor, image_file: Path) -> None:
    pred = extractor.predict(TEXT, "Barack Obama", {"name": "man", "box": [0.5, 0.5, 0.4, 0.6]}, image=image_file)
    assert pred.tail["box"] == [0.5, 0.5, 0.4, 0.6] and pred.tail["type"] == "object"
    with pytest.raises(ValueError, match="head must be a text span"):
        extractor.predict(TEXT, {"name": "man", "box": [0.5, 0.5, 0.4, 0.6]}, "Paris")


def test_predict_batch_matches_predict(extractor: RelationExtractor, image_file: Path) -> None:
    items: list[PairInput | dict[str, Any]] = [
        PairInput(TEXT, "Barack Obama", "Paris"),
        PairInput(TEXT, "Michelle Obama", "Paris", image=image_file),
        {"text": TOKENS, "head": (0, 2), "tail": (5, 7)},
        PairInput("Tennis star Rafael Nadal gets engaged to Mery Perello", "Rafael Nadal", "Mery Perello"),
        PairInput(TEXT, (32, 46), (0, 12), head_type="person"),
    ]
    batched = list(extractor.predict_batch(iter(items), batch_size=2, top_k=4))  # a generator in, chunks of 2
    assert len(batched) == len(items)
    for item, pred in zip(items, batched, strict=True):
        p = item if isinstance(item, PairInput) else PairInput(**item)
        assert_same(pred, extractor.predict(p.text, p.head, p.tail, p.image, 4, p.head_type, p.tail_type),
                    exact=False)
    # the same batches give the same numbers
    assert [p.to_dict() for p in extractor.predict_batch(items, batch_size=2, top_k=4)] == \
        [p.to_dict() for p in batched]


def test_add_and_remove_relations(tiny_roc_dir: Path, cache_dir: Path) -> None:
    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    before = list(ex.relations)
    text = "Lionel Messi scored twice for Inter Miami on Sunday"
    assert ex.add_relations({NEW_RELATION: NEW_DESCRIPTIONS}) == [NEW_RELATION]
    assert ex.relations == [*before, NEW_RELATION]
    assert ex.describe_relations()[NEW_RELATION] == NEW_DESCRIPTIONS
    pred = ex.predict(text, "Lionel Messi", "Inter Miami", top_k=len(ex.relations))
    scores = {c.relation: c for c in pred.top_k}
    assert set(scores) == set(ex.relations)
    assert scores[NEW_RELATION].description in NEW_DESCRIPTIONS
    # more descriptions for an existing relation add no name; the dict form takes type signatures
    assert ex.add_relations({NEW_RELATION: ["The head plays football for the tail."]}) == []
    assert len(ex.describe_relations()[NEW_RELATION]) == 3
    assert ex.add_relations({"/per/misc/coached_by": {"descriptions": ["The tail coaches the head."],
                                                      "head_types": ["person"]}}) == ["/per/misc/coached_by"]
    ex.remove_relations([NEW_RELATION, "/per/misc/coached_by"])
    assert ex.relations == before
    pred = ex.predict(text, "Lionel Messi", "Inter Miami", top_k=len(ex.relations))
    assert NEW_RELATION not in {c.relation for c in pred.top_k}
    with pytest.raises(ValueError, match="negative label"):
        ex.remove_relations(["None"])
    with pytest.raises(KeyError, match="unknown"):
        ex.remove_relations(["/no/such/relation"])


def test_classifier_cannot_take_relations(tiny_cls_dir: Path, cache_dir: Path) -> None:
    ex = RelationExtractor.from_pretrained(tiny_cls_dir, cache_dir=cache_dir)
    labels = list(ex.relations)
    with pytest.raises(TypeError, match="classification model"):
        ex.add_relations({NEW_RELATION: NEW_DESCRIPTIONS})
    assert ex.relations == labels
    pred = ex.predict(TEXT, "Barack Obama", "Paris", top_k=3)
    assert pred.relation in labels and pred.description is None and len(pred.top_k) == 3
    assert all(d == [] for d in ex.describe_relations().values())


def test_save_and_reload(extractor: RelationExtractor, tiny_roc_dir: Path, cache_dir: Path,
                         tmp_path: Path, image_file: Path) -> None:
    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    ex.add_relations({NEW_RELATION: NEW_DESCRIPTIONS})
    out = tmp_path / "saved"
    ex.save_pretrained(out)
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
    reloaded = RelationExtractor.from_pretrained(out, cache_dir=cache_dir)
    assert reloaded.relations == ex.relations
    assert reloaded.describe_relations() == ex.describe_relations()
    for args in ((TEXT, "Barack Obama", "Paris", None), (TOKENS, (5, 7), (3, 4), image_file)):
        k = len(ex.relations)
        assert_same(reloaded.predict(*args, top_k=k), ex.predict(*args, top_k=k))


def test_score_offsets_are_data_and_tuned_on_labelled_records(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path,
                                                              mnre_root: Path) -> None:
    from rocmre.data import read_mnre
    from rocmre.descriptions.store import DataFormatError, RelationDescriptions

    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    text = "Lionel Messi scored twice for Inter Miami on Sunday"
    first = ex.predict(text, "Lionel Messi", "Inter Miami", top_k=len(ex.relations) + 1)
    ex.add_relations({NEW_RELATION: {"descriptions": NEW_DESCRIPTIONS, "score_offset": -0.25}})
    scores = {c.relation: c.score for c in ex.predict(text, "Lionel Messi", "Inter Miami",
                                                      top_k=len(ex.relations)).top_k}
    plain = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    plain.add_relations({NEW_RELATION: NEW_DESCRIPTIONS})
    unshifted = {c.relation: c.score for c in plain.predict(text, "Lionel Messi", "Inter Miami",
                                                            top_k=len(plain.relations)).top_k}
    assert scores[NEW_RELATION] == pytest.approx(unshifted[NEW_RELATION] - 0.25, abs=1e-5)
    assert {r: s for r, s in scores.items() if r != NEW_RELATION} == pytest.approx(
        {c.relation: c.score for c in first.top_k}, abs=1e-5)  # the others untouched
    out = tmp_path / "saved"
    ex.save_pretrained(out)
    reloaded = RelationExtractor.from_pretrained(out, cache_dir=cache_dir)
    assert reloaded.model.descriptions.relations[NEW_RELATION].score_offset == pytest.approx(-0.25)
    for bad, error in (("x", TypeError), (float("nan"), ValueError), (True, TypeError)):
        with pytest.raises(error, match="score_offset"):
            ex.add_relations({"/per/misc/coached_by": {"descriptions": ["The tail coaches the head."],
                                                       "score_offset": bad}})
    assert "/per/misc/coached_by" not in ex.relations  # nothing added
    data = ex.model.descriptions.to_dict()
    data["relations"][NEW_RELATION]["score_offset"] = "low"
    with pytest.raises(DataFormatError, match=r"score_offset"):
        RelationDescriptions.from_dict(data, "relations.json")
    # tuned on labelled records: the trained relations lose at most the allowed drop, and the offset is stored
    records = read_mnre(mnre_root, "val").records[:120]
    offset, drop = ex.tune_score_offset(records, [NEW_RELATION], max_seen_drop=0.0)
    assert offset <= 0.0 and drop <= 0.0 + 1e-9
    assert ex.model.descriptions.relations[NEW_RELATION].score_offset == pytest.approx(offset)
    gold = [r.relation for r in records]
    with_new = [p.relation for p in ex.predict_batch([ex_input(r) for r in records])]
    ex.remove_relations([NEW_RELATION])
    without = [p.relation for p in ex.predict_batch([ex_input(r) for r in records])]
    from rocmre.evaluation.metrics import evaluate_predictions

    assert evaluate_predictions(gold, with_new, "None").f1 >= evaluate_predictions(gold, without, "None").f1 - 1e-9
    # the other kind: an extra None margin, stored and saved the same way
    ex.add_relations({NEW_RELATION: NEW_DESCRIPTIONS})
    margin, drop = ex.tune_score_offset(records, [NEW_RELATION], max_seen_drop=0.0, kind="none_margin")
    assert margin >= 0.0 and drop <= 1e-9
    assert ex.model.descriptions.relations[NEW_RELATION].none_margin == pytest.approx(margin)
    assert ex.model.descriptions.to_dict()["relations"][NEW_RELATION].get("none_margin", 0.0) == pytest.approx(margin)
    with pytest.raises(ValueError, match="kind"):
        ex.tune_score_offset(records, [NEW_RELATION], kind="bias")
    with pytest.raises(KeyError, match="unknown"):
        ex.tune_score_offset(records, ["/no/such/relation"])
    with pytest.raises(ValueError, match="negative label"):
        ex.tune_score_offset(records, ["None"])


def ex_input(record: Any) -> dict[str, Any]:
    """A record as a predict_batch input (tokens and spans)."""
    return {"text": list(record.tokens), "head": [record.head.start, record.head.end],
            "tail": [record.tail.start, record.tail.end]}


def test_tune_none_margin_with_the_type_prior_on(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path,
                                                 mnre_root: Path) -> None:
    """Switching the type prior on and re-tuning the None margin on labelled records: the chosen margin is the best
    of the rule's grid on those records, predictions use it, and it is saved with the model."""
    from rocmre.data import read_mnre
    from rocmre.evaluation.metrics import evaluate_predictions

    ex = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    records = read_mnre(mnre_root, "val").records[:80]
    gold = [r.relation for r in records]

    def micro_f1() -> float:
        return evaluate_predictions(gold, [p.relation for p in ex.predict_batch([ex_input(r) for r in records])],
                                    "None").f1

    ex.set_decision(type_prior=True)
    margin, f1 = ex.tune_none_margin(records)
    assert ex.decision.none_margin == pytest.approx(margin)
    assert micro_f1() == pytest.approx(f1)  # predictions use the tuned margin
    ex.set_decision(none_margin=0.0)  # on the grid: no better than the chosen one
    assert micro_f1() <= f1 + 1e-9
    ex.set_decision(none_margin=margin)
    ex.save_pretrained(tmp_path / "tuned")
    reloaded = RelationExtractor.from_pretrained(tmp_path / "tuned", cache_dir=cache_dir)
    assert reloaded.decision.none_margin == pytest.approx(margin) and reloaded.decision.type_prior
    with pytest.raises(ValueError, match="labelled records"):
        ex.tune_none_margin([])
