"""Which untrained sentence encoder is the better anchor for relations added by description?

The zero-shot benchmark's frozen-encoder baseline (``benchmarks/zero_shot.py``: cosine between a sentence and the
centre of each relation's curated descriptions, no training) for every embedded text backbone and sentence view, on
the same three folds of held-out MNRE relations. The open-relation recipe keeps its description vectors as this
encoder's own, so a better untrained matcher is the first thing a bigger backbone would have to offer.

    python benchmarks/zero_shot_encoders.py --backbones minilm-l6,mpnet-base --views plain,typed_clean

writes ``benchmarks/results/zero_shot_encoders.{json,md}`` (about 5 minutes on 2 CPU cores, most of it MPNet).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import suite  # noqa: E402
import zero_shot  # noqa: E402

#: how a row names what the encoder read (the views of rocmre.modeling.sentence_prior)
VIEW_TEXT = {"plain": "the sentence as written", **zero_shot.VIEW_TITLES}


def encoder_rows(backbone: str, views: list[str], data: dict, descriptions, negative_label: str,
                 entity_types) -> list[dict]:
    """The frozen-encoder baseline rows (one per fold) of ``backbone`` for each of ``views``."""
    from rocmre.modeling.sentence_prior import SentencePrior

    encoder = SentencePrior(backbone, negative_label=negative_label)
    rows: list[dict] = []
    for view in views:
        stage = SentencePrior(encoder=encoder.backbone, negative_label=negative_label, sentence_view=view,
                              entity_types=entity_types)
        start = time.perf_counter()
        per_fold = zero_shot.frozen_encoder_rows(stage, data, descriptions, negative_label)
        print(f"{backbone}, {view}: {time.perf_counter() - start:.0f} s", flush=True)
        rows += zero_shot.baseline_rows(f"{backbone}/{view}", f"frozen `{backbone}`, {VIEW_TEXT[view]}",
                                        "frozen-encoder", per_fold)
    return rows


def render(payload: dict) -> list[str]:
    """The Markdown: one row per encoder and view, mean ± std over folds, then the per-relation table."""
    lines = ["# Untrained sentence encoders as the anchor for new relations (MNRE zero-shot folds)", "",
             f"Produced by `{payload['command']}` at commit `{payload['commit']}` on {payload['machine']} "
             f"({payload['date']}).", "",
             "Cosine between each test (and validation) pair's sentence and the centre of each relation's curated "
             "descriptions, no training; the three folds of `zero_shot.md` (5 relations held out each). Unseen-only "
             "top-1: candidates the fold's 5 held-out relations (chance 20 %); generalised: every non-None "
             "relation. Mean ± standard deviation over the folds, in %.", "",
             "| encoder, what it reads | unseen-only top-1 | generalised top-1 | val unseen-only top-1 | "
             "val generalised top-1 |",
             "| --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| {r['title']} (`{r['row']}`) | **{zero_shot._pm(r['unseen_only_top1'])}** | "
                     f"{zero_shot._pm(r['generalized_top1'])} | {zero_shot._pm(r['val_unseen_only_top1'])} | "
                     f"{zero_shot._pm(r['val_generalized_top1'])} |")
    relations = [rel for fold in zero_shot.FOLDS.values() for rel in fold]
    lines += ["", "Per held-out relation, test unseen-only top-1 (%):", "",
              "| relation | " + " | ".join(f"`{r['row']}`" for r in payload["rows"]) + " |",
              "| --- |" + " --- |" * len(payload["rows"])]
    per = {(f["row"], rel): v["unseen_only_top1"] for f in payload["fold_rows"]
           for rel, v in f["per_relation"].items()}
    for rel in relations:
        lines.append(f"| `{rel}` | " + " | ".join(zero_shot._p(per.get((r["row"], rel))) for r in payload["rows"])
                     + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="minilm-l6,mpnet-base", help="comma-separated text backbones")
    parser.add_argument("--views", default="plain,typed_clean", help="comma-separated sentence views")
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--eval-limit", type=int, default=None, help="score a seeded subset of val/test (smoke)")
    args = parser.parse_args(argv)
    from rocmre.modeling.sentence_prior import SENTENCE_VIEWS

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    if not backbones:
        parser.error("--backbones: give at least one text backbone")
    if not views or any(v not in SENTENCE_VIEWS for v in views):
        parser.error(f"--views {args.views!r}: expected some of {SENTENCE_VIEWS}")

    import torch

    from rocmre.data.name_swap import tagger_entity_types
    from rocmre.descriptions.store import RelationDescriptions
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import run_cache_dir
    from rocmre.training.trainer import machine_description

    base = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml")
    data = zero_shot.load_splits(base, args.eval_limit)
    descriptions = RelationDescriptions.load(base.model.descriptions)
    types = tagger_entity_types(base.model.entity_tagger, run_cache_dir(base))
    fold_rows = [row for b in backbones
                 for row in encoder_rows(b, views, data, descriptions, base.data.negative_label, types)]
    payload = {"commit": suite.git_commit(), "machine": machine_description(), "torch": torch.__version__,
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "command": shlex.join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
               "folds": zero_shot.FOLDS, "rows": zero_shot.aggregate(fold_rows), "fold_rows": fold_rows}
    if args.eval_limit:
        payload["warning"] = f"smoke run: val/test limited to {args.eval_limit} records; not a result"
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "zero_shot_encoders.json").write_text(json.dumps(zero_shot.rounded(payload), indent=1) + "\n",
                                                     encoding="utf-8")
    (results / "zero_shot_encoders.md").write_text("\n".join(render(payload)) + "\n", encoding="utf-8")
    print(f"wrote {results / 'zero_shot_encoders.md'} and zero_shot_encoders.json")


if __name__ == "__main__":
    main()
