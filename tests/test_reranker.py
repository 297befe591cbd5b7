"""The cross-encoder re-ranker on real MNRE records with a tiny random BERT (the real MiniLM tokenizer): segments,
training, determinism, save/load, new relations and templates, the decision path, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rocmre.data.record import Entity, RelationRecord
from rocmre.descriptions.store import RelationDescriptions, load_builtin
from rocmre.modeling.decision import DecisionRule
from rocmre.modeling.reranker import (
    CrossEncoderReranker,
    RerankerConfig,
    combine,
    segment_a,
    segment_b,
    train_reranker,
)

FAST = {"mixed_precision": "no", "epochs": 10, "batch_size": 8, "learning_rate": 2e-3, "head_learning_rate": 2e-3,
        "dropout": 0.0, "seed": 1, "max_length": 96}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from rocmre.backbones.text import resolve_text_model_path

    return AutoTokenizer.from_pretrained(resolve_text_model_path("minilm-l6"))


@pytest.fixture(scope="module")
def descriptions() -> RelationDescriptions:
    return load_builtin("mnre")


@pytest.fixture(scope="module")
def train_records(mnre_root: Path) -> list[RelationRecord]:
    """32 labelled (non-None) MNRE train records and 8 None ones."""
    from rocmre.data import read_mnre

    records = read_mnre(mnre_root, "train", negative_label="None").records
    labelled = [r for r in records if r.relation != "None"][:32]
    return labelled + [r for r in records if r.relation == "None"][:8]


def tiny_reranker(tokenizer, seed: int = 0, descriptions: RelationDescriptions | None = None,
                  **overrides) -> CrossEncoderReranker:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return CrossEncoderReranker(RerankerConfig(**(FAST | overrides)), encoder, tokenizer, descriptions)


@pytest.fixture(scope="module")
def trained(tokenizer, descriptions, train_records) -> CrossEncoderReranker:
    model = tiny_reranker(tokenizer)
    return train_reranker(train_records, descriptions, model.config, show_progress=False, model=model)


def listwise_loss(reranker: CrossEncoderReranker, records: list[RelationRecord], labels: list[str]) -> float:
    """Softmax cross-entropy of the gold relation against 4 fixed others, descriptions averaged."""
    others = [lab for lab in labels if lab != "None"]
    cand = np.array([[labels.index(r.relation)] + [labels.index(o) for o in others if o != r.relation][:4]
                     for r in records])
    s = torch.tensor(reranker.relation_scores(records, labels, cand))
    return float(torch.nn.functional.cross_entropy(s, torch.zeros(len(s), dtype=torch.long)))


# -- the segments ---------------------------------------------------------------------------------
def test_segments_mark_entities_and_fill_templates() -> None:
    rec = RelationRecord(["Barack", "Obama", "met", "Michelle", "in", "Paris"], Entity("Barack Obama", 0, 2),
                         Entity("Michelle", 3, 4), "/per/per/couple")
    assert segment_a(rec) == "[head] Barack Obama [/head] met [tail] Michelle [/tail] in Paris"
    obj = RelationRecord(["a", "dog", "photo"], Entity("dog", 1, 2), Entity("cat", box=(0.5, 0.5, 0.2, 0.2)))
    assert segment_a(obj) == "a [head] dog [/head] photo in the image : [tail] cat [/tail]"
    assert segment_b("{head} is married to {tail}.", "Obama", "Michelle") == "Obama is married to Michelle."
    assert segment_b("They are a couple.", "Obama", "Michelle") == "head: Obama ; tail: Michelle . They are a couple."


def test_long_sentences_keep_markers_within_max_length(tokenizer) -> None:
    words = [f"w{i}" for i in range(300)]
    words[150], words[160] = "Obama", "Michelle"
    rec = RelationRecord(words, Entity("Obama", 150, 151), Entity("Michelle", 160, 161))
    model = tiny_reranker(tokenizer, max_length=64)
    a, b, _ = model._pair_texts([rec], [(0, "The head person and the tail person are a couple. " * 10)])
    enc = model._tokenize(a, b)
    assert enc["input_ids"].shape[1] == 64
    text = tokenizer.decode(enc["input_ids"][0])
    assert "[ head ] obama [ / head ]" in text and "[ tail ] michelle [ / tail ]" in text
    assert "head : obama ; tail : michelle" in text  # segment B is cut at its end, not its start


# -- training -------------------------------------------------------------------------------------
def test_training_lowers_the_loss(tokenizer, descriptions, train_records, trained) -> None:
    labelled = [r for r in train_records if r.relation != "None"]
    before = listwise_loss(tiny_reranker(tokenizer, descriptions=descriptions), labelled, descriptions.labels)
    after = listwise_loss(trained, labelled, descriptions.labels)
    assert after < before - 0.1, (before, after)
    h = trained.history
    assert trained.train_stats["records"] == 32  # the None records are skipped
    assert len(h) == 10 * 4 and trained.train_stats["examples_per_s"] > 0
    first, last = np.mean([x["loss"] for x in h[:8]]), np.mean([x["loss"] for x in h[-8:]])
    assert last < first


def test_training_is_deterministic(tokenizer, descriptions, train_records, trained) -> None:
    records = train_records[:12]
    config = RerankerConfig(**(FAST | {"epochs": 1}))
    runs = [train_reranker(records, descriptions, config, show_progress=False, model=tiny_reranker(tokenizer))
            for _ in range(2)]
    other = train_reranker(records, descriptions, config.model_copy(update={"seed": 2}), show_progress=False,
                           model=tiny_reranker(tokenizer))
    cand = np.array([[1, 2, 3]] * 4)
    scores = [m.relation_scores(records[:4], descriptions.labels, cand) for m in (*runs, other)]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert [x["loss"] for x in runs[0].history] == [x["loss"] for x in runs[1].history]
    assert not np.array_equal(scores[0], scores[2])


def test_hard_negatives_share_the_type_signature(descriptions) -> None:
    from rocmre.modeling.reranker import _NegativeSampler

    pool = [lab for lab in descriptions.labels if lab != "None"]
    rng = np.random.default_rng(0)
    hard = _NegativeSampler(pool, descriptions, 4, 1.0)
    for _ in range(20):
        negs = hard("/per/per/parent", rng)
        assert len(negs) == 4 == len(set(negs)) and "/per/per/parent" not in negs
        assert all(n.startswith("/per/per/") for n in negs)
    easy = _NegativeSampler(pool, descriptions, 4, 0.0)
    assert not any(n.startswith("/per/per/") for n in easy("/per/per/parent", rng))
    # only one relation shares /org/loc/locate_at's signature: the others are topped up from the rest
    negs = hard("/org/loc/locate_at", rng)
    assert len(negs) == 4 and not any(n.startswith("/org/loc/") for n in negs)


def test_bf16_training_runs(tokenizer, descriptions, train_records) -> None:
    config = RerankerConfig(**(FAST | {"epochs": 1, "mixed_precision": "bf16"}))
    model = train_reranker(train_records[:8], descriptions, config, show_progress=False,
                           model=tiny_reranker(tokenizer))
    assert model.train_stats["bf16"] and np.isfinite(model.history[0]["loss"])
    assert np.isfinite(model.relation_scores(train_records[:2], descriptions.labels, np.array([[1, 2]] * 2))).all()


# -- saving, new relations, templates -------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path, trained, train_records, descriptions) -> None:
    trained.save_pretrained(tmp_path / "rr")
    assert {p.name for p in (tmp_path / "rr").iterdir()} >= {"config.json", "model.safetensors", "encoder"}
    loaded = CrossEncoderReranker.from_pretrained(tmp_path / "rr")
    assert loaded.config == trained.config and loaded.descriptions.labels == descriptions.labels
    cand = np.array([[1, 5, 9, 12]] * 6)
    np.testing.assert_array_equal(loaded.relation_scores(train_records[:6], descriptions.labels, cand),
                                  trained.relation_scores(train_records[:6], descriptions.labels, cand))
    with pytest.raises(FileNotFoundError, match="not a re-ranker folder"):
        CrossEncoderReranker.from_pretrained(tmp_path)


def test_new_relation_is_scored_and_templates_filled(trained, train_records, descriptions,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    extended = descriptions.subset(descriptions.labels)
    extended.add("/per/loc/visited", ["{head} visited {tail}.", "The head person travelled to the tail place."],
                 head_types=["person"], tail_types=["location"])
    seen: list[str] = []
    tokenize = trained._tokenize
    monkeypatch.setattr(trained, "_tokenize", lambda a, b: (seen.extend(b), tokenize(a, b))[1])
    labels = [*descriptions.labels, "/per/loc/visited"]
    rec = train_records[0]
    scores = trained.relation_scores([rec], labels, np.array([[len(labels) - 1, 1]]), extended)
    assert scores.shape == (1, 2) and np.isfinite(scores).all()
    assert f"{rec.head.name} visited {rec.tail.name}." in seen
    assert f"head: {rec.head.name} ; tail: {rec.tail.name} . The head person travelled to the tail place." in seen
    assert not any("{head}" in t or "{tail}" in t for t in seen)
    # the same through the protocol, once the relation is in reranker.descriptions
    monkeypatch.setattr(trained, "descriptions", extended)
    assert trained([rec], labels, np.array([[len(labels) - 1, 1]]), np.array([[0.9, 0.8]])).shape == (1, 2)
    monkeypatch.setattr(trained, "descriptions", descriptions)
    with pytest.raises(KeyError, match="no descriptions for candidate relation"):
        trained([rec], labels, np.array([[len(labels) - 1, 1]]), np.array([[0.9, 0.8]]))


# -- the decision path ----------------------------------------------------------------------------
def test_combine_z_normalises_rows() -> None:
    first = np.array([[3.0, 2.0, 1.0]])
    rerank = np.array([[0.0, 10.0, 20.0]])
    np.testing.assert_allclose(combine(first, rerank, 1.0), combine(np.zeros((1, 3)), rerank, 1.0))
    assert np.argmax(combine(first, rerank, 1.0)) == 2 and np.argmax(combine(first, rerank, 0.0)) == 0
    np.testing.assert_allclose(combine(first, rerank, 0.5), 0.0, atol=1e-12)  # opposite orders cancel
    with pytest.raises(ValueError, match="one shape"):
        combine(first, rerank[:, :2])


def test_decision_rule_follows_the_reranker(trained, train_records, descriptions) -> None:
    labels = descriptions.labels
    records = train_records[:6]
    first = np.random.default_rng(0).normal(size=(len(records), len(labels)))
    first[:, labels.index("None")] = -10.0
    rule = DecisionRule(labels, "None", second_stage=trained, rerank_top_k=4)
    decided = rule.decide(first, records=records)
    top = np.argsort(-first, axis=1, kind="stable")[:, :4]
    expected = trained.relation_scores(records, labels, top)
    for i in range(len(records)):
        want = [labels[j] for j in top[i][np.argsort(-expected[i], kind="stable")]]
        assert [c.label for c in decided.top_k(i, 4)] == want
    assert decided.meta["second_stage"] == "CrossEncoderReranker"
    assert decided.predictions != DecisionRule(labels, "None").decide(first).predictions  # some answers changed
    trained.weight = 0.0  # the first stage alone: its order
    try:
        assert rule.decide(first, records=records).predictions == [labels[j] for j in top[:, 0]]
    finally:
        trained.weight = 1.0
    first[:, labels.index("None")] = 50.0  # the None decision stays the first stage's
    assert rule.decide(first, records=records).predictions == ["None"] * len(records)


def test_negative_label_keeps_its_rank_when_passed(trained, train_records, descriptions) -> None:
    """Called directly with the negative label among the candidates, the re-ranker leaves it at its rank."""
    labels = descriptions.labels
    records = train_records[:6]
    cand = np.array([[1, 5, 0, 9, 12]] * len(records))
    first = np.tile([5.0, 4.0, 3.0, 2.0, 1.0], (len(records), 1))
    new = trained(records, labels, cand, first)
    ours = trained.relation_scores(records, labels, cand[:, [0, 1, 3, 4]])
    for i in range(len(records)):
        order = [labels[j] for j in cand[i][np.argsort(-new[i], kind="stable")]]
        assert order[2] == "None"
        assert [lab for lab in order if lab != "None"] == [labels[cand[i, [0, 1, 3, 4]][j]]
                                                           for j in np.argsort(-ours[i], kind="stable")]


def test_model_runtime_second_stage(tiny_roc_dir: Path, cache_dir: Path, mnre_root: Path, trained) -> None:
    from rocmre.data import read_mnre
    from rocmre.modeling.model import RelationModel
    from rocmre.modeling.runtime import ModelRuntime

    model = RelationModel.from_pretrained(tiny_roc_dir)
    records = [r for r in read_mnre(mnre_root, "val").records if not r.has_image][:8]
    plain = ModelRuntime(model, cache_dir).decide_records(records)
    reranked = ModelRuntime(model, cache_dir, second_stage=trained, rerank_top_k=3).decide_records(records)
    labels, negative = model.relation_labels, model.config.negative_label
    for i, rec in enumerate(records):
        top = [c.index for c in plain.top_k(i, len(labels)) if c.label != negative][:3]
        got = [c.label for c in reranked.top_k(i, len(labels)) if c.label != negative][:3]
        s = trained.relation_scores([rec], labels, np.array([top]))[0]
        assert got == [labels[top[j]] for j in np.argsort(-s, kind="stable")]  # the same candidates, reordered
        assert (plain.predictions[i] == negative) == (reranked.predictions[i] == negative)


# -- bad input ------------------------------------------------------------------------------------
def test_bad_inputs_give_clear_errors(tokenizer, trained, train_records, descriptions) -> None:
    model = tiny_reranker(tokenizer)
    with pytest.raises(ValueError, match="got no records"):
        train_reranker([], descriptions, model.config, model=model)
    with pytest.raises(ValueError, match="nothing to train"):
        train_reranker([r for r in train_records if r.relation == "None"], descriptions, model=model)
    with pytest.raises(ValueError, match="at least 2 relations"):
        train_reranker(train_records, descriptions.subset(["None", "/per/per/parent"]), model=model)
    labels = descriptions.labels
    with pytest.raises(IndexError, match="out of range for 23 labels"):
        trained.relation_scores(train_records[:1], labels, np.array([[0, 23]]))
    with pytest.raises(IndexError, match="index -1"):
        trained(train_records[:1], labels, np.array([[-1, 2]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="shape"):
        trained.relation_scores(train_records[:2], labels, np.array([[1, 2]]))
    with pytest.raises(TypeError, match="integer"):
        trained.relation_scores(train_records[:1], labels, np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="needs the records"):
        trained(None, labels, np.array([[1, 2]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="no relation descriptions"):
        model.relation_scores(train_records[:1], labels, np.array([[1, 2]]))
    assert trained.relation_scores([], labels, np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)
