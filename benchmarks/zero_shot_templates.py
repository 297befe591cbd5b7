"""Description templates for relations added without retraining: do ``{head}``/``{tail}`` templates filled with
each pair's mentions recognise a new relation better than the curated plain descriptions?

    python benchmarks/zero_shot_templates.py --out-root runs/zero_shot_v3 --variant roc_frozen_descriptions

Reuses the fold models of ``benchmarks/zero_shot.py`` (same ``--out-root``; nothing is trained here). For each fold,
the five held-out relations are added to the fold model three ways: the curated descriptions (``mnre``, as
``zero_shot.py`` adds them), the hand-written templates (built-in set ``mnre_templates``, five per relation, filled
with each pair's head and tail mentions), and both together (a relation's vector is the centre of all ten). Each is
scored on the held-out relations' val and test pairs: top-1 among the five held-out relations (unseen-only) and
among all relations (generalised), first stage alone, with the soft type prior, and with the type prior plus the
sentence prior at weight 0.33 (the setting ``zero_shot.py`` chooses); and the untrained sentence encoder alone with
each description set (the frozen-encoder baseline). Only held-out pairs are scored (a template is encoded once per
pair and relation), so the full decision and the trained relations' drop are not measured here. Writes
``<results>/zero_shot_templates.{md,json}``; the description set to prefer is the one best on validation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO / "src"), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import suite  # noqa: E402
import zero_shot as zs  # noqa: E402

from rocmre.modeling.sentence_prior import SENTENCE_VIEWS  # noqa: E402

DESCRIPTION_SETS = ("curated", "templates", "curated + templates")
SENTENCE_PRIOR_WEIGHT = 0.33
#: (row suffix, soft type prior on, sentence prior on)
SETTINGS = (("", False, False), (" + type prior", True, False),
            (f" + type prior + sentence prior (w={SENTENCE_PRIOR_WEIGHT:g})", True, True))
METRICS = ("unseen_only_top1", "generalized_top1", "val_unseen_only_top1", "val_generalized_top1")


def held_out_only(data: dict, held: list[str]) -> dict:
    """Val and test restricted to the pairs whose gold relation is in ``held``."""
    out = {}
    for split in ("val", "test"):
        idx = [i for i, g in enumerate(data[split].gold) if g in held]
        out[split] = zs.SplitData([data[split].records[i] for i in idx], [data[split].gold[i] for i in idx])
    return out


def top1_pair(scores: np.ndarray, gold: list[str], labels: list[str], held: list[str], negative: str
              ) -> tuple[float | None, float | None]:
    relations = [lab for lab in labels if lab != negative]
    return zs.mean(zs.top1(scores, gold, labels, held)), zs.mean(zs.top1(scores, gold, labels, relations))


def score_fold(folder: Path, fold: str, data: dict, sets: dict, prior) -> list[dict]:
    """The rows of one fold model: each description set x each setting, val and test held-out pairs."""
    held = zs.FOLDS[fold]
    sub = held_out_only(data, held)
    sc = zs.Scorer(folder, sub)  # loaded and featurised once; each set is added, scored and removed again
    rows = []
    for kind, descriptions in sets.items():
        sc.extractor.add_relations({r: {"descriptions": descriptions.texts(r),
                                        "head_types": list(descriptions.relations[r].head_types),
                                        "tail_types": list(descriptions.relations[r].tail_types)} for r in held},
                                   provenance={"method": "hand", "added_at_inference": True,
                                               "benchmark": "zero_shot_templates"})
        scored = sc.score()
        stage = zs.CachedReranker(prior, descriptions, {}, SENTENCE_PRIOR_WEIGHT)
        for suffix, prior_on, with_prior in SETTINGS:
            row: dict[str, Any] = {"fold": fold, "source": folder.name.rsplit("-", 1)[0], "descriptions": kind,
                                   "setting": suffix.removeprefix(" + ") or "first stage"}
            for split in ("val", "test"):
                scores, dec = sc.decide(scored[split], split, None, prior_on)
                labels, gold, records = dec.labels, sub[split].gold, sub[split].records
                if with_prior:
                    relations = [lab for lab in labels if lab != sc.negative]
                    general = zs.rerank_block(stage, records, labels, scores, relations, zs.RERANK_TOP_K)
                    unseen = zs.rerank_block(stage, records, labels, scores, held, zs.RERANK_TOP_K)
                    u = top1_pair(unseen, gold, labels, held, sc.negative)[0]
                    g = top1_pair(general, gold, labels, held, sc.negative)[1]
                else:
                    u, g = top1_pair(scores, gold, labels, held, sc.negative)
                prefix = "val_" if split == "val" else ""
                row[prefix + "unseen_only_top1"], row[prefix + "generalized_top1"] = u, g
            rows.append(row)
        sc.extractor.remove_relations(held)
    return rows


def frozen_rows(data: dict, sets: dict, prior, folds: list[str]) -> list[dict]:
    """The untrained sentence encoder alone: cosine between the sentence and each relation's description centre
    (templates filled per pair), per fold and description set."""
    rows = []
    for fold in folds:
        held = zs.FOLDS[fold]
        sub = held_out_only(data, held)
        for kind, descriptions in sets.items():
            labels = [lab for lab in descriptions.labels if lab != descriptions.negative_label]
            row: dict[str, Any] = {"fold": fold, "source": "frozen_encoder", "descriptions": kind,
                                   "setting": "sentence encoder only"}
            for split in ("val", "test"):
                records = sub[split].records
                cand = np.tile(np.arange(len(labels)), (len(records), 1))
                scores = prior.relation_scores(records, labels, cand, descriptions)
                u, g = top1_pair(scores, sub[split].gold, labels, held, descriptions.negative_label)
                prefix = "val_" if split == "val" else ""
                row[prefix + "unseen_only_top1"], row[prefix + "generalized_top1"] = u, g
            rows.append(row)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["setting"], r["descriptions"]), []).append(r)
    return [{"source": s, "setting": st, "descriptions": d, "folds": [r["fold"] for r in rs],
             **{m: zs.mean_std([r[m] for r in rs]) for m in METRICS}} for (s, st, d), rs in groups.items()]


def best_on_validation(rows: list[dict]) -> dict[str, str]:
    """For each (source, setting): the description set with the best mean validation generalised top-1 (of
    equal ones, the first in :data:`DESCRIPTION_SETS` order, i.e. the curated set)."""
    best: dict[str, tuple[str, float]] = {}
    for r in sorted(rows, key=lambda r: DESCRIPTION_SETS.index(r["descriptions"])):
        key = f"`{r['source']}` {r['setting']}"
        val = r["val_generalized_top1"]["mean"]
        if val is not None and (key not in best or val > best[key][1]):
            best[key] = (r["descriptions"], val)
    return {k: v[0] for k, v in best.items()}


def pct(ms: dict) -> str:
    return "-" if ms["mean"] is None else f"{100 * ms['mean']:.1f} ± {100 * ms['std']:.1f}"


def render(payload: dict) -> list[str]:
    lines = ["# Description templates for relations added without retraining", "",
             f"Produced by `{payload['command']}` at commit `{payload['commit']}` on {payload['machine']} "
             f"({payload['date']}).", "",
             f"Sentence view of the sentence prior and the frozen encoder: `{payload.get('sentence_view', 'plain')}`"
             " (typed: each mention followed by its role and tagged entity type).", "",
             "Fold models: `benchmarks/zero_shot.py`'s, variant "
             f"`{payload['variant']}` in `{payload['out_root']}` (three folds of five MNRE relations held out of "
             "training; nothing is trained here). The held-out relations are added with the curated descriptions "
             "(built-in `mnre`), with the hand-written templates (built-in `mnre_templates`, five per relation, "
             "`{head}`/`{tail}` filled with each pair's mentions), or with both (the centre of all ten). Scored on "
             "the held-out relations' pairs only: unseen-only top-1 (among the fold's 5 held-out relations) and "
             "generalised top-1 (among all relations), mean ± std over folds, in %. The full decision and the "
             "trained relations' drop are not measured here (see `zero_shot.md` for the curated set).", "",
             "| source | setting | descriptions | unseen-only top-1 | generalised top-1 | val unseen-only top-1 | "
             "val generalised top-1 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| `{r['source']}` | {r['setting']} | {r['descriptions']} | "
                     + " | ".join(pct(r[m]) for m in METRICS) + " |")
    best = payload["best_on_validation"]
    lines += ["", "Best on validation (mean val generalised top-1) for each model setting: "
              + "; ".join(f"{k}: **{v}**" for k, v in best.items()) + ".", "", "## Per fold", "",
              "| fold | source | setting | descriptions | unseen-only | generalised | val unseen-only "
              "| val generalised |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["fold_rows"]:
        lines.append(f"| {r['fold']} | `{r['source']}` | {r['setting']} | {r['descriptions']} | "
                     + " | ".join("-" if r[m] is None else f"{100 * r[m]:.1f}" for m in METRICS) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-root", default="runs/zero_shot", help="where benchmarks/zero_shot.py put its models")
    parser.add_argument("--variant", default="roc_frozen_descriptions", choices=list(zs.VARIANTS))
    parser.add_argument("--folds", default=",".join(zs.FOLDS))
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--sentence-view", default="plain", choices=SENTENCE_VIEWS,
                        help="what the sentence prior (and the frozen encoder) reads of a record "
                             "(rocmre.modeling.sentence_prior.SENTENCE_VIEWS)")
    args = parser.parse_args(argv)

    import torch

    from rocmre.backbones.hardware import machine_description
    from rocmre.data.name_swap import tagger_entity_types
    from rocmre.descriptions.store import load_builtin
    from rocmre.modeling.sentence_prior import SentencePrior
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import run_cache_dir

    folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    folders = {f: Path(args.out_root) / f"{args.variant}-{f}" for f in folds}
    missing = [str(p) for p in folders.values() if not (p / "config.json").is_file()]
    if missing:
        raise SystemExit(f"no trained fold model in {', '.join(missing)}: run benchmarks/zero_shot.py "
                         f"--variants {args.variant} --train-only --out-root {args.out_root} first")
    base = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", [])
    data = zs.load_splits(base, None)
    curated, templates = load_builtin("mnre"), load_builtin("mnre_templates")
    sets = {kind: zs.description_set(curated, templates, kind) for kind in DESCRIPTION_SETS}
    prior = SentencePrior(str(base.model.text_backbone), negative_label=base.data.negative_label,
                          sentence_view=args.sentence_view,
                          entity_types=tagger_entity_types(base.model.entity_tagger, run_cache_dir(base)))
    fold_rows = frozen_rows(data, sets, prior, folds)
    for fold, folder in folders.items():
        print(f"scoring {folder.name}", flush=True)
        fold_rows += score_fold(folder, fold, data, sets, prior)
    rows = aggregate(fold_rows)
    payload = {"commit": suite.git_commit(), "machine": machine_description(), "torch": torch.__version__,
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "command": shlex.join(["python", os.path.relpath(sys.argv[0], REPO), *(argv or sys.argv[1:])]),
               "variant": args.variant, "out_root": args.out_root, "sentence_view": args.sentence_view,
               "folds": {f: zs.FOLDS[f] for f in folds},
               "best_on_validation": best_on_validation(rows), "rows": rows, "fold_rows": fold_rows}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zero_shot_templates.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "zero_shot_templates.md").write_text("\n".join(render(payload)) + "\n", encoding="utf-8")
    print(f"wrote {out / 'zero_shot_templates.md'}")


if __name__ == "__main__":
    main()
