"""benchmarks/harness.py: what every benchmark script shares (variants, statistics, options, results files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def harness():
    from conftest import load_benchmark

    return load_benchmark("harness")


def test_variants_and_the_training_command(harness, tmp_path: Path) -> None:
    v = harness.parse_variant("roc_t10@cls_t10=configs/mnre_roc.yaml;model.temperature=0.1")
    assert (v.name, v.config, v.overrides, v.baseline) == ("roc_t10", "configs/mnre_roc.yaml",
                                                           ["model.temperature=0.1"], "cls_t10")
    assert v.paradigm == "roc" and v.with_overrides("model.model_type=classifier").paradigm == "classifier"
    seeded = v.with_overrides("seed=2", name="roc_t10-s2")
    assert seeded.overrides == ["model.temperature=0.1", "seed=2"] and v.overrides == ["model.temperature=0.1"]
    cmd = harness.train_command(seeded, tmp_path / "out", ["train.epochs=1"])
    assert cmd[cmd.index("--output-dir") + 1] == str(tmp_path / "out")
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"] == ["model.temperature=0.1", "seed=2",
                                                                       "train.epochs=1"]
    for bad in ("x", "x=", "x=c.yaml;nokey"):
        with pytest.raises(ValueError):
            harness.parse_variant(bad)


def test_statistics(harness) -> None:
    assert harness.mean_std([None, 2.0]) == {"mean": 2.0, "std": 0.0}
    assert harness.mean_std([]) == {"mean": None, "std": None}
    ci = harness.mean_ci([1.0, 2.0, 3.0, 4.0], resamples=2000)
    assert ci["mean"] == pytest.approx(2.5) and 1.0 <= ci["low"] < 2.5 < ci["high"] <= 4.0
    assert harness.mean_ci([1.0, 2.0, 3.0, 4.0], resamples=2000) == ci  # seeded
    gold = ["None", "a", "a", "b"] * 25
    better, worse = list(gold), ["None"] * 100
    c = harness.paired_ci(gold, [better, better], [worse, worse], "None", resamples=200)
    assert c["observed"] == pytest.approx(100.0) and c["low"] > 0
    assert harness.pm({"mean": 0.5, "std": 0.1}, 100, 1) == "50.0 ± 10.0" and harness.pm({"mean": None}) == "-"


def test_options_and_results_files(harness, tmp_path: Path) -> None:
    parser = harness.parser("doc", variants="a", seeds="1,2", out_root="runs/x")
    args = parser.parse_args(["--variants", "a, b", "--set", "train.epochs=1", "--render-only"])
    assert harness.choose(parser, args.variants, ["a", "b"], "variants") == ["a", "b"]
    assert harness.split_list(args.seeds, int) == [1, 2] and args.set == ["train.epochs=1"] and args.render_only
    with pytest.raises(SystemExit):
        harness.choose(parser, "a,c", ["a", "b"], "variants")
    assert not hasattr(harness.parser("doc", training=False, sets=False).parse_args([]), "set")
    plots = []
    payload = {"summary": {"x": 0.1234567891}, "rows": [1, 2]}
    harness.write_results(tmp_path, "bench", payload, lambda p: ["# t", str(p["rows"])],
                          lambda p, path: plots.append(path))
    assert json.loads((tmp_path / "bench.json").read_text()) == payload
    assert (tmp_path / "bench.md").read_text() == "# t\n[1, 2]\n" and plots == [tmp_path / "bench.png"]
    assert harness.render_only(tmp_path, "bench", lambda p: "again") == payload
    assert (tmp_path / "bench.md").read_text() == "again\n"
    with pytest.raises(SystemExit, match="nothing to render"):
        harness.render_only(tmp_path, "missing", lambda p: "")
