"""The one decision path from a model's scores to the answer (:class:`DecisionRule`), used by every caller.
Steps: relation score offsets; the type prior (scope ``all`` or ``added_vs_trained``); the None margin (plus each
relation's extra ``none_margin``); an optional :class:`SecondStageScorer` that reorders the top candidates; the
gate for relations that failed their extra margin; ranking. See docs/new-relations.md."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.modeling.config import DecisionConfig


class SecondStageScorer(Protocol):
    """A re-ranker plugged into :class:`DecisionRule`: given the records (or ``None``), the labels, candidate indices
    ``(N, k)`` and their first-stage scores ``(N, k)``, returns new scores ``(N, k)`` (higher is better)."""

    def __call__(self, records: Sequence[Any] | None, labels: list[str], candidates: np.ndarray,
                 scores: np.ndarray) -> np.ndarray: ...


@dataclass
class RankedRelation:
    """One candidate answer for one record."""

    index: int
    label: str
    score: float
    description_index: int | None = None


@dataclass
class Decisions:
    """The decided answers for N records over R relations."""

    labels: list[str]
    negative_label: str
    model_scores: np.ndarray  # (N, R) what the model gave (ROC: cosine similarity; classifier: logits)
    scores: np.ndarray  # (N, R) after the type prior, the None margin and the second stage
    best_description: np.ndarray | None = None  # (N, R) index of each relation's best-matching description
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def indices(self) -> np.ndarray:
        """(N,) index of the answer of each record."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        return self.scores.argmax(1)

    @property
    def predictions(self) -> list[str]:
        """The answer of each record."""
        return [self.labels[i] for i in self.indices]

    def top_k(self, i: int, k: int) -> list[RankedRelation]:
        """The ``k`` best relations of record ``i``, best first (ties broken by relation order)."""
        row = self.scores[i]
        k = max(1, min(k, len(row)))
        order = None
        if len(row) > 256 and k < len(row):  # thousands of relations: the k-th best score (torch.topk), then sort the
            # relations scoring at least that much (all of them: ties keep relation order exactly)
            kth = torch.from_numpy(np.ascontiguousarray(row)).topk(k).values.min().item()
            part = np.flatnonzero(row >= kth)
            if len(part) >= k:  # (fewer only with NaN scores)
                order = part[np.lexsort((part, -row[part]))][:k]
        if order is None:  # few relations (or NaN scores): sort them all
            order = np.argsort(-row, kind="stable")[:k]
        return [RankedRelation(int(j), self.labels[j], float(row[j]),
                               None if self.best_description is None else int(self.best_description[i, j]))
                for j in order]


def type_indices(types: Sequence[str]) -> np.ndarray:
    """Entity-type names to indices into :data:`ENTITY_TYPES` (unknown names map to ``unknown``)."""
    index = {t: i for i, t in enumerate(ENTITY_TYPES)}
    return np.array([index.get(t, index["unknown"]) for t in types], dtype=np.int64)


