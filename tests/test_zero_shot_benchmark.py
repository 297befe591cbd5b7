"""benchmarks/zero_shot.py: its metrics, baselines, shot sampling, summary contract and rendering on synthetic
scores (the trained rows are produced by running the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    from conftest import load_benchmark

    return load_benchmark("zero_shot")


LABELS = ["None", "seen", "new_a", "new_b"]


def test_folds_are_the_issues_and_known_relations(bench):
    from rocmre.descriptions.store import RelationDescriptions

    known = set(RelationDescriptions.load("mnre").labels)
    assert sorted(bench.FOLDS) == ["A", "B", "C"]
    assert all(len(rels) == 5 and set(rels) <= known for rels in bench.FOLDS.values())
    assert len({r for rels in bench.FOLDS.values() for r in rels}) == 15


def test_fold_models_train_as_committed_whatever_the_canonical_config(bench):
    """Every fold recipe keeps names as written and the raw weights, although the canonical config swaps names and
    averages weights (an average over about 500 steps would be the 500-step fold models' whole budget)."""
    from rocmre.training.config import RunConfig

    canonical = RunConfig.from_yaml(bench.REPO / "configs" / "mnre_roc.yaml")
    assert canonical.train.ema_decay and canonical.data.name_swap_prob > 0
    for v in [*bench.VARIANTS.values(), bench.CEILING]:
        run = bench.fold_run(v, "A", Path("runs/zs"), Path("runs/pre"))
        cfg = RunConfig.from_yaml(bench.REPO / v.config, run.variant.overrides)
        assert cfg.data.exclude_relations == bench.FOLDS["A"] and run.folder == Path("runs/zs") / f"{v.name}-A"
        assert cfg.train.ema_decay is None and cfg.data.name_swap_prob == 0.0, v.name
        frozen = {"roc_mean_pooled_pairs_frozen0": 0, "roc_mean_pooled_pairs_frozen4": 4,
                  "roc_mean_pooled_pairs_frozen6": 6}.get(v.name, 2)
        assert cfg.model.frozen_text_layers == frozen, v.name


def test_top1_unseen_only_and_generalised(bench):
    scores = np.array([[0.9, 0.8, 0.5, 0.1],   # gold new_a: beats new_b, loses to seen
                       [0.0, 0.1, 0.2, 0.7],   # gold new_b: first everywhere
                       [0.0, 0.9, 0.1, 0.3]])  # gold seen
    gold = ["new_a", "new_b", "seen"]
    assert bench.top1(scores, gold, LABELS, ["new_a", "new_b"]) == [True, True, False]
    m = bench.held_out_metrics(scores, LABELS, gold, ["None", "new_b", "seen"], ["new_a", "new_b"], "None")
    assert m["pairs"] == 2
    assert m["unseen_only_top1"] == pytest.approx(1.0)
    assert m["generalized_top1"] == pytest.approx(0.5)  # the None column never competes
    assert m["held_out_micro_f1"] == pytest.approx(2 / 3)  # 1 right of 1 predicted relation, 2 gold
    assert m["per_relation"]["new_a"] == {"pairs": 1, "unseen_only_top1": 1.0, "generalized_top1": 0.0}


def test_held_out_micro_f1_counts_every_answer_a_user_gets(bench):
    """Issue 39's measure: the records whose gold or predicted relation is held out, with the full decision."""
    gold = ["new", "new", "seen", "None", "seen"]
    pred = ["new", "None", "new", "new", "seen"]  # right; missed; a seen pair taken; a None pair taken; not counted
    # 1 right of 3 answered with `new` and of 2 gold `new`; the seen pair answered `new` is a wrong answer too
    assert bench.held_out_micro_f1(gold, pred, ["new"], "None") == pytest.approx(2 * (1 / 3) * (1 / 3) / (2 / 3))
    assert bench.held_out_micro_f1(["seen"], ["seen"], ["new"], "None") is None
    assert bench.gap_closed(0.55, 0.50, 0.60) == pytest.approx(0.5)
    assert bench.gap_closed(0.55, 0.50, 0.50) is None and bench.gap_closed(None, 0.5, 0.6) is None
    rows = [{"row": "r", "all_relation_micro_f1": 0.58, "as_trained_micro_f1": 0.5}, {"row": "types_only"}]
    out = bench.with_ceiling(rows, {"val": 0.7, "test": 0.6})
    assert out[0]["gap_closed"] == pytest.approx(0.8) and out[0]["ceiling_micro_f1"] == 0.6
    assert out[1] == {"row": "types_only"} and bench.with_ceiling(rows, None) == rows


def test_fold_pretraining_leaves_each_folds_counterparts_out(bench):
    """The summary variant starts each fold from a pre-training without that fold's relations' counterparts; the
    not-zero-shot variant and the ceiling from the one that saw them all."""
    v = bench.VARIANTS[bench.SUMMARY_VARIANT]
    assert bench.needs_fold_pretraining(v) and not bench.needs_fold_pretraining(bench.CEILING)
    run = bench.fold_run(v, "B", Path("out"), Path("pre"))
    assert "model.init_from=pre/pretrain-B" in run.variant.overrides
    pre = bench.pretrain_run("B", Path("pre"))
    assert pre.folder == Path("pre/pretrain-B") and pre.variant.config == "configs/relations_pretrain.yaml"
    assert pre.variant.overrides == [bench.exclude_override("B")]
    for name in bench.NOT_ZERO_SHOT:
        assert f"model.init_from={bench.FULL_PRETRAINING}" in bench.VARIANTS[name].overrides


def test_wiki80_protocol_nests_its_held_out_sets_and_scores_macro_f1():
    from conftest import load_benchmark

    w = load_benchmark("wiki80_unseen")
    pids = [f"P{i}" for i in range(1, 81)]
    fifteen = w.held_out_relations(list(reversed(pids)), 1)
    assert fifteen == w.held_out_relations(pids, 1) and len(set(fifteen)) == 15  # order-free, seeded
    assert w.held_out_relations(pids, 1, 5) == fifteen[:5] and w.held_out_relations(pids, 1, 10) == fifteen[:10]
    assert w.held_out_relations(pids, 2) != fifteen
    with pytest.raises(ValueError):
        w.held_out_relations(pids, 1, 20)
    f1, per = w.macro_f1(["a", "a", "b", "c"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert per == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 0.0}) and f1 == pytest.approx((2 / 3 + 0.5) / 3)
    run = w.split_runs(Path("out"), pids, [3])[0]
    assert run.folder == Path("out/wiki80-m15-s3")
    assert run.variant.overrides == ["data.exclude_relations=" + json.dumps(w.held_out_relations(pids, 3))]
    rows = [{"seed": s, "m": m, "macro_f1": 0.1 * m / 5 + 0.01 * s} for s in (1, 2, 3) for m in (5, 10, 15)]
    summary = w.summarise(rows, 123.6, "abc")
    assert tuple(summary) == w.SUMMARY_KEYS and summary["wiki80_m10_macro_f1"] == pytest.approx(0.22)


def test_types_only_is_the_exact_expectation(bench):
    sig = {"a": (["person"], ["person"]), "b": (["person"], ["person"]), "c": (["person"], ["location"])}
    hits = bench.types_only(["person", "person", "organization"], ["person", "location", "person"],
                            ["a", "c", "b"], ["a", "b", "c"], sig)
    assert hits == pytest.approx([0.5, 1.0, 1 / 3])  # tie of two; unique fit; nothing fits: all three


def test_seen_micro_f1_ignores_held_out_records(bench):
    gold = ["seen", "new_a", "None"]
    assert bench.seen_micro_f1(gold, ["seen", "seen", "None"], ["new_a"], "None") == pytest.approx(1.0)


def test_shots_are_seeded_and_in_the_example_format(bench, mnre_root):
    from rocmre.data import read_mnre
    from rocmre.descriptions.store import example_to_pair

    records = read_mnre(mnre_root, "train").records[:400]
    rel = next(r.relation for r in records if r.relation != "None")
    a = bench.sample_shots(records, [rel], 5, seed=1)
    assert a == bench.sample_shots(records, [rel], 5, seed=1)
    assert a != bench.sample_shots(records, [rel], 5, seed=2) or sum(r.relation == rel for r in records) <= 5
    assert 0 < len(a[rel]) <= 5
    for ex in a[rel]:
        json.dumps(ex)
        example_to_pair(ex)  # the one input parser accepts it


def _fold_row(row, kind, fold, value, drop=0.0):
    variant = None if kind in ("types-only", "frozen-encoder") else row.split(" + ")[0]
    return {"row": row, "title": row, "kind": kind, "variant": variant, "fold": fold, "budget": "1 epoch",
            "unseen_only_top1": value,
            "generalized_top1": value / 2, "held_out_micro_f1": value / 3, "seen_micro_f1_drop": drop,
            "val_unseen_only_top1": value, "val_generalized_top1": value / 2, "val_held_out_micro_f1": value / 2,
            "val_micro_f1_after": 0.5 - drop / 10,
            "per_relation": {"r": {"pairs": 3, "unseen_only_top1": value, "generalized_top1": value / 2}}}


def test_summary_contract_and_rendering(bench, tmp_path):
    fold_rows = []
    for f, bump in zip("ABC", (0.0, 0.1, 0.2), strict=True):
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3),
                      _fold_row("roc", "zero-shot", f, 0.5 + bump, 0.5),
                      _fold_row("roc + 5-shot", "5-shot", f, 0.7 + bump, 3.0),
                      _fold_row("roc + 5-shot (w=0.10)", "5-shot", f, 0.6 + bump, 0.2),
                      _fold_row("roc_frozen", "zero-shot", f, 0.4, 0.1)]
    fold_rows = [{**r, "val_seen_micro_f1_drop": r["seen_micro_f1_drop"]} for r in fold_rows]
    rows = bench.aggregate(fold_rows)
    summary, chosen, shot = bench.build_summary(rows, "abc", variant="roc")
    assert chosen == "roc"  # the best validation held-out micro-F1
    assert shot == "roc + 5-shot (w=0.10)"  # the better 5-shot setting within the drop target
    assert tuple(summary) == bench.SUMMARY_KEYS
    assert summary["folds"] == ["A", "B", "C"]
    assert summary["unseen_only_top1"] == pytest.approx(0.6)
    assert summary["held_out_micro_f1"] == pytest.approx(0.2)
    assert summary["five_shot_held_out_micro_f1"] == pytest.approx(0.7 / 3)
    assert summary["seen_micro_f1_drop"] == pytest.approx(0.5)
    assert summary["wiki80_m10_macro_f1"] is None and summary["pretrained"] is False
    payload = {"summary": summary, "summary_row": chosen, "summary_five_shot_row": shot, "commit": "abc",
               "machine": "test", "date": "today",
               "command": "python benchmarks/zero_shot.py", "data": "mnre/RE_data",
               "folds": {f: ["r"] for f in "ABC"}, "shots": 5,
               "held_out_test_pairs": {f: 3 for f in "ABC"}, "rows": rows, "fold_rows": fold_rows}
    bench.write(tmp_path, payload)
    md = (tmp_path / "zero_shot.md").read_text()
    assert "unseen-only top-1: 0.600 (target >= 0.8) - **not met**" in md
    assert "| A | `r` | 3 |" in md
    assert "## Decision levers of `roc`" in md and "(`roc_frozen`)" in md  # each variant's chosen row
    stored = json.loads((tmp_path / "zero_shot.json").read_text())
    assert stored["summary"] == summary and stored["grid"] == "zero_shot_grid.json"
    # the results file: baselines, then per variant the setting chosen on validation and its 5-shot setting
    assert [r["row"] for r in stored["rows"]] == ["types_only", "roc", "roc + 5-shot (w=0.10)", "roc_frozen"]
    assert {r["row"] for r in stored["fold_rows"]} == {r["row"] for r in stored["rows"]}
    grid = json.loads((tmp_path / "zero_shot_grid.json").read_text())
    assert [r["row"] for r in grid["rows"]] == [r["row"] for r in rows]  # the whole grid beside it
    # the per-relation plot shows the baselines and the chosen rows, as the per-relation table does
    assert bench.per_relation_rows(payload) == ["types_only", "roc", "roc + 5-shot (w=0.10)"]
    assert (tmp_path / "zero_shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_reads_the_zero_shot_variant_best_on_validation(bench):
    """Of the zero-shot variants, the one whose chosen row has the best validation held-out micro-F1; a variant
    whose pre-training saw the held-out relations' counterparts never (however good)."""
    leaky = bench.NOT_ZERO_SHOT[0]
    fold_rows = []
    for f in "ABC":
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3),
                      {**_fold_row("roc_pretrained", "zero-shot", f, 0.4), "variant": "roc_pretrained"},
                      {**_fold_row("roc_mean_pooled_pairs", "zero-shot", f, 0.5), "variant": "roc_mean_pooled_pairs"},
                      {**_fold_row(leaky, "zero-shot", f, 0.9), "variant": leaky}]
    rows = bench.aggregate(fold_rows)
    summary, chosen, _ = bench.build_summary(rows, "abc")
    assert chosen == "roc_mean_pooled_pairs" and summary["pretrained"] is False
    summary, chosen, _ = bench.build_summary(rows, "abc", variant="roc_pretrained")
    assert chosen == "roc_pretrained" and summary["pretrained"] is True


