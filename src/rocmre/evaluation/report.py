"""Evaluate a saved model on a split: JSON, Markdown and a confusion-matrix PNG.
Scores are reported for all records and separately for records with and without their image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rocmre.data import RelationDataset
from rocmre.evaluation.metrics import EvaluationResult, confusion_matrix, evaluate_predictions
from rocmre.modeling.runtime import ModelRuntime

SCORING_NOTE = ("Accuracy over all records (negative label included); precision, recall and F1 micro-averaged over "
                "records whose gold or predicted label is not the negative label, which is named explicitly; macro-F1 "
                "over the non-negative relations present in the gold labels.")


@dataclass
class SplitEvaluation:
    split: str
    overall: EvaluationResult
    with_image: EvaluationResult
    without_image: EvaluationResult
    n_with_image: int
    labels: list[str]
    gold: list[str]
    pred: list[str]
    scores: np.ndarray | None = None  # (N, R) over ``score_labels``, with the None margin (not serialised)
    score_labels: list[str] | None = None

    def to_dict(self) -> dict:
        return {"split": self.split, "scoring": SCORING_NOTE, "records": len(self.gold),
                "records_with_image": self.n_with_image, "overall": self.overall.to_dict(),
                "with_image": self.with_image.to_dict(), "without_image": self.without_image.to_dict()}


def evaluate_dataset(runtime: ModelRuntime, dataset: RelationDataset, batch_size: int = 64,
                     show_progress: bool = False) -> SplitEvaluation:
    """Score every record of ``dataset`` through the model's decision rule and compute all metrics."""
    model = runtime.model
    labels = model.relation_labels
    decisions = runtime.decide_records(dataset.records, batch_size, show_progress, desc=f"evaluating {dataset.split}")
    pred = decisions.predictions
    gold = [r.relation for r in dataset.records]
    is_roc = model.config.model_type == "roc"
    neg = model.config.negative_label
    # relations the data has but the model cannot answer still count as gold labels in every metric
    all_labels = labels + sorted({g for g in gold if g not in labels})

    def part(mask: np.ndarray) -> EvaluationResult:
        idx = np.nonzero(mask)[0]
        return evaluate_predictions([gold[i] for i in idx], [pred[i] for i in idx], neg, all_labels,
                                    decisions.scores[idx] if is_roc else None, labels if is_roc else None)

    has_image = np.array([r.has_image for r in dataset.records], dtype=bool)
    everything = np.ones(len(gold), dtype=bool)
    return SplitEvaluation(dataset.split, part(everything), part(has_image), part(~has_image), int(has_image.sum()),
                           all_labels, gold, pred, decisions.scores, list(labels))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown_report(ev: SplitEvaluation, title: str) -> str:
    """A readable Markdown summary with the per-relation table."""
    rows = [f"# {title}", "", SCORING_NOTE, "",
            f"Negative label: `{ev.overall.negative_label}`. Records: {len(ev.gold)}, with their image: "
            f"{ev.n_with_image}.", "",
            "| subset | n | accuracy | precision | recall | micro-F1 | macro-F1 | Hits@1 | Hits@3 | MRR |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in (("all", ev.overall), ("with image", ev.with_image), ("without image", ev.without_image)):
        rows.append(f"| {name} | {r.count} | {_pct(r.accuracy)} | {_pct(r.precision)} | {_pct(r.recall)} | "
                    f"{_pct(r.f1)} | {_pct(r.macro_f1)} | {_pct(r.hits_at_1)} | {_pct(r.hits_at_3)} | {_pct(r.mrr)} |")
    rows += ["", "## Per relation (all records)", "", "| relation | precision | recall | F1 | support | predicted |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in sorted(ev.overall.per_relation, key=lambda s: -s.support):
        rows.append(f"| `{s.relation}` | {_pct(s.precision)} | {_pct(s.recall)} | {_pct(s.f1)} | {s.support} | "
                    f"{s.predicted} |")
    return "\n".join(rows) + "\n"


def plot_confusion(ev: SplitEvaluation, path: Path, title: str) -> Path:
    """A confusion-matrix PNG (rows gold, columns predicted), row-normalised colours with counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [lab for lab in ev.labels if lab in set(ev.gold) | set(ev.pred)]
    m = confusion_matrix(ev.gold, ev.pred, labels)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(6.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_evaluation(ev: SplitEvaluation, out_dir: Path, title: str) -> dict[str, Path]:
    """``eval_{split}.json``, ``eval_{split}.md`` and ``confusion_{split}.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"eval_{ev.split}.json", "markdown": out_dir / f"eval_{ev.split}.md",
             "confusion": out_dir / f"confusion_{ev.split}.png"}
    paths["json"].write_text(json.dumps(ev.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(ev, title), encoding="utf-8")
    plot_confusion(ev, paths["confusion"], title)
    return paths