class DecisionRule:
    """Turns model scores into answers; see the module docstring for the order of the steps."""

    def __init__(self, labels: Sequence[str], negative_label: str, *, none_margin: float = 0.0,
                 type_constraint: bool = False, type_penalty: float = 0.2,
                 type_compatibility: np.ndarray | None = None, second_stage: SecondStageScorer | None = None,
                 rerank_top_k: int = 5, relation_offsets: Sequence[float] | None = None,
                 relation_none_margins: Sequence[float] | None = None,
                 added_relations: Sequence[bool] | None = None) -> None:
        self.labels = list(labels)
        self.negative_label = negative_label
        self.none_margin = float(none_margin)
        self.type_constraint = type_constraint
        self.type_penalty = float(type_penalty)
        self.type_compatibility = type_compatibility  # (R, 2, T) bool
        self.second_stage = second_stage
        self.rerank_top_k = rerank_top_k
        self.relation_offsets = self._per_relation(relation_offsets, "relation_offsets")
        self.relation_none_margins = self._per_relation(relation_none_margins, "relation_none_margins")
        # the relations added without training (scope added_vs_trained): the prior only decides whether they beat
        # the trained ones (None: the prior applies to every relation)
        self.added_relations = (None if added_relations is None
                                else np.asarray(added_relations, dtype=bool).reshape(-1))
        if self.added_relations is not None and self.added_relations.shape != (len(self.labels),):
            raise ValueError(f"added_relations has shape {self.added_relations.shape}, expected "
                             f"({len(self.labels)},)")
        if type_constraint and type_compatibility is None:
            raise ValueError("type_constraint needs the relations' type compatibility table")

    def _per_relation(self, values: Sequence[float] | None, name: str) -> np.ndarray | None:
        """One number per relation as an array (None when not given or all 0)."""
        if values is None:
            return None
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (len(self.labels),):
            raise ValueError(f"{name} has shape {array.shape}, expected ({len(self.labels)},)")
        return array if array.any() else None

    @classmethod
    def from_model(cls, model: Any, second_stage: SecondStageScorer | None = None, rerank_top_k: int = 5, *,
                   decision: DecisionConfig | None = None, **changes: Any) -> DecisionRule:
        """The rule of a :class:`~rocmre.modeling.model.RelationModel`: its ``decision`` settings (or
        ``decision``), with ``changes`` to them (:class:`DecisionConfig` fields; None: as saved)."""
        cfg = model.config
        d = decision if decision is not None else model.decision
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            d = DecisionConfig.model_validate({**d.model_dump(), **changes})
        constrained = bool(d.type_prior and cfg.model_type == "roc")
        scope = d.type_prior_scope
        return cls(model.relation_labels, cfg.negative_label, none_margin=d.none_margin,
                   type_constraint=constrained, type_penalty=d.type_penalty,
                   type_compatibility=model.type_compatibility().numpy() if constrained else None,
                   second_stage=second_stage, rerank_top_k=rerank_top_k,
                   relation_offsets=model_numbers(model, "score_offset"),
                   relation_none_margins=model_numbers(model, "none_margin"),
                   added_relations=model.added_relations() if constrained and scope == "added_vs_trained" else None)

    # -- the steps ----------------------------------------------------------------------------
    def prior_scores(self, model_scores: np.ndarray, head_types: np.ndarray | None,
                     tail_types: np.ndarray | None) -> np.ndarray:
        """Model scores with the relation offsets and the type prior applied (no margin).
        In the ``added_vs_trained`` scope, trained relations keep their scores ``S`` and an added relation ``a`` gets
        ``P[a] - max P[trained] + max S[trained]`` (``P``: the scores with the prior on every relation)."""
        scores = np.asarray(model_scores, dtype=np.float64).copy()
        if self.relation_offsets is not None and len(scores):
            scores += self.relation_offsets
        if self.type_constraint and len(scores):
            if head_types is None or tail_types is None:
                raise ValueError("type-constrained decisions need the records' entity types")
            ok = self.type_compatibility  # (R, 2, T)
            head_bad = ~ok[:, 0, :][:, head_types].T  # (N, R)
            tail_bad = ~ok[:, 1, :][:, tail_types].T
            penalised = scores - self.type_penalty * (head_bad.astype(np.float64) + tail_bad.astype(np.float64))
            scores = self._contest(scores, penalised) if self.added_relations is not None else penalised
        return scores

    def _contest(self, plain: np.ndarray, penalised: np.ndarray) -> np.ndarray:
        """The ``added_vs_trained`` scores (see :meth:`prior_scores`) from the scores without and with the prior."""
        added = self.added_relations
        trained = ~added
        if self.negative_label in self.labels:
            trained[self.labels.index(self.negative_label)] = False
        out = plain.copy()
        if not added.any():
            return out
        if not trained.any():  # nothing trained to compete with: the added relations keep the prior
            out[:, added] = penalised[:, added]
            return out
        lead = penalised[:, added] - penalised[:, trained].max(1, keepdims=True)
        out[:, added] = plain[:, trained].max(1, keepdims=True) + lead
        return out

    def _with_margin(self, scores: np.ndarray, margin: float) -> np.ndarray:
        if margin and self.negative_label in self.labels:
            scores = scores.copy()
            scores[:, self.labels.index(self.negative_label)] += margin
        return scores

    def _gated(self, scores: np.ndarray) -> np.ndarray | None:
        """(N, R) the relations that do not clear the negative label's score (margin included) by their extra
        None margin; None when no relation has one."""
        extra = self.relation_none_margins
        if extra is None or self.negative_label not in self.labels or not len(scores):
            return None
        neg = self.labels.index(self.negative_label)
        gated = (scores < scores[:, [neg]] + extra[None, :]) & (extra[None, :] != 0)
        gated[:, neg] = False
        return gated

    def _apply_gate(self, scores: np.ndarray, gated: np.ndarray | None) -> np.ndarray:
        """Gated relations are capped just below the negative label's final score: they cannot be the answer,
        and every other relation competes as before."""
        if gated is None or not gated.any():
            return scores
        neg = self.labels.index(self.negative_label)
        cap = scores[:, [neg]] - 1e-6
        return np.where(gated, np.minimum(scores, cap), scores)

    def _rerank(self, scores: np.ndarray, records: Sequence[Any] | None) -> np.ndarray:
        """The second stage orders each record's top ``rerank_top_k`` relations (not the negative label) inside the
        block under the first stage's best score, so the None decision stays the first stage's."""
        k = min(self.rerank_top_k, scores.shape[1])
        if self.second_stage is None or not len(scores) or k < 1:
            return scores
        neg = self.labels.index(self.negative_label) if self.negative_label in self.labels else None
        ranked = scores if neg is None else np.where(np.arange(scores.shape[1]) == neg, -np.inf, scores)
        k = min(k, scores.shape[1] - (neg is not None))
        if k < 1:
            return scores
        top = np.argsort(-ranked, axis=1, kind="stable")[:, :k]  # (N, k)
        first = np.take_along_axis(scores, top, axis=1)
        new = np.asarray(self.second_stage(records, self.labels, top, first), dtype=np.float64)
        if new.shape != top.shape:
            raise ValueError(f"the second-stage scorer returned shape {new.shape}, expected {top.shape}")
        if not np.isfinite(new).all():
            raise ValueError("the second-stage scorer returned non-finite scores")
        # map the second-stage scores into [block top - span, block top], span = the block's first-stage range
        high = first.max(1, keepdims=True)
        span = np.maximum(high - first.min(1, keepdims=True), 1e-6)
        width = np.maximum(new.max(1, keepdims=True) - new.min(1, keepdims=True), 1e-12)
        mapped = high - span * (new.max(1, keepdims=True) - new) / width
        rest = np.ones_like(scores, dtype=bool)
        np.put_along_axis(rest, top, False, axis=1)
        if neg is not None:
            rest[:, neg] = False  # the negative label keeps its score (and its margin)
        rest_max = np.where(rest, scores, -np.inf).max(1, keepdims=True)
        shift = np.where(np.isfinite(rest_max), rest_max - mapped.min(1, keepdims=True) + 1e-6, 0.0)
        out = np.where(rest, scores - np.maximum(shift, 0.0), scores)
        np.put_along_axis(out, top, mapped, axis=1)
        return out

    def decide(self, model_scores: np.ndarray, head_types: np.ndarray | None = None,
               tail_types: np.ndarray | None = None, best_description: np.ndarray | None = None,
               records: Sequence[Any] | None = None, none_margin: float | None = None) -> Decisions:
        """The answers for ``model_scores`` (N, R); ``none_margin`` overrides the rule's margin (tuning only)."""
        margin = self.none_margin if none_margin is None else float(none_margin)
        scores = self._with_margin(self.prior_scores(model_scores, head_types, tail_types), margin)
        gated = self._gated(scores)
        scores = self._apply_gate(self._rerank(scores, records), gated)
        return Decisions(self.labels, self.negative_label, np.asarray(model_scores), scores, best_description,
                         {"none_margin": margin, "type_constraint": self.type_constraint,
                          "second_stage": type(self.second_stage).__name__ if self.second_stage else None})

    def tune_none_margin(self, model_scores: np.ndarray, gold: Sequence[str], head_types: np.ndarray | None = None,
                         tail_types: np.ndarray | None = None, grid: np.ndarray | None = None,
                         best_description: np.ndarray | None = None, records: Sequence[Any] | None = None
                         ) -> tuple[float, float]:
        """The None margin maximising micro-F1 on ``gold`` through :meth:`decide`: (margin, micro-F1); ties go to the
        margin closest to zero."""
        prior = self.prior_scores(model_scores, head_types, tail_types)
        scale = float(np.std(prior)) or 1.0
        grid = grid if grid is not None else np.linspace(-1.0, 1.0, 41) * scale
        best = (0.0, -1.0)
        for m in sorted(np.asarray(grid, dtype=np.float64).tolist(), key=abs):
            pred = self.decide(model_scores, head_types, tail_types, best_description, records,
                               none_margin=m).predictions
            f1 = micro_prf(list(gold), pred, self.negative_label)[2]
            if f1 > best[1] + 1e-12:
                best = (float(m), f1)
        return best