def test_summary_prefers_the_untuned_row_of_equal_validation_top1(bench):
    fold_rows = []
    for f in "ABC":
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3),
                      {**_fold_row("roc + None margin", "zero-shot", f, 0.6, 0.4), "none_margin": 0.1},
                      _fold_row("roc", "zero-shot", f, 0.6, 4.0),  # the same ranking: its twin only gates answers
                      _fold_row("roc + offset", "zero-shot", f, 0.5, 0.3),
                      _fold_row("roc + 5-shot", "5-shot", f, 0.7, 0.9)]
    rows = bench.aggregate(fold_rows)
    summary, chosen, shot = bench.build_summary(rows, "abc", variant="roc")
    assert chosen == "roc" and shot == "roc + 5-shot"
    assert summary["seen_micro_f1_drop"] == pytest.approx(4.0)
    assert next(r for r in rows if r["row"] == "roc + None margin")["none_margin"]["mean"] == pytest.approx(0.1)
    # a tuned row with the better validation top-1 is chosen like any other
    better = [{**r, "val_held_out_micro_f1": 0.9} if r["row"] == "roc + offset" else r for r in fold_rows]
    assert bench.build_summary(bench.aggregate(better), "abc", variant="roc")[1] == "roc + offset"
    # scored with the drop against the model as trained (version 11 on): the summary reports that one
    strict = [{**r, "seen_micro_f1_drop_vs_trained": r["seen_micro_f1_drop"] + 2.5} if r["kind"] != "types-only"
              else r for r in fold_rows]
    summary, chosen, _ = bench.build_summary(bench.aggregate(strict), "abc", variant="roc")
    assert chosen == "roc" and summary["seen_micro_f1_drop"] == pytest.approx(6.5)
    # of untuned rows with the same validation top-1, the one costing the trained relations least on validation
    scoped = strict + [{**r, "row": "roc + type prior (added vs trained)", "seen_micro_f1_drop_vs_trained": 1.5,
                        "val_seen_micro_f1_drop_vs_trained": 1.5} for r in strict if r["row"] == "roc"]
    scoped = [{**r, "val_seen_micro_f1_drop_vs_trained": 6.5} if r["row"] == "roc" else r for r in scoped]
    summary, chosen, _ = bench.build_summary(bench.aggregate(scoped), "abc", variant="roc")
    assert chosen == "roc + type prior (added vs trained)" and summary["seen_micro_f1_drop"] == pytest.approx(1.5)


