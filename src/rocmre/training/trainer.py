"""The training loop (Hugging Face Accelerate): the same code runs on a CPU, a GPU, or ``accelerate launch``.

:class:`Trainer` checkpoints and resumes. Every ``train.checkpoint_every`` steps and at every evaluation it writes
``OUTPUT_DIR/checkpoints/checkpoint-N/`` (model, optimizer, scheduler, RNG states, data position, best-so-far,
history), into a temporary folder that is then renamed, keeping the newest ``train.keep_checkpoints``; the best
weights so far live in ``checkpoints/best/``. ``rocmre train --resume OUTPUT_DIR`` continues from the newest
checkpoint and replays exactly the schedule of an uninterrupted run: a time budget is converted into a step
budget once, at the start, and stored. The model folder itself (``config.json`` last) is written only when
training ends, so an interrupted run never leaves a folder ``from_pretrained`` accepts as a finished model.

The checkpoint and the None margin are chosen on validation micro-F1; the test split is never read here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rocmre.data import RelationDataset
from rocmre.evaluation.metrics import evaluate_predictions
from rocmre.modeling.dropout import use_fast_dropout
from rocmre.modeling.features import PairFeatures
from rocmre.modeling.model import CONFIG_NAME, WEIGHTS_NAME, RelationModel
from rocmre.modeling.runtime import ModelRuntime
from rocmre.training.config import RunConfig
from rocmre.training.frozen_states import FrozenStatesCache
from rocmre.training.setup import (
    build_model,
    load_run_data,
    make_runtime,
    require_records,
    resolve_precision,
)
from rocmre.training.weight_average import EMA_NAME, WeightAverage

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
STATE_NAME = "trainer_state.json"
RUN_CONFIG_NAME = "run_config.yaml"  # also kept in checkpoints/, so that `rocmre train --resume DIR` needs no config
#: files of a finished model folder that a fresh run removes first (``config.json`` first: it marks a model)
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, "descriptions.json", "metrics.json", "run_config.yaml", "README.md")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainerState:
    """Everything about a run's progress that a checkpoint stores (besides tensors and RNG states)."""

    step: int = 0
    epoch: int = 0  # the epoch in progress
    batch_in_epoch: int = 0  # batches of that epoch already trained (this process's share)
    total_steps: int = 0
    steps_per_epoch: int = 0
    best_val_f1: float = -1.0
    best_step: int = 0
    best_epoch: float = 0.0
    best_none_margin: float = 0.0
    examples_seen: int = 0
    history: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)  # how a time budget became total_steps
    timings: dict[str, float] = field(default_factory=lambda: {"train_seconds": 0.0, "wall_seconds": 0.0})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        return cls(**json.loads(text))


@dataclass
class TrainingSummary:
    """What :meth:`Trainer.train` returns."""

    output_dir: Path
    best_val_f1: float
    best_epoch: float
    train_minutes: float
    examples_per_second: float
    steps: int
    losses: list[float]
    processes: int = 1
    is_main_process: bool = True
    resumed_from: str | None = None


