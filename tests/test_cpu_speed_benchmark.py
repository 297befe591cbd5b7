"""benchmarks/cpu_speed.py: every lever is a valid config, the canonical configs are measured rows, and the
Markdown renders the summary contract (the timings themselves come from running the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rocmre.training.config import apply_override

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"full_training_minutes", "fp32_full_training_minutes", "val_micro_f1_delta_fast_vs_fp32",
                "roc_over_cls_step", "predict_over_bare_encoder", "single_predict_ms_p50", "retrieval_10k_overhead",
                "train_peak_rss_mb", "predict_peak_rss_mb", "commit"}


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark

    return load_benchmark("cpu_speed")


def test_every_lever_is_a_valid_config_and_the_canonical_configs_are_rows(bench):
    from rocmre.training.config import RunConfig

    for overrides in bench.LEVERS.values():
        RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", overrides)
    roc = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml")
    cls = RunConfig.from_yaml(REPO / "configs" / "mnre_cls.yaml")
    assert bench._lever_of(roc) == bench._CANON_NAME.replace("every 8", "every 16") + bench._prefix(2)
    assert bench._lever_of(cls, cls=True) == bench._CLS_NAME + bench._prefix(2)
    fp32 = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", bench.LEVERS[bench.FP32])
    assert fp32.train.mixed_precision == "no" and not fp32.train.fast_dropout and fp32.model.frozen_text_layers == 0
    # the frozen-prefix rows (fixed markers, cached lower layers) for both paradigms
    for n in bench._PREFIX_NS:
        prefix_roc = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", bench._prefix_lever(bench._CANON, n))
        assert prefix_roc.model.frozen_text_layers == n
        assert bench._lever_of(prefix_roc) == bench._CANON_NAME + bench._prefix(n)
        prefix_cls = RunConfig.from_yaml(REPO / "configs" / "mnre_cls.yaml",
                                         bench._prefix_lever(dict(bench._BASE, fast_dropout="true"), n))
        assert bench._lever_of(prefix_cls, cls=True) == bench._CLS_NAME + bench._prefix(n)
        assert bench._CLS_NAME + bench._prefix(n) not in bench.ROC_ONLY


def test_render_reports_the_summary_and_every_row(bench):
    pred = {"pairs": 4, "precision": "bf16", "rounds": 1,
            "pairs_per_s": {"bare": [100.0], "bare_bf16": [150.0], "default": [120.0], "fp32": [80.0],
                            "default_10k": [115.0]},
            "single_predict_ms": {"default": [14.0], "fp32": [20.0], "default_10k": [15.0],
                                  "default_1_thread": [18.0]},
            "relations_10k": 10000, "encode_10k_descriptions_s": 30.0}
    steps = {f"roc | {bench.FP32}": {"paradigm": "roc", "lever": bench.FP32, "overrides": [], "step_s_median": 2.0}}
    res = {"raw": {"prediction": pred, "training_steps": steps,
                   "prediction_precision_f1": {"model": "m", "val_fp32_micro_f1": 56.8, "val_bf16_micro_f1": 56.6,
                                               "val_changed_predictions": 9, "val_records": 1614,
                                               "val_fp32_seconds": 17.0, "val_bf16_seconds": 9.0,
                                               "test_fp32_micro_f1": 60.7, "test_bf16_micro_f1": 61.0,
                                               "test_changed_predictions": 8, "test_records": 1614,
                                               "test_fp32_seconds": 17.0, "test_bf16_seconds": 10.0}},
           "summary": {k: 1.0 for k in SUMMARY_KEYS} | {"commit": "abc", "predict_over_bare_encoder": 1.2},
           "notes": {"fp32_full_training_minutes": "measured", "val_micro_f1_delta_fast_vs_fp32": "two runs",
                     "train_peak_rss_mb": "run", "fast_config": "x", "classifier_row": "y"},
           "command": "python benchmarks/cpu_speed.py", "date": "today", "machine": "cpu", "torch": "2",
           "threads": 2, "val_records": 10, "val_scoring_seconds": 1.0, "steps_per_epoch": 3, "epochs": 6,
           "projected_fp32_full_training_minutes": 5.0, "fast_run": "a", "fp32_run": "b",
           "fast_run_val_micro_f1": 0.5, "fp32_run_val_micro_f1": 0.5}
    res["raw"]["step_profile"] = {"steps": 11, "wall_s_per_step": 0.5,
                                  "seconds_per_step": {"matrix products (mm, addmm, bmm)": 0.3, "other": 0.2}}
    md = bench.render(res)
    assert "medians of the rows" in md  # results written before the interleaved ratio
    res["raw"]["canonical_step_ratio"] = {"steps": 16, "description_refresh_steps": 8,
                                          "mean_s": {"roc": 0.44, "classifier": 0.4},
                                          "median_s": {"roc": 0.41, "classifier": 0.39}}
    md = bench.render(res)
    assert "means over 16 steps = 2 description-refresh cycles: 0.440 / 0.400 s" in md
    assert "| matrix products (mm, addmm, bmm) | 0.300 | 60 % |" in md
    assert "| 1.20x | >= 0.95x |" in md and "bf16, the canonical config's prediction precision" in md
    assert "| val | 56.80 | 56.60 | 9 of 1614 |" in md
    assert "for comparison: `predict_batch` in fp32 / bare fp32 encoder | 0.80x" in md
    assert "machine reference" not in md  # older results: no reference row
    assert "(ratio of the rounds' median throughputs) |" in md  # results from before the paired batches
    assert bench.retrieval_overhead(pred) == pytest.approx(120 / 115 - 1)
    pred["retrieval_10k_paired_batches"] = {"relations_23_s": [1.0, 1.0, 2.0], "relations_10k_s": [1.02, 1.5, 2.06]}
    assert bench.retrieval_overhead(pred) == pytest.approx(0.03)  # the median of 1.02, 1.5, 1.03
    md = bench.render(res)
    assert "median over 3 batches of 32 of the time ratio" in md
    assert "4.0 s against 23 relations and 4.6 s against 10k in all (ratio of the sums +14.5 %)" in md
    pred["single_predict_ms"] |= {"default": [12.0, 14.0, 13.0, 30.0], "bare_encoder_bf16": [8.0, 9.0]}
    md = bench.render(res)
    assert "p10 / p90 (the spread over 4 calls) | 12.0 / 30.0 ms |" in md
    assert "the same single input, p50 (a slow spell of the machine shows here too) | 8.5 ms |" in md
    assert "without packed bf16 weights" not in md  # measured from this stop on
    pred["pairs_per_s"]["default_unpacked"] = [110.0]
    pred["single_predict_ms"]["default_unpacked"] = [15.0, 16.0]
    assert "same numbers): `predict_batch` / bare fp32 encoder; single `predict` p50 | 1.10x; 15.5 ms |" in \
        bench.render(res)


def test_full_runs_fill_the_summary_and_a_pause_is_subtracted_and_said(bench):
    run = {"timings": {"train_minutes": 30.0, "peak_rss_mb": 4000.0}, "results": {"val": {"f1": 0.58}},
           "folder": "runs/fast"}
    fp32 = {"timings": {"train_minutes": 96.0}, "results": {"val": {"f1": 0.5786}}, "folder": "runs/fp32"}
    res = {"summary": {}, "notes": {}, "projected_fp32_full_training_minutes": 87.0}
    bench.apply_full_runs(res, run, fp32, None, fp32_paused_s=480.0)
    s = res["summary"]
    assert s["full_training_minutes"] == 30.0 and s["train_peak_rss_mb"] == 4000.0
    assert s["fp32_full_training_minutes"] == pytest.approx(88.0)
    assert "less 8.0 min" in res["notes"]["fp32_full_training_minutes"] and res["fp32_run_paused_seconds"] == 480.0
    assert s["val_micro_f1_delta_fast_vs_fp32"] == pytest.approx(0.14)
    bench.apply_full_runs(res, run, None, None)
    assert s["fp32_full_training_minutes"] == 87.0 and "PROJECTED" in res["notes"]["fp32_full_training_minutes"]


def test_an_fp32_run_of_another_recipe_is_refused(bench):
    """The F1 delta compares the speed switches alone: an fp32 run trained from another recipe (here: without the
    canonical config's name swapping) is refused, naming the setting."""
    import yaml

    fast_cfg = yaml.safe_load((REPO / "configs" / "mnre_roc.yaml").read_text())
    fp32_cfg = json.loads(json.dumps(fast_cfg))
    for item in bench.LEVERS[bench.FP32] + ["train.inference_precision=fp32", "output_dir=runs/fp32"]:
        apply_override(fp32_cfg, item)
    assert bench.recipe_differences(fast_cfg, fp32_cfg) == []
    run = {"timings": {"train_minutes": 19.0}, "results": {"val": {"f1": 0.59}}, "folder": "runs/fast",
           "run_config": fast_cfg}
    fp32 = {"timings": {"train_minutes": 90.0}, "results": {"val": {"f1": 0.588}}, "folder": "runs/fp32",
            "run_config": fp32_cfg}
    res = {"summary": {}, "notes": {}, "projected_fp32_full_training_minutes": 87.0}
    bench.apply_full_runs(res, run, fp32, None)
    assert res["summary"]["val_micro_f1_delta_fast_vs_fp32"] == pytest.approx(0.2)
    apply_override(fp32_cfg, "data.name_swap_prob=0.0")
    with pytest.raises(SystemExit, match="data.name_swap_prob"):
        bench.apply_full_runs(res, run, fp32, None)

    # without an fp32 run of the fast run's recipe: a matched pair of the earlier recipe, the difference said
    earlier_fast = json.loads(json.dumps(fast_cfg))
    apply_override(earlier_fast, "data.name_swap_prob=0.0")
    pair = ({"timings": {"train_minutes": 19.1}, "results": {"val": {"f1": 0.5793}}, "folder": "runs/old-fast",
             "run_config": earlier_fast}, fp32)
    res = {"summary": {}, "notes": {}, "projected_fp32_full_training_minutes": 87.0}
    bench.apply_full_runs(res, run, None, None, fp32_paused_s=60.0, earlier_pair=pair)
    s = res["summary"]
    assert s["full_training_minutes"] == 19.0 and s["fp32_full_training_minutes"] == pytest.approx(89.0)
    assert s["val_micro_f1_delta_fast_vs_fp32"] == pytest.approx(100 * (0.5793 - 0.588))
    note = res["notes"]["val_micro_f1_delta_fast_vs_fp32"]
    assert "`data.name_swap_prob` 0.0 -> 0.5" in note and "runs/old-fast" in note and "val 59.00" in note
    assert res["earlier_recipe_pair"] == ["runs/old-fast", "runs/fp32"]
    with pytest.raises(SystemExit, match="data.name_swap_prob"):  # the earlier pair must itself be matched
        bench.apply_full_runs(res, run, None, None, earlier_pair=(run, fp32))


def test_interleaved_steps_alternate_models_and_drop_the_warm_up(bench):
    calls = []

    class FakeTimer:
        def __init__(self, name: str) -> None:
            self.name = name

        def step(self, i: int) -> float:
            calls.append((self.name, i))
            return float(i)

    times = bench.interleaved_steps({"roc": FakeTimer("roc"), "classifier": FakeTimer("classifier")}, 4)
    assert calls[:4] == [("roc", 0), ("classifier", 0), ("roc", 1), ("classifier", 1)] and len(calls) == 14
    assert times == {"roc": [3.0, 4.0, 5.0, 6.0], "classifier": [3.0, 4.0, 5.0, 6.0]}


def test_extra_levers_render_and_int8_prediction_runs(bench, tiny_roc_dir, cache_dir):
    """The int8 row predicts with a quantised copy (the original model untouched, no lean forward on int8 modules);
    the compile helper compiles the trainable modules; the section renders every row."""
    import torch

    from rocmre.inference.extractor import RelationExtractor
    from rocmre.modeling.model import RelationModel

    model = RelationModel.from_pretrained(tiny_roc_dir)
    int8 = bench.quantized_int8(model)
    assert type(model.encoder.text_model.encoder.layer[0].attention.self.query) is torch.nn.Linear
    got = RelationExtractor(int8, cache_dir=cache_dir).predict("Messi joined Inter Miami .", "Messi", "Inter Miami")
    assert got.relation in model.relation_labels
    assert bench.compile_for_training(model) == len(model.encoder.text_model.encoder.layer) + 1  # nothing frozen
    extra = {"training": {"steps": 2, "compiled_modules": 5, "warm_up_s": {"eager": 1.5, "compiled": 40.0},
                          "step_s": {"eager": [0.5, 0.7], "compiled": [0.55, 0.65]}},
             "prediction": {"precision": "bf16", "pairs": 8, "rounds": 1,
                            "warm_up_s": {"default": 0.1, "compiled": 30.0, "int8": 0.2},
                            "single_predict_ms": {"default": [12.0], "compiled": [11.0], "int8": [20.0]},
                            "pairs_per_s": {"default": [150.0], "compiled": [155.0], "int8": [90.0]}},
             "int8_f1": {"model": "m", "default_precision": "bf16", "val_default_micro_f1": 57.9,
                         "val_int8_micro_f1": 55.1, "val_changed_predictions": 40, "val_records": 1624,
                         "val_default_seconds": 10.0, "val_int8_seconds": 15.0, "test_default_micro_f1": 60.5,
                         "test_int8_micro_f1": 58.0, "test_changed_predictions": 41, "test_records": 1614,
                         "test_default_seconds": 9.0, "test_int8_seconds": 14.0}}
    md = "\n".join(bench.render_extra_levers(extra, "abc"))
    assert "| compiled | 0.600 | 0.600 | 40.0 s |" in md and "| eager | 0.600 | 0.600 | 1.5 s |" in md
    assert "| int8 | 20.0 ms | 90.0 | 0.2 s |" in md
    assert "| val | 57.90 | 55.10 | 40 of 1624 | 10.0 | 15.0 |" in md


def test_update_results_keeps_every_other_figure(bench, tmp_path, monkeypatch):
    """The partial modes (--ratio-only, --prediction-only, --extra-levers-only) rewrite the committed results in
    place: the change applied, the command and commit noted, the Markdown rendered again."""
    import json
    import shutil

    shutil.copy(REPO / "benchmarks" / "results" / "cpu_speed.json", tmp_path / "cpu_speed.json")
    before = json.loads((tmp_path / "cpu_speed.json").read_text(encoding="utf-8"))
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--ratio-only", "--steps", "2"])
    kept = bench.update_results(str(tmp_path), "ratio_commit",
                                lambda k: k["summary"].update(roc_over_cls_step=1.05))
    after = json.loads((tmp_path / "cpu_speed.json").read_text(encoding="utf-8"))
    assert after == kept and after["summary"]["roc_over_cls_step"] == 1.05
    assert after["command"] == before["command"] + " && python benchmarks/cpu_speed.py --ratio-only --steps 2"
    assert after["ratio_commit"] and after["raw"] == before["raw"]
    assert "| 1.05x | <= 1.10x |" in (tmp_path / "cpu_speed.md").read_text(encoding="utf-8")


def test_train_only_trains_the_missing_full_runs_and_stops(bench, tmp_path, monkeypatch):
    """``--train-only``: the fast run as the config is, the fp32 run with every speed switch off (the config's
    recipe, e.g. its name swapping, kept), nothing measured afterwards, finished runs not trained again."""
    calls = []
    monkeypatch.setattr(bench, "train_full", lambda config, out, overrides: calls.append((out, overrides)))
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text("{}")
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--train-only", "--fast-run", str(tmp_path / "fast"),
                                     "--fp32-run", str(tmp_path / "fp32"), "--results", str(tmp_path / "results")])
    bench.main()
    assert calls == [(str(tmp_path / "fast"), []),
                     (str(tmp_path / "fp32"), bench.LEVERS[bench.FP32] + ["train.inference_precision=fp32"])]
    assert not (tmp_path / "results").exists()
    calls.clear()
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--train-only", "--fast-run", str(done)])
    bench.main()
    assert calls == []
    assert not any("name_swap" in o for o in bench.LEVERS[bench.FP32])


