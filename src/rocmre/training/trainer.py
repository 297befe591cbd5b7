"""The training loop (Hugging Face Accelerate): the same code runs on a CPU, a GPU, or ``accelerate launch``.

The checkpoint is chosen on validation micro-F1; the None margin is tuned on validation only. The test split
is never read here.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rocmre.data import RelationDataset, load_split
from rocmre.descriptions.store import RelationDescriptions
from rocmre.evaluation.metrics import evaluate_predictions
from rocmre.modeling.model import RelationModel
from rocmre.modeling.runtime import ModelRuntime
from rocmre.paths import default_cache_dir
from rocmre.training.config import RunConfig

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_run_data(cfg: RunConfig, split: str, limit: int | None = None) -> RelationDataset:
    """A split as the run config says: format, negative label, held-out relations, seeded subset."""
    d = cfg.data
    kwargs = {"negative_label": d.negative_label, "missing_image": d.missing_image, "on_error": d.on_error}
    dataset = load_split(d.path, split, d.format, **kwargs)
    if d.exclude_relations:
        unknown = [r for r in d.exclude_relations if dataset.labels is not None and r not in dataset.labels]
        if unknown:
            raise ValueError(f"exclude_relations names labels the data does not have: {unknown}")
        dataset = dataset.filter(lambda r: r.relation not in d.exclude_relations)
    if limit is not None and len(dataset) > limit:
        rng = random.Random(cfg.seed)
        keep = sorted(rng.sample(range(len(dataset)), limit))
        dataset = RelationDataset([dataset.records[i] for i in keep], dataset.labels, dataset.name, dataset.split,
                                  dataset.problems)
    return dataset


def relation_set(cfg: RunConfig, labels: list[str]) -> RelationDescriptions:
    """The descriptions of the run's relations (the data's labels less the held-out ones)."""
    wanted = [lab for lab in labels if lab not in cfg.data.exclude_relations]
    descriptions = RelationDescriptions.load(cfg.model.descriptions)
    missing = [lab for lab in wanted if lab not in descriptions]
    if missing and cfg.model.missing_descriptions == "error":
        raise ValueError(f"descriptions {cfg.model.descriptions!r} lack relations of the data: {missing} "
                         "(set model.missing_descriptions=label_name to describe them by their label names)")
    for lab in missing:
        logger.warning("relation %s has no description in %s: using its label name", lab, cfg.model.descriptions)
        descriptions.add(lab, [lab], provenance={"method": "label-name",
                                                 "reason": f"no description in {cfg.model.descriptions}"})
    return descriptions.subset(wanted)


def tune_none_margin(model: RelationModel, raw_scores: np.ndarray, gold: list[str],
                     grid: np.ndarray | None = None) -> tuple[float, float]:
    """The margin added to the negative relation's score that maximises micro-F1 (validation only)."""
    labels = model.relation_labels
    neg = labels.index(model.config.negative_label)
    scale = float(np.std(raw_scores)) or 1.0
    grid = grid if grid is not None else np.linspace(-1.0, 1.0, 41) * scale
    best = (0.0, -1.0)
    for m in sorted(grid, key=abs):  # ties go to the smallest margin
        s = raw_scores.copy()
        s[:, neg] += m
        pred = [labels[i] for i in s.argmax(1)]
        f1 = evaluate_predictions(gold, pred, model.config.negative_label).f1
        if f1 > best[1] + 1e-12:
            best = (float(m), f1)
    return best


@dataclass
class TrainingSummary:
    output_dir: Path
    best_val_f1: float
    best_epoch: float
    train_minutes: float
    examples_per_second: float
    steps: int
    losses: list[float]
    processes: int = 1
    is_main_process: bool = True


