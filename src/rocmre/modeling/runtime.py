"""What training, evaluation and prediction share: featurising records, image features, batched scoring."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rocmre.data.images import MissingImagePolicy
from rocmre.data.record import Box, RelationRecord
from rocmre.modeling.batching import PairCollator
from rocmre.modeling.features import PairFeatures, PairFeaturizer, TypeCache
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
        from rocmre.backbones.images import ImageLoadError

        try:
            return self.cache.features(image, box)
        except ImageLoadError as e:
            if self.policy is MissingImagePolicy.ERROR:
                raise
            if str(image) not in self.unreadable:
                logger.warning("unreadable image treated as missing: %s", e)
            self.unreadable.add(str(image))
            return None


@dataclass
class ScoredBatch:
    """Scores of N records over the model's R relations."""

    scores: np.ndarray  # (N, R), after type constraints and the None margin
    raw_scores: np.ndarray  # (N, R), without the None margin
    best_description: np.ndarray | None  # (N, R) index of the best-matching description of each relation


class ModelRuntime:
    """A model with everything needed to run it on records."""

    def __init__(self, model: RelationModel, cache_dir: Path | None = None,
                 missing_image: MissingImagePolicy | str = "mark") -> None:
        self.model = model
        cfg = model.config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.featurizer = PairFeaturizer(
            model.tokenizer, max_length=cfg.max_length,
            prompt=PromptOptions(use_types=cfg.use_types, use_positions=cfg.use_positions),
            type_cache=TypeCache(cfg.entity_tagger, self.cache_dir), use_crops=cfg.use_crops,
            max_crops=cfg.max_crops)
        self.images = ImageFeatures(cfg.vision_backbone, self.cache_dir, MissingImagePolicy(missing_image)) \
            if cfg.use_image else None
        self.collator = PairCollator(model.tokenizer.pad_token_id, self.images, cfg.vision_dim or 0,
                                     cfg.num_regions or 0, cfg.use_image)

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
            if self.model.config.use_crops:
                for c in r.crop_paths[: self.model.config.max_crops]:
                    sources.append(c)
                    boxes.append(None)
        if not sources:
            return {"computed": 0, "cached": 0, "failed": 0}
        self.images.cache.show_progress = show_progress
        return self.images.cache.precompute(sources, boxes)

    @torch.inference_mode()
    def score(self, features: Sequence[PairFeatures], batch_size: int = 64, show_progress: bool = False,
              desc: str = "scoring") -> ScoredBatch:
        """Scores of every feature over the model's relations."""
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loader = DataLoader(list(features), batch_size=batch_size, shuffle=False, collate_fn=self.collator)
        scores, raw, best = [], [], []
        for batch in tqdm(loader, desc=desc, disable=not show_progress, leave=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(batch)
            raw.append(out.scores.float().cpu())
            scores.append(model.apply_none_margin(out.scores).float().cpu())
            if out.best_description is not None:
                best.append(out.best_description.cpu())
        model.train(was_training)
        if not scores:
            n_rel = len(model.relation_labels)
            return ScoredBatch(np.zeros((0, n_rel)), np.zeros((0, n_rel)), None)
        return ScoredBatch(torch.cat(scores).numpy(), torch.cat(raw).numpy(),
                           torch.cat(best).numpy() if best else None)