def model_numbers(model: Any, key: str) -> list[float] | None:
    """The ``score_offset`` or ``none_margin`` (``key``) of each of a ROC model's relations (None for a classifier
    or when all are 0)."""
    descriptions = getattr(model, "descriptions", None)
    if model.config.model_type != "roc" or descriptions is None:
        return None
    values = descriptions.numbers(key, model.relation_labels)
    return values if any(values) else None


#: an offset that puts a relation below every other (its answers "as if it were not there")
ABSENT_OFFSET = -1.0e6

#: the offsets :func:`tune_added_offset` tries by default, closest to zero first
OFFSET_GRID = tuple(round(-0.01 * i, 2) + 0.0 for i in range(51))  # (+ 0.0: 0, not -0)
#: the extra None margins it tries by default (up to 1: relations added with examples can need more than 0.5)
NONE_MARGIN_GRID = tuple(round(0.01 * i, 2) for i in range(101))


def tune_added_offset(predict: Callable[[float], Sequence[str]], gold: Sequence[str], before: Sequence[str],
                      added: Collection[str], negative_label: str, max_drop: float = 1.0,
                      grid: Sequence[float] = OFFSET_GRID) -> tuple[float, float]:
    """The offset closest to zero for the added relations that keeps the others' micro-F1 within ``max_drop`` points
    of ``before``: ``(offset, drop)``; the smallest drop's offset when none does. ``predict(offset)`` gives answers."""
    keep = [i for i, g in enumerate(gold) if g not in added]
    if len(before) != len(gold):
        raise ValueError(f"{len(before)} answers before adding for {len(gold)} gold labels")
    gold_kept = [gold[i] for i in keep]
    f1_before = micro_prf(gold_kept, [before[i] for i in keep], negative_label)[2]
    best: tuple[float, float] | None = None
    for offset in sorted((float(x) for x in grid), key=abs):
        pred = predict(offset)
        drop = 100.0 * (f1_before - micro_prf(gold_kept, [pred[i] for i in keep], negative_label)[2])
        if drop <= max_drop:
            return offset, drop
        if best is None or drop < best[1] - 1e-12:
            best = (offset, drop)
    if best is None:
        raise ValueError("the offset grid is empty")
    return best


def prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from true positives, predicted and gold positives."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def micro_prf(gold: Sequence[str], pred: Sequence[str], negative_label: str) -> tuple[float, float, float]:
    """Micro P/R/F1 over non-negative instances, as the MRE field scores (:mod:`rocmre.evaluation.metrics`): a
    prediction is positive when it is not the negative label, correct when it equals a non-negative gold label."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    n_pred = sum(p != negative_label for p in pred)
    n_gold = sum(g != negative_label for g in gold)
    tp = sum(p == g and g != negative_label for g, p in zip(gold, pred, strict=True))
    return prf(tp, n_pred, n_gold)
