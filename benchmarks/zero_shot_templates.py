"""Description templates for relations added without retraining: do ``{head}``/``{tail}`` templates filled with
each pair's mentions recognise a new relation better than the curated plain descriptions?

    python benchmarks/zero_shot_templates.py --out-root runs/zero_shot_v3 --variant roc_frozen_descriptions

Reuses the fold models of ``benchmarks/zero_shot.py`` (same ``--out-root``; nothing is trained here). For each fold,
the five held-out relations are added to the fold model three ways: the curated descriptions (``mnre``, as
``zero_shot.py`` adds them), the hand-written templates (built-in set ``mnre_templates``, five per relation, filled
with each pair's head and tail mentions), and both together (a relation's vector is the centre of all ten). Each is
scored on the held-out relations' val and test pairs: top-1 among the five held-out relations (unseen-only) and
among all relations (generalised), first stage alone and with the soft type prior; and the untrained sentence
encoder alone with each description set (the frozen-encoder baseline). Only held-out pairs are scored (a template
is encoded once per pair and relation), so the full decision and the trained relations' drop are not measured here.
Writes ``<results>/zero_shot_templates.{md,json}``; the description set to prefer is the one best on validation.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import zero_shot as zs  # noqa: E402
import zero_shot_encoders  # noqa: E402
from harness import REPO  # noqa: E402

DESCRIPTION_SETS = ("curated", "templates", "curated + templates")
#: (row suffix, soft type prior on); the sentence-prior setting of the committed results left with the sentence prior
SETTINGS = (("", False), (" + type prior", True))
METRICS = ("unseen_only_top1", "generalized_top1", "val_unseen_only_top1", "val_generalized_top1")


def held_out_only(data: dict, held: list[str]) -> dict:
    """Val and test restricted to the pairs whose gold relation is in ``held``."""
    out = {}
    for split in zs.SPLITS:
        idx = [i for i, g in enumerate(data[split].gold) if g in held]
        out[split] = zs.SplitData([data[split].records[i] for i in idx], [data[split].gold[i] for i in idx])
    return out


def top1_pair(scores: np.ndarray, gold: list[str], labels: list[str], held: list[str], negative: str
              ) -> tuple[float | None, float | None]:
    relations = [lab for lab in labels if lab != negative]
    return zs.mean(zs.top1(scores, gold, labels, held)), zs.mean(zs.top1(scores, gold, labels, relations))


def score_fold(folder: Path, fold: str, data: dict, sets: dict) -> list[dict]:
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
        for suffix, prior_on in SETTINGS:
            row: dict[str, Any] = {"fold": fold, "source": folder.name.rsplit("-", 1)[0], "descriptions": kind,
                                   "setting": suffix.removeprefix(" + ") or "first stage"}
            for split in zs.SPLITS:
                scores, dec = sc.decide(scored[split], split, prior_on)
                u, g = top1_pair(scores, sub[split].gold, dec.labels, held, sc.negative)
                prefix = "val_" if split == "val" else ""
                row[prefix + "unseen_only_top1"], row[prefix + "generalized_top1"] = u, g
            rows.append(row)
        sc.extractor.remove_relations(held)
    return rows


def frozen_scores(reader, records: list, labels: list[str], descriptions) -> np.ndarray:
    """(N, R) cosines between each record's sentence (``reader.sentences``) and each relation's description centre,
    a relation's templates filled with the record's mentions."""
    import torch
    import torch.nn.functional as F

    from rocmre.descriptions.store import fill_template, is_template

    vectors: dict[str, torch.Tensor] = {}

    def encode(texts: list[str]) -> list[torch.Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in vectors))
        if missing:
            vectors.update(zip(missing, reader.encode(missing), strict=True))
        return [vectors[t] for t in texts]

    sentences = torch.stack(encode(reader.sentences(records))) if records else torch.zeros(0, 1)
    out = np.zeros((len(records), len(labels)))
    for i, rec in enumerate(records):
        for j, lab in enumerate(labels):
            texts = [fill_template(t, rec.head.name, rec.tail.name) if is_template(t) else t
                     for t in descriptions.texts(lab)]
            out[i, j] = float(sentences[i] @ F.normalize(torch.stack(encode(texts)).mean(0), dim=-1))
    return out


def frozen_rows(data: dict, sets: dict, reader, folds: list[str]) -> list[dict]:
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
            for split in zs.SPLITS:
                scores = frozen_scores(reader, sub[split].records, labels, descriptions)
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
             f"Sentence view of the frozen encoder: `{payload.get('sentence_view', 'plain')}`"
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
    parser = harness.parser(__doc__, training=False)
    parser.add_argument("--out-root", default="runs/zero_shot", help="where benchmarks/zero_shot.py put its models")
    parser.add_argument("--variant", default="roc_frozen_descriptions", choices=list(zs.VARIANTS))
    parser.add_argument("--folds", default=",".join(zs.FOLDS))
    parser.add_argument("--sentence-view", default="plain", choices=["plain", "typed", "typed_clean"],
                        help="what the frozen encoder reads of a record (benchmarks/zero_shot_encoders.py's views)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if args.render_only:
        return harness.render_only(results, "zero_shot_templates", render)
    from rocmre.data.name_swap import tagger_entity_types
    from rocmre.descriptions.store import load_builtin
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import run_cache_dir

    folds = harness.choose(parser, args.folds, zs.FOLDS, "folds")
    folders = {f: Path(args.out_root) / f"{args.variant}-{f}" for f in folds}
    missing = [str(p) for p in folders.values() if not (p / "config.json").is_file()]
    if missing:
        raise SystemExit(f"no trained fold model in {', '.join(missing)}: run benchmarks/zero_shot.py "
                         f"--variants {args.variant} --train-only --out-root {args.out_root} first")
    base = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml", [])
    data = zs.load_splits(base, None)
    curated, templates = load_builtin("mnre"), load_builtin("mnre_templates")
    sets = {kind: zs.description_set(curated, templates, kind) for kind in DESCRIPTION_SETS}
    reader = zero_shot_encoders.view_of(zs.FrozenEncoder(str(base.model.text_backbone)), args.sentence_view,
                                        tagger_entity_types(base.model.entity_tagger, run_cache_dir(base)), None)
    fold_rows = frozen_rows(data, sets, reader, folds)
    for fold, folder in folders.items():
        print(f"scoring {folder.name}", flush=True)
        fold_rows += score_fold(folder, fold, data, sets)
    rows = aggregate(fold_rows)
    payload = {**harness.run_meta("zero_shot_templates.py", argv), "variant": args.variant,
               "out_root": args.out_root, "sentence_view": args.sentence_view,
               "folds": {f: zs.FOLDS[f] for f in folds}, "best_on_validation": best_on_validation(rows),
               "rows": rows, "fold_rows": fold_rows}
    harness.write_results(results, "zero_shot_templates", payload, render)


if __name__ == "__main__":
    main()
