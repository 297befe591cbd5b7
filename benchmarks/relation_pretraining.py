"""Relation pre-training, then MNRE (issue 38): ROC and the classifier, each with and without starting from a model
pre-trained on 131 Wikidata relations (``configs/relations_pretrain.yaml``), on all of MNRE train and on a seeded
10 % of it (every relation kept), scored on test, the name-replaced test and the strict name-replaced test (every
relation record gets unseen same-type names, whatever their style), with paired bootstrap CIs.

    python benchmarks/relation_pretraining.py                            # pre-train once, 8 rows x seeds 1,2,3
    python benchmarks/relation_pretraining.py --pretrained runs/relations_pretrain --regimes low --seeds 1,2,3
    python benchmarks/relation_pretraining.py --render-only

The pre-trained folder is made by ``rocmre train --config configs/relations_pretrain.yaml`` into
``<out-root>/pretrain`` (or given with ``--pretrained``); every MNRE model by ``rocmre train --config
configs/mnre_{roc,cls}.yaml --set seed=S [--set model.init_from=DIR] [--set data.train_fraction=0.1]`` into
``<out-root>/<variant>-s<S>`` (skipped when its ``metrics.json`` exists), chosen on validation by the trainer.
Writes ``<results>/relation_pretraining.{md,json,png}``; the JSON's ``summary`` has the keys of SUMMARY_KEYS.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import mnre  # noqa: E402
from harness import REPO, Variant, ci_text, mean_std, pm  # noqa: E402

SUMMARY_KEYS = ("pretrain_relations", "pretrain_pairs", "pretrain_minutes", "seeds", "roc_test_micro_f1_mean",
                "roc_test_macro_f1_mean", "cls_test_micro_f1_mean", "cls_test_macro_f1_mean", "roc_minus_cls_ci95",
                "low_resource_roc_minus_cls", "low_resource_roc_minus_cls_ci95", "name_swap_drop",
                "strict_name_swap_drop", "strict_name_swap_flip_rate", "no_pretrain_roc_test_macro_f1_mean",
                "commit")
TARGETS = {"roc_test_macro_f1_mean": 45.0, "roc_test_micro_f1_mean": 65.0, "roc_minus_cls": 1.0,
           "low_resource_roc_minus_cls": 3.0, "name_swap_drop": 3.0, "strict_name_swap_drop": 5.0,
           "strict_name_swap_flip_rate": 0.15, "pretrain_minutes": 30.0}
PRETRAIN_CONFIG = "configs/relations_pretrain.yaml"
LOW_FRACTION = 0.1
REGIMES = {"full": [], "low": [f"data.train_fraction={LOW_FRACTION}"]}


def variants(pretrained: str) -> dict[str, Variant]:
    """The eight rows: (ROC, classifier) x (from scratch, from the pre-trained model) x (all of train, 10 %)."""
    out = {}
    for regime, extra in REGIMES.items():
        suffix = "" if regime == "full" else "_low"
        for pre in (False, True):
            tag = "_pre" if pre else ""
            init = [f"model.init_from={pretrained}"] if pre else []
            where = "all of MNRE train" if regime == "full" else f"a seeded {LOW_FRACTION:.0%} of MNRE train"
            how = "from the relation pre-trained model" if pre else "from MiniLM"
            cls = f"classifier{tag}{suffix}"
            out[f"roc{tag}{suffix}"] = Variant(f"roc{tag}{suffix}", "configs/mnre_roc.yaml", [*init, *extra],
                                               f"ROC, {how}, {where}", baseline=cls)
            out[cls] = Variant(cls, "configs/mnre_cls.yaml", [*init, *extra], f"classifier, {how}, {where}")
    return out


# --- scoring -----------------------------------------------------------------------------------------------------

@dataclass
class StrictSet:
    """The strict name-replaced test: every relation record renamed."""

    data: Any
    changed: list[int]
    stats: dict


def strict_set(base_cfg, seed: int, limit_to: Any | None = None) -> StrictSet:
    """Build the strict name-replaced test from the full splits (``limit_to``: the benchmark's possibly limited
    test, whose records it keeps in order; smoke runs only)."""
    from rocmre.data.name_swap import name_swapped_test
    from rocmre.paths import default_cache_dir
    from rocmre.training.setup import load_run_data

    train, val, test = (load_run_data(base_cfg, s) for s in ("train", "val", "test"))
    cache = Path(base_cfg.cache_dir) if base_cfg.cache_dir else default_cache_dir()
    swapped, stats = name_swapped_test(train, val, test, seed=seed, cache_dir=cache, strict=True)
    changed = list(stats.changed_indices)
    if limit_to is not None and len(limit_to) < len(test):
        index = {id(r): i for i, r in enumerate(test.records)}
        keep = [index[id(r)] for r in limit_to.records]
        swapped = mnre._subset(swapped, keep)
        changed = [j for j, i in enumerate(keep) if i in set(stats.changed_indices)]
    return StrictSet(swapped, changed, stats.to_dict())


def score_strict(folder: Path, strict: StrictSet, test_pred: list[str]) -> dict:
    """The model's micro-F1 on the strict set, and on its changed records before and after, with the flip rate."""
    from rocmre.evaluation.report import evaluate_dataset
    from rocmre.modeling.model import RelationModel
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import make_runtime

    cfg = RunConfig.from_yaml(folder / "run_config.yaml")
    model = RelationModel.from_pretrained(folder)
    scored = evaluate_dataset(make_runtime(model, cfg), strict.data, batch_size=cfg.train.eval_batch_size)
    neg = model.config.negative_label
    return {**mnre.pack(scored.overall),
            **mnre.name_swap_scores(scored.gold, test_pred, scored.pred, strict.changed, neg)}, scored.pred


