"""The training loop (Hugging Face Accelerate): the same code on a CPU, a GPU, or ``accelerate launch``.
:class:`Trainer` checkpoints atomically into ``OUTPUT_DIR/checkpoints/`` and resumes an interrupted run exactly; the
model folder is written only when training ends. Checkpoint and None margin are chosen on validation micro-F1."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rocmre.backbones.hardware import machine_description, resolve_precision
from rocmre.data import RelationDataset
from rocmre.evaluation.metrics import evaluate_predictions
from rocmre.modeling.dropout import use_fast_dropout
from rocmre.modeling.features import PairFeatures
from rocmre.modeling.model import CONFIG_NAME, WEIGHTS_NAME
from rocmre.modeling.runtime import ModelRuntime
from rocmre.training.config import RunConfig
from rocmre.training.frozen_states import FrozenStatesCache
from rocmre.training.model_card import write_model_card
from rocmre.training.setup import build_model, load_run_data, make_runtime, require_records
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


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: list[int] | None = None) -> list[list[int]]:
    """The batches of one epoch: a permutation that depends only on (seed, epoch); with ``lengths``, grouped
    by length (chunks of 50 batches sorted by length, then the batches shuffled)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    if lengths is not None:
        chunk = 50 * batch_size
        perm = [i for s in range(0, n, chunk) for i in sorted(perm[s:s + chunk], key=lambda j: -lengths[j])]
    batches = [perm[s:s + batch_size] for s in range(0, n, batch_size)]
    if lengths is not None:
        order = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in order]
    return batches


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
    """Trains the model a :class:`RunConfig` describes; ``train(resume_from_checkpoint=...)`` resumes. As in HF
    ``Trainer``, its steps (optimizer, scheduler, training step, evaluate, save) may be overridden, and
    :class:`TrainerCallback` objects are told of each step."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True,
                 callbacks: list[TrainerCallback] | None = None) -> None:
        self.cfg = cfg
        self.show_progress = show_progress
        self.callbacks = list(callbacks or [])
        self.output_dir = Path(cfg.output_dir)
        self.checkpoint_dir = self.output_dir / CHECKPOINTS_DIR
        self.state = TrainerState()
        self.weight_average: WeightAverage | None = None
        self.states_cache: FrozenStatesCache | None = None
        self._n_train = 0

    # -- the run ------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: bool | str | Path | None = None) -> TrainingSummary:
        """Train (or resume: ``True`` for the newest checkpoint of ``output_dir``, or a checkpoint folder) and
        write the finished model folder."""
        resume = self._resolve_resume(resume_from_checkpoint)
        self._create_accelerator(resume)
        train_data, val_data = self._load_data()
        self._build_model(train_data, val_data)
        self.desc_gen = torch.Generator().manual_seed(self.cfg.seed + self.accelerator.process_index)
        self._init_state(resume)
        self.create_optimizer_and_scheduler(self.state.total_steps)
        self.weight_average = WeightAverage(self.model, self.cfg.train.ema_decay) if self.cfg.train.ema_decay \
            else None
        if resume is not None:
            self._load_checkpoint(resume)
        self.wrapped, self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.model, self.optimizer,
                                                                                   self.lr_scheduler)
        self._begin_loop()
        while self.state.step < self.state.total_steps:
            self._train_epoch(train_data)
        self._bar.close()
        self._update_timings()
        summary = self._summary(resume)
        if self.accelerator.is_main_process:
            self.save_model(self._final_metrics(val_data))
        self.accelerator.wait_for_everyone()
        return summary

    def _train_epoch(self, train_data: RelationDataset) -> None:
        """Train the rest of the epoch in progress (from ``state.batch_in_epoch``), validating and saving on
        schedule; returns at the epoch's end or when the step budget is spent."""
        state = self.state
        feats = self._epoch_features(self.runtime, train_data, self.train_feats, state.epoch)
        mine = self._process_batches(feats)
        keep = [f is g for f, g in zip(feats, self.train_feats, strict=True)]  # False: swapped this epoch
        if self.states_cache is not None:  # the frozen prefix of every record this epoch needs, in inference batches
            with self._autocast():
                self.states_cache.prepare(sorted({i for b in mine[state.batch_in_epoch:] for i in b}), feats, keep,
                                          batch_size=self.cfg.train.eval_batch_size)
        for indices in mine[state.batch_in_epoch:]:
            t0 = time.time()
            loss = float(self.training_step(indices, feats, keep))
            self.optimizer_step()
            self._end_step(loss, len(indices), len(mine), time.time() - t0)
            self._evaluate_and_save_on_schedule(loss)
            if state.step >= state.total_steps:
                break

    # -- one step -----------------------------------------------------------------------------
    def training_step(self, indices: list[int], features: Sequence[PairFeatures], keep: Sequence[bool]) -> torch.Tensor:
        """Forward and backward pass on the records ``indices`` of the epoch's ``features`` (``keep[i]`` False: record
        ``i``'s names were swapped this epoch); returns the loss, detached."""
        items = [features[i] for i in indices]
        batch = {k: v.to(self.accelerator.device) for k, v in self.runtime.collator(items).items()}
        with self._autocast():
            if self.states_cache is not None:
                self.states_cache.attach(batch, indices, items, keep=[keep[i] for i in indices])
            loss = self.compute_loss(batch)
        self.accelerator.backward(loss)
        return loss.detach()

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one collated batch: the model's forward pass, descriptions sampled per relation
        (the description encoder run every ``train.description_refresh_steps`` steps)."""
        train_cfg = self.cfg.train
        out = self.wrapped(batch, descriptions_per_relation=train_cfg.descriptions_per_relation,
                           generator=self.desc_gen,
                           refresh_descriptions=self.state.step % train_cfg.description_refresh_steps == 0)
        return out.loss

    def optimizer_step(self) -> None:
        """Clip the gradients, update the weights, the learning rate and the weight average; zero the gradients."""
        self.accelerator.clip_grad_norm_(self.wrapped.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        if self.weight_average is not None:
            self.weight_average.update()

    def _end_step(self, loss: float, n_records: int, n_batches: int, seconds: float) -> None:
        """Count the step in the state, the progress bar and the callbacks; close the epoch after its last batch."""
        state = self.state
        state.step += 1
        state.batch_in_epoch += 1
        state.losses.append(loss)
        state.examples_seen += n_records * self.accelerator.num_processes
        self._train_seconds += seconds
        self._bar.update(1)
        if state.step % self.cfg.train.log_every == 0 or state.step == 1:
            speed = state.examples_seen / max(self._train_before + self._train_seconds, 1e-9)
            self._bar.set_postfix(loss=f"{loss:.4f}", ex_per_s=f"{speed:.1f}")
        for cb in self.callbacks:
            cb.on_step_end(self, state)
        if state.batch_in_epoch >= n_batches:
            state.epoch += 1
            state.batch_in_epoch = 0

    def _evaluate_and_save_on_schedule(self, loss: float) -> None:
        """Validate every ``steps_per_epoch / evaluations_per_epoch`` steps and at the last; save a checkpoint then
        and every ``train.checkpoint_every`` steps."""
        state, every = self.state, self.cfg.train.checkpoint_every
        evaluate_now = state.step % self._eval_every == 0 or state.step >= state.total_steps
        if evaluate_now:
            self._validate(loss)
        if evaluate_now or (every and state.step % every == 0):
            self._update_timings()
            self.save_checkpoint()

    # -- validation ---------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Score the validation split with the model's current weights: ``{"val_micro_f1", "none_margin"}`` (the
        margin tuned on validation with ``train.tune_none_margin``, else 0)."""
        scored = self.runtime.score(self.val_feats, self.cfg.train.eval_batch_size)
        rule = self.runtime.decision_rule
        if self.cfg.train.tune_none_margin:  # validation only: the margin travels with the checkpoint
            margin, f1 = rule.tune_none_margin(scored.scores, self.val_gold, scored.head_types, scored.tail_types)
        else:
            margin = 0.0
            pred = rule.decide(scored.scores, scored.head_types, scored.tail_types, none_margin=0.0).predictions
            f1 = evaluate_predictions(self.val_gold, pred, self.model.config.negative_label).f1
        return {"val_micro_f1": f1, "none_margin": margin}

    def _validate(self, loss: float) -> None:
        """:meth:`evaluate` (on the weight average when there is one) on the main process, then record it."""
        average = self.weight_average
        with average.swapped() if average is not None else contextlib.nullcontext():
            if average is not None:
                self.model.train()  # new weights: cached description vectors and weight copies are stale
            if self.accelerator.is_main_process:
                self._record_evaluation(self.evaluate(), loss)
            self.accelerator.wait_for_everyone()
        self.wrapped.train()

    def _record_evaluation(self, metrics: dict[str, float], loss: float) -> None:
        """Add a validation to the history; a new best one's weights go to ``checkpoints/best``."""
        state = self.state
        f1, margin = metrics["val_micro_f1"], metrics["none_margin"]
        epoch = state.step / state.steps_per_epoch
        state.history.append({"step": state.step, "epoch": round(epoch, 3), "loss": loss, "val_micro_f1": f1,
                              "none_margin": margin})
        self._bar.write(f"step {state.step} (epoch {epoch:.2f}): val micro-F1 {100 * f1:.2f}")
        if f1 > state.best_val_f1:
            state.best_val_f1, state.best_step, state.best_epoch, state.best_none_margin = f1, state.step, epoch, margin
            self._write_atomic(self.checkpoint_dir / BEST_DIR,
                               lambda d: save_file(_state_dict(self.model), str(d / WEIGHTS_NAME)))
        for cb in self.callbacks:
            cb.on_evaluate(self, state, f1)

    # -- set-up -------------------------------------------------------------------------------
    def _create_accelerator(self, resume: Path | None) -> None:
        """The accelerator, the seed and the output folder (cleared of an earlier run unless resuming)."""
        from accelerate import Accelerator, DistributedDataParallelKwargs

        # cpu=True lets `accelerate launch --multi_gpu --num_processes N` run N gloo processes without GPUs
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")  # TF32 matrix products on GPUs that have them
        set_seed(self.cfg.seed)
        if self.accelerator.is_main_process:
            self._prepare_output(resume)
        self.accelerator.wait_for_everyone()

    def _load_data(self) -> tuple[RelationDataset, RelationDataset]:
        """The training and validation splits as the run config says (never the test split)."""
        cfg = self.cfg
        train_data = load_run_data(cfg, cfg.data.train_split, cfg.data.max_train_records)
        val_data = load_run_data(cfg, cfg.data.val_split, cfg.data.max_eval_records)
        require_records(train_data, cfg, cfg.data.train_split)
        require_records(val_data, cfg, cfg.data.val_split)
        self._n_train = len(train_data)
        if train_data.labels is None:
            raise ValueError("the training data has no label set")
        return train_data, val_data

    def _build_model(self, train_data: RelationDataset, val_data: RelationDataset) -> None:
        """A fresh model and its runtime, both splits' features, the training precision; the model on the device."""
        cfg, main = self.cfg, self.accelerator.is_main_process
        model = build_model(cfg, train_data.labels.labels)
        self.runtime = make_runtime(model, cfg)
        with random_state_kept():  # a cold cache builds the image and tagging models: no draw may reach training
            if main:
                logger.info("train %d records (%d with image), val %d (%d with image)", len(train_data),
                            train_data.num_with_image, len(val_data), val_data.num_with_image)
                self.runtime.precompute_images(list(train_data) + list(val_data), self.show_progress)
            self.accelerator.wait_for_everyone()
            self.train_feats = self.runtime.featurize(train_data.records, show_progress=self.show_progress and main)
            self.val_feats = self.runtime.featurize(val_data.records, with_labels=False)
        self.val_gold = [r.relation for r in val_data.records]
        self.precision = resolve_precision(cfg.train.mixed_precision if cfg.train.mixed_precision != "no" else "fp32")
        if cfg.train.fast_dropout:
            use_fast_dropout(model)
        self.model = model.to(self.accelerator.device)

    def _init_state(self, resume: Path | None) -> None:
        """The state to start from: the checkpoint's, or a fresh one with the step budget (a time budget is turned
        into steps here, once)."""
        cfg = self.cfg
        n_batches = math.ceil(len(self.train_feats) / cfg.train.batch_size)
        # every process the same number of steps (the first batches repeat)
        steps_per_epoch = math.ceil(n_batches / self.accelerator.num_processes)
        if resume is not None:
            self.state = TrainerState.from_json((resume / STATE_NAME).read_text(encoding="utf-8"))
            if self.state.steps_per_epoch != steps_per_epoch:
                raise ValueError(f"{resume} was written for {self.state.steps_per_epoch} steps per epoch, this run "
                                 f"has {steps_per_epoch}: the data or the batch size changed")
            return
        state = TrainerState(steps_per_epoch=steps_per_epoch)
        state.total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
        state.budget = {"epochs": cfg.train.epochs, "max_steps": cfg.train.max_steps,
                        "max_minutes": cfg.train.max_minutes}
        self.state = state
        if cfg.train.max_minutes is not None:
            self._fit_time_budget()

    def create_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over two groups: the pretrained text encoder's weights (``learning_rate``) and the rest
        (``head_learning_rate``); frozen weights left out."""
        train_cfg = self.cfg.train
        named = list(self.model.named_parameters())
        backbone = [p for n, p in named if _is_backbone(n) and p.requires_grad]
        head = [p for n, p in named if not _is_backbone(n) and p.requires_grad]
        return torch.optim.AdamW([{"params": backbone, "lr": train_cfg.learning_rate},
                                  {"params": head, "lr": train_cfg.head_learning_rate}],
                                 weight_decay=train_cfg.weight_decay,
                                 **({"fused": True} if train_cfg.fused_optimizer else {}))

    def create_scheduler(self, optimizer: torch.optim.Optimizer, num_training_steps: int
                         ) -> torch.optim.lr_scheduler.LRScheduler:
        """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0."""
        warmup = int(self.cfg.train.warmup_ratio * num_training_steps)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        """Set ``self.optimizer`` and ``self.lr_scheduler`` for a run of ``num_training_steps`` steps."""
        self.optimizer = self.create_optimizer()
        self.lr_scheduler = self.create_scheduler(self.optimizer, num_training_steps)

    def _load_checkpoint(self, resume: Path) -> None:
        """Weights, weight average, optimizer, scheduler and RNG states from a checkpoint folder."""
        self.model.load_state_dict(load_file(str(resume / WEIGHTS_NAME)))
        if self.weight_average is not None:
            if not (resume / EMA_NAME).is_file():
                raise ValueError(f"{resume} has no {EMA_NAME}: it was written without train.ema_decay")
            self.weight_average.load_state_dict(load_file(str(resume / EMA_NAME)))
        self.optimizer.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
        self.lr_scheduler.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))
        rng_file = resume / f"rng_state_{self.accelerator.process_index}.pt"
        _set_rng_state(torch.load(rng_file, weights_only=False), self.desc_gen)
        logger.info("resumed from %s at step %d", resume, self.state.step)

    def _begin_loop(self) -> None:
        """The progress bar, the clocks (continued from a resumed state), train mode and the frozen-states cache."""
        cfg, state = self.cfg, self.state
        self._eval_every = max(1, state.steps_per_epoch // cfg.train.evaluations_per_epoch)
        self._bar = tqdm(total=state.total_steps, initial=state.step, desc="training", dynamic_ncols=True,
                         disable=not (self.show_progress and self.accelerator.is_main_process))
        self._start = time.time()
        self._wall_before = state.timings.get("wall_seconds", 0.0)
        self._train_before = state.timings.get("train_seconds", 0.0)
        self._train_seconds = 0.0
        self.wrapped.train()
        model = self.model
        self.states_cache = (FrozenStatesCache(model) if cfg.train.cache_frozen_states and model.frozen_prefix_layers
                             else None)
        model.cache_frozen_states = cfg.train.cache_frozen_states  # the description texts' prefix states too

    def _update_timings(self) -> None:
        self.state.timings = {"train_seconds": self._train_before + self._train_seconds,
                              "wall_seconds": self._wall_before + time.time() - self._start}

    def _summary(self, resume: Path | None) -> TrainingSummary:
        state = self.state
        return TrainingSummary(self.output_dir, state.best_val_f1, state.best_epoch,
                               state.timings["wall_seconds"] / 60,
                               state.examples_seen / max(state.timings["train_seconds"], 1e-9), state.step,
                               state.losses, self.accelerator.num_processes, self.accelerator.is_main_process,
                               str(resume) if resume else None)

    def _prepare_output(self, resume: Path | None) -> None:
        if resume is None:
            stale = [self.output_dir / f for f in MODEL_FILES if (self.output_dir / f).exists()]
            if stale or self.checkpoint_dir.exists():
                logger.warning("%s holds an earlier run: its model files and checkpoints are replaced", self.output_dir)
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

    # -- the data of an epoch -----------------------------------------------------------------
    def _process_batches(self, feats: list[PairFeatures]) -> list[list[int]]:
        """This process's batches of the epoch in progress: every process gets ``steps_per_epoch`` of them (the
        first batches of the epoch repeat to make up the count)."""
        cfg, world = self.cfg, self.accelerator.num_processes
        lengths = [len(f.input_ids) for f in feats] if cfg.train.group_by_length else None
        batches = epoch_batches(len(feats), cfg.train.batch_size, cfg.seed, self.state.epoch, lengths)
        padded = batches + batches[: self.state.steps_per_epoch * world - len(batches)]
        return padded[self.accelerator.process_index::world]

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

    def _autocast(self):
        device = self.accelerator.device
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(device_type=device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _fit_time_budget(self) -> None:
        """Convert ``max_minutes`` into a step budget once, from timed forward/backward passes (no update; RNG
        states restored), and store how in ``state.budget``."""
        cfg, state, model, runtime = self.cfg, self.state, self.model, self.runtime
        rng = _rng_state(self.desc_gen)
        bs = cfg.train.batch_size
        batch = {k: v.to(self.accelerator.device) for k, v in runtime.collator(self.train_feats[:bs]).items()}
        model.train()
        times = []
        for i in range(4):  # a step that encodes the descriptions, then steps that reuse them
            t0 = time.time()
            with self._autocast():
                out = model(batch, descriptions_per_relation=cfg.train.descriptions_per_relation,
                            generator=torch.Generator().manual_seed(0), refresh_descriptions=i < 2)
            out.loss.backward()
            times.append(time.time() - t0)
        model.zero_grad(set_to_none=True)
        model.forget_description_states()
        t0 = time.time()
        runtime.score(self.val_feats[: cfg.train.eval_batch_size], cfg.train.eval_batch_size)
        eval_batch_s = time.time() - t0
        _set_rng_state(rng, self.desc_gen)
        refresh = cfg.train.description_refresh_steps
        step_s = (times[1] + (refresh - 1) * min(times[2:])) / refresh
        per_eval = eval_batch_s * math.ceil(len(self.val_feats) / cfg.train.eval_batch_size)
        evals_per_step = cfg.train.evaluations_per_epoch / state.steps_per_epoch
        affordable = int(0.9 * cfg.train.max_minutes * 60 / (step_s + evals_per_step * per_eval))
        state.budget.update(estimated_step_seconds=step_s, estimated_eval_seconds=per_eval,
                            steps_from_time_budget=affordable, epoch_steps=state.total_steps)
        state.total_steps = max(1, min(state.total_steps, affordable))
        logger.info("time budget %.1f min -> %d steps (%.3f s a step)", cfg.train.max_minutes, state.total_steps,
                    step_s)

    # -- saving -------------------------------------------------------------------------------
    def _write_atomic(self, final: Path, write: Callable[[Path], None]) -> None:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        _replace_dir(tmp, final)

    def save_checkpoint(self) -> Path:
        """``checkpoints/checkpoint-N`` (N the step): weights, weight average, optimizer, scheduler, every process's
        RNG states and the state, written into a temporary folder, then renamed; the newest
        ``train.keep_checkpoints`` kept. Returns the folder."""
        acc, state, model = self.accelerator, self.state, self.model
        final = self.checkpoint_dir / f"checkpoint-{state.step}"
        tmp = final.with_name(final.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(_rng_state(self.desc_gen), tmp / f"rng_state_{acc.process_index}.pt")
        model.forget_description_states()  # not saved: an uninterrupted and a resumed run both recompute them
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_file(_state_dict(model), str(tmp / WEIGHTS_NAME))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            if self.weight_average is not None:
                save_file(self.weight_average.state_dict(), str(tmp / EMA_NAME))
            torch.save(self.lr_scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / STATE_NAME).write_text(state.to_json(), encoding="utf-8")
            _replace_dir(tmp, final)
            kept = list(iter_checkpoints(self.output_dir))
            for old in kept[: -self.cfg.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            for cb in self.callbacks:
                cb.on_save(self, state, final)
        acc.wait_for_everyone()
        return final

    def _final_metrics(self, val_data: RelationDataset) -> dict[str, Any]:
        """Load the best weights and score them on val: ``metrics.json`` (results, then timings, then the flat keys
        kept for readers of earlier files)."""
        state = self.state
        model = self.model
        model.load_state_dict(load_file(str(self.checkpoint_dir / BEST_DIR / WEIGHTS_NAME)))
        model.set_decision(none_margin=state.best_none_margin)
        scored = self.runtime.score(self.val_feats, self.cfg.train.eval_batch_size)
        rule = self.runtime.decision_rule
        decisions = rule.decide(scored.scores, scored.head_types, scored.tail_types, scored.best_description)
        at_zero = rule.decide(scored.scores, scored.head_types, scored.tail_types, none_margin=0.0)
        gold = [r.relation for r in val_data.records]
        neg = model.config.negative_label
        val = evaluate_predictions(gold, decisions.predictions, neg, model.relation_labels,
                                   decisions.scores if model.config.model_type == "roc" else None,
                                   model.relation_labels)
        results = {
            "val": val.to_dict(),
            "val_micro_f1_at_zero_margin": evaluate_predictions(gold, at_zero.predictions, neg).f1,
            "none_margin": state.best_none_margin, "best_step": state.best_step, "best_epoch": state.best_epoch,
            "steps": state.step, "total_steps": state.total_steps, "budget": state.budget, "history": state.history,
            "train_loss": state.losses, "train_records": self._n_train, "val_records": len(val_data),
            "precision": self.precision,
        }
        metrics = {"results": results, "timings": self._final_timings()}
        for key in ("none_margin", "best_epoch", "steps", "history", "train_records", "val_records"):
            metrics[key] = results[key]
        metrics["val"] = results["val"]
        metrics["train_minutes"] = metrics["timings"]["train_minutes"]
        metrics["examples_per_second"] = metrics["timings"]["examples_per_second"]
        return metrics

    def _final_timings(self) -> dict[str, Any]:
        timings = self.state.timings
        return {
            "train_minutes": timings["wall_seconds"] / 60,
            # the training steps' time (forward, backward and update), evaluation and caching not counted;
            # "optimizer_seconds" is its earlier, misleading name, kept for readers of earlier files
            "train_step_seconds": timings["train_seconds"],
            "optimizer_seconds": timings["train_seconds"],
            "examples_per_second": self.state.examples_seen / max(timings["train_seconds"], 1e-9),
            "processes": self.accelerator.num_processes,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": machine_description(),
            "torch": torch.__version__,
        }

    def save_model(self, metrics: dict[str, Any]) -> None:
        """Write the model folder (``output_dir``) with ``metrics``, the run config and a model card: into a
        temporary folder first, then every file moved in, ``config.json`` last, so that the folder is a model only
        once it is complete."""
        tmp = self.output_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        (tmp / "run_config.yaml").write_text(self.cfg.to_yaml(), encoding="utf-8")
        write_model_card(tmp)
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


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Run a block without consuming the torch, numpy or Python random streams: what it draws (filling an empty
    cache builds models whose initialisation draws) leaves a seeded run's numbers unchanged."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def _is_backbone(name: str) -> bool:
    return name.startswith(("encoder.text_model.", "description_encoder."))


def iter_checkpoints(output_dir: str | Path) -> Iterator[Path]:
    """The complete checkpoint folders of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = sorted((int(p.name.removeprefix("checkpoint-")), p) for p in root.glob("checkpoint-*")
                   if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit() and (p / STATE_NAME).is_file())
    yield from (p for _, p in found)
