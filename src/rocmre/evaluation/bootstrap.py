"""Paired bootstrap over test records for the micro-F1 difference of two systems, vectorised over resamples
from per-record counts (pooled over seeds: one draw of records, counts summed over each system's seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Records drawn per block of resamples (bounds the memory: block x records x counts).
_BLOCK = 256


@dataclass
class BootstrapResult:
    """A - B in micro-F1 points: on the unresampled data, the mean over resamples, and the percentile CI."""

    observed: float
    mean: float
    low: float
    high: float
    confidence: float
    resamples: int
    records: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ci(self) -> list[float]:
        return [self.low, self.high]


def f1_counts(gold: Sequence[str], pred: Sequence[str], negative_label: str) -> np.ndarray:
    """(N, 3) per-record counts: correct non-negative prediction, predicted non-negative, gold non-negative."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    g = np.asarray(gold, dtype=object)
    p = np.asarray(pred, dtype=object)
    gold_pos = g != negative_label
    pred_pos = p != negative_label
    correct = (g == p) & gold_pos
    return np.stack([correct, pred_pos, gold_pos], axis=1).astype(np.int64).reshape(len(gold), 3)


def micro_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Micro-F1 from summed counts (..., 3) = (correct, predicted, gold); 0 where undefined, as in metrics.py."""
    c = np.asarray(counts, dtype=np.float64)
    tp, n_pred, n_gold = c[..., 0], c[..., 1], c[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp / np.where(n_pred > 0, n_pred, 1), 0.0)
        r = np.where(n_gold > 0, tp / np.where(n_gold > 0, n_gold, 1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    return f


def _bootstrap(counts_a: np.ndarray, counts_b: np.ndarray, resamples: int, seed: int,
               confidence: float) -> BootstrapResult:
    """``counts_*``: (N, 3, S) per record, count and seed (S may differ between A and B); the seeds' counts are
    summed in each resample (micro-F1 is unchanged by scaling the counts, so no seed weighting is needed)."""
    n = counts_a.shape[0]
    if counts_b.shape[:2] != counts_a.shape[:2]:
        raise ValueError(f"systems have different shapes {counts_a.shape} and {counts_b.shape}")
    if n == 0:
        raise ValueError("no records to resample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    # one (N, 6) matrix: A's three counts then B's, each summed over seeds
    table = np.concatenate([counts_a.sum(axis=2), counts_b.sum(axis=2)], axis=1)
    observed = table.sum(axis=0)
    obs = 100 * float(micro_f1_from_counts(observed[:3]) - micro_f1_from_counts(observed[3:]))
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        sums = table[idx].sum(axis=1)  # (size, 6)
        diffs[start:start + size] = micro_f1_from_counts(sums[:, :3]) - micro_f1_from_counts(sums[:, 3:])
    diffs *= 100
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return BootstrapResult(obs, float(diffs.mean()), float(low), float(high), confidence, resamples, n)


def paired_bootstrap(gold: Sequence[str], pred_a: Sequence[str], pred_b: Sequence[str], negative_label: str,
                     resamples: int = 10_000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Micro-F1 of system A minus system B (points) on the same records, with a percentile bootstrap CI."""
    a = f1_counts(gold, pred_a, negative_label)[:, :, None]
    b = f1_counts(gold, pred_b, negative_label)[:, :, None]
    return _bootstrap(a, b, resamples, seed, confidence)


def pooled_paired_bootstrap(gold: Sequence[str], preds_a: Sequence[Sequence[str]], preds_b: Sequence[Sequence[str]],
                            negative_label: str, resamples: int = 10_000, seed: int = 0,
                            confidence: float = 0.95) -> BootstrapResult:
    """A - B pooled over seeds (``preds_a[s]``/``preds_b[s]``: seed s's predictions on the same records)."""
    if not preds_a or not preds_b:
        raise ValueError("each system needs at least one seed's predictions")
    a = np.stack([f1_counts(gold, p, negative_label) for p in preds_a], axis=2)
    b = np.stack([f1_counts(gold, p, negative_label) for p in preds_b], axis=2)
    return _bootstrap(a, b, resamples, seed, confidence)