def evaluate_split(runtime: ModelRuntime, dataset: RelationDataset, batch_size: int, show_progress: bool = False
                   ) -> dict:
    feats = runtime.featurize(dataset.records, with_labels=False)
    scored = runtime.score(feats, batch_size, show_progress)
    labels = runtime.model.relation_labels
    pred = [labels[i] for i in scored.scores.argmax(1)]
    gold = [r.relation for r in dataset.records]
    result = evaluate_predictions(gold, pred, runtime.model.config.negative_label, labels,
                                  scored.scores if runtime.model.config.model_type == "roc" else None, labels)
    return {"result": result, "raw_scores": scored.raw_scores, "gold": gold, "pred": pred}


def train(cfg: RunConfig, show_progress: bool = True) -> TrainingSummary:
    """Train the model a run config describes and save the best checkpoint (by val micro-F1)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # cpu=True lets `accelerate launch --multi_gpu --num_processes N` run N gloo processes on a machine without GPUs
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accelerator.is_main_process
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matrix products on GPUs that have them
    set_seed(cfg.seed)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    out_dir = Path(cfg.output_dir)

    train_data = load_run_data(cfg, cfg.data.train_split, cfg.data.max_train_records)
    val_data = load_run_data(cfg, cfg.data.val_split, cfg.data.max_eval_records)
    if train_data.labels is None:
        raise ValueError("the training data has no label set")
    model_cfg = cfg.model.model_copy(deep=True)
    model_cfg.negative_label = cfg.data.negative_label
    if model_cfg.model_type == "roc":
        descriptions = relation_set(cfg, train_data.labels.labels)
    else:
        model_cfg.labels = [lab for lab in train_data.labels.labels if lab not in cfg.data.exclude_relations]
        descriptions = None
    model = RelationModel.build(model_cfg, descriptions, cache_dir=cache_dir)
    runtime = ModelRuntime(model, cache_dir, cfg.data.missing_image)
    if main:
        logger.info("train %d records (%d with image), val %d (%d with image)", len(train_data),
                    train_data.num_with_image, len(val_data), val_data.num_with_image)
        runtime.precompute_images(list(train_data) + list(val_data), show_progress)
    accelerator.wait_for_everyone()
    train_feats = runtime.featurize(train_data.records, show_progress=show_progress and main)

    loader = DataLoader(train_feats, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=runtime.collator,
                        generator=torch.Generator().manual_seed(cfg.seed))
    backbone_params = [p for n, p in model.named_parameters() if _is_backbone(n) and p.requires_grad]
    head_params = [p for n, p in model.named_parameters() if not _is_backbone(n) and p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": backbone_params, "lr": cfg.train.learning_rate},
        {"params": head_params, "lr": cfg.train.head_learning_rate},
    ], weight_decay=cfg.train.weight_decay)
    steps_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
    full_steps = total_steps
    fit_start = time.time()
    warmup = int(cfg.train.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    eval_every = max(1, steps_per_epoch // cfg.train.evaluations_per_epoch)
    desc_gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)

    history: list[dict] = []
    losses: list[float] = []
    best_f1, best_epoch, step, seen = -1.0, 0.0, 0, 0
    start = time.time()
    train_seconds = 0.0
    bar = tqdm(total=total_steps, desc="training", disable=not (show_progress and main), dynamic_ncols=True)
    done = False
    while not done:
        model.train()
        for batch in loader:
            t0 = time.time()
            out = model(batch, descriptions_per_relation=cfg.train.descriptions_per_relation, generator=desc_gen)
            accelerator.backward(out.loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            losses.append(float(out.loss.detach()))
            seen += batch["input_ids"].shape[0] * accelerator.num_processes
            train_seconds += time.time() - t0
            bar.update(1)
            if cfg.train.max_minutes is not None and step >= 20 and step % 20 == 0:
                # fit the schedule to the time budget so that the learning rate still decays to zero within it: the
                # step time is measured from step 20 on (after warm-up) and the estimate is refreshed every 20 steps
                if step == 20:
                    fit_start = time.time()
                else:
                    per_step = (time.time() - fit_start) / (step - 20)
                    left = 0.9 * cfg.train.max_minutes * 60 - (time.time() - start)
                    total_steps = min(full_steps, max(step + 1, step + int(left / per_step)))
                    bar.total = total_steps
            if step % cfg.train.log_every == 0 or step == 1:
                bar.set_postfix(loss=f"{out.loss.item():.4f}", ex_per_s=f"{seen / max(train_seconds, 1e-9):.1f}")
            out_of_time = cfg.train.max_minutes is not None and (time.time() - start) / 60 > cfg.train.max_minutes
            if step % eval_every == 0 or step >= total_steps or out_of_time:
                epoch = step / steps_per_epoch
                if main:
                    val = evaluate_split(runtime, val_data, cfg.train.eval_batch_size)
                    f1 = val["result"].f1
                    if cfg.train.tune_none_margin:  # validation only: the margin travels with the checkpoint
                        runtime.model.config.none_margin, f1 = tune_none_margin(runtime.model, val["raw_scores"],
                                                                                val["gold"])
                    history.append({"step": step, "epoch": round(epoch, 3), "loss": float(out.loss.item()),
                                    "val_micro_f1": f1, "none_margin": runtime.model.config.none_margin})
                    logger.info("step %d epoch %.2f val micro-F1 %.4f", step, epoch, f1)
                    bar.write(f"step {step} (epoch {epoch:.2f}): val micro-F1 {100 * f1:.2f}, "
                              f"acc {100 * val['result'].accuracy:.2f}")
                    if f1 > best_f1:
                        best_f1, best_epoch = f1, epoch
                        runtime.model.save_pretrained(out_dir)
                accelerator.wait_for_everyone()
                model.train()
            if out_of_time and main:
                logger.warning("time budget of %.1f minutes reached at step %d", cfg.train.max_minutes, step)
            if step >= total_steps or out_of_time:
                done = True
                break
    bar.close()
    train_minutes = (time.time() - start) / 60
    summary = TrainingSummary(out_dir, best_f1, best_epoch, train_minutes, seen / max(train_seconds, 1e-9), step,
                              losses, accelerator.num_processes, main)
    if main:
        _finish(cfg, out_dir, cache_dir, val_data, history, summary, len(train_data))
    accelerator.wait_for_everyone()
    return summary


def _is_backbone(name: str) -> bool:
    return name.startswith(("encoder.text_model.", "description_encoder."))


def _finish(cfg: RunConfig, out_dir: Path, cache_dir: Path, val_data: RelationDataset, history: list[dict],
            summary: TrainingSummary, n_train: int) -> None:
    """Reload the best checkpoint, score it on val, write metrics, run config and model card."""
    from rocmre.inference.model_card import write_model_card

    best = RelationModel.from_pretrained(out_dir)
    runtime = ModelRuntime(best, cache_dir, cfg.data.missing_image)
    val = evaluate_split(runtime, val_data, cfg.train.eval_batch_size)
    labels = best.relation_labels
    untuned_f1 = evaluate_predictions(val["gold"], [labels[i] for i in val["raw_scores"].argmax(1)],
                                      best.config.negative_label).f1
    metrics = {
        "val": val["result"].to_dict(),
        "val_micro_f1_at_zero_margin": untuned_f1,
        "none_margin": best.config.none_margin,
        "best_epoch": summary.best_epoch,
        "steps": summary.steps,
        "processes": summary.processes,
        "train_minutes": summary.train_minutes,
        "examples_per_second": summary.examples_per_second,
        "history": history,
        "train_loss": summary.losses,
        "train_records": n_train,
        "val_records": len(val_data),
        "machine": machine_description(),
        "torch": torch.__version__,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out_dir / "run_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    write_model_card(out_dir)


def machine_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), {platform.machine()}"
    import os

    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads " \
           f"{torch.get_num_threads()}"
