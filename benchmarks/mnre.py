"""MNRE quality with error bars (issue 11): ROC and the classifier over several seeds, a paired bootstrap CI of
their difference, and the name-replaced test set.

    python benchmarks/mnre.py --jobs 3             # the canonical configs (ROC + classifier), seeds 1,2,3
    python benchmarks/mnre.py --variants roc,classifier,roc_name_swap,classifier_name_swap --backbone mpnet-base
    python benchmarks/mnre.py --add-variant 'roc_t10=configs/mnre_roc.yaml;model.temperature=0.1' \
        --variants roc_name_swap,classifier_name_swap,roc_t10
    python benchmarks/mnre.py --render-only                              # Markdown again from mnre.json

Every model is trained by ``python -m rocmre train --config C --set seed=S`` into
``<out-root>/[<backbone>/]<variant>-s<S>`` (skipped when its ``metrics.json`` exists), chosen on validation by
the trainer, then scored on val, test and the name-replaced test set (``rocmre.data.name_swap``: the committed
construction, seed ``DEFAULT_SEED``). ROC - classifier is a paired bootstrap over test records, per seed and
pooled over seeds; each ROC variant is paired with the classifier trained with the same recipe (its ``baseline``)
and with the plain classifier, those that were scored. Writes ``<results>/mnre.{md,json,png}`` (the JSON's
``summary``: the best ROC variant by mean validation micro-F1, against its own baseline when that was scored).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import REPO, Variant, ci_text, mean_std, parse_variant, pct, pm  # noqa: E402,F401

DEFAULT_BACKBONE = "minilm-l6"
SUMMARY_KEYS = ("backbone", "seeds", "roc_test_micro_f1_mean", "roc_test_micro_f1_std", "cls_test_micro_f1_mean",
                "roc_minus_cls_ci95", "roc_test_macro_f1_mean", "hardware", "commit", "name_swap_test_micro_f1_mean",
                "name_swap_drop")
TARGETS = {"roc_test_micro_f1_mean": 68.0, "roc_minus_cls": 1.0, "roc_test_macro_f1_mean": 45.0,
           "name_swap_drop": 3.0}
BASELINE = "classifier"  # the plain classifier: every ROC variant is compared with it, and with its own baseline

#: the override that keeps a variant on its raw weights: the canonical configs average them (train.ema_decay) since
#: the EMA rows won on validation; the variants measured before that name it, so that they keep their meaning
RAW_WEIGHTS = "train.ema_decay=null"


def _pair(name: str, overrides: list[str], title: str) -> list[Variant]:
    """A ROC variant and the classifier trained with the same recipe (``classifier<name>``), paired."""
    return [Variant(f"roc{name}", "configs/mnre_roc.yaml", overrides, f"ROC, {title}", baseline=f"classifier{name}"),
            Variant(f"classifier{name}", "configs/mnre_cls.yaml", overrides, f"classifier, {title}")]


#: every variant names its name-swap probability and its weight average, so that it keeps its meaning when a
#: canonical config changes (check_trained_config refuses runs trained otherwise). Variants of switches that left
#: the library (logit adjustment, class balance, the pair-pair term, the cosine margin) are in docs/experiments.md.
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("roc", "configs/mnre_roc.yaml", [RAW_WEIGHTS, "data.name_swap_prob=0.0"], "ROC, names as written"),
    Variant("classifier", "configs/mnre_cls.yaml", [RAW_WEIGHTS, "data.name_swap_prob=0.0"],
            "classifier (same encoder, linear head), names as written"),
    *_pair("_name_swap", [RAW_WEIGHTS, "data.name_swap_prob=0.5"],
           "canonical config before weight averaging: names swapped in training (p=0.5)"),
    *_pair("_name_swap_all", [RAW_WEIGHTS, "data.name_swap_prob=1.0"],
           "training-time name swapping (p=1: every name that has a same-type replacement)"),
    # weight averaging instead of one checkpoint: the exponential moving average of the trainable weights
    # (train.ema_decay 0.998: a horizon of about 500 steps, 1.3 epochs) is validated and kept
    *_pair("_ema", ["data.name_swap_prob=0.5", "train.ema_decay=0.998"],
           "canonical config + weight average (EMA, decay 0.998)"),
    # longer training: every canonical ROC seed chose its last epoch (6 of 6) on validation; 10 epochs
    *_pair("_long", [RAW_WEIGHTS, "data.name_swap_prob=0.5", "train.epochs=10"], "canonical config, 10 epochs"),
    # the recipe that takes new relations best (zero_shot.md): does it keep the canonical score on trained relations?
    Variant("roc_mean_pooled_pairs", "configs/mnre_roc.yaml",
            [RAW_WEIGHTS, "data.name_swap_prob=0.5", "model.freeze_description_encoder=true",
             "model.description_projection=identity", "model.pair_pooling=markers_plus_mean"],
            "ROC, canonical config, description vectors = the frozen sentence encoder's own, pair vector = "
            "mean-pooled states + a marker residual starting at zero", baseline="classifier_name_swap"),
]}


def run_folder(out_root: Path, backbone: str, variant: str, seed: int) -> Path:
    """``<out-root>/<variant>-s<seed>`` for the default backbone, ``<out-root>/<backbone>/...`` for others."""
    base = out_root if backbone == DEFAULT_BACKBONE else out_root / backbone.replace("/", "_")
    return base / f"{variant}-s{seed}"


def run_overrides(v: Variant, backbone: str, seed: int, bundle: Path | None) -> list[str]:
    """The variant's overrides plus seed and backbone (the user's ``--set`` come after, in train_variant)."""
    text_backbone = str(bundle / backbone) if bundle is not None else backbone
    extra = [f"model.text_backbone={text_backbone}"] if bundle is not None or backbone != DEFAULT_BACKBONE else []
    return [*v.overrides, f"seed={seed}", *extra]


def config_differences(trained: dict, expected: dict, ignore: tuple[str, ...] = ("output_dir", "cache_dir")
                       ) -> list[str]:
    """``key: trained -> expected`` for every setting (dotted keys of two run-config dicts) a trained run does not
    share with what its variant asks for today, where it was written and its cache aside."""
    from rocmre.training.config import config_differences as differences

    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in differences(trained, expected, ignore).items()]


def check_trained_config(folder: Path, v: Variant, overrides: list[str]) -> None:
    """Refuse to score a run under a variant whose config (today's file plus overrides) it was not trained with:
    a canonical config that changed after the run would otherwise label an old model with the new recipe."""
    from rocmre.training.config import RunConfig

    trained = RunConfig.from_yaml(folder / "run_config.yaml").model_dump(mode="json")
    expected = RunConfig.from_yaml(REPO / v.config, overrides).model_dump(mode="json")
    diff = config_differences(trained, expected)
    if diff:
        raise SystemExit(f"{folder} was not trained with the config variant {v.name!r} asks for today ({v.config} "
                         f"{' '.join(overrides)}); differences (trained -> asked): {'; '.join(diff)}. Retrain it "
                         "with --force, or score it under a variant that matches.")


# --- aggregation (pure: tested on synthetic results) -------------------------------------------------------------

def aggregate_rows(seed_results: list[dict], variants: dict[str, Variant]) -> list[dict]:
    """One row per (backbone, variant), in first-seen order: mean +- std over seeds, in points."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in seed_results:
        groups.setdefault((r["backbone"], r["variant"]), []).append(r)
    rows = []
    for (backbone, name), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])

        def stat(get, rs=rs) -> dict:
            return mean_std([100 * get(r) for r in rs])

        v = variants.get(name)
        rows.append({
            "backbone": backbone, "variant": name, "paradigm": rs[0]["paradigm"],
            "title": v.title if v else name, "seeds": [r["seed"] for r in rs],
            "test_micro_f1": stat(lambda r: r["test"]["micro_f1"]),
            "test_macro_f1": stat(lambda r: r["test"]["macro_f1"]),
            "test_accuracy": stat(lambda r: r["test"]["accuracy"]),
            "val_micro_f1": stat(lambda r: r["val"]["micro_f1"]),
            "name_swap_micro_f1": stat(lambda r: r["name_swap"]["micro_f1"]),
            "name_swap_drop": stat(lambda r: r["test"]["micro_f1"] - r["name_swap"]["micro_f1"]),
            "train_minutes": mean_std(r.get("train_minutes") for r in rs),
            "budget": "; ".join(dict.fromkeys(r["budget"] for r in rs)),
            "hardware": "; ".join(dict.fromkeys(r["machine"] for r in rs if r.get("machine"))),
        })
    return rows