def test_train_only_with_a_seed_trains_both_runs_with_it(bench, tmp_path, monkeypatch):
    """``--seed N``: both full runs of a second seed-matched pair get ``seed=N``, and nothing else changes."""
    calls = []
    monkeypatch.setattr(bench, "train_full", lambda config, out, overrides: calls.append((out, overrides)))
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--train-only", "--seed", "1", "--fast-run",
                                     str(tmp_path / "fast"), "--fp32-run", str(tmp_path / "fp32")])
    bench.main()
    assert calls == [(str(tmp_path / "fast"), ["seed=1"]),
                     (str(tmp_path / "fp32"),
                      bench.LEVERS[bench.FP32] + ["train.inference_precision=fp32", "seed=1"])]


def test_seed_matched_pairs_average_into_the_summary_and_outlive_their_folders(bench, tmp_path, monkeypatch):
    """``--render-only --add-pair FAST FP32``: results written with one pair keep it (read from their own fields,
    the run folders may be gone), the new pair is checked like the first and added, the summary's val delta is the
    mean over the pairs and its training minutes the slowest run's; the Markdown lists every pair."""
    import yaml

    fast_cfg = yaml.safe_load((REPO / "configs" / "mnre_roc.yaml").read_text())
    fast_cfg["seed"] = 1
    fp32_cfg = json.loads(json.dumps(fast_cfg))
    for item in bench.LEVERS[bench.FP32] + ["train.inference_precision=fp32"]:
        apply_override(fp32_cfg, item)
    for name, cfg, minutes, f1 in (("fast", fast_cfg, 20.0, 0.58), ("fp32", fp32_cfg, 90.0, 0.584)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_config.yaml").write_text(yaml.safe_dump(cfg))
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"timings": {"train_minutes": minutes, "peak_rss_mb": 5000.0}, "results": {"val": {"f1": f1}}}))
    results = tmp_path / "results"
    results.mkdir()
    res = json.loads((REPO / "benchmarks" / "results" / "cpu_speed.json").read_text())
    res["summary"] |= {"full_training_minutes": 19.0, "fp32_full_training_minutes": 86.0,
                       "val_micro_f1_delta_fast_vs_fp32": 0.7, "train_peak_rss_mb": 5500.0}
    res.pop("full_run_pairs", None)
    res |= {"fast_run": "runs/gone-fast", "fp32_run": "runs/gone-fp32", "fast_run_val_micro_f1": 0.593,
            "fp32_run_val_micro_f1": 0.586, "fp32_run_paused_seconds": 600.0, "command": "python x"}
    (results / "cpu_speed.json").write_text(json.dumps(res))
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--render-only", "--results", str(results),
                                     "--add-pair", str(tmp_path / "fast"), str(tmp_path / "fp32")])
    bench.main()
    out = json.loads((results / "cpu_speed.json").read_text())
    s, pairs = out["summary"], out["full_run_pairs"]
    assert [p["seed"] for p in pairs] == [42, 1] and "fast_run" not in out
    assert pairs[0]["fast_val_micro_f1"] == pytest.approx(59.3) and pairs[0]["fp32_paused_seconds"] == 600.0
    assert s["full_training_minutes"] == 20.0 and s["fp32_full_training_minutes"] == 90.0  # the slowest runs
    assert s["val_micro_f1_delta_fast_vs_fp32"] == pytest.approx((0.7 - 0.4) / 2)
    assert s["train_peak_rss_mb"] == 5500.0
    assert "+0.70 (seed 42), -0.40 (seed 1)" in out["notes"]["val_micro_f1_delta_fast_vs_fp32"]
    md = (results / "cpu_speed.md").read_text()
    assert "| 1 | `" + str(tmp_path / "fast") + "` | 58.00 | 20.0 |" in md and "| -0.40 |" in md
    assert out["command"].endswith("--add-pair " + str(tmp_path / "fast") + " " + str(tmp_path / "fp32"))
    # rendering again keeps the pairs; a pair whose fp32 run is of another recipe is refused
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--render-only", "--results", str(results)])
    bench.main()
    assert json.loads((results / "cpu_speed.json").read_text())["full_run_pairs"] == pairs
    fp32_cfg["seed"] = 2
    (tmp_path / "fp32" / "run_config.yaml").write_text(yaml.safe_dump(fp32_cfg))
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--render-only", "--results", str(results),
                                     "--add-pair", str(tmp_path / "fast"), str(tmp_path / "fp32")])
    with pytest.raises(SystemExit, match="seed"):
        bench.main()


