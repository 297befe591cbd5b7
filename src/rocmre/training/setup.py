"""Run setup shared by training, ``rocmre evaluate``, the benchmarks and the speed measurements: data as a run
config says, the relation set, a fresh model, and a runtime to score with."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rocmre.backbones.hardware import bf16_supported, resolve_precision
from rocmre.data import RelationDataset, load_split, resolve_data_path
from rocmre.descriptions.store import RelationDescriptions
from rocmre.modeling.losses import default_loss
from rocmre.modeling.model import RelationModel
from rocmre.modeling.runtime import ModelRuntime
from rocmre.paths import default_cache_dir
from rocmre.training.config import RunConfig

__all__ = ["bf16_supported", "build_model", "load_run_data", "make_runtime", "relation_set", "require_records",
           "resolve_precision", "run_cache_dir"]

logger = logging.getLogger(__name__)


def run_cache_dir(cfg: RunConfig) -> Path:
    """The run's cache folder (image features, entity types): ``cache_dir``, else the default."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def load_run_data(cfg: RunConfig, split: str, limit: int | None = None, *,
                  keep_excluded: bool = False) -> RelationDataset:
    """A split as the run config says: format, negative label, held-out relations removed (unless
    ``keep_excluded``), and a seeded subset of ``limit`` records."""
    d = cfg.data
    if d.format == "relations":
        dataset = relation_corpora_split(cfg, split, keep_excluded=keep_excluded)
    else:
        dataset = load_split(d.path, split, d.format, negative_label=d.negative_label,
                             missing_image=d.missing_image, on_error=d.on_error)
    if d.exclude_relations and not keep_excluded and d.format != "relations":
        unknown = [r for r in d.exclude_relations if dataset.labels is not None and r not in dataset.labels]
        if unknown:
            raise ValueError(f"data.exclude_relations names labels the data does not have: {unknown}")
        dataset = dataset.filter(lambda r: r.relation not in d.exclude_relations)
    if split == d.train_split and d.train_fraction is not None and d.train_fraction < 1:
        dataset = _keep(dataset, stratified_sample(dataset, d.train_fraction, cfg.seed))
    if limit is not None and len(dataset) > limit:
        rng = random.Random(cfg.seed)
        dataset = _keep(dataset, sorted(rng.sample(range(len(dataset)), limit)))
    return dataset


def _keep(dataset: RelationDataset, indices: list[int]) -> RelationDataset:
    return RelationDataset([dataset.records[i] for i in indices], dataset.labels, dataset.name, dataset.split,
                           dataset.problems, source=dataset.source)


def stratified_sample(dataset: RelationDataset, fraction: float, seed: int) -> list[int]:
    """Indices (in order) of a seeded ``fraction`` of every relation's records, rounded, at least one each: a
    low-resource training split that keeps every relation."""
    by_relation: dict[str | None, list[int]] = {}
    for i, r in enumerate(dataset.records):
        by_relation.setdefault(r.relation, []).append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    for relation in sorted(by_relation, key=str):
        indices = by_relation[relation]
        keep += rng.sample(indices, max(1, round(fraction * len(indices))))
    return sorted(keep)


def relation_corpora_split(cfg: RunConfig, split: str, *, keep_excluded: bool = False) -> RelationDataset:
    """The ``train`` or ``val`` split of the Wikidata relation corpora under ``data.path`` (``data.format:
    relations``), balanced as ``data.corpora`` says, held-out relations and their counterparts left out."""
    from rocmre.data.relation_corpora import load_relation_corpora

    d, c = cfg.data, cfg.data.corpora
    if split not in ("train", "val"):
        raise ValueError(f"the relation corpora have the splits 'train' and 'val', not {split!r}")
    out = load_relation_corpora(resolve_data_path(d.path), c.names, [] if keep_excluded else d.exclude_relations,
                                none_ratio=c.none_ratio, val_fraction=c.val_fraction, seed=cfg.seed,
                                on_error=d.on_error, max_per_relation=c.max_per_relation)
    return out[split]


def require_records(dataset: RelationDataset, cfg: RunConfig, split: str) -> None:
    """A clear error when a split the run needs has no records (instead of a failure deep inside torch)."""
    if len(dataset) == 0 and cfg.data.exclude_relations:
        raise ValueError(f"the {split!r} split of {cfg.data.path!r} has no records left after "
                         f"data.exclude_relations")
    dataset.require_nonempty(split)


def relation_set(cfg: RunConfig, labels: list[str]) -> RelationDescriptions:
    """The descriptions of the run's relations (the data's labels less the held-out ones)."""
    wanted = [lab for lab in labels if lab not in cfg.data.exclude_relations]
    if cfg.model.descriptions == "wikidata":  # Wikidata properties: from the relation corpora's pid2name.json
        from rocmre.descriptions.wikidata import load_wikidata_descriptions

        # without the "{head} name {tail}." templates: training would encode their placeholders as written, and
        # validation would encode every template filled with every pair's names (131 texts a pair)
        return load_wikidata_descriptions(wanted, resolve_data_path(cfg.data.path), templates=False)
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


def build_model(cfg: RunConfig, labels: list[str]) -> RelationModel:
    """A fresh model for the run: ROC over the relation set's descriptions, or a classifier over ``labels``; its
    loss with the run's loss settings."""
    roc = cfg.model.model_type == "roc"
    kept = [lab for lab in labels if lab not in cfg.data.exclude_relations]
    model = RelationModel.build(cfg.model, relation_set(cfg, labels) if roc else None, run_cache_dir(cfg),
                                labels=None if roc else kept, negative_label=cfg.data.negative_label,
                                loss=default_loss(cfg.model.model_type, cfg.train.temperature))
    model.config.trained_labels = list(model.relation_labels)
    if cfg.model.init_from:
        model.init_weights_from(Path(cfg.model.init_from).expanduser())
    return model


def make_runtime(model: RelationModel, cfg: RunConfig) -> ModelRuntime:
    """A runtime for ``model`` with the run's cache folder, image policy and inference precision."""
    return ModelRuntime(model, run_cache_dir(cfg), cfg.data.missing_image,
                        precision=resolve_precision(cfg.train.inference_precision))