def baselines_of(variant: str, variants: dict[str, Variant]) -> list[str]:
    """The classifier variants a ROC variant is compared with: its own baseline first, then the plain classifier."""
    v = variants.get(variant)
    return list(dict.fromkeys([v.baseline if v else BASELINE, BASELINE]))


def compare_paradigms(seed_results: list[dict], preds: dict[tuple[str, str, int], dict], negative_label: str,
                      resamples: int, seed: int = 0, variants: dict[str, Variant] | None = None) -> list[dict]:
    """Paired bootstrap of each ROC variant minus a classifier variant of the same backbone (its own baseline, the
    classifier trained with the same recipe, and the plain classifier, those that were scored), on test (per seed
    and pooled) and on the name-replaced test (pooled); ``preds[(backbone, variant, seed)]`` holds ``gold``,
    ``test`` and ``name_swap`` label lists."""
    variants = VARIANTS if variants is None else variants
    seeds: dict[tuple[str, str], list[int]] = {}
    paradigm: dict[tuple[str, str], str] = {}
    for r in seed_results:
        seeds.setdefault((r["backbone"], r["variant"]), []).append(r["seed"])
        paradigm[(r["backbone"], r["variant"])] = r["paradigm"]
    pairs = [(backbone, name, base) for (backbone, name) in seeds if paradigm[(backbone, name)] == "roc"
             for base in baselines_of(name, variants)
             if (backbone, base) in seeds and paradigm[(backbone, base)] == "classifier"]
    out = []
    for backbone, name, baseline in pairs:
        common = sorted(set(seeds[(backbone, name)]) & set(seeds[(backbone, baseline)]))
        if not common:
            continue
        a = [preds[(backbone, name, s)] for s in common]
        b = [preds[(backbone, baseline, s)] for s in common]
        per_seed = {str(s): harness.paired_ci(x["gold"], [x["test"]], [y["test"]], negative_label, resamples, seed)
                    for s, x, y in zip(common, a, b, strict=True)}
        out.append({"backbone": backbone, "variant": name, "baseline": baseline, "seeds": common,
                    "per_seed": per_seed,
                    "pooled": harness.paired_ci(a[0]["gold"], [x["test"] for x in a], [y["test"] for y in b],
                                                negative_label, resamples, seed),
                    "name_swap_pooled": harness.paired_ci(a[0]["name_swap_gold"], [x["name_swap"] for x in a],
                                                          [y["name_swap"] for y in b], negative_label, resamples,
                                                          seed)})
    return out