class TrainerCallback:
    """Hooks into the loop (as in Hugging Face ``TrainerCallback``); override what you need."""

    def on_step_end(self, trainer: Trainer, state: TrainerState) -> None:
        """After every optimiser step."""

    def on_evaluate(self, trainer: Trainer, state: TrainerState, val_f1: float) -> None:
        """After every validation."""

    def on_save(self, trainer: Trainer, state: TrainerState, checkpoint: Path) -> None:
        """After a checkpoint folder is complete (renamed into place)."""


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: list[int] | None = None,
                  weights: torch.Tensor | None = None) -> list[list[int]]:
    """The batches of one epoch: a permutation that depends only on (seed, epoch); with ``lengths``, grouped
    by length (chunks of 50 batches sorted by length, then the batches shuffled); with ``weights`` (one per record,
    ``class_balance_weights``), ``n`` records drawn with replacement in proportion to them instead."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is None:
        perm = torch.randperm(n, generator=gen).tolist()
    else:
        if weights.dim() != 1 or weights.numel() != n:
            raise ValueError(f"{weights.numel()} sampling weights for {n} records")
        perm = torch.multinomial(weights.double(), n, replacement=True, generator=gen).tolist()
    if lengths is not None:
        chunk = 50 * batch_size
        perm = [i for s in range(0, n, chunk) for i in sorted(perm[s:s + chunk], key=lambda j: -lengths[j])]
    batches = [perm[s:s + batch_size] for s in range(0, n, batch_size)]
    if lengths is not None:
        order = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in order]
    return batches


def class_balance_weights(relations: list[str | None], alpha: float, negative_label: str | None
                          ) -> torch.Tensor:
    """Each record's sampling weight for ``train.class_balance = alpha``: ``count(relation) ** -alpha`` scaled so
    that the relations' records together keep their share of the epoch; records of ``negative_label`` (and
    unlabelled ones) weigh 1, so None is neither oversampled nor thinned. ``alpha = 0``: all weights 1."""
    counts = Counter(relations)
    is_relation = [r is not None and r != negative_label for r in relations]
    raw = torch.tensor([counts[r] ** -alpha if pos else 1.0 for r, pos in zip(relations, is_relation, strict=True)],
                       dtype=torch.float64)
    mask = torch.tensor(is_relation, dtype=torch.bool)
    if mask.any():
        raw[mask] *= mask.sum() / raw[mask].sum()
    return raw


def logit_prior_offsets(relations: list[str | None], labels: list[str], tau: float,
                        negative_label: str | None = None) -> torch.Tensor:
    """``tau * log(prior)`` of each label over the training records' relations (add-one smoothed, so that a
    relation without records gets a finite offset): the logit adjustment of ``train.logit_adjustment``.

    With ``negative_label`` (``train.logit_adjustment_scope: relations``) that label's offset is 0 and each other
    label's is ``tau * log(prior / mean prior of the other labels)``: the relations are balanced among themselves
    while the negative label keeps its prior against all of them together."""
    index = {label: i for i, label in enumerate(labels)}
    counts = torch.ones(len(labels), dtype=torch.float64)
    for relation in relations:
        if relation in index:
            counts[index[relation]] += 1
    if negative_label is None:
        return (tau * torch.log(counts / counts.sum())).float()
    if negative_label not in index:
        raise ValueError(f"the negative label {negative_label!r} is not among the model's labels")
    positive = torch.ones(len(labels), dtype=torch.bool)
    positive[index[negative_label]] = False
    offsets = torch.zeros(len(labels), dtype=torch.float64)
    offsets[positive] = tau * torch.log(counts[positive] / counts[positive].mean())
    return offsets.float()


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of a run, or ``None``."""
    found = list(iter_checkpoints(output_dir))
    return found[-1] if found else None


