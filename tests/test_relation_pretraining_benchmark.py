"""benchmarks/relation_pretraining.py: rows, summary and rendering on synthetic per-seed results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark

    return load_benchmark("relation_pretraining")


@pytest.fixture(scope="module")
def mnre_bench():
    from conftest import load_benchmark

    return load_benchmark("mnre")


ARMS = (("roc", "roc", 0.7), ("classifier", "classifier", 0.7), ("roc_pre", "roc", 0.9),
        ("classifier_pre", "classifier", 0.6), ("roc_pre_low", "roc", 0.8), ("classifier_pre_low", "classifier", 0.5))


def test_variants_pair_each_roc_row_with_its_classifier(bench):
    table = bench.variants("runs/pre")
    assert set(table) == {"roc", "classifier", "roc_pre", "classifier_pre", "roc_low", "classifier_low",
                          "roc_pre_low", "classifier_pre_low"}
    assert table["roc_pre_low"].baseline == "classifier_pre_low"
    assert table["classifier_pre_low"].overrides == ["model.init_from=runs/pre", "data.train_fraction=0.1"]
    assert table["roc"].overrides == [] and table["classifier_pre"].paradigm == "classifier"


def test_summary_rows_and_render(bench, mnre_bench, tmp_path: Path):
    from test_mnre_benchmark import synthetic

    results, preds = synthetic(mnre_bench, ARMS, backbones=("minilm-l6",))
    for r in results:  # the strict set: the name-replaced one, a bit worse
        r["strict_name_swap"] = {**r["name_swap"], "micro_f1": r["name_swap"]["micro_f1"] - 0.05}
    table = bench.variants("runs/pre")
    rows = bench.add_strict(mnre_bench.aggregate_rows(results, table), results)
    comps = [c for c in mnre_bench.compare_paradigms(results, preds, "None", 300, variants=table)
             if c["baseline"] == table[c["variant"]].baseline]
    assert [(c["variant"], c["baseline"]) for c in comps] == [("roc", "classifier"), ("roc_pre", "classifier_pre"),
                                                              ("roc_pre_low", "classifier_pre_low")]
    pre = {"relations": 131, "pairs": 27000, "minutes": 16.0}
    summary = bench.build_summary(rows, comps, pre, "abc")
    assert tuple(summary) == bench.SUMMARY_KEYS
    roc_pre = next(r for r in rows if r["variant"] == "roc_pre")
    assert summary["roc_test_micro_f1_mean"] == roc_pre["test_micro_f1"]["mean"]
    assert summary["strict_name_swap_drop"] == pytest.approx(roc_pre["name_swap_drop"]["mean"] + 5.0)
    assert summary["low_resource_roc_minus_cls"] == comps[2]["pooled"]["observed"] > 0
    assert summary["no_pretrain_roc_test_macro_f1_mean"] == next(
        r for r in rows if r["variant"] == "roc")["test_macro_f1"]["mean"]
    assert summary["pretrain_relations"] == 131 and summary["seeds"] == [1, 2, 3]
    payload = {"summary": summary, "commit": "abc", "machine": "m", "date": "d", "command": "c", "pretrain": pre,
               "rows": rows, "comparisons": comps, "missing_runs": ["roc_low seed 1"]}
    text = "\n".join(bench.render(payload))
    assert "| ROC, from the relation pre-trained model, all of MNRE train | 3 |" in text
    assert "Not run: roc_low seed 1." in text and "pre-training minutes: 16.00 (target <= 30): met" in text
    json.dumps(payload)
    bench.plot(payload, tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 0
    partial = bench.build_summary([r for r in rows if r["variant"] == "roc"], [], pre, "abc")
    assert partial["roc_test_micro_f1_mean"] is None and partial["roc_minus_cls_ci95"] is None
