"""benchmarks/mnre.py: aggregation, bootstrap comparison, summary and rendering on synthetic per-seed results."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark

    return load_benchmark("mnre")


LABELS = ["None", "/per/per/peer", "/per/org/member_of"]


def predictions(gold: list[str], accuracy: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [g if rng.random() < accuracy else rng.choice(LABELS) for g in gold]


DEFAULT_ARMS = (("roc", "roc", 0.9), ("classifier", "classifier", 0.6))


def synthetic(bench, arms=DEFAULT_ARMS, backbones=("minilm-l6", "mpnet-base")):
    """Backbones x arms (variant, paradigm, accuracy) x seeds 1-3: per-seed results and predictions, scored for
    real."""
    from rocmre.evaluation.metrics import evaluate_predictions

    rng = random.Random(0)
    gold = [rng.choice(LABELS) for _ in range(400)]
    changed = list(range(0, 400, 3))
    results, preds = [], {}
    for b, backbone in enumerate(backbones):
        for v, (variant, paradigm, acc) in enumerate(arms):
            for seed in (1, 2, 3):
                k = 1000 * (8 * b + 2 * v) + 10 * seed
                test = predictions(gold, acc, k)
                swap = [p if i not in changed else predictions([g], acc - 0.2, k + i)[0]
                        for i, (g, p) in enumerate(zip(gold, test, strict=True))]
                val = predictions(gold, min(1.0, acc + (0.05 if backbone == "mpnet-base" else 0)), k + 1)

                def pack(pred):
                    r = evaluate_predictions(gold, pred, "None")
                    return {"micro_f1": r.f1, "macro_f1": r.macro_f1, "accuracy": r.accuracy,
                            "precision": r.precision, "recall": r.recall}

                results.append({"backbone": backbone, "variant": variant, "seed": seed, "paradigm": paradigm,
                                "folder": "x", "best_epoch": 3.0 + seed, "val": pack(val), "test": pack(test),
                                "name_swap": {**pack(swap), **bench.name_swap_scores(gold, test, swap, changed,
                                                                                     "None")},
                                "train_minutes": 2.0 * seed, "steps": 100, "machine": "NVIDIA H100 (CUDA), x86_64",
                                "budget": "6 epochs, batch 32, lr 5e-05 / 0.0005", "negative_label": "None"})
                preds[(backbone, variant, seed)] = {"gold": gold, "test": test, "name_swap_gold": gold,
                                                    "name_swap": swap}
    return results, preds


def test_mean_std(bench) -> None:
    assert bench.mean_std([]) == {"mean": None, "std": None}
    assert bench.mean_std([2.0]) == {"mean": 2.0, "std": 0.0}
    s = bench.mean_std([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)


def test_variants_and_folders(bench, tmp_path: Path) -> None:
    v = bench.parse_variant("roc_t10=configs/mnre_roc.yaml;model.temperature=0.1;train.epochs=8")
    assert (v.name, v.config, v.overrides) == ("roc_t10", "configs/mnre_roc.yaml",
                                                ["model.temperature=0.1", "train.epochs=8"])
    assert v.paradigm == "roc" and bench.VARIANTS["classifier"].paradigm == "classifier"
    assert bench.VARIANTS["roc_name_swap"].overrides == [bench.RAW_WEIGHTS, "data.name_swap_prob=0.5"]
    assert v.baseline == "classifier" and bench.VARIANTS["roc_name_swap"].baseline == "classifier_name_swap"
    w = bench.parse_variant("roc_long@cls_long=configs/mnre_roc.yaml;train.epochs=9")
    assert (w.name, w.baseline, w.overrides) == ("roc_long", "cls_long", ["train.epochs=9"])
    for bad in ("roc_t10", "x=", "x=configs/mnre_roc.yaml;notanoverride", "x@=configs/mnre_roc.yaml"):
        with pytest.raises(ValueError):
            bench.parse_variant(bad)
    assert bench.run_folder(tmp_path, "minilm-l6", "roc", 2) == tmp_path / "roc-s2"
    assert bench.run_folder(tmp_path, "mpnet-base", "roc", 2) == tmp_path / "mpnet-base" / "roc-s2"
    roc = bench.VARIANTS["roc"]
    # every variant names its name swapping and weight average: it keeps its meaning if a canonical config changes
    swap = [bench.RAW_WEIGHTS, "data.name_swap_prob=0.0"]
    assert bench.run_overrides(roc, "minilm-l6", 3, None) == [*swap, "seed=3"]
    assert bench.run_overrides(roc, "mpnet-base", 3, None) == [*swap, "seed=3", "model.text_backbone=mpnet-base"]
    assert bench.run_overrides(roc, "minilm-l6", 1, Path("/b")) == [*swap, "seed=1",
                                                                      "model.text_backbone=/b/minilm-l6"]
    for key in ("data.name_swap_prob=", "train.ema_decay="):
        assert all(any(o.startswith(key) for o in v.overrides) for v in bench.VARIANTS.values())
    from rocmre.training.config import RunConfig

    for v in bench.VARIANTS.values():  # every variant is a valid config; the EMA pair averages weights
        cfg = RunConfig.from_yaml(bench.REPO / v.config, v.overrides)
        assert cfg.train.ema_decay == (0.998 if "_ema" in v.name else None)
        assert v.paradigm == ("roc" if v.name.startswith("roc") else "classifier")
    assert bench.VARIANTS["roc_ema"].baseline == "classifier_ema"
    for name in ("roc_long", "classifier_long"):  # the longer-training pair: 10 epochs, otherwise canonical
        assert RunConfig.from_yaml(bench.REPO / bench.VARIANTS[name].config, bench.VARIANTS[name].overrides
                                   ).train.epochs == 10
    assert bench.VARIANTS["roc_long"].baseline == "classifier_long"
    # every ROC variant's baseline is a classifier variant of the table
    assert all(bench.VARIANTS[v.baseline].paradigm == "classifier" for v in bench.VARIANTS.values()
               if v.paradigm == "roc")


def test_a_run_is_scored_only_under_the_config_it_was_trained_with(bench, tmp_path: Path) -> None:
    from rocmre.training.config import RunConfig

    v = bench.VARIANTS["roc_name_swap"]
    trained = RunConfig.from_yaml(bench.REPO / v.config, [bench.RAW_WEIGHTS, "data.name_swap_prob=0.5", "seed=2"])
    trained.output_dir = "somewhere/else"
    (tmp_path / "run_config.yaml").write_text(trained.to_yaml(), encoding="utf-8")
    bench.check_trained_config(tmp_path, v, bench.run_overrides(v, "minilm-l6", 2, None))  # same recipe: passes
    today = RunConfig.from_yaml(bench.REPO / v.config, ["seed=2"])  # the canonical config averages weights now
    (tmp_path / "run_config.yaml").write_text(today.to_yaml(), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"train.ema_decay: 0.998 -> None"):
        bench.check_trained_config(tmp_path, v, bench.run_overrides(v, "minilm-l6", 2, None))
    (tmp_path / "run_config.yaml").write_text(trained.to_yaml(), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"data.name_swap_prob: 0.5 -> 0.0.*seed: 2 -> 3"):
        bench.check_trained_config(tmp_path, bench.VARIANTS["roc"],
                                   bench.run_overrides(bench.VARIANTS["roc"], "minilm-l6", 3, None))
    assert bench.config_differences({"a": {"b": 1}, "output_dir": "x"}, {"a": {"b": 2}, "output_dir": "y"}) == [
        "a.b: 1 -> 2"]


def test_aggregate_rows(bench) -> None:
    results, _ = synthetic(bench)
    rows = bench.aggregate_rows(results, bench.VARIANTS)
    assert [(r["backbone"], r["variant"]) for r in rows] == [
        ("minilm-l6", "roc"), ("minilm-l6", "classifier"), ("mpnet-base", "roc"), ("mpnet-base", "classifier")]
    r = rows[0]
    mine = [x for x in results if x["backbone"] == "minilm-l6" and x["variant"] == "roc"]
    f1s = [100 * x["test"]["micro_f1"] for x in mine]
    assert r["seeds"] == [1, 2, 3] and r["test_micro_f1"]["mean"] == pytest.approx(sum(f1s) / 3)
    drops = [100 * (x["test"]["micro_f1"] - x["name_swap"]["micro_f1"]) for x in mine]
    assert r["name_swap_drop"]["mean"] == pytest.approx(sum(drops) / 3) and r["name_swap_drop"]["mean"] > 0
    assert r["train_minutes"]["mean"] == pytest.approx(4.0) and r["hardware"] == "NVIDIA H100 (CUDA), x86_64"
    assert r["budget"] == "6 epochs, batch 32, lr 5e-05 / 0.0005"


def test_comparisons_and_summary(bench) -> None:
    from rocmre.evaluation.metrics import evaluate_predictions

    results, preds = synthetic(bench)
    comps = bench.compare_paradigms(results, preds, "None", resamples=500)
    assert [(c["backbone"], c["variant"]) for c in comps] == [("minilm-l6", "roc"), ("mpnet-base", "roc")]
    c = comps[0]
    assert c["seeds"] == [1, 2, 3] and set(c["per_seed"]) == {"1", "2", "3"}
    p = preds
    gold = p[("minilm-l6", "roc", 1)]["gold"]
    one = 100 * (evaluate_predictions(gold, p[("minilm-l6", "roc", 1)]["test"], "None").f1
                 - evaluate_predictions(gold, p[("minilm-l6", "classifier", 1)]["test"], "None").f1)
    assert c["per_seed"]["1"]["observed"] == pytest.approx(one)
    assert c["pooled"]["low"] > 0 and c["name_swap_pooled"]["resamples"] == 500
    rows = bench.aggregate_rows(results, bench.VARIANTS)
    summary = bench.build_summary(rows, comps, "abc123")
    assert tuple(summary) == bench.SUMMARY_KEYS
    assert summary["backbone"] == "mpnet-base"  # the better mean val micro-F1
    mp = next(r for r in rows if r["backbone"] == "mpnet-base" and r["variant"] == "roc")
    assert summary["roc_test_micro_f1_mean"] == mp["test_micro_f1"]["mean"]
    assert summary["roc_minus_cls_ci95"] == [comps[1]["pooled"]["low"], comps[1]["pooled"]["high"]]
    assert summary["commit"] == "abc123" and summary["seeds"] == [1, 2, 3]
    assert summary["name_swap_drop"] == pytest.approx(mp["name_swap_drop"]["mean"])
    json.dumps(summary)
    assert bench.build_summary([r for r in rows if r["paradigm"] != "roc"], comps, "x") is None
    only_roc = [r for r in results if r["variant"] == "roc"]
    assert bench.compare_paradigms(only_roc, preds, "None", resamples=10) == []


def test_roc_variant_is_paired_with_its_own_baseline(bench) -> None:
    arms = (("roc", "roc", 0.8), ("classifier", "classifier", 0.6), ("roc_name_swap", "roc", 0.9),
            ("classifier_name_swap", "classifier", 0.85))
    results, preds = synthetic(bench, arms, backbones=("minilm-l6",))
    comps = bench.compare_paradigms(results, preds, "None", resamples=200)
    assert [(c["variant"], c["baseline"]) for c in comps] == [
        ("roc", "classifier"), ("roc_name_swap", "classifier_name_swap"), ("roc_name_swap", "classifier")]
    rows = bench.aggregate_rows(results, bench.VARIANTS)
    summary = bench.build_summary(rows, comps, "abc")
    swap_cls = next(r for r in rows if r["variant"] == "classifier_name_swap")
    assert summary["cls_test_micro_f1_mean"] == swap_cls["test_micro_f1"]["mean"]
    assert summary["roc_minus_cls_ci95"] == [comps[1]["pooled"]["low"], comps[1]["pooled"]["high"]]
    # without the matched classifier, the plain one stands in
    plain = [r for r in results if r["variant"] != "classifier_name_swap"]
    comps = bench.compare_paradigms(plain, preds, "None", resamples=50)
    assert [(c["variant"], c["baseline"]) for c in comps] == [("roc", "classifier"), ("roc_name_swap", "classifier")]
    assert "(`classifier_name_swap` not scored)" in bench._vs(comps[1], "classifier_name_swap")
    assert "not scored" not in bench._vs(comps[0], "classifier")
    rows = bench.aggregate_rows(plain, bench.VARIANTS)
    assert bench.build_summary(rows, comps, "x")["cls_test_micro_f1_mean"] == rows[1]["test_micro_f1"]["mean"]
    # a variant defined on the command line names its own baseline
    extra = {**bench.VARIANTS, "roc_x": bench.parse_variant("roc_x@classifier_name_swap=configs/mnre_roc.yaml")}
    renamed = [{**r, "variant": "roc_x"} if r["variant"] == "roc_name_swap" else r for r in results]
    preds_x = {(b, "roc_x" if v == "roc_name_swap" else v, s): p for (b, v, s), p in preds.items()}
    comps = bench.compare_paradigms(renamed, preds_x, "None", resamples=50, variants=extra)
    assert ("roc_x", "classifier_name_swap") in [(c["variant"], c["baseline"]) for c in comps]


def test_name_swap_scores(bench) -> None:
    gold = ["None", "/per/per/peer", "/per/per/peer", "None"]
    test = ["None", "/per/per/peer", "/per/per/peer", "None"]
    swap = ["None", "None", "/per/per/peer", "None"]
    s = bench.name_swap_scores(gold, test, swap, [1, 2], "None")
    assert s == {"changed_records": 2, "changed_test_micro_f1": 1.0, "changed_micro_f1": pytest.approx(2 / 3),
                 "changed_prediction_rate": 0.5}
    assert bench.name_swap_scores(gold, test, swap, [], "None")["changed_micro_f1"] is None


def test_render_and_render_only(bench, tmp_path: Path) -> None:
    results, preds = synthetic(bench)
    rows = bench.aggregate_rows(results, bench.VARIANTS)
    comps = bench.compare_paradigms(results, preds, "None", resamples=200)
    stats = {"seed": 2025, "records": 400, "with_train_name": 200, "changed": 134, "changed_negative": 40,
             "heads_replaced": 120, "tails_replaced": 130, "extra_mentions_replaced": 3, "kept_untyped": 60,
             "kept_overlapping": 1, "kept_no_name": 0, "still_with_train_name": 5,
             "negative_records_typed_by": "training labels", "pool_sizes": {"person": 10, "location": 5}}
    payload = {"summary": bench.build_summary(rows, comps, "abc"), "commit": "abc", "machine": "NVIDIA H100",
               "date": "2025-01-01 00:00 UTC", "command": "python benchmarks/mnre.py", "data": "mnre/RE_data",
               "images": "train 1/10", "negative_label": "None", "scoring": "micro-F1.", "bundle": "",
               "overrides": [], "seeds": [1, 2, 3], "backbones": ["minilm-l6", "mpnet-base"], "resamples": 200,
               "rows": rows, "comparisons": comps, "seed_results": results, "name_swap": stats,
               "missing_runs": ["minilm-l6 roc_name_swap_all seed 42"]}
    lines = bench.render(payload)
    text = "\n".join(lines)
    table = [ln for ln in lines if ln.startswith("| `")]
    lead = table[:4]
    assert lines[4].startswith("| backbone | paradigm | seeds | test micro-F1")
    assert lead[0].startswith("| `minilm-l6` | roc | 3 | **") and " ± " in lead[0]
    assert "[+" in lead[0] and lead[1].count(" - |") >= 1  # the classifier row has no CI
    assert "NVIDIA H100 (CUDA), x86_64" in lead[0] and "6 epochs" in lead[0]
    assert "Targets (issue 11)" in text and "ROC test micro-F1 >= 68" in text
    assert "| `minilm-l6` | `roc` | `classifier` | pooled |" in text and "134 of 400 test records changed" in text
    assert "never trained (left out; their rows have fewer seeds): minilm-l6 roc_name_swap_all seed 42." in text
    assert sum(ln.startswith("| `minilm-l6` | `classifier` | ") for ln in lines) == 3  # per-seed rows
    (tmp_path / "mnre.json").write_text(json.dumps(payload), encoding="utf-8")
    bench.main(["--render-only", "--results", str(tmp_path)])
    assert (tmp_path / "mnre.md").read_text(encoding="utf-8") == text + "\n"
    png = (tmp_path / "mnre.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_combine_merges_result_files_and_keeps_each_rows_source(bench, tmp_path: Path) -> None:
    """Two result files (say a GPU and a CPU run) -> one lead table with a source per row; the summary is the best
    ROC row by validation over both, compared with its own file's classifier, at its own file's commit."""
    payloads = []
    for name, backbones, commit, machine in (("gpu", ("mpnet-base",), "gpu111", "NVIDIA H200 (CUDA), x86_64"),
                                             ("cpu", ("minilm-l6",), "cpu222", "CPU x86_64, 2 cores")):
        results, preds = synthetic(bench, backbones=backbones)
        for r in results:
            r["machine"] = machine
        rows = bench.aggregate_rows(results, bench.VARIANTS)
        comps = bench.compare_paradigms(results, preds, "None", resamples=100)
        payload = {"summary": bench.build_summary(rows, comps, commit), "commit": commit, "machine": machine,
                   "date": "2026-01-01 00:00 UTC", "command": f"python benchmarks/mnre.py ({name})",
                   "data": "mnre/RE_data", "images": "train 1/10", "negative_label": "None", "scoring": "micro-F1.",
                   "bundle": "", "overrides": [], "resamples": 100, "rows": rows, "comparisons": comps,
                   "seed_results": results, "variants": {}}
        (tmp_path / name).mkdir()
        (tmp_path / name / "mnre.json").write_text(json.dumps(payload), encoding="utf-8")
        payloads.append(payload)
    out = tmp_path / "all"
    bench.main(["--combine", str(tmp_path / "gpu" / "mnre.json"), str(tmp_path / "cpu" / "mnre.json"),
                "--results", str(out)])
    combined = json.loads((out / "mnre.json").read_text(encoding="utf-8"))
    assert tuple(combined["summary"]) == bench.SUMMARY_KEYS
    assert combined["summary"] == payloads[0]["summary"]  # mpnet: the better validation score, its own commit
    assert [s["commit"] for s in combined["sources"]] == ["gpu111", "cpu222"]
    text = (out / "mnre.md").read_text(encoding="utf-8")
    lead = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(lead) == 4 and lead[0].startswith("| `mpnet-base` | roc |") and lead[0].endswith("| [1] |")
    assert lead[3].startswith("| `minilm-l6` | classifier |") and "CPU x86_64" in lead[3] and lead[3].endswith("[2] |")
    assert "python benchmarks/mnre.py (cpu)" in text and "Targets (issue 11)" in text
    assert (out / "mnre.png").read_bytes().startswith(b"\x89PNG")
    bench.main(["--render-only", "--results", str(out)])  # a combined file renders as one again
    assert (out / "mnre.md").read_text(encoding="utf-8") == text
    with pytest.raises(SystemExit):  # a combined file is not a source
        bench.main(["--combine", str(out / "mnre.json"), "--results", str(tmp_path / "again")])


def test_the_hardware_column_says_the_training_precision(bench) -> None:
    machine = "CPU x86_64, 2 cores, torch threads 2"
    assert bench.with_precision(machine, "fp32") == f"{machine}, fp32 training"
    assert bench.with_precision(machine, None) == machine  # runs that did not record it
    assert bench.with_precision(None, "bf16") is None
    assert bench._short_hardware(bench.with_precision(machine, "bf16")) == "CPU x86_64"
