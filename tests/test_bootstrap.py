"""The paired bootstrap of micro-F1 differences, on synthetic predictions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rocmre.evaluation.bootstrap import (
    f1_counts,
    micro_f1_from_counts,
    paired_bootstrap,
    pooled_paired_bootstrap,
)
from rocmre.evaluation.metrics import evaluate_predictions

LABELS = ["None", "/per/per/peer", "/per/org/member_of", "/loc/loc/contain"]


def synthetic(n: int, accuracy: float, seed: int, gold: list[str] | None = None) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    gold = gold or [rng.choice(LABELS) for _ in range(n)]
    pred = [g if rng.random() < accuracy else rng.choice(LABELS) for g in gold]
    return gold, pred


def test_counts_give_the_fields_micro_f1() -> None:
    gold, pred = synthetic(500, 0.6, 1)
    counts = f1_counts(gold, pred, "None")
    assert counts.shape == (500, 3)
    expected = evaluate_predictions(gold, pred, "None").f1
    assert micro_f1_from_counts(counts.sum(0)) == pytest.approx(expected)


def test_undefined_f1_is_zero() -> None:
    assert micro_f1_from_counts(np.array([0, 0, 0])) == 0.0
    assert micro_f1_from_counts(np.array([0, 3, 0])) == 0.0


def test_identical_systems_give_a_zero_interval() -> None:
    gold, pred = synthetic(300, 0.7, 2)
    res = paired_bootstrap(gold, pred, list(pred), "None", resamples=500)
    assert (res.observed, res.mean, res.low, res.high) == (0.0, 0.0, 0.0, 0.0)


def test_a_clearly_better_system_has_an_interval_above_zero() -> None:
    gold, good = synthetic(1614, 0.9, 3)
    _, bad = synthetic(0, 0.5, 4, gold)
    res = paired_bootstrap(gold, good, bad, "None", resamples=2000, seed=1)
    diff = 100 * (evaluate_predictions(gold, good, "None").f1 - evaluate_predictions(gold, bad, "None").f1)
    assert res.observed == pytest.approx(diff)
    assert 0 < res.low < res.observed < res.high
    assert res.mean == pytest.approx(diff, abs=1.0)
    assert res.records == 1614 and res.resamples == 2000
    swapped = paired_bootstrap(gold, bad, good, "None", resamples=2000, seed=1)
    assert swapped.high < 0


def test_the_bootstrap_is_seeded() -> None:
    gold, a = synthetic(200, 0.7, 5)
    _, b = synthetic(0, 0.6, 6, gold)
    r1 = paired_bootstrap(gold, a, b, "None", resamples=300, seed=7)
    r2 = paired_bootstrap(gold, a, b, "None", resamples=300, seed=7)
    assert r1 == r2


def test_pooled_bootstrap_sums_counts_over_seeds() -> None:
    gold, a1 = synthetic(400, 0.8, 8)
    a2 = synthetic(0, 0.8, 9, gold)[1]
    b1 = synthetic(0, 0.6, 10, gold)[1]
    b2 = synthetic(0, 0.6, 11, gold)[1]
    res = pooled_paired_bootstrap(gold, [a1, a2], [b1, b2], "None", resamples=1000)
    pooled_a = evaluate_predictions(gold * 2, a1 + a2, "None").f1
    pooled_b = evaluate_predictions(gold * 2, b1 + b2, "None").f1
    assert res.observed == pytest.approx(100 * (pooled_a - pooled_b))
    assert res.low > 0
    one = pooled_paired_bootstrap(gold, [a1], [b1], "None", resamples=300, seed=3)
    assert one == paired_bootstrap(gold, a1, b1, "None", resamples=300, seed=3)
    uneven = pooled_paired_bootstrap(gold, [a1, a2], [b1], "None", resamples=300)
    assert uneven.observed == pytest.approx(100 * (pooled_a - evaluate_predictions(gold, b1, "None").f1))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(["None"], ["None", "None"], ["None"], "None")
    with pytest.raises(ValueError):
        paired_bootstrap([], [], [], "None")
    with pytest.raises(ValueError):
        pooled_paired_bootstrap(["None"], [], [["None"]], "None")
    with pytest.raises(ValueError):
        paired_bootstrap(["None"], ["None"], ["None"], "None", confidence=1.5)
