"""A README for every saved model folder: data, config, metrics, how to load and predict."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def write_model_card(directory: str | Path) -> Path:
    """Write ``README.md`` into a model folder from its config, run config and metrics."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    metrics_file = directory / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    run_file = directory / "run_config.yaml"
    run = yaml.safe_load(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    kind = "ROC (retrieval over relation descriptions)" if config["model_type"] == "roc" else \
        "classification baseline (linear head)"
    lines = [
        f"# rocmre model: {kind}",
        "",
        f"- text backbone: `{config['text_backbone']}`; vision backbone: `{config['vision_backbone']}` "
        f"(image branch {'on' if config['use_image'] else 'off'}); fusion layers: {config['fusion_layers']}",
        f"- entity types: `{config['entity_tagger']}` tagger ({'used' if config['use_types'] else 'not used'}); "
        f"positions {'used' if config['use_positions'] else 'not used'}",
        f"- relations ({len(config['labels'])}), negative label `{config['negative_label']}`: "
        + ", ".join(f"`{x}`" for x in config["labels"]),
    ]
    if run:
        data = run.get("data", {})
        lines.append(f"- trained on `{data.get('path')}` split `{data.get('train_split')}`, selected on "
                     f"`{data.get('val_split')}` (seed {run.get('seed')}); the full run config is `run_config.yaml`")
    if metrics:
        val = metrics.get("val", {})
        lines += [
            "",
            "## Validation metrics (micro P/R/F1 over non-negative relations, negative label named above)",
            "",
            "| accuracy | precision | recall | micro-F1 | macro-F1 |",
            "| --- | --- | --- | --- | --- |",
            f"| {_pct(val.get('accuracy'))} | {_pct(val.get('precision'))} | {_pct(val.get('recall'))} | "
            f"{_pct(val.get('f1'))} | {_pct(val.get('macro_f1'))} |",
            "",
            f"Training: {metrics.get('train_minutes', 0):.1f} minutes, {metrics.get('examples_per_second', 0):.1f} "
            f"examples/s on {metrics.get('machine', '?')}; None margin {metrics.get('none_margin', 0):.4f} "
            "(tuned on validation).",
        ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from rocmre import RelationExtractor",
        f"m = RelationExtractor.from_pretrained({str(directory)!r})",
        "m.predict(\"Barack Obama visited Paris\", head=\"Barack Obama\", tail=\"Paris\", image=None, top_k=3)",
        "```",
        "",
        f"`rocmre evaluate --model {directory} --split test` scores it; `rocmre predict --model {directory} "
        "--input pairs.jsonl --output preds.jsonl` predicts in batch.",
        "",
    ]
    path = directory / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