SCORES_NAME = "relation_pretraining_scores.json"


def score_run(folder: Path, data: mnre.EvalData, strict: StrictSet, cache: bool) -> tuple[dict, dict]:
    """One model's result and predictions on val, test, the name-replaced and the strict sets; with ``cache``, kept
    in the run folder and read back while its weights are unchanged (a benchmark run in phases scores each once)."""
    file = folder / SCORES_NAME
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    if cache and file.is_file():
        saved = json.loads(file.read_text(encoding="utf-8"))
        if saved.get("weights_mtime_ns") == stamp:
            return saved["result"], saved["predictions"]
    result, p = mnre.evaluate_run(folder, data)
    result["strict_name_swap"], p["strict"] = score_strict(folder, strict, p["test"])
    p["strict_gold"] = [r.relation for r in strict.data.records]
    if cache:
        file.write_text(json.dumps({"weights_mtime_ns": stamp, "result": result, "predictions": p}),
                        encoding="utf-8")
    return result, p


def score_all(jobs: list[tuple[str, int]], out_root: Path, data: mnre.EvalData, strict: StrictSet,
              cache: bool = True) -> tuple[list[dict], dict]:
    """Per-seed results and predictions of every trained (variant, seed); runs never trained are left out."""
    seed_results, preds = [], {}
    for name, seed in jobs:
        folder = out_root / f"{name}-s{seed}"
        if not (folder / "metrics.json").is_file():
            print(f"left out {name} seed {seed}: no trained model in {folder}", flush=True)
            continue
        result, p = score_run(folder, data, strict, cache)
        seed_results.append({"backbone": mnre.DEFAULT_BACKBONE, "variant": name, "seed": seed, **result})
        preds[(mnre.DEFAULT_BACKBONE, name, seed)] = p
        print(f"scored {name} seed {seed}: test micro-F1 {100 * result['test']['micro_f1']:.2f}, strict "
              f"{100 * result['strict_name_swap']['micro_f1']:.2f}", flush=True)
    return seed_results, preds