def _rng_state(desc_gen: torch.Generator) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "descriptions": desc_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], desc_gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    desc_gen.set_state(state["descriptions"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put a completed folder in place of ``final`` (the old one is renamed away first, then removed)."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


class Trainer:
    """Trains the model a :class:`RunConfig` describes; ``train(resume_from_checkpoint=...)`` resumes."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True,
                 callbacks: list[TrainerCallback] | None = None) -> None:
        self.cfg = cfg
        self.show_progress = show_progress
        self.callbacks = list(callbacks or [])
        self.output_dir = Path(cfg.output_dir)
        self.checkpoint_dir = self.output_dir / CHECKPOINTS_DIR
        self.state = TrainerState()
        self._n_train = 0

    # -- set-up -------------------------------------------------------------------------------
    def _prepare_output(self, resume: Path | None) -> None:
        if resume is None:
            stale = [self.output_dir / f for f in MODEL_FILES if (self.output_dir / f).exists()]
            if stale or self.checkpoint_dir.exists():
                logger.warning("%s holds an earlier run: its model files and checkpoints are replaced",
                               self.output_dir)
            for f in stale:  # config.json first: the folder stops being a model before anything else goes
                f.unlink()
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            shutil.rmtree(self.output_dir / "text_encoder", ignore_errors=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if resume is None:
            (self.checkpoint_dir / RUN_CONFIG_NAME).write_text(self.cfg.to_yaml(), encoding="utf-8")

    def _resolve_resume(self, resume_from_checkpoint: bool | str | Path | None) -> Path | None:
        if resume_from_checkpoint in (None, False):
            return None
        if resume_from_checkpoint is True:
            found = find_latest_checkpoint(self.output_dir)
        else:
            path = Path(resume_from_checkpoint)
            found = path if (path / STATE_NAME).is_file() else find_latest_checkpoint(path)
        if found is None:
            where = self.output_dir if resume_from_checkpoint is True else resume_from_checkpoint
            raise FileNotFoundError(f"no checkpoint to resume from in {where} (looked for "
                                    f"{CHECKPOINTS_DIR}/checkpoint-N/{STATE_NAME})")
        return found

    def _epoch_features(self, runtime: ModelRuntime, data: RelationDataset, base: list[PairFeatures],
                        epoch: int) -> list[PairFeatures]:
        """The epoch's training features: ``base``, or with ``data.name_swap_prob`` the records whose entity names
        were swapped this epoch re-featurised (depends only on the seed and the epoch, so resuming replays it)."""
        prob = self.cfg.data.name_swap_prob
        if prob <= 0:
            return base
        from rocmre.data.name_swap import swap_entity_names, train_name_pool

        if getattr(self, "_swap_pool", None) is None:
            self._swap_pool = train_name_pool(data, self.cfg.data.negative_label)
            self._swap_types = runtime.featurizer.entity_types(data.records)
        rng = random.Random(self.cfg.seed * 1_000_003 + 7919 * (epoch + 1))
        swapped = [swap_entity_names(r, rng, self._swap_pool, prob, types=t)
                   for r, t in zip(data.records, self._swap_types, strict=True)]
        changed = [i for i, (a, b) in enumerate(zip(data.records, swapped, strict=True)) if a is not b]
        feats = list(base)
        for i, f in zip(changed, runtime.featurize([swapped[i] for i in changed]), strict=True):
            feats[i] = f
        logger.info("epoch %d: entity names swapped in %d of %d training records", epoch, len(changed), len(base))
        return feats

    # -- the loop -----------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: bool | str | Path | None = None) -> TrainingSummary:
        """Train (or resume: ``True`` for the newest checkpoint of ``output_dir``, or a checkpoint folder) and
        write the finished model folder."""
        from accelerate import Accelerator, DistributedDataParallelKwargs

        cfg = self.cfg
        resume = self._resolve_resume(resume_from_checkpoint)
        # cpu=True lets `accelerate launch --multi_gpu --num_processes N` run N gloo processes without GPUs
        accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.accelerator = accelerator
        main = accelerator.is_main_process
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")  # TF32 matrix products on GPUs that have them
        set_seed(cfg.seed)
        if main:
            self._prepare_output(resume)
        accelerator.wait_for_everyone()

        train_data = load_run_data(cfg, cfg.data.train_split, cfg.data.max_train_records)
        val_data = load_run_data(cfg, cfg.data.val_split, cfg.data.max_eval_records)
        require_records(train_data, cfg, cfg.data.train_split)
        require_records(val_data, cfg, cfg.data.val_split)
        self._n_train = len(train_data)
        if train_data.labels is None:
            raise ValueError("the training data has no label set")
        model = build_model(cfg, train_data.labels.labels)
        runtime = make_runtime(model, cfg)
        self.runtime = runtime
        if main:
            logger.info("train %d records (%d with image), val %d (%d with image)", len(train_data),
                        train_data.num_with_image, len(val_data), val_data.num_with_image)
            runtime.precompute_images(list(train_data) + list(val_data), self.show_progress)
        accelerator.wait_for_everyone()
        train_feats = runtime.featurize(train_data.records, show_progress=self.show_progress and main)
        val_feats = runtime.featurize(val_data.records, with_labels=False)
        val_gold = [r.relation for r in val_data.records]

        precision = resolve_precision(cfg.train.mixed_precision if cfg.train.mixed_precision != "no" else "fp32")
        self.precision = precision
        if cfg.train.fast_dropout:
            use_fast_dropout(model)
        model = model.to(accelerator.device)
        backbone = [p for n, p in model.named_parameters() if _is_backbone(n) and p.requires_grad]
        head = [p for n, p in model.named_parameters() if not _is_backbone(n) and p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": backbone, "lr": cfg.train.learning_rate},
                                       {"params": head, "lr": cfg.train.head_learning_rate}],
                                      weight_decay=cfg.train.weight_decay,
                                      **({"fused": True} if cfg.train.fused_optimizer else {}))
        world = accelerator.num_processes
        n_batches = math.ceil(len(train_feats) / cfg.train.batch_size)
        steps_per_epoch = math.ceil(n_batches / world)  # every process the same number (the first batches repeat)
        lengths = [len(f.input_ids) for f in train_feats] if cfg.train.group_by_length else None
        sampling_weights = None  # (class-balanced sampling removed; the trainer branch drops this)
        desc_gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)

        state = TrainerState(steps_per_epoch=steps_per_epoch)
        if resume is not None:
            state = TrainerState.from_json((resume / STATE_NAME).read_text(encoding="utf-8"))
            if state.steps_per_epoch != steps_per_epoch:
                raise ValueError(f"{resume} was written for {state.steps_per_epoch} steps per epoch, this run has "
                                 f"{steps_per_epoch}: the data or the batch size changed")
        else:
            state.total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
            state.budget = {"epochs": cfg.train.epochs, "max_steps": cfg.train.max_steps,
                            "max_minutes": cfg.train.max_minutes}
            if cfg.train.max_minutes is not None:
                self._fit_time_budget(state, model, train_feats, val_feats, runtime, desc_gen)
        self.state = state
        total_steps = state.total_steps
        warmup = int(cfg.train.warmup_ratio * total_steps)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        average = WeightAverage(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.weight_average = average
        if resume is not None:
            model.load_state_dict(load_file(str(resume / WEIGHTS_NAME)))
            if average is not None:
                if not (resume / EMA_NAME).is_file():
                    raise ValueError(f"{resume} has no {EMA_NAME}: it was written without train.ema_decay")
                average.load_state_dict(load_file(str(resume / EMA_NAME)))
            optimizer.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
            scheduler.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))
            rng_file = resume / f"rng_state_{accelerator.process_index}.pt"
            _set_rng_state(torch.load(rng_file, weights_only=False), desc_gen)
            logger.info("resumed from %s at step %d", resume, state.step)
        wrapped, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.model = model

        eval_every = max(1, steps_per_epoch // cfg.train.evaluations_per_epoch)
        refresh_every = cfg.train.description_refresh_steps
        bar = tqdm(total=total_steps, initial=state.step, desc="training", dynamic_ncols=True,
                   disable=not (self.show_progress and main))
        start = time.time()
        wall_before = state.timings.get("wall_seconds", 0.0)
        train_before = state.timings.get("train_seconds", 0.0)
        train_seconds = 0.0
        wrapped.train()
        states_cache = (FrozenStatesCache(model) if cfg.train.cache_frozen_states and model.frozen_prefix_layers
                        else None)
        model.cache_frozen_states = cfg.train.cache_frozen_states  # the description texts' prefix states too
        self.states_cache = states_cache
        while state.step < total_steps:
            epoch_feats = self._epoch_features(runtime, train_data, train_feats, state.epoch)
            if cfg.train.group_by_length:
                lengths = [len(f.input_ids) for f in epoch_feats]
            batches = epoch_batches(len(train_feats), cfg.train.batch_size, cfg.seed, state.epoch, lengths,
                                    sampling_weights)
            padded = batches + batches[: steps_per_epoch * world - len(batches)]
            mine = padded[accelerator.process_index::world]
            keep = [f is g for f, g in zip(epoch_feats, train_feats, strict=True)]  # False: swapped this epoch
            if states_cache is not None:  # the frozen prefix of every record this epoch needs, in inference batches
                with self._autocast():
                    states_cache.prepare(sorted({i for b in mine[state.batch_in_epoch:] for i in b}), epoch_feats,
                                         keep, batch_size=cfg.train.eval_batch_size)
            for b in mine[state.batch_in_epoch:]:
                t0 = time.time()
                items = [epoch_feats[i] for i in b]
                batch = {k: v.to(accelerator.device) for k, v in runtime.collator(items).items()}
                with self._autocast():
                    if states_cache is not None:
                        states_cache.attach(batch, b, items, keep=[keep[i] for i in b])
                    out = wrapped(batch, descriptions_per_relation=cfg.train.descriptions_per_relation,
                                  generator=desc_gen, refresh_descriptions=state.step % refresh_every == 0)
                accelerator.backward(out.loss)
                accelerator.clip_grad_norm_(wrapped.parameters(), cfg.train.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                if average is not None:
                    average.update()
                state.step += 1
                state.batch_in_epoch += 1
                loss = float(out.loss.detach())
                state.losses.append(loss)
                state.examples_seen += len(b) * world
                train_seconds += time.time() - t0
                bar.update(1)
                if state.step % cfg.train.log_every == 0 or state.step == 1:
                    speed = state.examples_seen / max(train_before + train_seconds, 1e-9)
                    bar.set_postfix(loss=f"{loss:.4f}", ex_per_s=f"{speed:.1f}")
                for cb in self.callbacks:
                    cb.on_step_end(self, state)
                if state.batch_in_epoch >= len(mine):
                    state.epoch += 1
                    state.batch_in_epoch = 0
                evaluate_now = state.step % eval_every == 0 or state.step >= total_steps
                if evaluate_now:
                    with average.swapped() if average is not None else contextlib.nullcontext():
                        if average is not None:
                            model.train()  # new weights: cached description vectors and weight copies are stale
                        self._evaluate(runtime, val_feats, val_gold, state, loss, bar)
                    wrapped.train()
                if evaluate_now or (cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0):
                    state.timings = {"train_seconds": train_before + train_seconds,
                                     "wall_seconds": wall_before + time.time() - start}
                    self._save_checkpoint(model, optimizer, scheduler, desc_gen, state)
                if state.step >= total_steps:
                    break
        bar.close()
        state.timings = {"train_seconds": train_before + train_seconds,
                         "wall_seconds": wall_before + time.time() - start}
        summary = TrainingSummary(self.output_dir, state.best_val_f1, state.best_epoch,
                                  state.timings["wall_seconds"] / 60,
                                  state.examples_seen / max(state.timings["train_seconds"], 1e-9), state.step,
                                  state.losses, world, main, str(resume) if resume else None)
        if main:
            self._finish(val_data, val_feats, state)
        accelerator.wait_for_everyone()
        return summary

    def _autocast(self):
        device = self.accelerator.device
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(device_type=device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _fit_time_budget(self, state: TrainerState, model: RelationModel, feats: list[PairFeatures],
                         val_feats: list[PairFeatures], runtime: ModelRuntime, desc_gen: torch.Generator) -> None:
        """Convert ``max_minutes`` into a step budget once, from timed forward/backward passes (no update; RNG
        states restored), and store how in ``state.budget``."""
        cfg = self.cfg
        rng = _rng_state(desc_gen)
        bs = cfg.train.batch_size
        batch = {k: v.to(self.accelerator.device) for k, v in runtime.collator(feats[:bs]).items()}
        model.train()
        times = []
        for _ in range(3):
            t0 = time.time()
            with self._autocast():
                out = model(batch, descriptions_per_relation=cfg.train.descriptions_per_relation,
                            generator=torch.Generator().manual_seed(0))
            out.loss.backward()
            times.append(time.time() - t0)
        model.zero_grad(set_to_none=True)
        model.forget_description_states()
        t0 = time.time()
        runtime.score(val_feats[: cfg.train.eval_batch_size], cfg.train.eval_batch_size)
        eval_batch_s = time.time() - t0
        _set_rng_state(rng, desc_gen)
        step_s = min(times[1:])
        per_eval = eval_batch_s * math.ceil(len(val_feats) / cfg.train.eval_batch_size)
        evals_per_step = cfg.train.evaluations_per_epoch / state.steps_per_epoch
        affordable = int(0.9 * cfg.train.max_minutes * 60 / (step_s + evals_per_step * per_eval))
        state.budget.update(estimated_step_seconds=step_s, estimated_eval_seconds=per_eval,
                            steps_from_time_budget=affordable, epoch_steps=state.total_steps)
        state.total_steps = max(1, min(state.total_steps, affordable))
        logger.info("time budget %.1f min -> %d steps (%.3f s a step)", cfg.train.max_minutes, state.total_steps,
                    step_s)

    def _evaluate(self, runtime: ModelRuntime, val_feats: list[PairFeatures], gold: list[str], state: TrainerState,
                  loss: float, bar: tqdm) -> None:
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return
        model = self.model
        scored = runtime.score(val_feats, self.cfg.train.eval_batch_size)
        rule = runtime.decision_rule
        if self.cfg.train.tune_none_margin:  # validation only: the margin travels with the checkpoint
            margin, f1 = rule.tune_none_margin(scored.scores, gold, scored.head_types, scored.tail_types)
        else:
            margin = 0.0
            pred = rule.decide(scored.scores, scored.head_types, scored.tail_types, none_margin=0.0).predictions
            f1 = evaluate_predictions(gold, pred, model.config.negative_label).f1
        epoch = state.step / state.steps_per_epoch
        state.history.append({"step": state.step, "epoch": round(epoch, 3), "loss": loss, "val_micro_f1": f1,
                              "none_margin": margin})
        bar.write(f"step {state.step} (epoch {epoch:.2f}): val micro-F1 {100 * f1:.2f}")
        if f1 > state.best_val_f1:
            state.best_val_f1, state.best_step, state.best_epoch, state.best_none_margin = f1, state.step, epoch, margin
            self._write_atomic(self.checkpoint_dir / BEST_DIR,
                               lambda d: save_file(_state_dict(model), str(d / WEIGHTS_NAME)))
        for cb in self.callbacks:
            cb.on_evaluate(self, state, f1)
        self.accelerator.wait_for_everyone()

    def _write_atomic(self, final: Path, write: Callable[[Path], None]) -> None:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        _replace_dir(tmp, final)

    def _save_checkpoint(self, model: RelationModel, optimizer, scheduler, desc_gen: torch.Generator,
                         state: TrainerState) -> None:
        """``checkpoints/checkpoint-N``: written into a temporary folder, then renamed; the newest N kept."""
        acc = self.accelerator
        final = self.checkpoint_dir / f"checkpoint-{state.step}"
        tmp = final.with_name(final.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(_rng_state(desc_gen), tmp / f"rng_state_{acc.process_index}.pt")
        model.forget_description_states()  # not saved: an uninterrupted and a resumed run both recompute them
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_file(_state_dict(model), str(tmp / WEIGHTS_NAME))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            if self.weight_average is not None:
                save_file(self.weight_average.state_dict(), str(tmp / EMA_NAME))
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / STATE_NAME).write_text(state.to_json(), encoding="utf-8")
            _replace_dir(tmp, final)
            kept = list(iter_checkpoints(self.output_dir))
            for old in kept[: -self.cfg.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            for cb in self.callbacks:
                cb.on_save(self, state, final)
        acc.wait_for_everyone()

    def _finish(self, val_data: RelationDataset, val_feats: list[PairFeatures], state: TrainerState) -> None:
        """Load the best weights, score them on val, and write the model folder atomically (``config.json``
        last), with metrics (results apart from timings), the run config and a model card."""
        model = self.model
        model.load_state_dict(load_file(str(self.checkpoint_dir / BEST_DIR / WEIGHTS_NAME)))
        model.set_decision(none_margin=state.best_none_margin)
        runtime = self.runtime
        scored = runtime.score(val_feats, self.cfg.train.eval_batch_size)
        rule = runtime.decision_rule
        decisions = rule.decide(scored.scores, scored.head_types, scored.tail_types, scored.best_description)
        at_zero = rule.decide(scored.scores, scored.head_types, scored.tail_types, none_margin=0.0)
        gold = [r.relation for r in val_data.records]
        neg = model.config.negative_label
        val = evaluate_predictions(gold, decisions.predictions, neg, model.relation_labels,
                                   decisions.scores if model.config.model_type == "roc" else None,
                                   model.relation_labels)
        metrics = {
            "results": {
                "val": val.to_dict(),
                "val_micro_f1_at_zero_margin": evaluate_predictions(gold, at_zero.predictions, neg).f1,
                "none_margin": state.best_none_margin,
                "best_step": state.best_step,
                "best_epoch": state.best_epoch,
                "steps": state.step,
                "total_steps": state.total_steps,
                "budget": state.budget,
                "history": state.history,
                "train_loss": state.losses,
                "train_records": self._n_train,
                "val_records": len(val_data),
                "precision": self.precision,
            },
            "timings": {
                "train_minutes": state.timings["wall_seconds"] / 60,
                # the training steps' time (forward, backward and update), evaluation and caching not counted;
                # "optimizer_seconds" is its earlier, misleading name, kept for readers of earlier files
                "train_step_seconds": state.timings["train_seconds"],
                "optimizer_seconds": state.timings["train_seconds"],
                "examples_per_second": state.examples_seen / max(state.timings["train_seconds"], 1e-9),
                "processes": self.accelerator.num_processes,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "machine": machine_description(),
                "torch": torch.__version__,
            },
        }
        # flat keys kept for readers of earlier metrics files
        for key in ("none_margin", "best_epoch", "steps", "history", "train_records", "val_records"):
            metrics[key] = metrics["results"][key]
        metrics["val"] = metrics["results"]["val"]
        metrics["train_minutes"] = metrics["timings"]["train_minutes"]
        metrics["examples_per_second"] = metrics["timings"]["examples_per_second"]

        def write(folder: Path) -> None:
            from rocmre.inference.model_card import write_model_card

            model.save_pretrained(folder)
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            (folder / "run_config.yaml").write_text(self.cfg.to_yaml(), encoding="utf-8")
            write_model_card(folder)

        tmp = self.output_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        # move every file in, config.json last: until then the folder is not a model
        for src in sorted(tmp.rglob("*"), key=lambda p: (p.name == CONFIG_NAME, str(p))):
            if src.is_dir():
                continue
            dest = self.output_dir / src.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        shutil.rmtree(tmp, ignore_errors=True)


def train(cfg: RunConfig, show_progress: bool = True, resume_from_checkpoint: bool | str | Path | None = None,
          callbacks: list[TrainerCallback] | None = None) -> TrainingSummary:
    """Train the model a run config describes (see :class:`Trainer`)."""
    return Trainer(cfg, show_progress, callbacks).train(resume_from_checkpoint)


def _is_backbone(name: str) -> bool:
    return name.startswith(("encoder.text_model.", "description_encoder."))


def machine_description() -> str:
    """The hardware a run used, in words."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), {platform.machine()}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads " \
           f"{torch.get_num_threads()}"


def iter_checkpoints(output_dir: str | Path) -> Iterator[Path]:
    """The complete checkpoint folders of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = sorted((int(p.name.removeprefix("checkpoint-")), p) for p in root.glob("checkpoint-*")
                   if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit() and (p / STATE_NAME).is_file())
    yield from (p for _, p in found)
