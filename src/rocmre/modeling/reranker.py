"""A cross-encoder re-ranker: the second stage of :class:`~rocmre.modeling.decision.DecisionRule`.

The first stage (ROC or the classifier) proposes each record's top-k relations; the cross-encoder reads the marked
sentence and one relation description *together* and gives one match score per pair. A relation's score is the
mean (or max) over its descriptions, so a relation added to :attr:`CrossEncoderReranker.descriptions` later is
scored without retraining.

Inputs are plain text, so no token is added to the tokenizer:

* segment A, the sentence with the entities marked by plain words,
  ``[head] Obama [/head] met [tail] Michelle [/tail] in Paris`` (an image-object tail is appended as
  ``in the image : [tail] dog [/tail]``); a long sentence loses the context words farthest from the entities
  first, never a marker (:func:`rocmre.modeling.prompting.select_words`);
* segment B, the description: a template is filled with the mentions (``{head} is married to {tail}.`` ->
  ``Obama is married to Michelle.``), any other text is prefixed with them,
  ``head: Obama ; tail: Michelle . The head person and the tail person are a romantic couple.``

Training (:func:`train_reranker`) is listwise: each labelled (non-``None``) record is scored against its gold
relation and ``negatives`` other relations (mostly of the same head/tail type signature), each shown through one
of its descriptions drawn at random, with softmax cross-entropy towards the gold. ``None`` records are not used:
the None decision stays with the first stage (:class:`~rocmre.modeling.decision.DecisionRule` never passes the
negative label to a second stage; called directly with it, the re-ranker leaves it at its first-stage rank).

Use::

    reranker = train_reranker(train_records, descriptions, RerankerConfig(epochs=2))
    reranker.save_pretrained("runs/reranker")
    runtime = ModelRuntime(model, second_stage=CrossEncoderReranker.from_pretrained("runs/reranker"),
                           rerank_top_k=5)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from rocmre.data.record import RelationRecord
from rocmre.descriptions.store import RelationDescriptions, fill_template, is_template
from rocmre.modeling.prompting import (
    HEAD_END,
    HEAD_START,
    MARKERS,
    TAIL_END,
    TAIL_START,
    PromptOptions,
    build_marked_words,
    select_words,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RerankerConfig",
    "CrossEncoderReranker",
    "train_reranker",
    "combine",
    "segment_a",
    "segment_b",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ENCODER_DIR = "encoder"  # the text encoder's Hugging Face config and the tokenizer files
DESCRIPTIONS_NAME = "descriptions.json"

#: the plain words that mark the entities in segment A (the pair encoder's special markers, written as text)
PLAIN_MARKERS = {HEAD_START: "[head]", HEAD_END: "[/head]", TAIL_START: "[tail]", TAIL_END: "[/tail]"}
_NO_PROMPTS = PromptOptions(use_types=False, use_positions=False)


class RerankerConfig(BaseModel):
    """The re-ranker's architecture and training settings (saved beside its weights as ``config.json``)."""

    model_config = ConfigDict(extra="forbid")

    text_backbone: str = "minilm-l6"
    max_length: int = Field(160, ge=32)  # sub-word tokens of the pair, special tokens included
    # segment B keeps this many (at most half the pair) when the pair would not fit; segment A fills the rest
    max_description_length: int = Field(64, ge=8)
    pooling: Literal["cls", "mean"] = "cls"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    description_aggregation: Literal["mean", "max"] = "mean"  # a relation's score over its descriptions
    negative_label: str = "None"  # left to the first stage: never a training candidate, never re-scored
    # training
    negatives: int = Field(4, ge=1)  # negative relations per training record
    hard_negative_fraction: float = Field(0.75, ge=0.0, le=1.0)  # share drawn from the gold's type signature
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(16, ge=1)  # records per step; each is 1 + negatives pairs
    learning_rate: float = Field(3e-5, gt=0.0)
    head_learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    length_bucket: int = Field(32, ge=1)  # batches whose records are sorted by length together (less padding)
    seed: int = 13
    mixed_precision: Literal["no", "bf16", "auto"] = "auto"  # auto: bf16 where the hardware computes it natively
    score_batch_size: int = Field(64, ge=1)  # pairs per forward pass when scoring


def resolve_mixed_precision(setting: str) -> bool:
    """Whether to run under bf16 autocast (``auto``: where :func:`rocmre.training.setup.resolve_precision` says)."""
    if setting == "no":
        return False
    if setting == "bf16":
        return True
    from rocmre.training.setup import resolve_precision

    return resolve_precision("auto") == "bf16"