def add_strict(rows: list[dict], seed_results: list[dict]) -> list[dict]:
    """The strict name-replaced columns of each row: micro-F1, drop from test, flip rate on the changed records."""
    for row in rows:
        rs = [r for r in seed_results if r["variant"] == row["variant"]]
        row["strict_micro_f1"] = mean_std(100 * r["strict_name_swap"]["micro_f1"] for r in rs)
        row["strict_drop"] = mean_std(100 * (r["test"]["micro_f1"] - r["strict_name_swap"]["micro_f1"]) for r in rs)
        row["strict_flip_rate"] = mean_std(r["strict_name_swap"]["changed_prediction_rate"] for r in rs)
        row["test_macro_f1_values"] = [100 * r["test"]["macro_f1"] for r in rs]
    return rows


# --- the summary (pure: tested on synthetic rows) ----------------------------------------------------------------

def _row(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r["variant"] == name), None)


def _comparison(comparisons: list[dict], roc: str, baseline: str) -> dict | None:
    return next((c for c in comparisons if c["variant"] == roc and c["baseline"] == baseline), None)


def build_summary(rows: list[dict], comparisons: list[dict], pretrain: dict, commit: str) -> dict[str, Any]:
    """The results file's ``summary``: the pre-trained ROC and classifier on all of train, the low-resource
    difference, the name-replaced drops of the pre-trained ROC model; None where a row was not run."""
    def mean(name: str, key: str) -> float | None:
        row = _row(rows, name)
        return row[key]["mean"] if row else None

    def ci(c: dict | None) -> list[float] | None:
        return [c["pooled"]["low"], c["pooled"]["high"]] if c else None

    full = _comparison(comparisons, "roc_pre", "classifier_pre")
    low = _comparison(comparisons, "roc_pre_low", "classifier_pre_low")
    roc = _row(rows, "roc_pre")
    summary = {
        "pretrain_relations": pretrain.get("relations"), "pretrain_pairs": pretrain.get("pairs"),
        "pretrain_minutes": pretrain.get("minutes"), "seeds": roc["seeds"] if roc else None,
        "roc_test_micro_f1_mean": mean("roc_pre", "test_micro_f1"),
        "roc_test_macro_f1_mean": mean("roc_pre", "test_macro_f1"),
        "cls_test_micro_f1_mean": mean("classifier_pre", "test_micro_f1"),
        "cls_test_macro_f1_mean": mean("classifier_pre", "test_macro_f1"),
        "roc_minus_cls_ci95": ci(full),
        "low_resource_roc_minus_cls": low["pooled"]["observed"] if low else None,
        "low_resource_roc_minus_cls_ci95": ci(low),
        "name_swap_drop": mean("roc_pre", "name_swap_drop"),
        "strict_name_swap_drop": mean("roc_pre", "strict_drop"),
        "strict_name_swap_flip_rate": mean("roc_pre", "strict_flip_rate"),
        "no_pretrain_roc_test_macro_f1_mean": mean("roc", "test_macro_f1"),
        "commit": commit,
    }
    assert tuple(summary) == SUMMARY_KEYS
    return summary


