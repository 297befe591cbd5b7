"""A run's configuration: data, model, training (the loss's knobs included) and seed. A YAML file fully determines
a run; the defaults are the recommended recipe (``configs/mnre_roc.yaml``), so a file holds what differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rocmre.modeling.config import ANY, ModelConfig, check_removed

#: training settings removed from the library (docs/experiments.md) and the one value an older run config may hold
REMOVED_TRAIN = {"logit_adjustment": 0.0, "logit_adjustment_scope": ANY, "class_balance": 0.0}


class CorporaConfig(BaseModel):
    """With ``data.format: relations`` (relation pre-training): which Wikidata relation corpora are read from
    ``data.path`` and how they are balanced (:func:`rocmre.data.relation_corpora.load_relation_corpora`)."""

    model_config = ConfigDict(extra="forbid")

    names: list[Literal["fewrel", "wiki80", "redocred"]] = Field(
        default_factory=lambda: ["fewrel", "wiki80", "redocred"], min_length=1)
    # training records kept per relation (seeded), so that no relation dominates the batches (None: all)
    max_per_relation: int | None = Field(400, ge=1)
    # Re-DocRED's unlabelled same-sentence pairs kept as None examples, per labelled pair of a document
    none_ratio: float = Field(0.2, ge=0.0)
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)  # per relation, drawn with the run's seed


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "mnre/RE_data"  # a folder or JSONL file; relative paths are also tried under $ROCMRE_DATA
    # "relations": the Wikidata relation corpora under path (relation pre-training; splits "train" and "val")
    format: Literal["auto", "mnre", "more", "jsonl", "relations"] = "auto"
    corpora: CorporaConfig = Field(default_factory=CorporaConfig)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    negative_label: str = "None"
    max_train_records: int | None = Field(None, ge=1)  # a seeded random subset, for quick runs
    # a seeded share of every relation's training records (at least one each): low-resource training
    train_fraction: float | None = Field(None, gt=0.0, le=1.0)
    max_eval_records: int | None = Field(None, ge=1)
    # held out of training entirely (zero-shot); with format "relations", an MNRE relation stands for its Wikidata
    # counterparts (resources/relations/mnre_wikidata.json)
    exclude_relations: list[str] = Field(default_factory=list)
    # per epoch, probability of replacing a record's head and tail names by same-type training names (seeded)
    name_swap_prob: float = Field(0.5, ge=0.0, le=1.0)
    missing_image: Literal["mark", "error"] = "mark"
    on_error: Literal["raise", "skip"] = "raise"


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(6.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    # a wall-clock budget, converted once at the start into a stored step budget (resumes replay it)
    max_minutes: float | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(5e-5, gt=0)  # the pretrained text encoder
    head_learning_rate: float = Field(5e-4, gt=0)  # fusion layers, projections, image tokens, temperature
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    descriptions_per_relation: int | None = Field(2, ge=1)  # sampled per relation and step (None: all)
    tune_none_margin: bool = True
    # the ROC loss's initial temperature (learned)
    temperature: float = Field(0.05, gt=0.0)
    evaluations_per_epoch: int = Field(1, ge=1)
    # training autocast: "auto" is bf16 where the hardware computes it natively, else fp32
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    inference_precision: Literal["fp32", "bf16", "auto"] = "auto"  # validation, evaluation and prediction
    # batches of similar lengths (length-sorted shuffled chunks); the order depends only on seed and epoch
    group_by_length: bool = True
    # ROC: run the description encoder every N steps; in between only the projection trains (1 = every step)
    description_refresh_steps: int = Field(16, ge=1)
    # AdamW's fused kernel (faster; rounding differs from the per-parameter loop)
    fused_optimizer: bool = True
    # CPU dropout masks from 16-bit PCG64 integers (faster; other masks than bernoulli_: modeling/dropout.py)
    fast_dropout: bool = True
    # with a frozen prefix, compute its output once per training record and description text
    cache_frozen_states: bool = True
    # validate and keep an exponential moving average of the weights with this decay (None: the raw weights)
    ema_decay: float | None = Field(0.998, gt=0, lt=1)
    checkpoint_every: int | None = Field(None, ge=1)  # steps; a checkpoint is also written at every evaluation
    keep_checkpoints: int = Field(2, ge=1)  # the newest N checkpoint-N folders are kept (the best model apart)
    log_every: int = Field(10, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _older_config(cls, data: Any) -> Any:
        """An older run config's removed settings: dropped at their "off" value, refused otherwise."""
        if isinstance(data, dict):
            data = dict(data)
            check_removed(data, "train", REMOVED_TRAIN)
        return data

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        """YAML reads a bare ``no`` as false: take it as ``"no"``."""
        return "no" if value is False else value


class RunConfig(BaseModel):
    """Everything a run needs; ``rocmre train --config run.yaml`` reads one."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    output_dir: str = "runs/model"
    cache_dir: str | None = None  # default: $ROCMRE_CACHE or ~/.cache/rocmre
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _temperature_is_the_losss(cls, data: Any) -> Any:
        """An older run config's ``model.temperature`` is the loss's now: ``train.temperature``."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and "temperature" in data["model"]:
            model = dict(data["model"])
            train = dict(data.get("train") or {})
            train.setdefault("temperature", model.pop("temperature"))
            data = {**data, "model": model, "train": train}
        return data

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> RunConfig:
        """Load a YAML file, then apply ``section.key=value`` overrides (values parsed as YAML)."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for item in overrides or []:
            apply_override(data, item)
        return cls.model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a nested dict (value parsed as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} is not of the form section.key=value")
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {p!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


def config_differences(first: dict[str, Any], second: dict[str, Any],
                       ignore: tuple[str, ...] = ("output_dir", "cache_dir")) -> dict[str, tuple[Any, Any]]:
    """``{"a.b.c": (first's value, second's value)}`` for every dotted setting two run-config dicts differ in
    (absent: None), sorted by key; the ``ignore`` keys (where a run was written and its cache) aside."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(first), flat(second)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)}
