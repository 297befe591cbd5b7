"""A second stage that needs no training: the pretrained sentence encoder's view of each candidate relation.

A ROC model learns its pair space on the relations it was trained on; a relation added later by description lands
in that space wherever its descriptions' vectors fall, and the pair space, pulled towards the trained relations,
tends to prefer them. The untrained sentence encoder has no such pull: the cosine between a sentence and the centre
of a relation's descriptions is a weak classifier on its own (`benchmarks/results/zero_shot.md`, the frozen-encoder
baseline), but its errors differ from the trained model's. :class:`SentencePrior` mixes the two: the first stage
proposes each record's top-k relations, and their order becomes ``combine(first stage, sentence cosine, weight)``
(per-record z-scores, :func:`rocmre.modeling.reranker.combine`), exactly as the cross-encoder re-ranker's is. The
None decision stays with the first stage.

Use::

    prior = SentencePrior(descriptions=extractor.model.descriptions, weight=0.2)
    extractor = RelationExtractor(model, second_stage=prior, rerank_top_k=5)

The sentence is the record's plain text (``sentence_view="plain"``) or, with ``sentence_view="typed"``, the same
text with each argument's role and entity type written after its mention in the descriptions' own words (``Messi
(head person) joined Barcelona (tail organization)``): the plain sentence is the same for every pair in it and does
not say which pair is asked about. ``sentence_view="typed_clean"`` is the typed text without a tweet's
addressing and links (``RT``, ``@handle``, ``http...`` tokens and a lone ``:``; tokens inside the mentions are
kept), which say nothing about the relation and pull the sentence vector towards every other tweet. Types come from
the records, else from ``entity_types`` (an extractor passes its tagger's), else the word ``entity``.

Descriptions that are templates (``{head} plays for {tail}.``) are filled with each pair's mentions; plain ones
are encoded once per text and kept. Sentences and filled templates are kept in a bounded least-recently-used cache
(``cache_size`` texts), so scoring the same records again (another weight, another description set) encodes
nothing twice.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rocmre.data.record import RelationRecord
from rocmre.descriptions.store import RelationDescriptions, fill_template, is_template
from rocmre.modeling.config import SentenceView
from rocmre.modeling.reranker import check_candidates, scored_candidates, second_stage_scores

__all__ = ["SENTENCE_VIEWS", "SentencePrior", "is_tweet_noise", "typed_sentence"]

#: what the sentence encoder reads of a record (see the module docstring); a new view is one more name in
#: :data:`rocmre.modeling.config.SentenceView`, which the saved config validates against
SENTENCE_VIEWS: tuple[str, ...] = get_args(SentenceView)

#: tokens of a tweet's addressing and links: the retweet marker, @handles (with a trailing colon), URLs, a lone colon
_TWEET_NOISE = re.compile(r"^(?:RT|rt|:|@\w+:?|https?://\S*)$")


def is_tweet_noise(token: str) -> bool:
    """Whether ``token`` is addressing or a link (``RT``, ``@handle``, ``@handle:``, ``http...``, ``:``), which the
    ``typed_clean`` view drops."""
    return bool(_TWEET_NOISE.match(token))

#: entity types (rocmre.data.entity_types.ENTITY_TYPES) as the curated descriptions write them
_TYPE_WORDS = {"person": "person", "organization": "organization", "location": "location",
               "miscellaneous": "thing", "object": "object"}


def typed_sentence(record: RelationRecord, head_type: str | None = None, tail_type: str | None = None,
                   drop_noise: bool = False) -> str:
    """``record``'s text with ``(head <type>)`` / ``(tail <type>)`` written after the head and tail mentions
    (an image-object tail, which has no span, is not written; an unknown type reads ``entity``). ``drop_noise``
    leaves out the tokens :func:`is_tweet_noise` matches, except inside the mentions."""
    def note(role: str, entity_type: str | None) -> str:
        return f"({role} {_TYPE_WORDS.get(entity_type or '', 'entity')})"

    after: dict[int, list[str]] = {}
    mentions = [ent.span for ent in (record.head, record.tail) if not ent.is_object]
    for role, ent, typ in (("head", record.head, head_type or record.head.type),
                           ("tail", record.tail, tail_type or record.tail.type)):
        if not ent.is_object:
            end = min(max(ent.span[1], 1), len(record.tokens)) - 1
            after.setdefault(end, []).append(note(role, typ))
    words: list[str] = []
    for i, tok in enumerate(record.tokens):
        if drop_noise and is_tweet_noise(tok) and not any(start <= i < end for start, end in mentions):
            continue
        words.append(tok)
        words += after.get(i, [])
    return " ".join(words)


class SentencePrior:
    """The pretrained ``backbone``'s cosine between a record's plain sentence and each candidate relation's
    description centre, mixed into the first stage's order with ``weight`` (0: first stage only, 1: the sentence
    encoder only). A :class:`~rocmre.modeling.decision.SecondStageScorer`; set :attr:`descriptions` to the
    relations it may score (a relation without descriptions there raises ``KeyError``), or to a function that
    returns the current set (an extractor passes its model's, so relations added later are scored).
    ``sentence_view``: one of :data:`SENTENCE_VIEWS`; ``entity_types``: records -> [(head type, tail type)] for
    the typed view (records' own types win)."""

    def __init__(self, backbone: str = "minilm-l6",
                 descriptions: RelationDescriptions | Callable[[], RelationDescriptions] | None = None,
                 weight: float = 0.2, negative_label: str = "None", batch_size: int = 128,
                 max_length: int = 128, cache_dir: Path | None = None, encoder: Any = None,
                 cache_size: int = 20_000, sentence_view: str = "plain",
                 entity_types: Callable[[Sequence[RelationRecord]], Sequence[tuple[str, str]]] | None = None
                 ) -> None:
        if sentence_view not in SENTENCE_VIEWS:
            raise ValueError(f"the sentence prior's sentence_view must be one of {SENTENCE_VIEWS}, "
                             f"got {sentence_view!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the sentence prior's weight must be in [0, 1], got {weight}")
        if cache_size < 0:
            raise ValueError(f"the sentence prior's cache_size must be >= 0, got {cache_size}")
        if encoder is None:
            from rocmre.backbones.text import load_text_backbone

            encoder = load_text_backbone(backbone, cache_dir=cache_dir)
        self.backbone = encoder  # a TextBackbone: .model and .tokenizer
        self.descriptions = descriptions
        self.sentence_view = sentence_view
        self.entity_types = entity_types
        self.weight = float(weight)
        self.negative_label = negative_label
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self._text_vectors: dict[str, torch.Tensor] = {}  # plain description text -> unit vector
        self.cache_size = int(cache_size)
        self._recent: OrderedDict[str, torch.Tensor] = OrderedDict()  # sentences and filled templates, LRU

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> torch.Tensor:
        """(N, H) unit vectors: the encoder's mean-pooled last hidden states (the sentence-transformers pooling of
        the embedded MiniLM and MPNet models)."""
        model, tok = self.backbone.model, self.backbone.tokenizer
        out = []
        starts = range(0, len(texts), self.batch_size)
        for s in tqdm(starts, desc="sentence prior", disable=not show_progress or len(starts) < 2, unit="batch"):
            enc = tok(list(texts[s:s + self.batch_size]), padding=True, truncation=True,
                      max_length=self.max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1).float())
        return torch.cat(out) if out else torch.zeros(0, int(self.backbone.hidden_size))

    def encode_cached(self, texts: Sequence[str], show_progress: bool = False) -> list[torch.Tensor]:
        """Unit vectors of ``texts`` as :meth:`encode`, each distinct text encoded once and the most recent
        ``cache_size`` kept for later calls."""
        found: dict[str, torch.Tensor] = {}
        for t in texts:
            if t not in found and t in self._recent:
                self._recent.move_to_end(t)
                found[t] = self._recent[t]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            for t, v in zip(missing, self.encode(missing, show_progress), strict=True):
                found[t] = v
                if self.cache_size:
                    self._recent[t] = v
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)
        return [found[t] for t in texts]

    def sentences(self, records: Sequence[RelationRecord]) -> list[str]:
        """What the encoder reads of each record (:attr:`sentence_view`)."""
        if self.sentence_view == "plain":
            return [" ".join(r.tokens) for r in records]
        records = list(records)
        need = [i for i, r in enumerate(records)
                if r.head.type is None or (r.tail.type is None and not r.tail.is_object)]
        tagged: dict[int, tuple[str, str]] = {}
        if need and self.entity_types is not None:
            found = list(self.entity_types([records[i] for i in need]))
            if len(found) != len(need):
                raise ValueError(f"entity_types returned {len(found)} type pairs for {len(need)} records")
            tagged = dict(zip(need, (tuple(t) for t in found), strict=True))
        out = []
        for i, r in enumerate(records):
            head, tail = tagged.get(i, (None, None))
            out.append(typed_sentence(r, r.head.type or head, r.tail.type or tail,
                                      drop_noise=self.sentence_view == "typed_clean"))
        return out

    def _plain_vectors(self, texts: Sequence[str]) -> None:
        missing = sorted({t for t in texts if t not in self._text_vectors})
        if missing:
            for t, v in zip(missing, self.encode(missing), strict=True):
                self._text_vectors[t] = v

    def relation_scores(self, records: Sequence[RelationRecord], labels: Sequence[str], candidates: np.ndarray,
                        descriptions: RelationDescriptions | None = None, mask: np.ndarray | None = None,
                        show_progress: bool = False) -> np.ndarray:
        """(N, k) cosines between each record's sentence (its :attr:`sentence_view`) and the centre (normalised
        mean) of each candidate relation's descriptions; entries where ``mask`` is False are skipped (left at 0)."""
        records = list(records)
        cand = check_candidates(records, labels, candidates, "the sentence prior")
        store = descriptions if descriptions is not None else self.descriptions
        if callable(store):
            store = store()
        if store is None:
            raise ValueError("the sentence prior has no relation descriptions: set prior.descriptions")
        keep = scored_candidates(cand, mask, labels, store, "prior.descriptions")
        wanted = sorted({labels[j] for j in cand[keep].tolist()})
        out = np.zeros(cand.shape, dtype=np.float64)
        rows = np.flatnonzero(keep.any(1)) if keep.size else np.zeros(0, dtype=np.int64)
        if not len(rows):
            return out
        sentences = self.encode_cached(self.sentences([records[i] for i in rows]), show_progress)
        plain = {lab: [t for t in store.texts(lab) if not is_template(t)] for lab in wanted}
        self._plain_vectors([t for texts in plain.values() for t in texts])
        templates = {lab: [t for t in store.texts(lab) if is_template(t)] for lab in wanted}
        filled: dict[tuple[int, str], torch.Tensor] = {}
        if any(templates.values()):  # per pair: every template of its candidates, filled with its mentions
            keys, texts = [], []
            for i in rows.tolist():
                rec = records[i]
                for c, j in enumerate(cand[i].tolist()):
                    for t in templates[labels[j]] if keep[i, c] else ():
                        keys.append((i, t))
                        texts.append(fill_template(t, rec.head.name, rec.tail.name))
            filled = dict(zip(keys, self.encode_cached(texts), strict=True))

        def centre(vecs: list[torch.Tensor]) -> torch.Tensor:
            return F.normalize(torch.stack(vecs).mean(0), dim=-1)

        fixed = {lab: centre([self._text_vectors[t] for t in plain[lab]]) for lab in wanted if not templates[lab]}
        for n, i in enumerate(rows.tolist()):
            for c, j in enumerate(cand[i].tolist()):
                if not keep[i, c]:
                    continue
                lab = labels[j]
                vec = fixed.get(lab)
                if vec is None:
                    vec = centre([self._text_vectors[t] for t in plain[lab]] + [filled[i, t] for t in templates[lab]])
                out[i, c] = float(sentences[n] @ vec)
        return out

    def __call__(self, records: Sequence[RelationRecord] | None, labels: list[str], candidates: np.ndarray,
                 scores: np.ndarray) -> np.ndarray:
        """The :class:`~rocmre.modeling.decision.SecondStageScorer` protocol: new (N, k) candidate scores."""
        return second_stage_scores(self, records, labels, candidates, scores, self.negative_label, self.weight,
                                   "the sentence prior")