def test_summary_takes_the_best_row_within_the_drop_target_on_validation(bench):
    """Rows whose validation drop against the model as trained meets the target come first; the Markdown then
    shows the chosen setting as it is and its twins, and says what the tuned value costs."""
    def row(name, f, val_top1, val_drop, kind="zero-shot"):
        return {**_fold_row(name, kind, f, 2 * val_top1, val_drop), "seen_micro_f1_drop_vs_trained": val_drop,
                "val_seen_micro_f1_drop_vs_trained": val_drop}

    fold_rows = []
    for f in "ABC":
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3),
                      row("roc", f, 0.30, 5.0), row("roc + offset", f, 0.20, 0.5),
                      row("roc + None margin", f, 0.30, 0.8), row("roc + type prior", f, 0.31, 9.0),
                      row("roc + type prior + None margin", f, 0.31, 2.0),
                      row("roc + None margin + 5-shot", f, 0.35, 0.9, "5-shot"),
                      row("roc + 5-shot", f, 0.40, 6.0, "5-shot")]
    rows = bench.aggregate(fold_rows)
    summary, chosen, shot = bench.build_summary(rows, "abc", variant="roc")
    assert chosen == "roc + None margin" and shot == "roc + None margin + 5-shot"
    assert summary["seen_micro_f1_drop"] == pytest.approx(0.8)
    text = "\n".join(bench.twin_lines(rows, chosen))
    assert "`roc` as it is" in text and "(the summary row)" in text and "within the drop target" in text
    assert [r["row"] for r in bench.reader_rows(rows)] == ["types_only", chosen, shot]
    # no row within the target: the best validation top-1 of all, as before
    far = [{**r, "val_seen_micro_f1_drop_vs_trained": 3.0} for r in fold_rows]
    assert bench.build_summary(bench.aggregate(far), "abc", variant="roc")[1] == "roc + type prior"