def pretrain_facts(folder: Path) -> dict[str, Any]:
    """Relations (the negative label aside), training pairs and minutes of the pre-trained model folder."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    results = metrics.get("results", {})
    return {"folder": str(folder), "relations": len([r for r in config["labels"] if r != config["negative_label"]]),
            "pairs": results.get("train_records"), "minutes": metrics.get("train_minutes"),
            "steps": results.get("steps"), "val_micro_f1": (results.get("val") or {}).get("f1"),
            "examples_per_second": metrics.get("examples_per_second")}


# --- rendering ---------------------------------------------------------------------------------------------------

def _target_line(summary: dict, key: str, value: float | None, target: float, *, at_most: bool = False,
                 scale: float = 1.0) -> str:
    if value is None:
        return f"- {key}: not run"
    met = value <= target if at_most else value >= target
    sign = "<=" if at_most else ">="
    return f"- {key}: {scale * value:.2f} (target {sign} {scale * target:g}): {'met' if met else 'NOT met'}"


def _interval(ci: list[float] | None) -> str:
    return "not run" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def render(payload: dict) -> list[str]:
    s = payload["summary"]
    pre = payload["pretrain"]
    lines = [
        "# Relation pre-training, then MNRE", "",
        f"Commit `{payload['commit']}`, {payload['machine']}, {payload['date']}. Command: `{payload['command']}`.",
        "",
        f"Pre-training: {pre.get('relations')} Wikidata relations, {pre.get('pairs')} training pairs, "
        f"{harness.fmt(pre.get('minutes'), '.1f')} min, {pre.get('steps')} steps, val micro-F1 on held-out corpus "
        f"pairs {harness.pct(pre.get('val_micro_f1'))} (`{PRETRAIN_CONFIG}`).", "",
        "Mean ± std over seeds, in points; test selected on validation by the trainer. Name swap: the committed "
        "name-replaced test (records with a training name); strict: every relation record renamed, flip = share "
        "of those records whose prediction changed.", "",
        "| row | seeds | val micro-F1 | test micro-F1 | test macro-F1 | name-swap drop | strict drop | strict flip |"
        " train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(f"| {r['title']} | {len(r['seeds'])} | {pm(r['val_micro_f1'])} | {pm(r['test_micro_f1'])} | "
                     f"{pm(r['test_macro_f1'])} | {pm(r['name_swap_drop'])} | {pm(r['strict_drop'])} | "
                     f"{pm(r['strict_flip_rate'])} | {pm(r['train_minutes'], digits=1)} |")
    lines += ["", "## ROC - classifier (paired bootstrap over test records, seeds pooled)", "",
              "| ROC row | against | seeds | test micro-F1 difference [95 % CI] | name-swapped test |",
              "|---|---|---|---|---|"]
    for c in payload["comparisons"]:
        lines.append(f"| {c['variant']} | {c['baseline']} | {len(c['seeds'])} | {ci_text(c['pooled'])} | "
                     f"{ci_text(c['name_swap_pooled'])} |")
    lines += ["", "## Targets", ""]
    lines += [_target_line(s, "pre-trained ROC test macro-F1", s["roc_test_macro_f1_mean"], 45.0),
              _target_line(s, "pre-trained ROC test micro-F1", s["roc_test_micro_f1_mean"], 65.0),
              f"- ROC - classifier, both pre-trained: CI {_interval(s['roc_minus_cls_ci95'])} (target: +1.0 with "
              "the CI above 0)",
              f"- low-resource ROC - classifier: {harness.fmt(s['low_resource_roc_minus_cls'], '+.2f')}, CI "
              f"{_interval(s['low_resource_roc_minus_cls_ci95'])} (target >= +3.0 with the CI above 0)",
              _target_line(s, "name-swap drop", s["name_swap_drop"], 3.0, at_most=True),
              _target_line(s, "strict name-swap drop", s["strict_name_swap_drop"], 5.0, at_most=True),
              _target_line(s, "strict flip rate", s["strict_name_swap_flip_rate"], 0.15, at_most=True),
              _target_line(s, "pre-training minutes", s["pretrain_minutes"], 30.0, at_most=True)]
    if payload.get("missing_runs"):
        lines += ["", f"Not run: {', '.join(payload['missing_runs'])}."]
    return lines


def plot(payload: dict, path: Path) -> Path:
    """Test micro- and macro-F1 per row, mean with std error bars."""
    plt = harness.pyplot()
    rows = payload["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    y = range(len(rows))
    for offset, key, label in ((-0.2, "test_micro_f1", "micro-F1"), (0.2, "test_macro_f1", "macro-F1")):
        ax.barh([i + offset for i in y], [r[key]["mean"] or 0 for r in rows], height=0.4,
                xerr=[r[key]["std"] or 0 for r in rows], label=label)
    ax.set_yticks(list(y), [r["variant"] for r in rows])
    ax.set_xlabel("MNRE test, points")
    ax.invert_yaxis()
    ax.legend()
    return harness.save_figure(fig, path)


# --- the run -----------------------------------------------------------------------------------------------------

def pretrain(out_root: Path, given: str | None, force: bool) -> Path:
    """The pre-trained model folder: ``--pretrained``, else ``<out-root>/pretrain`` (trained unless it exists)."""
    if given:
        folder = Path(given)
        if not (folder / "config.json").is_file():
            raise SystemExit(f"--pretrained {given}: not a finished model folder (no config.json)")
        return folder
    folder = out_root / "pretrain"
    if force or not (folder / "metrics.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "rocmre", "train", "--config", str(REPO / PRETRAIN_CONFIG), "--quiet",
               "--output-dir", str(folder)]
        minutes = harness.run_logged(cmd, folder, harness.threads_per_job(1), "relation pre-training")
        print(f"pre-trained in {minutes:.1f} min", flush=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, seeds="1,2,3", out_root="runs/relation_pretraining")
    parser.add_argument("--pretrained", default=None, help="a finished pre-trained model folder (no pre-training)")
    parser.add_argument("--regimes", default="low,full", help="low (10 %% of train), full, or both")
    parser.add_argument("--variants", default="roc,classifier,roc_pre,classifier_pre",
                        help="rows per regime (a regime adds its suffix)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--skip-scoring", action="store_true",
                        help="only train (in phases: score every trained run later, with --skip-train)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if args.render_only:
        harness.render_only(results, "relation_pretraining", render, plot)
        return
    out_root = Path(args.out_root)
    folder = pretrain(out_root, args.pretrained, args.force and not args.pretrained)
    table = variants(str(folder))
    regimes = harness.choose(parser, args.regimes, REGIMES, "regimes")
    names = [f"{n}{'' if g == 'full' else '_' + g}" for g in regimes
             for n in harness.choose(parser, args.variants, ["roc", "classifier", "roc_pre", "classifier_pre"],
                                     "variants")]
    seeds = harness.split_list(args.seeds, int)
    jobs = [(n, s) for s in seeds for n in names]  # seed-major: a run cut short leaves whole seeds
    if not args.skip_train:
        harness.train_all([harness.Run(table[n].with_overrides(f"seed={s}"), out_root / f"{n}-s{s}")
                           for n, s in jobs], args.set, args.jobs, args.force)
    if args.skip_scoring:
        return
    from rocmre.data.name_swap import DEFAULT_SEED
    from rocmre.evaluation.report import SCORING_NOTE
    from rocmre.training.config import RunConfig

    base = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", args.set)
    data = mnre.eval_data(base, DEFAULT_SEED, args.eval_limit)
    strict = strict_set(base, DEFAULT_SEED, data.test if args.eval_limit else None)
    seed_results, preds = score_all(jobs, out_root, data, strict, cache=args.eval_limit is None)
    if not seed_results:
        raise SystemExit("no trained model to score")
    rows = add_strict(mnre.aggregate_rows(seed_results, table), seed_results)
    comparisons = mnre.compare_paradigms(seed_results, preds, base.data.negative_label, args.resamples,
                                         variants=table)
    comparisons = [c for c in comparisons if c["baseline"] == table[c["variant"]].baseline]
    meta = harness.run_meta("relation_pretraining.py", argv, args.eval_limit)
    facts = pretrain_facts(folder)
    done = {(r["variant"], r["seed"]) for r in seed_results}
    payload = {
        "summary": build_summary(rows, comparisons, facts, meta["commit"]), **meta, "targets": TARGETS,
        "pretrain": facts, "images": data.images, "scoring": SCORING_NOTE, "overrides": args.set, "seeds": seeds,
        "variants": {n: {"config": table[n].config, "overrides": table[n].overrides, "title": table[n].title}
                     for n in names},
        "rows": rows, "comparisons": comparisons, "name_swap": data.stats, "strict_name_swap": strict.stats,
        "missing_runs": [f"{n} seed {s}" for n, s in jobs if (n, s) not in done],
        "seed_results": seed_results,
    }
    harness.write_results(results, "relation_pretraining", payload, render, plot)


if __name__ == "__main__":
    main()