def matched_comparison(row: dict, comparisons: list[dict]) -> dict | None:
    """The comparison of a ROC row with its own baseline when that was scored, else with the plain classifier
    (comparisons are listed in that order)."""
    return next((c for c in comparisons if c["backbone"] == row["backbone"] and c["variant"] == row["variant"]),
                None)


def build_summary(rows: list[dict], comparisons: list[dict], commit: str) -> dict[str, Any] | None:
    """The ``summary`` of mnre.json: the ROC row with the best mean validation micro-F1 (None without one), compared
    with the classifier trained with the same recipe where there is one."""
    roc = [r for r in rows if r["paradigm"] == "roc"]
    if not roc:
        return None
    best = max(roc, key=lambda r: r["val_micro_f1"]["mean"])
    comp = matched_comparison(best, comparisons)
    baseline = comp["baseline"] if comp else BASELINE
    cls = next((r for r in rows if r["backbone"] == best["backbone"] and r["variant"] == baseline), None)
    summary = {
        "backbone": best["backbone"], "seeds": best["seeds"],
        "roc_test_micro_f1_mean": best["test_micro_f1"]["mean"], "roc_test_micro_f1_std": best["test_micro_f1"]["std"],
        "cls_test_micro_f1_mean": cls["test_micro_f1"]["mean"] if cls else None,
        "roc_minus_cls_ci95": [comp["pooled"]["low"], comp["pooled"]["high"]] if comp else None,
        "roc_test_macro_f1_mean": best["test_macro_f1"]["mean"], "hardware": best["hardware"], "commit": commit,
        "name_swap_test_micro_f1_mean": best["name_swap_micro_f1"]["mean"],
        "name_swap_drop": best["name_swap_drop"]["mean"],
    }
    assert tuple(summary) == SUMMARY_KEYS
    return summary


# --- rendering ---------------------------------------------------------------------------------------------------

def _vs(c: dict | None, own_baseline: str = BASELINE) -> str:
    """A lead-table CI cell; names the classifier variant when it is not the plain classifier, and says so when the
    ROC variant's own baseline (same recipe) was not scored."""
    if c is None:
        return "-"
    cell = ci_text(c["pooled"]) + ("" if c["baseline"] == BASELINE else f" vs `{c['baseline']}`")
    if c["baseline"] != own_baseline:
        cell += f" vs the plain classifier (`{own_baseline}` not scored)"
    return cell


def _variant_label(r: dict) -> str:
    return f"{r['paradigm']} (`{r['variant']}`)" if r["variant"] not in ("roc", BASELINE) else r["paradigm"]


LEAD_COLUMNS = ("backbone", "paradigm", "seeds", "test micro-F1", "test macro-F1", "test accuracy", "val micro-F1",
                "name-replaced test micro-F1", "name-replaced drop",
                "ROC - classifier of the same recipe, pooled 95 % CI", "budget", "hardware")


def _lead_header(extra: tuple[str, ...] = ()) -> list[str]:
    columns = (*LEAD_COLUMNS, *extra)
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def _lead_row(r: dict, c: dict | None, own_baseline: str, extra: tuple[str, ...] = ()) -> str:
    """One lead-table row: a (backbone, variant) aggregate and, for ROC, its comparison with a classifier."""
    minutes = r["train_minutes"]["mean"]
    budget = r["budget"] + (f"; {minutes:.1f} min per run" if minutes is not None else "")
    cells = [f"`{r['backbone']}`", _variant_label(r), str(len(r["seeds"])), f"**{pm(r['test_micro_f1'])}**",
             pm(r["test_macro_f1"]), pm(r["test_accuracy"]), pm(r["val_micro_f1"]), pm(r["name_swap_micro_f1"]),
             pm(r["name_swap_drop"]), _vs(c, own_baseline), budget, r["hardware"] or "-", *extra]
    return "| " + " | ".join(cells) + " |"