def test_five_shot_setting_is_chosen_like_the_summary_row(bench):
    """Of the summary row's 5-shot rows, those within the drop target on validation come first, then the best
    validation generalised top-1 (not the micro-F1 over every record, which the trained relations dominate)."""
    def row(name, f, val_top1, val_drop, f1_after, kind="5-shot"):
        return {**_fold_row(name, kind, f, 2 * val_top1, val_drop), "val_seen_micro_f1_drop_vs_trained": val_drop,
                "seen_micro_f1_drop_vs_trained": val_drop, "val_micro_f1_after": f1_after}

    fold_rows = []
    for f in "ABC":
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3),
                      row("roc + None margin", f, 0.30, 0.8, 0.42, "zero-shot"),
                      row("roc + None margin + 5-shot (w=0.10)", f, 0.33, 0.5, 0.43),
                      row("roc + None margin + 5-shot (w=0.50)", f, 0.40, 0.9, 0.42),
                      row("roc + None margin + 5-shot (all relations)", f, 0.45, 4.0, 0.41)]
    rows = bench.aggregate(fold_rows)
    summary, chosen, shot = bench.build_summary(rows, "abc", variant="roc")
    assert chosen == "roc + None margin" and shot == "roc + None margin + 5-shot (w=0.50)"
    assert summary["five_shot_held_out_micro_f1"] == pytest.approx(0.8 / 3)
    # the Markdown shows the chosen 5-shot setting without its tuned margin too
    with_twin = bench.aggregate(fold_rows + [row("roc + 5-shot (w=0.50)", f, 0.40, 9.0, 0.30) for f in "ABC"])
    text = "\n".join(bench.twin_lines(with_twin, shot))
    assert "`roc + 5-shot (w=0.50)` as it is" in text and "(the chosen 5-shot row)" in text
    assert bench.twin_lines(with_twin, "roc + None margin + 5-shot (w=0.10)") == []  # no twin scored
    # none within the target: the best validation generalised top-1 of them all
    far = [{**r, "val_seen_micro_f1_drop_vs_trained": 3.0} if r["kind"] == "5-shot" else r for r in fold_rows]
    chosen_far = bench.build_summary(bench.aggregate(far), "abc", variant="roc")[2]
    assert chosen_far == "roc + None margin + 5-shot (all relations)"


