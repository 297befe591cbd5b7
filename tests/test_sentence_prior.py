"""The sentence prior (modeling/sentence_prior.py): a second stage from an untrained sentence encoder, here a tiny
random BERT with the real MiniLM tokenizer, on real MNRE records."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rocmre.data.record import Entity, RelationRecord
from rocmre.descriptions.store import RelationDescriptions, load_builtin
from rocmre.modeling.decision import DecisionRule
from rocmre.modeling.reranker import combine
from rocmre.modeling.sentence_prior import SentencePrior, is_tweet_noise, typed_sentence


@pytest.fixture(scope="module")
def encoder():
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rocmre.backbones.text import resolve_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model_path("minilm-l6"))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=160)).eval()
    return SimpleNamespace(model=model, tokenizer=tokenizer, hidden_size=32)


@pytest.fixture(scope="module")
def descriptions() -> RelationDescriptions:
    return load_builtin("mnre")


@pytest.fixture(scope="module")
def records(mnre_root: Path) -> list[RelationRecord]:
    from rocmre.data import read_mnre

    return [r for r in read_mnre(mnre_root, "val", negative_label="None").records if r.relation != "None"][:6]


def test_scores_are_sentence_to_description_centre_cosines(encoder, descriptions, records):
    prior = SentencePrior(encoder=encoder, descriptions=descriptions)
    labels = descriptions.labels
    cand = np.array([[1, 2, 3]] * len(records))
    got = prior.relation_scores(records, labels, cand)
    sentences = prior.encode([" ".join(r.tokens) for r in records])
    for c, j in enumerate(cand[0]):
        centre = F.normalize(prior.encode(descriptions.texts(labels[j])).mean(0), dim=-1)
        np.testing.assert_allclose(got[:, c], (sentences @ centre).numpy(), atol=1e-5)
    masked = prior.relation_scores(records, labels, cand, mask=np.array([[True, False, True]] * len(records)))
    assert (masked[:, 1] == 0).all() and np.allclose(masked[:, [0, 2]], got[:, [0, 2]], atol=1e-6)


def test_templates_are_filled_per_pair(encoder, descriptions, records, monkeypatch):
    extended = descriptions.subset(descriptions.labels)
    extended.add("/per/loc/visited", ["{head} visited {tail}.", "The head person travelled to the tail place."],
                 head_types=["person"], tail_types=["location"])
    prior = SentencePrior(encoder=encoder, descriptions=extended)
    seen: list[str] = []
    encode = prior.encode
    monkeypatch.setattr(prior, "encode", lambda texts, show_progress=False: (seen.extend(texts), encode(texts))[1])
    labels = [*descriptions.labels, "/per/loc/visited"]
    rec = records[0]
    scores = prior.relation_scores([rec], labels, np.array([[len(labels) - 1]]))
    assert np.isfinite(scores).all()
    assert f"{rec.head.name} visited {rec.tail.name}." in seen
    assert "The head person travelled to the tail place." in seen
    assert not any("{head}" in t for t in seen)


def test_decision_rule_orders_top_k_by_the_mix_and_keeps_none(encoder, descriptions, records):
    labels = descriptions.labels
    first = np.random.default_rng(0).normal(size=(len(records), len(labels)))
    first[:, labels.index("None")] = -10.0
    prior = SentencePrior(encoder=encoder, descriptions=descriptions, weight=0.5)
    rule = DecisionRule(labels, "None", second_stage=prior, rerank_top_k=4)
    decided = rule.decide(first, records=records)
    top = np.argsort(-first, axis=1, kind="stable")[:, :4]
    mixed = combine(np.take_along_axis(first, top, 1), prior.relation_scores(records, labels, top), 0.5)
    for i in range(len(records)):
        assert [c.label for c in decided.top_k(i, 4)] == [labels[j] for j in top[i][np.argsort(-mixed[i],
                                                                                               kind="stable")]]
    prior.weight = 0.0  # the first stage's order
    assert rule.decide(first, records=records).predictions == [labels[j] for j in top[:, 0]]
    first[:, labels.index("None")] = 50.0
    assert rule.decide(first, records=records).predictions == ["None"] * len(records)


def test_bad_settings_and_inputs_give_clear_errors(encoder, descriptions, records):
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        SentencePrior(encoder=encoder, weight=1.5)
    prior = SentencePrior(encoder=encoder)
    with pytest.raises(ValueError, match="no relation descriptions"):
        prior.relation_scores(records, descriptions.labels, np.array([[1]] * len(records)))
    prior.descriptions = descriptions.subset(descriptions.labels[:3])
    with pytest.raises(KeyError, match="no descriptions for candidate relation"):
        prior.relation_scores(records, descriptions.labels, np.array([[5]] * len(records)))
    with pytest.raises(ValueError, match="needs the records"):
        prior(None, descriptions.labels, np.array([[1]]), np.array([[0.5]]))
    with pytest.raises(IndexError, match="out of range"):
        prior.relation_scores(records[:1], descriptions.labels, np.array([[99]]))


def test_sentences_and_filled_templates_are_encoded_once_and_the_cache_is_bounded(encoder, descriptions, records,
                                                                                   monkeypatch):
    extended = descriptions.subset(descriptions.labels)
    extended.add("/per/loc/visited", ["{head} visited {tail}.", "{head} went to {tail}."])
    labels = [*descriptions.labels, "/per/loc/visited"]
    cand = np.array([[1, 2, len(labels) - 1]] * len(records))
    reference = SentencePrior(encoder=encoder, descriptions=extended, cache_size=0).relation_scores(
        records, labels, cand)
    prior = SentencePrior(encoder=encoder, descriptions=extended)
    calls: list[list[str]] = []
    encode = prior.encode
    monkeypatch.setattr(prior, "encode", lambda texts, show_progress=False: (calls.append(list(texts)),
                                                                             encode(texts))[1])
    first = prior.relation_scores(records, labels, cand)
    encoded_first = sum(len(c) for c in calls)
    again = prior.relation_scores(records, labels, cand)
    np.testing.assert_allclose(first, reference, atol=1e-6)
    np.testing.assert_allclose(again, first, atol=0)
    assert sum(len(c) for c in calls) == encoded_first  # nothing encoded the second time
    assert encoded_first > 0
    small = SentencePrior(encoder=encoder, descriptions=extended, cache_size=3)
    small.relation_scores(records, labels, cand)
    assert len(small._recent) == 3
    with pytest.raises(ValueError, match="cache_size"):
        SentencePrior(encoder=encoder, descriptions=extended, cache_size=-1)


def test_typed_sentence_writes_role_and_type_after_each_mention():
    rec = RelationRecord(tokens=["Lionel", "Messi", "joined", "FC", "Barcelona", "today"],
                         head=Entity("Lionel Messi", 0, 2), tail=Entity("FC Barcelona", 3, 5))
    assert typed_sentence(rec, "person", "organization") == \
        "Lionel Messi (head person) joined FC Barcelona (tail organization) today"
    assert typed_sentence(rec, "miscellaneous", None) == \
        "Lionel Messi (head thing) joined FC Barcelona (tail entity) today"  # unknown type: "entity"
    same_end = RelationRecord(tokens=["the", "Paris", "Saint-Germain", "club"],
                              head=Entity("Paris Saint-Germain", 1, 3),
                              tail=Entity("Saint-Germain", 2, 3, type="location"))
    assert typed_sentence(same_end) == "the Paris Saint-Germain (head entity) (tail location) club"
    image_tail = RelationRecord(tokens=["Obama", "waves"], head=Entity("Obama", 0, 1, type="person"),
                                tail=Entity("object", box=(0.1, 0.1, 0.5, 0.5)))
    assert typed_sentence(image_tail) == "Obama (head person) waves"  # an image object has no mention to mark


def test_typed_clean_view_drops_addressing_and_links_outside_the_mentions(encoder, descriptions):
    tokens = ["RT", "@fcb_news", ":", "Messi", "signs", "for", "@PSG", "https://t.co/x1", "#", "Paris"]
    rec = RelationRecord(tokens=tokens, head=Entity("Messi", 3, 4), tail=Entity("@PSG", 6, 7))
    assert typed_sentence(rec, "person", "organization", drop_noise=True) == \
        "Messi (head person) signs for @PSG (tail organization) # Paris"  # a mention stays, even a @handle
    assert typed_sentence(rec, "person", "organization") == \
        "RT @fcb_news : Messi (head person) signs for @PSG (tail organization) https://t.co/x1 # Paris"
    assert [t for t in ["RT", "rt", "@a_b:", ":", "http://x", "RTs", "a:b", "#", "@"] if is_tweet_noise(t)] == \
        ["RT", "rt", "@a_b:", ":", "http://x"]
    clean = SentencePrior(encoder=encoder, descriptions=descriptions, sentence_view="typed_clean",
                          entity_types=lambda recs: [("person", "organization")] * len(recs))
    assert clean.sentences([rec]) == ["Messi (head person) signs for @PSG (tail organization) # Paris"]


def test_typed_view_reads_records_types_then_the_tagger(encoder, descriptions, records, monkeypatch):
    asked: list[int] = []

    def tagger(recs):
        asked.append(len(recs))
        return [("person", "location")] * len(recs)

    given = RelationRecord(tokens=list(records[1].tokens), head=Entity(records[1].head.name, *records[1].head.span,
                                                                       type="organization"),
                           tail=Entity(records[1].tail.name, *records[1].tail.span, type="organization"))
    prior = SentencePrior(encoder=encoder, descriptions=descriptions, sentence_view="typed", entity_types=tagger)
    texts = prior.sentences([records[0], given])
    assert asked == [1]  # only the record without types is tagged
    assert "(head person)" in texts[0] and "(tail location)" in texts[0]
    assert "(head organization)" in texts[1] and "(tail organization)" in texts[1]
    seen: list[str] = []
    encode = prior.encode
    monkeypatch.setattr(prior, "encode", lambda t, show_progress=False: (seen.extend(t), encode(t))[1])
    typed = prior.relation_scores(records[:2], descriptions.labels, np.array([[1, 2]] * 2))
    assert texts[0] in seen
    plain = SentencePrior(encoder=encoder, descriptions=descriptions)
    assert plain.sentences(records[:1]) == [" ".join(records[0].tokens)]
    assert not np.allclose(typed, plain.relation_scores(records[:2], descriptions.labels, np.array([[1, 2]] * 2)))
    untagged = SentencePrior(encoder=encoder, descriptions=descriptions, sentence_view="typed")
    assert "(head entity)" in untagged.sentences(records[:1])[0]  # no tagger: the word "entity"
    with pytest.raises(ValueError, match="2 type pairs for 1 records"):
        SentencePrior(encoder=encoder, sentence_view="typed",
                      entity_types=lambda recs: [("person", "person")] * 2).sentences(records[:1])
    with pytest.raises(ValueError, match="sentence_view"):
        SentencePrior(encoder=encoder, sentence_view="bold")
