"""New relations with descriptions, templates and labelled examples (issue 10, product side), on the tiny ROC model:
examples are checked, a prototype lifts its relation, save/load keeps examples and predictions, templates are
filled per pair, and the same through ``rocmre predict --relations`` and ``POST /relations``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rocmre.cli import app as cli_app
from rocmre.descriptions.store import RelationDescriptions, check_template, fill_template, is_template
from rocmre.inference.extractor import Prediction, RelationExtractor
from rocmre.service import create_app, serve_in_thread

NEW = "/per/org/plays_for"
DESCRIPTION = "The head is an athlete who plays for the tail, a sports team."
TEXT = "Lionel Messi scored twice for Inter Miami on Sunday"
EXAMPLE = {"text": TEXT, "head": "Lionel Messi", "tail": "Inter Miami"}
OTHER = {"tokens": ["LeBron", "James", "leads", "the", "Lakers", "to", "a", "win"], "head": [0, 2], "tail": [4, 5]}


@pytest.fixture
def extractor(tiny_roc_dir: Path, cache_dir: Path) -> RelationExtractor:
    """A fresh extractor per test (the tests change its relations and its prototype weight)."""
    return RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)


def rank_of(pred: Prediction, relation: str) -> int:
    return [c.relation for c in pred.top_k].index(relation)


def predict_example(ex: RelationExtractor) -> Prediction:
    return ex.predict(TEXT, "Lionel Messi", "Inter Miami", top_k=len(ex.relations))


# -- the store -------------------------------------------------------------------------------------
def test_templates_are_checked_and_filled() -> None:
    assert is_template("{head} plays for {tail}.") and not is_template("The head plays for the tail.")
    assert fill_template("{head} plays for {tail}.", "Messi", "Inter Miami") == "Messi plays for Inter Miami."
    check_template("{head} plays for {tail}.")
    with pytest.raises(ValueError, match=r"unknown placeholder \{subject\}"):
        check_template("{subject} plays for {tail}.")
    with pytest.raises(ValueError, match="unbalanced brace"):
        check_template("{head plays for {tail}.")


def test_examples_round_trip_and_old_files_load(tmp_path: Path) -> None:
    store = RelationDescriptions(name="t", negative_label="None")
    store.add("None", ["No relation."])
    store.add(NEW, [DESCRIPTION], examples=[EXAMPLE])
    assert "examples" not in store.to_dict()["relations"]["None"]  # files without examples look as before
    store.save(tmp_path / "d.json")
    loaded = RelationDescriptions.load(tmp_path / "d.json")
    assert loaded.relations[NEW].examples == [EXAMPLE] and loaded.relations["None"].examples == []
    old = {"format": "rocmre-descriptions/1", "name": "old", "negative_label": "None",
           "relations": {"None": {"descriptions": ["No relation."]}, NEW: {"descriptions": [DESCRIPTION]}}}
    assert RelationDescriptions.from_dict(old).relations[NEW].examples == []


def test_labels_with_examples_follow_every_edit() -> None:
    store = RelationDescriptions(name="t", negative_label="None")
    store.add("None", ["No relation."])
    assert store.labels_with_examples() == []
    store.add(NEW, [DESCRIPTION], examples=[EXAMPLE])
    assert store.labels_with_examples() == [NEW]
    store.add("/other", ["Another relation."])
    store.add("/other", [], examples=[EXAMPLE])  # examples added to an existing relation
    assert store.labels_with_examples() == [NEW, "/other"]
    store.remove(NEW)
    assert store.labels_with_examples() == ["/other"]
    assert store.subset(["None"]).labels_with_examples() == []


# -- add_relations ---------------------------------------------------------------------------------
def test_bad_examples_and_templates_are_refused(extractor: RelationExtractor) -> None:
    before = list(extractor.relations)
    bad_entity = {"text": TEXT, "head": "Cristiano Ronaldo", "tail": "Inter Miami"}
    with pytest.raises(ValueError, match=rf"relation '{NEW}', example 1: head: 'Cristiano Ronaldo' does not occur"):
        extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": [EXAMPLE, bad_entity]}})
    with pytest.raises(ValueError, match=rf"relation '{NEW}', example 0: .*unknown field\(s\) \['relation'\]"):
        extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": [{**EXAMPLE, "relation": NEW}]}})
    with pytest.raises(ValueError, match=rf"relation '{NEW}', example 0: image: file not found"):
        extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": [{**EXAMPLE, "image": "no.jpg"}]}})
    with pytest.raises(TypeError, match=rf"relation '{NEW}', example 0: image: .* must be a file path"):
        extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": [{**EXAMPLE, "image": b"x"}]}})
    with pytest.raises(TypeError, match=rf"relation '{NEW}': examples must be a list"):
        extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": EXAMPLE}})
    with pytest.raises(ValueError, match=rf"relation '{NEW}', description 1: unknown placeholder \{{Head\}}"):
        extractor.add_relations({NEW: [DESCRIPTION, "{Head} plays for {tail}."]})
    with pytest.raises(ValueError, match=rf"relation '{NEW}': give at least one description"):
        extractor.add_relations({NEW: {"examples": [EXAMPLE]}})  # a new relation needs a description
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['example'\]"):
        extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "example": [EXAMPLE]}})
    assert extractor.relations == before and NEW not in extractor.relation_examples()


def test_examples_lift_their_relation(extractor: RelationExtractor) -> None:
    extractor.set_decision(prototype_weight=1.0)  # the prototype alone scores the relation
    extractor.add_relations({NEW: [DESCRIPTION]})
    without = predict_example(extractor)
    extractor.remove_relations([NEW])
    extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": [EXAMPLE]}})
    assert extractor.relation_examples()[NEW] == [EXAMPLE]
    with_examples = predict_example(extractor)
    # the pair is its relation's only example: cosine 1 to the prototype, the top of the ranking
    assert rank_of(with_examples, NEW) == 0 and with_examples.relation == NEW
    assert with_examples.score == pytest.approx(1.0, abs=1e-4)
    assert with_examples.score > without.top_k[rank_of(without, NEW)].score
    # other relations keep their scores
    other = {c.relation: c.score for c in without.top_k if c.relation != NEW}
    assert {c.relation: c.score for c in with_examples.top_k if c.relation != NEW} == pytest.approx(other, abs=1e-5)
    # weight 0: the relation scores by its descriptions alone, as without examples
    extractor.set_decision(prototype_weight=0.0)
    zero = predict_example(extractor)
    assert zero.top_k[rank_of(zero, NEW)].score == pytest.approx(without.top_k[rank_of(without, NEW)].score,
                                                                 abs=1e-5)


def test_scores_are_linear_in_the_prototype_weight(extractor: RelationExtractor) -> None:
    """benchmarks/zero_shot.py scores one weight and re-weights the rest linearly."""
    extractor.add_relations({NEW: {"descriptions": [DESCRIPTION], "examples": [EXAMPLE, OTHER]}})

    def scores(weight: float) -> list[float]:
        extractor.set_decision(prototype_weight=weight)
        return [c.score for c in sorted(predict_example(extractor).top_k, key=lambda c: c.relation)]

    zero, low, high = scores(0.0), scores(0.1), scores(0.4)
    assert high != pytest.approx(zero, abs=1e-3)
    assert high == pytest.approx([z + 4 * (lo - z) for z, lo in zip(zero, low, strict=True)], abs=1e-4)


def test_existing_relation_takes_examples_alone(extractor: RelationExtractor) -> None:
    existing = next(r for r in extractor.relations if r != "None")
    texts = extractor.describe_relations()[existing]
    assert extractor.add_relations({existing: {"examples": [EXAMPLE, OTHER]}}) == []
    assert extractor.describe_relations()[existing] == texts
    assert extractor.relation_examples()[existing] == [EXAMPLE, OTHER]
    proto = extractor.model.prototype_vectors()
    assert proto is not None and proto[1].tolist() == [r == existing for r in extractor.relations]


def test_save_and_load_keep_examples_and_predictions(extractor: RelationExtractor, tmp_path: Path,
                                                     cache_dir: Path) -> None:
    extractor.set_decision(prototype_weight=0.7)
    extractor.add_relations({NEW: {"descriptions": [DESCRIPTION, "{head} plays for {tail}."],
                                   "examples": [EXAMPLE, OTHER], "head_types": ["person"]}})
    pairs = [EXAMPLE, {"text": "Kevin Durant signs with the Phoenix Suns", "head": "Kevin Durant",
                       "tail": "Phoenix Suns"}]
    before = [p.to_dict() for p in extractor.predict_batch(pairs, top_k=len(extractor.relations))]
    extractor.save_pretrained(tmp_path / "plus")
    saved = json.loads((tmp_path / "plus" / "descriptions.json").read_text(encoding="utf-8"))
    assert saved["relations"][NEW]["examples"] == [EXAMPLE, OTHER]
    loaded = RelationExtractor.from_pretrained(tmp_path / "plus", cache_dir=cache_dir)
    assert loaded.decision.prototype_weight == 0.7
    assert loaded.relation_examples()[NEW] == [EXAMPLE, OTHER]
    assert [p.to_dict() for p in loaded.predict_batch(pairs, top_k=len(loaded.relations))] == before


def test_templates_are_filled_per_pair(extractor: RelationExtractor, monkeypatch: pytest.MonkeyPatch) -> None:
    model = extractor.model
    encoded: list[str] = []
    original = model._encode_filled

    def spy(texts: list[str]):
        encoded.extend(texts)
        return original(texts)

    monkeypatch.setattr(model, "_encode_filled", spy)
    fixed = "Lionel Messi plays for Inter Miami."
    extractor.add_relations({NEW: ["{head} plays for {tail}."], "/test/fixed": [fixed]})
    pairs = [EXAMPLE, {"text": "Kevin Durant signs with the Phoenix Suns", "head": "Kevin Durant",
                       "tail": "Phoenix Suns"}]
    first, second = extractor.predict_batch(pairs, top_k=len(extractor.relations))
    # each pair's own mentions, as the tokenizer reads them back (lower-cased by the uncased MiniLM)
    assert sorted(t.lower() for t in encoded) == ["kevin durant plays for phoenix suns.",
                                                   "lionel messi plays for inter miami."]
    scores = {c.relation: c for c in first.top_k}
    # the template filled with this pair scores exactly as the same sentence written out
    assert scores[NEW].score == pytest.approx(scores["/test/fixed"].score, abs=1e-5)
    assert scores[NEW].description == fixed  # shown filled, with the pair's own spelling
    assert {c.relation: c for c in second.top_k}[NEW].description == "Kevin Durant plays for Phoenix Suns."
    assert extractor.describe_relations()[NEW] == ["{head} plays for {tail}."]
    with pytest.raises(ValueError, match=r"description 0: unknown placeholder \{object\}"):
        extractor.add_relations({"/x/y": ["{head} plays with {object}."]})


# -- CLI and service -------------------------------------------------------------------------------
def test_predict_cli_with_relations_file(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    relations = tmp_path / "new.json"
    relations.write_text(json.dumps({NEW: {"descriptions": ["{head} plays for {tail}."], "examples": [EXAMPLE]},
                                     "/per/per/rival": ["The head is the tail's rival."]}), encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(EXAMPLE) + "\n", encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    result = CliRunner().invoke(cli_app, ["predict", "--model", str(tiny_roc_dir), "--cache-dir", str(cache_dir),
                                          "--relations", str(relations), "--input", str(pairs), "--output",
                                          str(out), "--top-k", "50", "--quiet"])
    assert result.exit_code == 0, result.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    api = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    api.add_relations(json.loads(relations.read_text(encoding="utf-8")))
    expected = {c.relation: c.score for c in predict_example(api).top_k}
    assert {c["relation"]: c["score"] for c in row["top_k"]} == pytest.approx(expected, abs=1e-6)
    assert {c["relation"]: c["description"] for c in row["top_k"]}[NEW] == "Lionel Messi plays for Inter Miami."

    relations.write_text(json.dumps({NEW: {"descriptions": ["x"], "examples": [{"text": TEXT, "head": "Kobe",
                                                                               "tail": "Inter Miami"}]}}))
    result = CliRunner().invoke(cli_app, ["predict", "--model", str(tiny_roc_dir), "--cache-dir", str(cache_dir),
                                          "--relations", str(relations), "--input", str(pairs), "--output",
                                          str(out), "--quiet"])
    assert result.exit_code == 2
    assert f"{relations}: relation '{NEW}', example 0: head: 'Kobe' does not occur" in result.stderr
    relations.write_text("{not json")
    result = CliRunner().invoke(cli_app, ["predict", "--model", str(tiny_roc_dir), "--relations", str(relations),
                                          "--input", str(pairs), "--output", str(out), "--quiet"])
    assert result.exit_code == 2 and f"{relations}:1: not valid JSON" in result.stderr


def test_predict_cli_tunes_the_offset_of_added_relations(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path,
                                                          mnre_root: Path) -> None:
    from rocmre.data import read_mnre
    from rocmre.data.jsonl import record_to_json

    records = read_mnre(mnre_root, "val").records[:80]
    labelled = tmp_path / "val.jsonl"
    labelled.write_text("".join(json.dumps(record_to_json(r)) + "\n" for r in records), encoding="utf-8")
    relations = tmp_path / "new.json"
    relations.write_text(json.dumps({NEW: ["{head} plays for {tail}."]}), encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(EXAMPLE) + "\n", encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    args = ["predict", "--model", str(tiny_roc_dir), "--cache-dir", str(cache_dir), "--relations", str(relations),
            "--input", str(pairs), "--output", str(out), "--top-k", "50", "--quiet", "--tune-offset-on",
            str(labelled), "--max-seen-drop", "0"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.stderr
    assert "score offset of the added relations" in result.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    api = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    api.add_relations({NEW: ["{head} plays for {tail}."]})
    offset, drop = api.tune_score_offset(records, [NEW], max_seen_drop=0.0)
    assert drop <= 1e-9 and f"{offset:+.2f}" in result.stderr
    expected = {c.relation: c.score for c in predict_example(api).top_k}
    assert {c["relation"]: c["score"] for c in row["top_k"]} == pytest.approx(expected, abs=1e-6)
    # a descriptions file keeps the offset
    saved = tmp_path / "saved"
    api.save_pretrained(saved)
    store = json.loads((saved / "descriptions.json").read_text(encoding="utf-8"))
    if offset:
        assert store["relations"][NEW]["score_offset"] == pytest.approx(offset)
    from rocmre.cli.predict import load_relations_file

    store["relations"][NEW]["score_offset"] = -0.3
    (tmp_path / "store.json").write_text(json.dumps(store), encoding="utf-8")
    assert load_relations_file(tmp_path / "store.json")[NEW]["score_offset"] == pytest.approx(-0.3)
    result = CliRunner().invoke(cli_app, [a for a in args if a not in ("--relations", str(relations))])
    assert result.exit_code == 2 and "give --relations too" in result.stderr
    result = CliRunner().invoke(cli_app, [*args, "--tune-kind", "none_margin"])
    assert result.exit_code == 0 and "none margin of the added relations" in result.stderr, result.stderr
    result = CliRunner().invoke(cli_app, [*args, "--tune-kind", "bias"])
    assert result.exit_code == 2 and "--tune-kind" in result.stderr


@pytest.fixture
def server(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[httpx.Client]:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor, max_examples=2)) as base, \
            httpx.Client(base_url=base, timeout=120) as client:
        yield client


def test_service_adds_relations_with_examples(server: httpx.Client, tiny_roc_dir: Path, cache_dir: Path) -> None:
    # examples as /predict takes pairs: a token-list text, entities by token offsets
    other = {"text": OTHER["tokens"], "head": {"start": 0, "end": 2}, "tail": {"start": 4, "end": 5}}
    spec = {"descriptions": ["{head} plays for {tail}."], "examples": [EXAMPLE, other],
            "head_types": ["person"], "tail_types": ["organization"]}
    n = len(server.get("/relations").json()["relations"])
    response = server.post("/relations", json={NEW: spec, "/per/per/rival": ["The head is the tail's rival."]})
    assert response.status_code == 200, response.text
    assert response.json() == {"added": [NEW, "/per/per/rival"], "relations": n + 2}
    listed = {r["name"]: r for r in server.get("/relations").json()["relations"]}
    assert listed[NEW]["examples"] == 2 and listed[NEW]["descriptions"] == spec["descriptions"]
    assert listed["/per/per/rival"]["examples"] == 0
    pred = server.post("/predict", json={**EXAMPLE, "top_k": n + 2}).json()
    api = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    api.add_relations({NEW: spec, "/per/per/rival": ["The head is the tail's rival."]})
    expected = predict_example(api)
    assert {c["relation"]: c["score"] for c in pred["top_k"]} == pytest.approx(
        {c.relation: c.score for c in expected.top_k}, abs=1e-6)

    def error(body: object, status: int, needle: str) -> None:
        r = server.post("/relations", json=body)
        assert r.status_code == status and needle in r.json()["detail"], r.text

    error({NEW: {"examples": [EXAMPLE]}}, 413, f"relation {NEW!r}: 3 examples exceeds the limit of 2")
    error({"/x/y": {"descriptions": ["d"], "examples": [EXAMPLE] * 3}}, 413, "3 examples exceeds the limit of 2")
    error({"/x/y": {"descriptions": ["d"], "examples": [{**EXAMPLE, "image": "x"}]}}, 422,
          "/x/y.examples.0.image: Extra inputs are not permitted")
    error({"/x/y": {"descriptions": ["d"], "examples": [{**EXAMPLE, "head": "Kobe"}]}}, 422,
          "relation '/x/y', example 0: head: 'Kobe' does not occur")
    error({"/x/y": {"descriptions": ["{subject} plays for {tail}"]}}, 422, "unknown placeholder {subject}")
    error({"/x/y": {"examples": [EXAMPLE]}}, 422, "give at least one description")
    error({"/x/y": "one description"}, 422, "a relation is a list of descriptions, or an object")
    assert len(server.get("/relations").json()["relations"]) == n + 2


def test_predict_cli_type_prior_on_added_relations_only(tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """--type-prior --type-prior-scope added_vs_trained answers as the API with the same settings; a bad scope is
    refused."""
    relations = tmp_path / "new.json"
    relations.write_text(json.dumps({NEW: {"descriptions": ["{head} plays for {tail}."],
                                           "head_types": ["location"], "tail_types": ["location"]}}),
                         encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(EXAMPLE) + "\n", encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    args = ["predict", "--model", str(tiny_roc_dir), "--cache-dir", str(cache_dir), "--relations", str(relations),
            "--input", str(pairs), "--output", str(out), "--top-k", "50", "--quiet", "--type-prior"]
    result = CliRunner().invoke(cli_app, [*args, "--type-prior-scope", "added_vs_trained"])
    assert result.exit_code == 0, result.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    api = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir, type_prior=True,
                                            type_prior_scope="added_vs_trained")
    api.add_relations(json.loads(relations.read_text(encoding="utf-8")))
    expected = {c.relation: c.score for c in predict_example(api).top_k}
    assert {c["relation"]: c["score"] for c in row["top_k"]} == pytest.approx(expected, abs=1e-6)
    api.set_decision(type_prior_scope="all")  # the trained relations are penalised too: some score lower
    every = {c.relation: c.score for c in predict_example(api).top_k}
    assert any(every[r] < expected[r] - 1e-6 for r in expected if r != NEW)
    result = CliRunner().invoke(cli_app, [*args, "--type-prior-scope", "some"])
    assert result.exit_code == 2 and "type_prior_scope must be one of all, added_vs_trained" in result.stderr