def test_calibration_matches_the_seen_relations_distribution(bench):
    from rocmre.modeling.runtime import ModelScores

    labels = ["None", "seen_a", "seen_b", "new"]
    val = np.array([[0.9, 0.8, 0.0, 0.30], [0.1, 0.0, 0.8, 0.32], [0.5, 0.5, 0.5, 0.90]])
    gold = ["seen_a", "seen_b", "new"]  # the held-out record is not a reference record
    scored = {s: ModelScores(val.copy(), None, np.zeros(3, dtype=int), np.zeros(3, dtype=int)) for s in ("val", "test")}
    out = bench.calibrate_new(scored, labels, ["new"], gold, "None")
    ref = val[:2]
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    expected = mu[1:3].mean() + sd[1:3].mean() * (val[:, 3] - mu[3]) / sd[3]  # seen: mean 0.4, std 0.4
    assert out["test"].scores[:, 3] == pytest.approx(expected)
    assert out["test"].scores[:, :3] == pytest.approx(val[:, :3])  # seen relations untouched
    assert out["test"].scores[2, 3] > 1.0  # a flat new relation's outlier pair now stands out
    assert scored["test"].scores[0, 3] == pytest.approx(0.30)  # the input is not modified


def test_reader_rows_and_levers_leave_the_grid_and_removed_switches_out(bench):
    """The results file keeps the baselines and each variant's chosen rows; the levers table shows each decision
    setting as it is, without tuned twins, 5-shot rows or the switches that left the library."""
    fold_rows = []
    for f in "ABC":
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3),
                      _fold_row("frozen_encoder", "frozen-encoder", f, 0.4),
                      _fold_row("v", "zero-shot", f, 0.5), _fold_row("v + type prior", "zero-shot", f, 0.6),
                      _fold_row("v + type prior + offset", "zero-shot", f, 0.55),
                      _fold_row("v + sentence prior (w=0.2)", "zero-shot", f, 0.58),
                      _fold_row("v + type prior on added", "zero-shot", f, 0.52),
                      _fold_row("v + type prior + 5-shot", "5-shot", f, 0.7),
                      _fold_row("w", "zero-shot", f, 0.45)]
    rows = bench.aggregate(fold_rows)
    assert [r["row"] for r in bench.reader_rows(rows)] == ["types_only", "frozen_encoder", "v + type prior",
                                                         "v + type prior + 5-shot", "w"]
    assert [r["row"] for r in bench.lever_rows(rows, "v")] == ["v", "v + type prior"]
    assert bench.STAGES[2][1] == bench.ADDED_VS_TRAINED and "added" not in {s[1] for s in bench.STAGES}
    assert bench.shot_title(" + 5-shot (all relations, w=0.25)").endswith("(new and trained), prototype weight 0.25")