def targets_lines(summary: dict | None) -> list[str]:
    """Issue 11's targets against the summary, met or not, with the numbers."""
    if summary is None:
        return ["No ROC row: targets not evaluated."]
    s = summary

    def check(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [f"Targets (issue 11), best ROC configuration by mean validation micro-F1 (`{s['backbone']}`):", ""]
    lines.append(f"* ROC test micro-F1 >= {TARGETS['roc_test_micro_f1_mean']:g}: {s['roc_test_micro_f1_mean']:.2f} "
                 f"- {check(s['roc_test_micro_f1_mean'] >= TARGETS['roc_test_micro_f1_mean'])}")
    if s["roc_minus_cls_ci95"] is not None and s["cls_test_micro_f1_mean"] is not None:
        diff = s["roc_test_micro_f1_mean"] - s["cls_test_micro_f1_mean"]
        lo, hi = s["roc_minus_cls_ci95"]
        lines.append(f"* ROC - classifier >= +{TARGETS['roc_minus_cls']:g} with the 95 % CI above 0: {diff:+.2f} "
                     f"(mean over seeds), pooled CI [{lo:+.2f}, {hi:+.2f}] - "
                     f"{check(diff >= TARGETS['roc_minus_cls'] and lo > 0)}")
    lines.append(f"* macro-F1 >= {TARGETS['roc_test_macro_f1_mean']:g}: {s['roc_test_macro_f1_mean']:.2f} - "
                 f"{check(s['roc_test_macro_f1_mean'] >= TARGETS['roc_test_macro_f1_mean'])}")
    lines.append(f"* name-replaced test micro-F1 drop <= {TARGETS['name_swap_drop']:g} points: "
                 f"{s['name_swap_drop']:.2f} ({s['name_swap_test_micro_f1_mean']:.2f} on the name-replaced test) - "
                 f"{check(s['name_swap_drop'] <= TARGETS['name_swap_drop'])}")
    return lines


def render(payload: dict) -> list[str]:
    """mnre.md: the lead table, targets, CIs, per-seed rows, the name-replaced test set."""
    rows, comps = payload["rows"], payload["comparisons"]
    own = payload.get("variants", {})
    lines = ["# MNRE: retrieval (ROC) against classification, with seeds and error bars", "",
             f"Produced by `{payload['command']}` at commit `{payload['commit']}` on {payload['machine']} "
             f"({payload['date']}).", ""]
    if payload.get("warning"):
        lines += [f"**{payload['warning']}**", ""]
    lines += _lead_header()
    for r in rows:
        c = matched_comparison(r, comps) if r["paradigm"] == "roc" else None
        lines.append(_lead_row(r, c, own.get(r["variant"], {}).get("baseline", BASELINE)))
    lines += ["", "Mean ± sample standard deviation over seeds, in points. The CI is a paired bootstrap over test "
              f"records ({payload['resamples']:,} resamples): each resample draws records once and sums each "
              "system's micro-F1 counts over its seeds; shown as observed difference [2.5 %, 97.5 %]. "
              "Name-replaced drop: test micro-F1 minus name-replaced test micro-F1, per seed, averaged.", "",
              "![test and name-replaced test micro-F1 per row, mean ± std, one dot per seed](mnre.png)", ""]
    lines += targets_lines(payload.get("summary")) + [""]
    lines += [f"Scoring: {payload.get('scoring', '')} Negative label: `{payload['negative_label']}`. Each model's "
              "checkpoint and None margin were chosen on validation by the trainer; test and the name-replaced test "
              "are only scored. The summary row is chosen by mean validation micro-F1.", "",
              f"Data: MNRE-2 (`{payload['data']}`); records with their image: {payload['images']}.", ""]
    if payload.get("bundle"):
        lines += [f"Run from an {payload['bundle']}.", ""]
    if payload.get("overrides"):
        lines += [f"Overrides applied to every run: `{' '.join(payload['overrides'])}`.", ""]
    if payload.get("missing_runs"):
        lines += ["Asked for but never trained (left out; their rows have fewer seeds): "
                  + ", ".join(payload["missing_runs"]) + ".", ""]
    lines += ["## ROC - classifier per seed (paired bootstrap over test records)", "",
              "| backbone | ROC variant | classifier variant | seed | ROC - classifier [95 % CI] |",
              "| --- | --- | --- | --- | --- |"]
    for c in comps:
        pair = f"| `{c['backbone']}` | `{c['variant']}` | `{c['baseline']}` |"
        for s, res in c["per_seed"].items():
            lines.append(f"{pair} {s} | {ci_text(res)} |")
        lines.append(f"{pair} pooled | {ci_text(c['pooled'])} |")
        lines.append(f"{pair} pooled, name-replaced test | {ci_text(c['name_swap_pooled'])} |")
    lines += ["", "## Every run", "",
              "| backbone | variant | seed | best epoch | val micro-F1 | test micro-F1 | test macro-F1 | "
              "test accuracy | name-replaced micro-F1 | changed records: test -> name-replaced micro-F1 | "
              "changed records whose prediction changed | train min | steps |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["seed_results"]:
        ns = r["name_swap"]
        epoch = "-" if r.get("best_epoch") is None else f"{r['best_epoch']:.2f}"
        minutes = "-" if r.get("train_minutes") is None else f"{r['train_minutes']:.1f}"
        lines.append(f"| `{r['backbone']}` | `{r['variant']}` | {r['seed']} | {epoch} | {pct(r['val']['micro_f1'])} | "
                     f"{pct(r['test']['micro_f1'])} | {pct(r['test']['macro_f1'])} | {pct(r['test']['accuracy'])} | "
                     f"{pct(ns['micro_f1'])} | {pct(ns['changed_test_micro_f1'])} -> "
                     f"{pct(ns['changed_micro_f1'])} | {pct(ns['changed_prediction_rate'])} % | {minutes} | "
                     f"{r.get('steps', '-')} |")
    st = payload["name_swap"]
    lines += ["", "## The name-replaced test set", "",
              f"Built by `rocmre.data.name_swap.name_swapped_test` (seed {st['seed']}): every test record whose head "
              "or tail name occurs as an entity name in the training split has its head and tail names replaced, at "
              "every mention, by other names of the same entity type that never occur in the training split (neither "
              "as an entity name nor in any training text), taken from the val and test splits' own entity names "
              "and keeping the name's style (a Twitter handle or hashtag gets another one); the rest of the text is "
              "untouched. Types come from the relation label's type signature (`/per/loc/...`: person, location); "
              f"names in None records are typed by {st['negative_records_typed_by']}.", "",
              f"{st['changed']} of {st['records']} test records changed ({st['changed_negative']} of them None "
              f"records); {st['with_train_name']} held a training name; kept unchanged: {st['kept_untyped']} with no "
              f"entity type, {st['kept_overlapping']} with overlapping head and tail spans, {st['kept_no_name']} with "
              f"no replacement name. Heads replaced: {st['heads_replaced']}, tails: {st['tails_replaced']}, further "
              f"mentions: {st['extra_mentions_replaced']}; changed records that keep a training name on an untyped "
              f"entity: {st['still_with_train_name']}. Replacement names per type: "
              + ", ".join(f"{k} {v}" for k, v in st["pool_sizes"].items()) + "."]
    return lines


def plot_rows(payload: dict, path: Path) -> Path:
    """``mnre.png``: per row, test and name-replaced test micro-F1 as mean ± std bars with each seed's dot, so the
    seed spread and what unseen names cost can be seen at a glance."""
    plt = harness.pyplot()
    rows = payload["rows"]
    by_row: dict[tuple[str, str, str], list[dict]] = {}
    for r in payload["seed_results"]:
        by_row.setdefault((r.get("source", ""), r["backbone"], r["variant"]), []).append(r)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2))
    width = 0.38
    splits = (("test", "test", "tab:blue"), ("name_swap", "name-replaced test", "tab:orange"))
    for k, (key, label, colour) in enumerate(splits):
        means = [r["test_micro_f1" if key == "test" else "name_swap_micro_f1"] for r in rows]
        xs = [i + (k - 0.5) * width for i in range(len(rows))]
        ax.bar(xs, [m["mean"] for m in means], width, yerr=[m["std"] for m in means], capsize=3, color=colour,
               alpha=0.55, label=label)
        for x, r in zip(xs, rows, strict=True):
            dots = [100 * s[key]["micro_f1"]
                    for s in by_row.get((r.get("source", ""), r["backbone"], r["variant"]), [])]
            ax.scatter([x] * len(dots), dots, s=12, color="black", zorder=3)
    names = [r["variant"] if r["backbone"] == DEFAULT_BACKBONE else f"{r['backbone']}\n{r['variant']}" for r in rows]
    if any(r.get("source") for r in rows):  # a combined file: say where each row ran
        names = [f"{n}\n{_short_hardware(r['hardware'])}" for n, r in zip(names, rows, strict=True)]
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
    values = [100 * s[key]["micro_f1"] for s in payload["seed_results"] for key, _, _ in splits]
    ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 3))
    ax.set_ylabel("micro-F1 (points)")
    ax.set_title(f"MNRE: mean ± std over seeds, dots = seeds ({payload['machine']})", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return harness.save_figure(fig, path)


def _short_hardware(hardware: str | None) -> str:
    return "-" if not hardware else hardware.split(" (")[0].split(",")[0]


def combine(paths: list[Path], command: str) -> dict[str, Any]:
    """One payload from several mnre.json files (each made by this script, on any machine): every row, comparison
    and run tagged with its ``source`` file, and the summary of the ROC row with the best mean validation micro-F1
    over all of them, compared with the classifier of its own file (its commit and hardware are that file's)."""
    rows, comps, seeds, sources = [], [], [], []
    for path in paths:
        part = json.loads(path.read_text(encoding="utf-8"))
        if "rows" not in part or "comparisons" not in part:
            raise SystemExit(f"{path}: not a results file of benchmarks/mnre.py (no rows or comparisons)")
        if part.get("sources"):
            raise SystemExit(f"{path}: already a combined file; combine its sources instead")
        src = str(path)
        sources.append({"path": src, "command": part["command"], "commit": part["commit"],
                        "machine": part["machine"], "date": part["date"], "bundle": part.get("bundle", ""),
                        "overrides": part.get("overrides", []), "summary": part.get("summary")})
        own = part.get("variants", {})
        # a file older than per-variant baselines records none: today's definition of the variant says it
        rows += [{**r, "source": src, "own_baseline": own.get(r["variant"], {}).get("baseline")
                  or (VARIANTS[r["variant"]].baseline if r["variant"] in VARIANTS else BASELINE)}
                 for r in part["rows"]]
        comps += [{**c, "source": src} for c in part["comparisons"]]
        seeds += [{**r, "source": src} for r in part["seed_results"]]
    roc = [r for r in rows if r["paradigm"] == "roc"]
    summary = None
    if roc:
        best = max(roc, key=lambda r: r["val_micro_f1"]["mean"])
        own = [r for r in rows if r["source"] == best["source"]]
        src = next(s for s in sources if s["path"] == best["source"])
        summary = build_summary([best] + [r for r in own if r["paradigm"] != "roc"],
                                [c for c in comps if c["source"] == best["source"]], src["commit"])
    first = json.loads(paths[0].read_text(encoding="utf-8"))
    return {"summary": summary, "commit": harness.git_commit(), "machine": "several (see the hardware column)",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command, "sources": sources,
            "data": first["data"], "images": first["images"], "negative_label": first["negative_label"],
            "scoring": first.get("scoring", ""), "resamples": first["resamples"], "rows": rows,
            "comparisons": comps, "seed_results": seeds}


def render_combined(payload: dict) -> list[str]:
    """The combined mnre.md: one lead table (backbone x paradigm x hardware), the targets for the best ROC row, and
    where each row comes from; per-seed detail stays in each source's own mnre.md."""
    rows, comps = payload["rows"], payload["comparisons"]
    index = {s["path"]: i + 1 for i, s in enumerate(payload["sources"])}
    lines = ["# MNRE: retrieval (ROC) against classification, with seeds and error bars: every backbone and machine",
             "", f"Combined by `{payload['command']}` at commit `{payload['commit']}` ({payload['date']}) from "
             f"{len(payload['sources'])} result files of `benchmarks/mnre.py`; each row was produced by its source's "
             "command (listed below). GPU and CPU rows are separate rows: their budgets differ.", "",
             *_lead_header(("source",))]
    for r in rows:
        c = next((c for c in comps if c["source"] == r["source"] and c["backbone"] == r["backbone"]
                  and c["variant"] == r["variant"]), None) if r["paradigm"] == "roc" else None
        lines.append(_lead_row(r, c, r["own_baseline"], (f"[{index[r['source']]}]",)))
    lines += ["", "Mean ± sample standard deviation over seeds, in points; the CI is each source's paired bootstrap "
              f"over test records ({payload['resamples']:,} resamples), pooled over seeds.", "",
              "![test and name-replaced test micro-F1 per row, mean ± std, one dot per seed](mnre.png)", ""]
    lines += targets_lines(payload.get("summary")) + [""]
    if payload.get("summary"):
        lines += [f"The summary's numbers come from the source at commit `{payload['summary']['commit']}`.", ""]
    lines += [f"Scoring: {payload.get('scoring', '')} Negative label: `{payload['negative_label']}`. Data: MNRE-2 "
              f"(`{payload['data']}`); records with their image: {payload['images']}.", "", "## Sources", ""]
    for s in payload["sources"]:
        md = Path(s["path"]).with_suffix(".md")
        lines.append(f"{index[s['path']]}. `{md}` (per-seed rows and CIs there): `{s['command']}` at commit "
                     f"`{s['commit']}` on {s['machine']} ({s['date']})"
                     + (f"; {s['bundle']}" if s.get("bundle") else "")
                     + (f"; overrides `{' '.join(s['overrides'])}`" if s.get("overrides") else "") + ".")
    return lines




def render_any(payload: dict) -> list[str]:
    """mnre.md of a results file of this script, or of a combined one (``--combine``)."""
    return render_combined(payload) if payload.get("sources") else render(payload)


# --- training and scoring ----------------------------------------------------------------------------------------

def _subset(dataset, indices: list[int]):
    from rocmre.data import RelationDataset

    return RelationDataset([dataset.records[i] for i in indices], dataset.labels, dataset.name, dataset.split,
                           dataset.problems)


@dataclass
class EvalData:
    """The scored splits, identical for every model: val, test, the name-replaced test, and its statistics."""

    val: Any
    test: Any
    name_swap: Any
    changed: list[int]  # indices into test / name_swap of the records whose names were replaced
    stats: dict
    images: str = ""  # records with their image per split (full splits)


def eval_data(base_cfg, swap_seed: int, limit: int | None) -> EvalData:
    """Load val / test, build the name-replaced test from the full splits; ``limit`` takes the same seeded subset
    of test and name-replaced test (smoke runs only)."""
    import random

    from rocmre.data.name_swap import name_swapped_test
    from rocmre.paths import default_cache_dir
    from rocmre.training.setup import load_run_data

    train, val, test = (load_run_data(base_cfg, s) for s in ("train", "val", "test"))
    cache = Path(base_cfg.cache_dir) if base_cfg.cache_dir else default_cache_dir()
    swapped, stats = name_swapped_test(train, val, test, seed=swap_seed, cache_dir=cache)
    changed = list(stats.changed_indices)
    if limit is not None:
        rng = random.Random(0)
        keep_val = sorted(rng.sample(range(len(val)), min(limit, len(val))))
        keep = sorted(rng.sample(range(len(test)), min(limit, len(test))))
        val, test, swapped = _subset(val, keep_val), _subset(test, keep), _subset(swapped, keep)
        changed = [j for j, i in enumerate(keep) if i in set(stats.changed_indices)]
    images = ", ".join(f"{d.split} {d.num_with_image}/{len(d)}" for d in (train, val, test))
    return EvalData(val, test, swapped, changed, stats.to_dict(), images)


def pack(result) -> dict:
    """The scores kept per split (fractions)."""
    return {"micro_f1": result.f1, "macro_f1": result.macro_f1, "accuracy": result.accuracy,
            "precision": result.precision, "recall": result.recall}


def name_swap_scores(gold: list[str], test_pred: list[str], swap_pred: list[str], changed: list[int],
                     negative_label: str) -> dict:
    """Micro-F1 on the changed records before / after the names were replaced, and how many predictions moved."""
    from rocmre.evaluation.metrics import evaluate_predictions

    g = [gold[i] for i in changed]
    before = evaluate_predictions(g, [test_pred[i] for i in changed], negative_label).f1 if changed else None
    after = evaluate_predictions(g, [swap_pred[i] for i in changed], negative_label).f1 if changed else None
    moved = sum(test_pred[i] != swap_pred[i] for i in changed) / len(changed) if changed else None
    return {"changed_records": len(changed), "changed_test_micro_f1": before, "changed_micro_f1": after,
            "changed_prediction_rate": moved}


def evaluate_run(folder: Path, data: EvalData) -> tuple[dict, dict]:
    """Score one trained model on val, test and the name-replaced test: its per-seed result and its predictions."""
    from rocmre.evaluation.report import evaluate_dataset
    from rocmre.modeling.model import RelationModel
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import make_runtime

    cfg = RunConfig.from_yaml(folder / "run_config.yaml")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    model = RelationModel.from_pretrained(folder)
    runtime = make_runtime(model, cfg)
    bs = cfg.train.eval_batch_size
    val, test, swap = (evaluate_dataset(runtime, d, batch_size=bs) for d in (data.val, data.test, data.name_swap))
    neg = model.config.negative_label
    t = cfg.train
    timings = metrics.get("timings") or {}
    trainer_val = metrics.get("val") or (metrics.get("results") or {}).get("val") or {}
    budget = (f"{t.epochs:g} epoch{'s' if t.epochs != 1 else ''}"
              + (f" (at most {t.max_minutes:g} min)" if t.max_minutes else "")
              + f", batch {t.batch_size}, lr {t.learning_rate:g} / {t.head_learning_rate:g}")
    result = {"folder": str(folder), "paradigm": model.config.model_type, "best_epoch": metrics.get("best_epoch"),
              "val": pack(val.overall), "test": pack(test.overall),
              "name_swap": {**pack(swap.overall), **name_swap_scores(test.gold, test.pred, swap.pred, data.changed,
                                                                     neg)},
              "trainer_val_micro_f1": trainer_val.get("f1"),
              "train_minutes": metrics.get("train_minutes", timings.get("train_minutes")),
              "steps": metrics.get("steps"),
              "machine": with_precision(metrics.get("machine") or timings.get("machine"),
                                        (metrics.get("results") or {}).get("precision")),
              "budget": budget, "negative_label": neg}
    preds = {"gold": test.gold, "test": test.pred, "name_swap_gold": swap.gold, "name_swap": swap.pred}
    return result, preds


def with_precision(machine: str | None, precision: str | None) -> str | None:
    """The run's machine and the precision it trained in (``train.mixed_precision: auto`` is bf16 only where the
    hardware computes it natively, so CPU rows of one config can differ in it), where both were recorded."""
    return f"{machine}, {precision} training" if machine and precision else machine


def score_runs(jobs: list[tuple[str, str, int]], args, variants: dict[str, Variant], bundle: Path | None,
               data: EvalData) -> tuple[list[dict], dict, list[str]]:
    """(per-seed results, predictions, runs asked for but never trained) of every (backbone, variant, seed)."""
    from rocmre.backbones.hardware import machine_description

    seed_results, preds, missing = [], {}, []
    for b, n, s in jobs:
        folder = run_folder(Path(args.out_root), b, n, s)
        if not (folder / "metrics.json").is_file():
            if args.skip_missing:
                missing.append(f"{b} {n} seed {s}")
                print(f"left out {b} {n} seed {s}: no trained model in {folder}", flush=True)
                continue
            raise SystemExit(f"no trained model in {folder} (train it, drop --skip-train, or pass --skip-missing)")
        check_trained_config(folder, variants[n], [*run_overrides(variants[n], b, s, bundle), *args.set])
        result, p = evaluate_run(folder, data)
        if not result["machine"]:
            result["machine"] = f"{machine_description()} (where it was scored; the run recorded none)"
        seed_results.append({"backbone": b, "variant": n, "seed": s, **result})
        preds[(b, n, s)] = p
        print(f"scored {b} {n} seed {s}: test micro-F1 {100 * result['test']['micro_f1']:.2f}", flush=True)
    if not seed_results:
        raise SystemExit("no trained model to score: " + ", ".join(missing))
    return seed_results, preds, missing


def parse_args(argv: list[str] | None):
    parser = harness.parser(__doc__, variants="roc_name_swap,classifier_name_swap", seeds="1,2,3",
                            out_root="runs/mnre")
    parser.add_argument("--add-variant", action="append", default=[], metavar="NAME[@BASELINE]=CONFIG[;OVERRIDE...]",
                        help="define a variant (then name it in --variants); @BASELINE: the classifier variant a "
                        "ROC variant is paired with (default classifier)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="comma-separated text backbones")
    parser.add_argument("--skip-missing", action="store_true",
                        help="with --skip-train: leave out runs that were never trained (named in mnre.md) instead "
                        "of stopping")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--name-swap-seed", type=int, default=None, help="default: rocmre.data.name_swap's")
    parser.add_argument("--combine", nargs="+", default=None, metavar="MNRE_JSON",
                        help="merge results files of this script (e.g. GPU and CPU runs) into <results>/mnre.*")
    args = parser.parse_args(argv)
    variants = dict(VARIANTS)
    for spec in args.add_variant:
        try:
            v = parse_variant(spec, BASELINE)
        except ValueError as e:
            parser.error(str(e))
        variants[v.name] = v
    return parser, args, variants


def main(argv: list[str] | None = None) -> None:
    parser, args, variants = parse_args(argv)
    results = Path(args.results)
    if args.combine:
        sources = [Path(p) for p in args.combine]
        if any(p.resolve() == (results / "mnre.json").resolve() for p in sources):
            parser.error(f"--combine would overwrite its own source {results / 'mnre.json'}")
        payload = combine(sources, harness.command_line("mnre.py", argv))
        return harness.write_results(results, "mnre", payload, render_combined, plot_rows)
    if args.render_only:
        return harness.render_only(results, "mnre", render_any, plot_rows)
    names = harness.choose(parser, args.variants, variants, "variants (or define them with --add-variant)")
    seeds = harness.split_list(args.seeds, int)
    backbones = harness.split_list(args.backbone)
    bundle = harness.use_bundle(args.bundle)
    missing = [b for b in backbones if bundle is not None and not (bundle / b).is_dir()]
    if missing:
        parser.error(f"the bundle has no text backbone folder for {missing}")
    if not args.skip_train:  # seed-major: a run cut short leaves whole seeds of every variant (paired runs)
        harness.train_all([harness.Run(variants[n].with_overrides(*run_overrides(variants[n], b, s, bundle)[
            len(variants[n].overrides):]), run_folder(Path(args.out_root), b, n, s))
            for b in backbones for s in seeds for n in names], args.set, args.jobs, args.force)
    from rocmre.data.name_swap import DEFAULT_SEED
    from rocmre.evaluation.report import SCORING_NOTE
    from rocmre.training.config import RunConfig

    base = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", args.set)
    data = eval_data(base, DEFAULT_SEED if args.name_swap_seed is None else args.name_swap_seed, args.eval_limit)
    jobs = [(b, n, s) for b in backbones for n in names for s in seeds]
    seed_results, preds, missing = score_runs(jobs, args, variants, bundle, data)
    neg = base.data.negative_label
    rows = aggregate_rows(seed_results, variants)
    comparisons = compare_paradigms(seed_results, preds, neg, args.resamples, variants=variants)
    meta = harness.run_meta("mnre.py", argv, args.eval_limit)
    payload = {
        "summary": build_summary(rows, comparisons, meta["commit"]), **meta,
        "data": base.data.path, "images": data.images, "negative_label": neg, "scoring": SCORING_NOTE,
        "bundle": ("offline bundle from benchmarks/offline_bundle.py"
                   + ("" if (bundle / "data" / "mnre" / "RE_data" / "img_vg").is_dir() else
                      " made with --no-crops (the visual-grounding crops of the 107 records with an image are left "
                      "out, to fit the GPU machine's 64 MiB transfer)")) if bundle else "",
        "overrides": args.set, "seeds": seeds, "backbones": backbones, "resamples": args.resamples,
        "variants": {n: {"config": variants[n].config, "overrides": variants[n].overrides,
                         "title": variants[n].title, "paradigm": variants[n].paradigm,
                         "baseline": variants[n].baseline} for n in names},
        "rows": rows, "comparisons": comparisons, "seed_results": seed_results, "name_swap": data.stats,
        "missing_runs": missing,
    }
    harness.write_results(results, "mnre", payload, render, plot_rows)


if __name__ == "__main__":
    main()
