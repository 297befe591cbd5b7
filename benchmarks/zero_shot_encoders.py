"""Which untrained sentence encoder is the better anchor for relations added by description?

The zero-shot benchmark's frozen-encoder baseline (``benchmarks/zero_shot.py``: cosine between a sentence and the
centre of each relation's curated descriptions, no training) for every embedded text backbone and sentence view, on
the same three folds of held-out MNRE relations. The open-relation recipe keeps its description vectors as this
encoder's own, so a better untrained matcher is the first thing a bigger backbone would have to offer.

    python benchmarks/zero_shot_encoders.py --backbones minilm-l6,mpnet-base --views plain,typed,typed_clean
    python benchmarks/zero_shot_encoders.py --backbones minilm-l6 --views model_input,model_input_nopos

write ``benchmarks/results/zero_shot_encoders.{json,md}`` (about 8 minutes on 2 CPU cores, most of it MPNet).
The ``model_input`` views read what a ROC model's pair encoder reads (its prompt, markers as the canonical
config's ``marker_init`` words): the open-relation recipe's pair vector starts as their mean-pooled states.
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

#: how a row names what the encoder read (the views of rocmre.modeling.sentence_prior, then the model's own input)
VIEW_TEXT = {"plain": "the sentence as written", **zero_shot.VIEW_TITLES,
             "model_input": "the ROC model's input (position phrase, `< [ person ] Messi >` markers and types)",
             "model_input_nopos": "the ROC model's input without its position phrase (`model.use_positions: false`)"}
#: the model-input views: whether the position phrase is written (markers read as the canonical config's
#: model.marker_init words, the embeddings the fixed markers start from)
MODEL_INPUT_VIEWS = {"model_input": True, "model_input_nopos": False}


class ModelInputView:
    """What the pair encoder of a ROC model reads (``rocmre.modeling.prompting``), as text for the untrained
    sentence encoder: the mean-pooled part of the open-relation recipe's pair vector starts as exactly this.
    ``marker_init``: the words the four markers read as (None: the marker tokens as written, ``<h>``);
    ``entity_types``: records -> [(head, tail)]."""

    def __init__(self, encoder, use_positions: bool, marker_init: list[str] | None, entity_types) -> None:
        from rocmre.modeling.prompting import MARKERS

        self.encode = encoder.encode
        self.use_positions = use_positions
        self.marker_words = dict(zip(MARKERS, marker_init, strict=True)) if marker_init else {}
        self.entity_types = entity_types

    def sentences(self, records) -> list[str]:
        from rocmre.modeling.prompting import PromptOptions, build_marked_words

        records = list(records)
        out = []
        for r, (head, tail) in zip(records, self.entity_types(records), strict=True):
            words = build_marked_words(r.tokens, r.head, r.tail, r.head.type or head, r.tail.type or tail,
                                       PromptOptions(use_types=True, use_positions=self.use_positions))
            out.append(" ".join(self.marker_words.get(w.text, w.text) for w in words))
        return out


def encoder_rows(backbone: str, views: list[str], data: dict, descriptions, negative_label: str,
                 entity_types, marker_init: list[str] | None) -> list[dict]:
    """The frozen-encoder baseline rows (one per fold) of ``backbone`` for each of ``views``."""
    from rocmre.modeling.sentence_prior import SentencePrior

    encoder = SentencePrior(backbone, negative_label=negative_label)
    rows: list[dict] = []
    for view in views:
        if view in MODEL_INPUT_VIEWS:
            stage = ModelInputView(encoder, MODEL_INPUT_VIEWS[view], marker_init, entity_types)
        else:
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
    parser.add_argument("--append", action="store_true",
                        help="add these rows to the results file's (rows of the same encoder and view replaced)")
    args = parser.parse_args(argv)
    from rocmre.modeling.sentence_prior import SENTENCE_VIEWS

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    if not backbones:
        parser.error("--backbones: give at least one text backbone")
    if not views or any(v not in SENTENCE_VIEWS and v not in MODEL_INPUT_VIEWS for v in views):
        parser.error(f"--views {args.views!r}: expected some of {[*SENTENCE_VIEWS, *MODEL_INPUT_VIEWS]}")

    import torch

    from rocmre.backbones.hardware import machine_description
    from rocmre.data.name_swap import tagger_entity_types
    from rocmre.descriptions.store import RelationDescriptions
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import run_cache_dir

    base = RunConfig.from_yaml(REPO / "configs" / "mnre_roc.yaml")
    data = zero_shot.load_splits(base, args.eval_limit)
    descriptions = RelationDescriptions.load(base.model.descriptions)
    types = tagger_entity_types(base.model.entity_tagger, run_cache_dir(base))
    fold_rows = [row for b in backbones for row in encoder_rows(b, views, data, descriptions,
                                                                base.data.negative_label, types,
                                                                base.model.marker_init)]
    command = shlex.join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    results = Path(args.results)
    earlier = results / "zero_shot_encoders.json"
    if args.append and earlier.is_file():
        before = json.loads(earlier.read_text(encoding="utf-8"))
        names = {r["row"] for r in fold_rows}
        fold_rows = [r for r in before["fold_rows"] if r["row"] not in names] + fold_rows
        command = f"{before['command']} && {command}"
    payload = {"commit": suite.git_commit(), "machine": machine_description(), "torch": torch.__version__,
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
               "folds": zero_shot.FOLDS, "rows": zero_shot.aggregate(fold_rows), "fold_rows": fold_rows}
    if args.eval_limit:
        payload["warning"] = f"smoke run: val/test limited to {args.eval_limit} records; not a result"
    results.mkdir(parents=True, exist_ok=True)
    (results / "zero_shot_encoders.json").write_text(json.dumps(zero_shot.rounded(payload), indent=1) + "\n",
                                                     encoding="utf-8")
    (results / "zero_shot_encoders.md").write_text("\n".join(render(payload)) + "\n", encoding="utf-8")
    print(f"wrote {results / 'zero_shot_encoders.md'} and zero_shot_encoders.json")


if __name__ == "__main__":
    main()
