"""What training, evaluation and prediction share: featurising records, image features, batched scoring."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rocmre.data.entity_types import TypeCache
from rocmre.data.images import MissingImagePolicy
from rocmre.data.record import Box, RelationRecord
from rocmre.modeling.batching import PairCollator
from rocmre.modeling.decision import DecisionRule, Decisions, SecondStageScorer, type_indices
from rocmre.modeling.features import PairFeatures, PairFeaturizer
from rocmre.modeling.model import RelationModel
from rocmre.modeling.prompting import PromptOptions
from rocmre.paths import default_cache_dir

logger = logging.getLogger(__name__)

#: Preprocessing ids of the embedded vision backbones, so cached features are found without loading weights.
KNOWN_PREPROCESS_IDS = {"efficientnet-lite0": "shortside224-bicubic-centercrop-pm1-v1"}


class _LazyVisionBackbone:
    """Stands in for a vision backbone until features must actually be computed (cache misses only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.preprocess_id = KNOWN_PREPROCESS_IDS[name]
        self._backbone = None

    def __getattr__(self, item: str):
        if item.startswith("__") or item == "_backbone":  # copy/pickle probe objects that are not set up yet
            raise AttributeError(item)
        if self._backbone is None:
            from rocmre.backbones.vision import load_vision_backbone

            self._backbone = load_vision_backbone(self.name)
            if self._backbone.preprocess_id != self.preprocess_id:
                raise RuntimeError(f"preprocessing id of {self.name} changed: update KNOWN_PREPROCESS_IDS")
        return getattr(self._backbone, item)

    def __call__(self, *args, **kwargs):
        return self.__getattr__("forward")(*args, **kwargs)


class ImageFeatures:
    """Frozen image features from the on-disk cache; an unreadable image is counted and treated as missing
    (or raises under ``policy="error"``). Never a substitute image."""

    def __init__(self, vision_backbone: str, cache_dir: Path, policy: MissingImagePolicy = MissingImagePolicy.MARK):
        from rocmre.backbones.cache import ImageFeatureCache

        backbone = _LazyVisionBackbone(vision_backbone) if vision_backbone in KNOWN_PREPROCESS_IDS else None
        if backbone is None:
            from rocmre.backbones.vision import load_vision_backbone

            backbone = load_vision_backbone(vision_backbone)
        self.cache = ImageFeatureCache(backbone, cache_dir, show_progress=False)  # type: ignore[arg-type]
        self.policy = MissingImagePolicy(policy)
        self.unreadable: set[str] = set()

    def features(self, image: Path | bytes, box: Box | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        from rocmre.backbones.images import ImageLoadError, describe_source

        try:
            return self.cache.features(image, box)
        except (ImageLoadError, TypeError) as e:
            if self.policy is MissingImagePolicy.ERROR:
                raise
            name = describe_source(image)
            if name not in self.unreadable:
                logger.warning("unreadable image treated as missing: %s", e)
                if len(self.unreadable) < 10_000:
                    self.unreadable.add(name)
            return None


class Bf16MatrixWeights:
    """bf16 copies of a model's matrix weights, swapped in while it is scored under bf16 autocast (which would cast
    them on every call); rebuilt whenever a weight may have changed. Same results as autocast."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._key: tuple | None = None
        self._entries: list[tuple[nn.Module, str, nn.Parameter, nn.Parameter]] = []
        self._slot_cache: list[tuple[nn.Module, str]] | None = None  # a model's modules do not change

    def _slots(self) -> list[tuple[nn.Module, str]]:
        if self._slot_cache is not None:
            return self._slot_cache
        out = []
        for module in self.model.modules():
            if isinstance(module, nn.Linear):
                out.append((module, "weight"))
            elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                out.append((module, "in_proj_weight"))
        self._slot_cache = out
        return out

    def _current(self) -> list[tuple[nn.Module, str, nn.Parameter, nn.Parameter]]:
        slots = self._slots()
        # the model's training generation too: fused AdamW updates weights without bumping their version counters
        key = (getattr(self.model, "weights_generation", 0),) + tuple(
            (id(m), name, getattr(m, name).data_ptr(), getattr(m, name)._version) for m, name in slots)
        if key != self._key:  # copies of the fp32 weights only (others are left as they are)
            self._entries = [(m, name, getattr(m, name),
                              nn.Parameter(getattr(m, name).detach().to(torch.bfloat16), requires_grad=False))
                             for m, name in slots if getattr(m, name).dtype == torch.float32]
            self._key = key
        return self._entries

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The bf16 copies in place for the duration of the block (fp32 weights restored afterwards)."""
        entries = self._current()
        try:
            for module, name, _, low in entries:
                module._parameters[name] = low
            yield
        finally:
            for module, name, weight, _ in entries:
                module._parameters[name] = weight


@dataclass
class ModelScores:
    """What the model says about N records over its R relations, before any decision rule."""

    scores: np.ndarray  # (N, R): ROC cosine similarity, classifier logits
    best_description: np.ndarray | None  # (N, R) index of the best-matching description of each relation
    head_types: np.ndarray  # (N,) entity-type indices (rocmre.data.entity_types.ENTITY_TYPES)
    tail_types: np.ndarray


#: scoring pads token ids to a multiple of this: a pair's padded length then depends on its own length alone
#: whenever the pairs it is scored with have lengths of the same bucket (the service's batches: batch-invariant)
SCORING_PAD_MULTIPLE = 8


class ModelRuntime:
    """A model with everything needed to run it on records."""

    def __init__(self, model: RelationModel, cache_dir: Path | None = None,
                 missing_image: MissingImagePolicy | str = "mark", second_stage: SecondStageScorer | None = None,
                 rerank_top_k: int = 5, precision: str = "fp32", persist_types: bool = True) -> None:
        self.model = model
        self.second_stage = second_stage  # the decision rule's hook for a re-ranker (modeling/decision.py)
        self.rerank_top_k = rerank_top_k
        self.precision = precision  # "fp32" or "bf16" (autocast) for scoring
        cfg = model.config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.featurizer = PairFeaturizer(
            model.tokenizer, max_length=cfg.max_length,
            prompt=PromptOptions(use_types=cfg.use_types, use_positions=cfg.use_positions),
            type_cache=TypeCache(cfg.entity_tagger, self.cache_dir, persist=persist_types), max_crops=cfg.max_crops)
        self.images = ImageFeatures(cfg.vision_backbone, self.cache_dir, MissingImagePolicy(missing_image)) \
            if cfg.use_image else None
        self.collator = PairCollator(model.tokenizer.pad_token_id, self.images, cfg.vision_dim or 0,
                                     cfg.num_regions or 0, cfg.use_image)
        self._bf16_weights = Bf16MatrixWeights(model)
        if model.example_runtime is None:  # relation examples (few-shot prototypes) are featurised like inputs
            model.example_runtime = self

    def featurize(self, records: Sequence[RelationRecord], with_labels: bool = True,
                  show_progress: bool = False) -> list[PairFeatures]:
        index = {lab: i for i, lab in enumerate(self.model.relation_labels)} if with_labels else None
        return self.featurizer(records, index, show_progress)

    def precompute_images(self, records: Sequence[RelationRecord], show_progress: bool = True) -> dict[str, int]:
        """Encode every image (and crop, and object box) once so that epochs only read the cache."""
        if self.images is None:
            return {"computed": 0, "cached": 0, "failed": 0}
        sources, boxes = [], []
        for r in records:
            if r.image_path is not None:
                sources.append(r.image_path)
                boxes.append(None)
                if r.tail.is_object:
                    sources.append(r.image_path)
                    boxes.append(r.tail.box)
            for c in r.crop_paths[: self.model.config.max_crops]:
                sources.append(c)
                boxes.append(None)
        if not sources:
            return {"computed": 0, "cached": 0, "failed": 0}
        self.images.cache.show_progress = show_progress
        return self.images.cache.precompute(sources, boxes)

    @property
    def decision_rule(self) -> DecisionRule:
        """The model's decision rule (type prior, tuned None margin, optional second stage)."""
        return DecisionRule.from_model(self.model, self.second_stage, self.rerank_top_k)

    @torch.inference_mode()
    def score(self, features: Sequence[PairFeatures], batch_size: int = 64, show_progress: bool = False,
              desc: str = "scoring") -> ModelScores:
        """The model's scores of every feature over its relations (batches are grouped by length)."""
        model = self.model
        was_training = model.training
        if was_training:  # (switching modes walks every module: not on each prediction call)
            model.eval()
        device = next(model.parameters()).device
        features = list(features)
        if self.precision == "bf16" and model.config.model_type == "roc" and model.decision.prototype_weight > 0:
            model.prototype_vectors()  # few-shot prototypes are fp32: computed (or found cached) before bf16 scoring
        order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))  # less padding
        n_rel = len(model.relation_labels)
        scores = np.zeros((len(features), n_rel), dtype=np.float32)
        best = None
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=desc, disable=not show_progress, leave=False, unit="batch"):
            idx = order[start:start + batch_size]
            items = [features[i] for i in idx]
            batch = {k: v.to(device) for k, v in self.collator(items, SCORING_PAD_MULTIPLE).items()}
            with self.autocast(device):
                out = model(batch)
            scores[idx] = out.scores.float().cpu().numpy()
            if out.best_description is not None:
                if best is None:
                    best = np.zeros((len(features), n_rel), dtype=np.int64)
                best[idx] = out.best_description.cpu().numpy()
        if was_training:
            model.train()
        return ModelScores(scores, best, type_indices([f.head_type for f in features]),
                           type_indices([f.tail_type for f in features]))

    def autocast(self, device: torch.device):
        """bf16 autocast (with the matrix weights already in bf16) when the model's inference precision asks for
        it, else a no-op context."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        stack.enter_context(self._bf16_weights.swapped())
        return stack

    def decide(self, features: Sequence[PairFeatures], batch_size: int = 64, show_progress: bool = False,
               records: Sequence[RelationRecord] | None = None, desc: str = "scoring") -> Decisions:
        """Score ``features`` and decide through the model's one decision rule."""
        scored = self.score(features, batch_size, show_progress, desc)
        return self.decision_rule.decide(scored.scores, scored.head_types, scored.tail_types,
                                         scored.best_description, records)

    def decide_records(self, records: Sequence[RelationRecord], batch_size: int = 64, show_progress: bool = False,
                       desc: str = "scoring") -> Decisions:
        """Featurise records, score them and decide (the path validation, evaluation and prediction share)."""
        feats = self.featurize(records, with_labels=False, show_progress=show_progress)
        return self.decide(feats, batch_size, show_progress, records, desc)
