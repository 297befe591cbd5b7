"""Scoring as the MRE field does it: accuracy, micro P/R/F1 and macro-F1 over non-negative labels, and for
retrieval models Hits@k and MRR; the negative label is always named explicitly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rocmre.modeling.decision import micro_prf, prf

__all__ = ["EvaluationResult", "RelationScore", "confusion_matrix", "evaluate_predictions", "micro_prf",
           "ranking_metrics"]


@dataclass
class RelationScore:
    relation: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass
class EvaluationResult:
    """Scores of one set of predictions."""

    negative_label: str
    count: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    macro_f1: float
    per_relation: list[RelationScore] = field(default_factory=list)
    hits_at_1: float | None = None
    hits_at_3: float | None = None
    mrr: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def ranking_metrics(gold_index: Sequence[int], scores: np.ndarray) -> tuple[float, float, float]:
    """Hits@1, Hits@3 and mean reciprocal rank of the gold relation; a gold index of -1 (not retrievable)
    counts as a miss."""
    if len(gold_index) == 0:
        return 0.0, 0.0, 0.0
    ranks = []
    for g, row in zip(gold_index, scores, strict=True):
        ranks.append(int((row > row[g]).sum()) + 1 if g >= 0 else None)
    hits1 = float(np.mean([r is not None and r <= 1 for r in ranks]))
    hits3 = float(np.mean([r is not None and r <= 3 for r in ranks]))
    mrr = float(np.mean([1.0 / r if r is not None else 0.0 for r in ranks]))
    return hits1, hits3, mrr


def evaluate_predictions(gold: Sequence[str], pred: Sequence[str], negative_label: str,
                         labels: Sequence[str] | None = None, scores: np.ndarray | None = None,
                         score_labels: Sequence[str] | None = None) -> EvaluationResult:
    """All metrics for one set of predictions. ``scores`` (N, R) over ``score_labels`` adds Hits@k and MRR."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    n = len(gold)
    acc = sum(g == p for g, p in zip(gold, pred, strict=True)) / n if n else 0.0
    p, r, f = micro_prf(gold, pred, negative_label)
    relations = list(labels) if labels is not None else sorted(set(gold) | set(pred))
    gold_c, pred_c = Counter(gold), Counter(pred)
    tp_c = Counter(g for g, q in zip(gold, pred, strict=True) if g == q)
    per = []
    for rel in relations:
        if rel == negative_label:
            continue
        rp, rr, rf = prf(tp_c[rel], pred_c[rel], gold_c[rel])
        per.append(RelationScore(rel, rp, rr, rf, gold_c[rel], pred_c[rel]))
    present = [s.f1 for s in per if s.support > 0]
    macro = float(np.mean(present)) if present else 0.0
    result = EvaluationResult(negative_label, n, acc, p, r, f, macro, per)
    if scores is not None and score_labels is not None:
        index = {lab: i for i, lab in enumerate(score_labels)}
        result.hits_at_1, result.hits_at_3, result.mrr = ranking_metrics([index.get(g, -1) for g in gold], scores)
    return result


def confusion_matrix(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """(L, L) counts, rows gold, columns predicted; labels outside ``labels`` are ignored."""
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred, strict=True):
        if g in index and p in index:
            m[index[g], index[p]] += 1
    return m