def test_render_only_splits_a_results_file_of_every_row_and_keeps_its_summary(bench, tmp_path):
    """A results file from before the grid was split off (every aggregated row in it): --render-only writes the
    reader's rows into zero_shot.json and the rest into zero_shot_grid.json, the summary and its keys unchanged."""
    fold_rows = []
    for f in "ABC":
        fold_rows += [_fold_row("types_only", "types-only", f, 0.3), _fold_row("roc", "zero-shot", f, 0.5),
                      _fold_row("roc + type prior", "zero-shot", f, 0.4),
                      _fold_row("roc + 5-shot", "5-shot", f, 0.7)]
    rows = bench.aggregate(fold_rows)
    summary, chosen, shot = bench.build_summary(rows, "abc", variant="roc")
    old = {"summary": summary, "summary_row": chosen, "summary_five_shot_row": shot, "commit": "abc",
           "machine": "m", "date": "d", "command": "python benchmarks/zero_shot.py", "data": "mnre/RE_data",
           "folds": {f: ["r"] for f in "ABC"}, "shots": 5, "held_out_test_pairs": {f: 3 for f in "ABC"},
           "rows": rows, "fold_rows": fold_rows}
    (tmp_path / "zero_shot.json").write_text(json.dumps(old), encoding="utf-8")
    bench.main(["--render-only", "--results", str(tmp_path)])
    new = json.loads((tmp_path / "zero_shot.json").read_text())
    assert new["summary"] == summary and tuple(new["summary"]) == bench.SUMMARY_KEYS
    assert {k for k in old if k not in ("rows", "fold_rows")} <= set(new)
    assert [r["row"] for r in new["rows"]] == ["types_only", "roc", "roc + 5-shot"]
    assert len(json.loads((tmp_path / "zero_shot_grid.json").read_text())["rows"]) == len(rows)
    md = (tmp_path / "zero_shot.md").read_text()
    bench.main(["--render-only", "--results", str(tmp_path)])  # now from the split files: the same Markdown
    assert (tmp_path / "zero_shot.md").read_text() == md