# -- the two segments ----------------------------------------------------------------------------
def _marked_words(record: RelationRecord):
    return build_marked_words(record.tokens, record.head, record.tail, "", "", _NO_PROMPTS)


def _join(words) -> str:
    return " ".join(PLAIN_MARKERS[w.text] if w.priority == 0 and w.text in MARKERS else w.text for w in words)


def segment_a(record: RelationRecord) -> str:
    """The sentence with plain-word entity markers: ``[head] Obama [/head] met [tail] Michelle [/tail]``."""
    return _join(_marked_words(record))


def segment_b(text: str, head: str, tail: str) -> str:
    """A description as the cross-encoder reads it: a filled template, or the text prefixed with the mentions."""
    if is_template(text):
        return fill_template(text, head, tail)
    return f"head: {head} ; tail: {tail} . {text}"


def _zrow(x: np.ndarray) -> np.ndarray:
    mean = x.mean(1, keepdims=True)
    std = x.std(1, keepdims=True)
    return (x - mean) / np.where(std > 1e-12, std, 1.0)


def combine(first_stage: np.ndarray, rerank: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """``(1 - weight) * z(first_stage) + weight * z(rerank)``, each z-normalised per row: (N, k) -> (N, k).

    ``weight=1`` orders by the re-ranker alone, ``weight=0`` keeps the first-stage order."""
    first_stage = np.asarray(first_stage, dtype=np.float64)
    rerank = np.asarray(rerank, dtype=np.float64)
    if first_stage.shape != rerank.shape or first_stage.ndim != 2:
        raise ValueError(f"combine needs two (N, k) arrays of one shape, got {first_stage.shape} and {rerank.shape}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the re-ranker weight must be in [0, 1], got {weight}")
    if not first_stage.size:
        return first_stage.copy()
    return (1.0 - weight) * _zrow(first_stage) + weight * _zrow(rerank)


# -- the model ------------------------------------------------------------------------------------
class CrossEncoderReranker(nn.Module):
    """A text encoder and a linear head scoring (marked sentence, relation description) pairs.

    Plugs into :class:`~rocmre.modeling.decision.DecisionRule` (or ``ModelRuntime(second_stage=...)``) as a
    :class:`~rocmre.modeling.decision.SecondStageScorer`: set :attr:`descriptions` to the relations it may score
    (update it to add relations) and :attr:`weight` to mix in the first stage (1.0: the re-ranker alone).
    """

    def __init__(self, config: RerankerConfig, encoder: nn.Module, tokenizer: Any,
                 descriptions: RelationDescriptions | None = None, weight: float = 1.0) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        hidden = getattr(encoder.config, "hidden_size", None) or getattr(encoder.config, "d_model", None)
        if hidden is None:
            raise ValueError("cannot read the hidden size of the text encoder's config")
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(int(hidden), 1)
        self.descriptions = descriptions
        self.weight = float(weight)
        self._token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
        self._n_special = tokenizer.num_special_tokens_to_add(pair=True)
        self.train_stats: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []

    # -- building, saving, loading ------------------------------------------------------------
    @classmethod
    def build(cls, config: RerankerConfig | None = None, cache_dir: Path | None = None,
              descriptions: RelationDescriptions | None = None) -> CrossEncoderReranker:
        """A fresh re-ranker on the pretrained ``config.text_backbone`` (the head is random)."""
        from rocmre.backbones.text import load_text_backbone

        config = config or RerankerConfig()
        backbone = load_text_backbone(config.text_backbone, cache_dir=cache_dir)
        return cls(config, backbone.model, backbone.tokenizer, descriptions)

    def save_pretrained(self, directory: str | Path) -> None:
        """``config.json``, ``model.safetensors``, ``encoder/`` (encoder config + tokenizer) and the descriptions."""
        directory = Path(directory)
        (directory / ENCODER_DIR).mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "rocmre-reranker"})
        self.encoder.config.save_pretrained(directory / ENCODER_DIR)
        self.tokenizer.save_pretrained(directory / ENCODER_DIR)
        if self.descriptions is not None:
            self.descriptions.save(directory / DESCRIPTIONS_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, descriptions: RelationDescriptions | None = None,
                        device: str | torch.device = "cpu") -> CrossEncoderReranker:
        """Load a re-ranker saved by :meth:`save_pretrained`; ``descriptions`` replaces the saved ones."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{directory} is not a re-ranker folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        config = RerankerConfig.model_validate_json((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        tokenizer = AutoTokenizer.from_pretrained(directory / ENCODER_DIR)
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(directory / ENCODER_DIR))
        if descriptions is None and (directory / DESCRIPTIONS_NAME).is_file():
            descriptions = RelationDescriptions.load(directory / DESCRIPTIONS_NAME)
        model = cls(config, encoder, tokenizer, descriptions)
        missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{directory / WEIGHTS_NAME} does not match the config: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        return model.to(device).eval()

    # -- encoding -----------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) match scores of a tokenised batch of pairs."""
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if not self._token_types:
            inputs.pop("token_type_ids", None)
        hidden = self.encoder(**inputs).last_hidden_state
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled)).squeeze(-1)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when the config asks for it (and, under ``auto``, the hardware computes it natively)."""
        if resolve_mixed_precision(self.config.mixed_precision):
            device = next(self.parameters()).device
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    def _pair_texts(self, records: Sequence[RelationRecord], pairs: Sequence[tuple[int, str]]
                    ) -> tuple[list[str], list[str], list[int]]:
        """Segment A and B of each (record index, description) pair, A shortened to fit, and the estimated length."""
        used = sorted({i for i, _ in pairs})
        words = {i: _marked_words(records[i]) for i in used}
        full_a = {i: _join(words[i]) for i in used}
        n_a = dict(zip(used, self._count([full_a[i] for i in used]), strict=True))
        b = [segment_b(t, records[i].head.name, records[i].tail.name) for i, t in pairs]
        n_b = self._count(b)
        shortened: dict[tuple[int, int], tuple[str, int]] = {}
        a_out, lengths = [], []
        room = self.config.max_length - self._n_special
        b_cap = min(self.config.max_description_length, room // 2)  # B never takes more than half the pair
        for (i, _), nb in zip(pairs, n_b, strict=True):
            budget = room - min(nb, b_cap)
            if n_a[i] <= budget:
                a_out.append(full_a[i])
                lengths.append(min(n_a[i] + nb + self._n_special, self.config.max_length))
                continue
            if (i, budget) not in shortened:
                w = words[i]
                keep = select_words(w, self._count([x.text for x in w]), budget)
                text = _join([w[j] for j in keep])
                shortened[(i, budget)] = (text, self._count([text])[0])
            text, n = shortened[(i, budget)]
            a_out.append(text)
            lengths.append(min(n + nb + self._n_special, self.config.max_length))
        return a_out, b, lengths

    def _tokenize(self, a: list[str], b: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(a, b, padding=True, truncation="only_second", max_length=self.config.max_length,
                             return_tensors="pt")
        device = next(self.parameters()).device
        return {k: v.to(device) for k, v in enc.items()}

    # -- scoring ------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_pairs(self, records: Sequence[RelationRecord], texts: Sequence[Sequence[str]],
                    batch_size: int | None = None, show_progress: bool = False) -> list[np.ndarray]:
        """The match score of each record with each of its texts (raw descriptions; templates are filled here).

        ``texts[i]`` lists the descriptions to score with ``records[i]``; returns one array per record. A pair
        that occurs twice is encoded once."""
        records = list(records)
        if len(texts) != len(records):
            raise ValueError(f"score_pairs got {len(records)} records but {len(texts)} lists of texts")
        index: dict[tuple[int, str], int] = {}
        for i, row in enumerate(texts):
            if isinstance(row, str):
                raise TypeError("texts[i] must be a list of descriptions, not a single string")
            for t in row:
                index.setdefault((i, t), len(index))
        pairs = list(index)
        out = np.zeros(len(pairs), dtype=np.float64)
        if pairs:
            a, b, lengths = self._pair_texts(records, pairs)
            order = np.argsort(lengths, kind="stable")
            size = batch_size or self.config.score_batch_size
            was_training = self.training
            self.eval()
            starts = range(0, len(order), size)
            try:
                for s in tqdm(starts, desc="re-ranking", unit="batch", disable=not show_progress, leave=False):
                    idx = order[s:s + size]
                    batch = self._tokenize([a[j] for j in idx], [b[j] for j in idx])
                    with self.autocast():
                        out[idx] = self.forward(batch).float().cpu().numpy()
            finally:
                self.train(was_training)
        return [np.array([out[index[(i, t)]] for t in row], dtype=np.float64) for i, row in enumerate(texts)]

    def _check(self, records: Sequence[RelationRecord] | None, labels: Sequence[str],
               candidates: np.ndarray) -> np.ndarray:
        return check_candidates(records, labels, candidates, "the cross-encoder re-ranker")

    def relation_scores(self, records: Sequence[RelationRecord], labels: Sequence[str], candidates: np.ndarray,
                        descriptions: RelationDescriptions | None = None, mask: np.ndarray | None = None,
                        show_progress: bool = False) -> np.ndarray:
        """(N, k) scores of each record's candidate relations ``labels[candidates]``, aggregated over each
        relation's descriptions (``config.description_aggregation``); entries where ``mask`` is False are skipped
        (left at 0)."""
        records = list(records) if records is not None else None
        cand = self._check(records, labels, candidates)
        descriptions = descriptions if descriptions is not None else self.descriptions
        if descriptions is None:
            raise ValueError("the re-ranker has no relation descriptions: set reranker.descriptions")
        keep = scored_candidates(cand, mask, labels, descriptions, "reranker.descriptions")
        per_record = [sorted({t for j, ok in zip(row, krow, strict=True) if ok for t in descriptions.texts(labels[j])})
                      for row, krow in zip(cand.tolist(), keep, strict=True)]
        scored = self.score_pairs(records, per_record, show_progress=show_progress)
        agg = np.mean if self.config.description_aggregation == "mean" else np.max
        out = np.zeros(cand.shape, dtype=np.float64)
        for i, (row, texts, values) in enumerate(zip(cand.tolist(), per_record, scored, strict=True)):
            pos = {t: n for n, t in enumerate(texts)}
            for c, j in enumerate(row):
                if keep[i, c]:
                    out[i, c] = float(agg([values[pos[t]] for t in descriptions.texts(labels[j])]))
        return out

    def __call__(self, records: Sequence[RelationRecord] | None, labels: list[str], candidates: np.ndarray,
                 scores: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """The :class:`~rocmre.modeling.decision.SecondStageScorer` protocol: new (N, k) candidate scores.

        Non-negative candidates are ordered by :func:`combine` (first stage, re-ranker, :attr:`weight`); the
        negative label keeps its first-stage rank (its score is placed between its new neighbours)."""
        return second_stage_scores(self, records, labels, candidates, scores, self.config.negative_label,
                                   self.weight, "the cross-encoder re-ranker")

    def forward_pairs(self, records: Sequence[RelationRecord], pairs: Sequence[tuple[int, str]]) -> torch.Tensor:
        """Scores (with gradients) of (record index, description) pairs in the given order (training)."""
        a, b, _ = self._pair_texts(records, pairs)
        with self.autocast():
            return self.forward(self._tokenize(a, b)).float()


def check_candidates(records: Sequence[RelationRecord] | None, labels: Sequence[str], candidates: np.ndarray,
                     who: str) -> np.ndarray:
    """``candidates`` as an (N, k) int64 array of valid indices into ``labels``, for ``records`` (needed)."""
    if records is None:
        raise ValueError(f"{who} needs the records (text and entities), not only scores")
    cand = np.asarray(candidates)
    if cand.ndim != 2 or cand.shape[0] != len(records):
        raise ValueError(f"candidates must be (N, k) with N = {len(records)} records, got shape {cand.shape}")
    if cand.size and not np.issubdtype(cand.dtype, np.integer):
        raise TypeError(f"candidates must be integer relation indices, got dtype {cand.dtype}")
    bad = cand[(cand < 0) | (cand >= len(labels))] if cand.size else cand[:0]
    if bad.size:
        raise IndexError(f"candidate relation index {int(bad[0])} is out of range for {len(labels)} labels")
    return cand.astype(np.int64)


def scored_candidates(cand: np.ndarray, mask: np.ndarray | None, labels: Sequence[str],
                      descriptions: RelationDescriptions, where: str) -> np.ndarray:
    """The (N, k) boolean mask of the candidates to score (all when ``mask`` is None), checked against
    ``cand``'s shape; ``KeyError`` naming ``where`` when a candidate to score has no descriptions there."""
    keep = np.ones(cand.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != cand.shape:
        raise ValueError(f"mask must have the candidates' shape {cand.shape}, got {keep.shape}")
    missing = sorted({labels[j] for j in cand[keep].tolist() if labels[j] not in descriptions})
    if missing:
        raise KeyError(f"no descriptions for candidate relation(s) {missing}: add them to {where}")
    return keep


def second_stage_scores(scorer: Any, records: Sequence[RelationRecord] | None, labels: Sequence[str],
                        candidates: np.ndarray, scores: np.ndarray, negative_label: str, weight: float,
                        who: str) -> np.ndarray:
    """What a second stage with ``scorer.relation_scores(records, labels, candidates, mask=...)`` returns to the
    decision rule: each record's non-negative candidates ordered by :func:`combine` (first stage, ``scorer``,
    ``weight``), the negative label kept at its first-stage rank (its score between its new neighbours)."""
    records = list(records) if records is not None else None
    cand = check_candidates(records, labels, candidates, who)
    first = np.asarray(scores, dtype=np.float64)
    if first.shape != cand.shape:
        raise ValueError(f"scores must have the candidates' shape {cand.shape}, got {first.shape}")
    mask = np.array([[labels[j] != negative_label for j in row] for row in cand.tolist()],
                    dtype=bool).reshape(cand.shape)
    second = scorer.relation_scores(records, labels, cand, mask=mask)
    out = first.copy()
    for i in range(len(cand)):
        sc = np.flatnonzero(mask[i])
        if not len(sc):
            continue
        values = combine(first[i, sc][None], second[i, sc][None], weight)[0]
        out[i] = _arrange(first[i], mask[i], sc, values)
    return out


def _arrange(first: np.ndarray, scorable: np.ndarray, sc: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Scores for one row: unscorable candidates keep their first-stage rank, the scorable ones fill the other
    ranks in the order of ``values``; an unscorable candidate's score lies between its new neighbours."""
    k = len(first)
    slots = np.argsort(-first, kind="stable")  # rank -> column
    fill = iter(sc[np.argsort(-values, kind="stable")].tolist())
    value_of = dict(zip(sc.tolist(), values.tolist(), strict=True))
    order = [int(c) if not scorable[c] else next(fill) for c in slots]  # new rank -> column
    ranked = [value_of.get(c) for c in order]
    out = np.empty(k, dtype=np.float64)
    r = 0
    while r < k:
        if ranked[r] is not None:
            out[order[r]] = ranked[r]
            r += 1
            continue
        end = r
        while end < k and ranked[end] is None:
            end += 1
        above = ranked[r - 1] if r > 0 else None
        below = ranked[end] if end < k else None
        m = end - r
        for t in range(m):  # a run of unscorable candidates between two scored ones
            if above is not None and below is not None:
                v = above - (above - below) * (t + 1) / (m + 1)
            elif above is not None:
                v = above - (t + 1)
            else:
                v = below + (m - t)  # type: ignore[operator]
            out[order[r + t]] = v
        r = end
    return out


# -- training -------------------------------------------------------------------------------------
def _signature(descriptions: RelationDescriptions, label: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    e = descriptions.relations[label]
    return tuple(sorted(e.head_types)), tuple(sorted(e.tail_types))


class _NegativeSampler:
    """Seeded negatives for a gold relation: ``hard_fraction`` of them from its type signature when possible."""

    def __init__(self, pool: list[str], descriptions: RelationDescriptions, n: int, hard_fraction: float) -> None:
        self.n = min(n, len(pool) - 1)
        self.hard_fraction = hard_fraction
        sig = {lab: _signature(descriptions, lab) for lab in pool}
        self.hard = {g: [lab for lab in pool if lab != g and sig[lab] == sig[g]] for g in pool}
        self.easy = {g: [lab for lab in pool if lab != g and sig[lab] != sig[g]] for g in pool}

    def __call__(self, gold: str, rng: np.random.Generator) -> list[str]:
        hard, easy = self.hard[gold], self.easy[gold]
        n_hard = min(len(hard), round(self.n * self.hard_fraction))
        n_easy = min(len(easy), self.n - n_hard)
        n_hard = min(len(hard), self.n - n_easy)  # too few easy ones: more hard ones
        picks = [hard[j] for j in rng.choice(len(hard), n_hard, replace=False)] if n_hard else []
        picks += [easy[j] for j in rng.choice(len(easy), n_easy, replace=False)] if n_easy else []
        return picks


def _bucketed(order: np.ndarray, lengths: np.ndarray, batch_size: int, bucket: int,
              rng: np.random.Generator) -> Iterator[list[int]]:
    """Batches of the shuffled ``order``, sorted by length within chunks of ``bucket`` batches, in random order."""
    batches = []
    chunk = batch_size * bucket
    for s in range(0, len(order), chunk):
        part = order[s:s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j:j + batch_size].tolist() for j in range(0, len(part), batch_size)]
    for b in rng.permutation(len(batches)).tolist():
        yield batches[b]


def train_reranker(records: Sequence[RelationRecord], descriptions: RelationDescriptions,
                   config: RerankerConfig | None = None, negative_label: str = "None", show_progress: bool = True,
                   *, model: CrossEncoderReranker | None = None,
                   device: str | torch.device | None = None) -> CrossEncoderReranker:
    """Train a cross-encoder on the labelled non-``negative_label`` records, listwise over the gold relation and
    ``config.negatives`` others from ``descriptions`` (only relations there can be candidates).

    ``model`` starts from an existing re-ranker (its config is replaced by ``config``) instead of building one
    from ``config.text_backbone``. Deterministic for one ``config.seed`` (on one thread count). The returned
    re-ranker is in eval mode, holds ``descriptions``, per-step ``history`` and ``train_stats`` (examples/s).
    ``device``: where to train (default: CUDA when available, else the CPU)."""
    config = config or (model.config if model is not None else RerankerConfig())
    config = config.model_copy(update={"negative_label": negative_label})
    records = list(records)
    if not records:
        raise ValueError("train_reranker got no records")
    pool = [lab for lab in descriptions.labels if lab != negative_label]
    if len(pool) < 2:
        raise ValueError(f"the re-ranker needs at least 2 relations besides {negative_label!r} in the descriptions, "
                         f"got {pool}")
    train = [r for r in records if r.relation is not None and r.relation != negative_label and r.relation in pool]
    skipped_unknown = sum(1 for r in records if r.relation not in (None, negative_label) and r.relation not in pool)
    if not train:
        raise ValueError(f"none of the {len(records)} records has a relation (other than {negative_label!r}) "
                         "described in the descriptions: nothing to train the re-ranker on")
    if skipped_unknown:
        logger.info("re-ranker: %d records skipped, their relation has no description", skipped_unknown)

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    reranker = model if model is not None else CrossEncoderReranker.build(config)
    reranker.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    reranker.config = config
    reranker.descriptions = descriptions
    sampler = _NegativeSampler(pool, descriptions, config.negatives, config.hard_negative_fraction)
    lengths = np.array(reranker._count([segment_a(r) for r in train]))

    decay, no_decay = [], []
    for name, p in reranker.encoder.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([
        {"params": decay, "lr": config.learning_rate, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.learning_rate, "weight_decay": 0.0},
        {"params": list(reranker.head.parameters()), "lr": config.head_learning_rate, "weight_decay": 0.0},
    ])
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    reranker.history = []
    reranker.train()
    n_examples, n_pairs, started = 0, 0, time.perf_counter()
    bar = tqdm(total=total, desc="re-ranker", unit="step", disable=not show_progress)
    step = 0
    for epoch in range(config.epochs):
        for batch in _bucketed(rng.permutation(len(train)), lengths, config.batch_size, config.length_bucket, rng):
            pairs: list[tuple[int, str]] = []
            for i in batch:
                gold = train[i].relation
                for lab in [gold, *sampler(gold, rng)]:  # type: ignore[list-item]
                    texts = descriptions.texts(lab)
                    pairs.append((i, texts[int(rng.integers(len(texts)))]))
            logits = reranker.forward_pairs(train, pairs).view(len(batch), -1)
            loss = F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long, device=logits.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reranker.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_examples += len(batch)
            n_pairs += len(pairs)
            rate = n_examples / max(time.perf_counter() - started, 1e-9)
            reranker.history.append({"step": step, "epoch": epoch, "loss": float(loss.detach()),
                                     "examples_per_s": rate})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", ex_s=f"{rate:.1f}")
            bar.update()
            step += 1
    bar.close()
    seconds = time.perf_counter() - started
    reranker.train_stats = {"records": len(train), "steps": step, "seconds": seconds,
                            "examples_per_s": n_examples / max(seconds, 1e-9),
                            "pairs_per_s": n_pairs / max(seconds, 1e-9),
                            "bf16": resolve_mixed_precision(config.mixed_precision)}
    logger.info("re-ranker trained: %d records, %d steps in %.1f s (%.1f examples/s, %.1f pairs/s)",
                len(train), step, seconds, reranker.train_stats["examples_per_s"], reranker.train_stats["pairs_per_s"])
    return reranker.eval()