def test_the_arithmetic_twin_keeps_the_model_and_turns_off_each_computation_switch(bench, tmp_path, monkeypatch):
    """``--fp32-arithmetic-run``: trained as the canonical config with only the computation switches off (each one
    set in the canonical config, none of the frozen-prefix switches touched), then added beside the recorded fast run
    of its seed, outside the summary; a twin of another recipe or of a seed without a fast run is refused."""
    import yaml

    from rocmre.training.config import RunConfig

    canonical = yaml.safe_load((REPO / "configs" / "mnre_roc.yaml").read_text())
    twin_cfg = json.loads(json.dumps(canonical))
    for item in bench.ARITHMETIC_OFF:
        apply_override(twin_cfg, item)
    differ = bench.config_differences(canonical, twin_cfg)
    assert set(differ) == {o.split("=")[0] for o in bench.ARITHMETIC_OFF}
    assert not any(k.startswith("model.") for k in differ)
    assert RunConfig.model_validate(twin_cfg).model.frozen_text_layers == 2

    calls = []
    monkeypatch.setattr(bench, "train_full", lambda config, out, overrides: calls.append((out, overrides)))
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--train-only", "--seed", "1", "--fp32-arithmetic-run",
                                     str(tmp_path / "twin")])
    bench.main()
    assert calls == [(str(tmp_path / "twin"), bench.ARITHMETIC_OFF + ["seed=1"])]

    twin_cfg["seed"] = 1
    (tmp_path / "twin").mkdir()
    (tmp_path / "twin" / "run_config.yaml").write_text(yaml.safe_dump(twin_cfg))
    (tmp_path / "twin" / "metrics.json").write_text(json.dumps(
        {"timings": {"train_minutes": 50.0}, "results": {"val": {"f1": 0.589}}}))
    results = tmp_path / "results"
    results.mkdir()
    res = json.loads((REPO / "benchmarks" / "results" / "cpu_speed.json").read_text())
    res.pop("arithmetic_twins", None)
    summary = dict(res["summary"])
    (results / "cpu_speed.json").write_text(json.dumps(res))
    monkeypatch.setattr("sys.argv", ["cpu_speed.py", "--render-only", "--results", str(results),
                                     "--fp32-arithmetic-run", str(tmp_path / "twin")])
    bench.main()
    out = json.loads((results / "cpu_speed.json").read_text())
    fast = next(p for p in res["full_run_pairs"] if p["seed"] == 1)
    assert out["summary"] == summary
    assert out["arithmetic_twins"] == [{"seed": 1, "fast_run": fast["fast_run"],
                                        "fast_val_micro_f1": fast["fast_val_micro_f1"],
                                        "twin_run": str(tmp_path / "twin"), "twin_val_micro_f1": pytest.approx(58.9),
                                        "twin_minutes": 50.0}]
    assert out["val_micro_f1_delta_fast_vs_fp32_arithmetic"] == pytest.approx(fast["fast_val_micro_f1"] - 58.9)
    md = (results / "cpu_speed.md").read_text()
    assert "## The computation alone" in md and f"{fast['fast_val_micro_f1'] - 58.9:+.2f} |" in md
    assert out["command"].endswith("--fp32-arithmetic-run " + str(tmp_path / "twin"))

    for bad, match in (("model.frozen_text_layers=0", "model.frozen_text_layers"), ("seed=7", "seed 7")):
        cfg = json.loads(json.dumps(twin_cfg))
        apply_override(cfg, bad)
        (tmp_path / "twin" / "run_config.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(SystemExit, match=match):
            bench.main()
