"""A README for every saved model folder: data, config, metrics, how to load and predict."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def portable_path(path: str | Path | None, base: str | Path | None = None) -> str | None:
    """``path`` without the training machine's folders: a relative path as written; an absolute one relative to
    ``base`` (the model folder) or to the data folder when it lies inside them, else only its last two parts
    (``mnre/RE_data``)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    from rocmre.paths import find_data_dir

    data_dir = find_data_dir()
    for root in (base, data_dir):
        if root is None:
            continue
        try:
            return p.relative_to(Path(root).resolve()).as_posix() or "."
        except ValueError:
            continue
    return Path(*p.parts[-2:]).as_posix() if len(p.parts) > 2 else p.name


def _metrics_lines(metrics: dict) -> list[str]:
    """The model card's validation section, from ``metrics.json``."""
    val = metrics.get("val", {})
    return [
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


def write_model_card(directory: str | Path) -> Path:
    """Write ``README.md`` into a model folder from its config, run config and metrics (no absolute paths)."""
    directory = Path(directory)
    name = directory.resolve().name
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
        lines.append(f"- trained on `{portable_path(data.get('path'), directory)}` split "
                     f"`{data.get('train_split')}`, selected on "
                     f"`{data.get('val_split')}` (seed {run.get('seed')}); the full run config is `run_config.yaml`")
    if metrics:
        lines += _metrics_lines(metrics)
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from rocmre import RelationExtractor",
        f"m = RelationExtractor.from_pretrained({name!r})  # this folder",
        "m.predict(\"Barack Obama visited Paris\", head=\"Barack Obama\", tail=\"Paris\", image=None, top_k=3)",
        "```",
        "",
        f"`rocmre evaluate --model {name} --split test` scores it; `rocmre predict --model {name} "
        "--input pairs.jsonl --output preds.jsonl` predicts in batch.",
        "",
    ]
    path = directory / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