def test_rows_per_line_and_rounding(bench):
    payload = {"summary": {"a": 1}, "rows": [{"row": "x", "v": [1, 2]}, {"row": "y"}], "empty": [], "n": 3}
    text = bench.dump_rows_per_line(payload)
    assert bench.rounded({"a": [0.123456789, {"b": 2.0000004}], "c": "x", "n": 3}) == {"a": [0.123457, {"b": 2.0}],
                                                                                       "c": "x", "n": 3}
    assert json.loads(text) == payload and text.count("\n") == 11  # one line per row, not per field
    assert "\n  {\"row\": \"x\", \"v\": [1, 2]},\n" in text


def test_encoder_comparison_renders_each_encoder_and_relation(bench):
    """benchmarks/zero_shot_encoders.py: one row per encoder and view, mean ± std over the folds, and a
    per-relation column per row (a relation without pairs in a fold shows a dash)."""
    from conftest import load_benchmark

    enc = load_benchmark("zero_shot_encoders")
    per_fold = {f: {s: {"unseen_only_top1": 0.5 + 0.1 * i, "generalized_top1": 0.25,
                        "per_relation": {r: (None if r.endswith("couple") else 0.5) for r in rels}}
                    for s in ("val", "test")}
                for i, (f, rels) in enumerate(bench.FOLDS.items())}
    fold_rows = (enc.zero_shot.baseline_rows("a/plain", "frozen `a`, plain", "frozen-encoder", per_fold)
                 + enc.zero_shot.baseline_rows("b/plain", "frozen `b`, plain", "frozen-encoder", per_fold))
    payload = {"command": "python benchmarks/zero_shot_encoders.py", "commit": "abc", "machine": "CPU",
               "date": "today", "rows": enc.zero_shot.aggregate(fold_rows), "fold_rows": fold_rows}
    text = "\n".join(enc.render(payload))
    assert "| frozen `a`, plain (`a/plain`) | **60.0 ± 10.0** | 25.0 ± 0.0 | 60.0 ± 10.0 | 25.0 ± 0.0 |" in text
    assert "| `/per/per/couple` | - | - |" in text and "| `/per/per/peer` | 50.0 | 50.0 |" in text


def test_model_input_view_reads_what_the_pair_encoder_reads():
    """benchmarks/zero_shot_encoders.py's model-input views: the ROC prompt with the markers as their initial
    words, with or without the position phrase (``model.use_positions``)."""
    from types import SimpleNamespace

    from conftest import load_benchmark

    from rocmre.data.record import Entity, RelationRecord

    enc = load_benchmark("zero_shot_encoders")
    rec = RelationRecord(tokens=["Lionel", "Messi", "joined", "FC", "Barcelona"],
                         head=Entity("Lionel Messi", 0, 2), tail=Entity("FC Barcelona", 3, 5, type="organization"))
    def types(records):
        return [("person", "location")] * len(records)
    encoder = SimpleNamespace(encode=None)  # sentences() needs no encoder
    with_pos, without = (enc.ModelInputView(encoder, flag, ["<", ">", "{", "}"], types) for flag in (True, False))
    assert without.sentences([rec]) == ["< [ person ] Lionel Messi > joined { [ organization ] FC Barcelona }"]
    assert with_pos.sentences([rec])[0] == "the head comes first , near . " + without.sentences([rec])[0]
