"""Collating :class:`PairFeatures` into tensors, with image features looked up in a feature source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.data.record import Box
from rocmre.modeling.features import PairFeatures

TYPE_INDEX = {t: i for i, t in enumerate(ENTITY_TYPES)}


class ImageFeatureSource(Protocol):
    """Anything that gives (regions (R, D), pooled (D,)) for an image, optionally cropped to a box, or ``None``
    for an image it could not read and treats as missing (it raises instead when that is an error)."""

    def features(self, image: Path | bytes, box: Box | None = None) -> tuple[torch.Tensor, torch.Tensor] | None: ...


def padded_length(length: int, multiple: int | None) -> int:
    """``length`` rounded up to a multiple of ``multiple`` (None or 1: unchanged)."""
    return length if not multiple or multiple <= 1 else -(-length // multiple) * multiple


class PairCollator:
    """Pads token ids and gathers image features into a dict of tensors; an unreadable image counts as missing."""

    def __init__(self, pad_token_id: int, images: ImageFeatureSource | None, vision_dim: int, num_regions: int,
                 use_image: bool) -> None:
        self.pad_token_id = pad_token_id
        self.images = images
        self.vision_dim = vision_dim
        self.num_regions = num_regions
        self.use_image = use_image

    def _image(self, path: Path | bytes | None, box: Box | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if path is None or self.images is None:
            return None
        feats = self.images.features(path, box)
        if feats is None:  # unreadable: treated as missing
            return None
        regions, pooled = feats
        return regions.float(), pooled.float()

    def __call__(self, items: Sequence[PairFeatures], pad_to_multiple_of: int | None = None
                 ) -> dict[str, torch.Tensor]:
        """The batch's tensors; token ids padded to the longest item, rounded up to ``pad_to_multiple_of``."""
        bsz = len(items)
        length = padded_length(max(len(f.input_ids) for f in items), pad_to_multiple_of)
        input_ids = torch.full((bsz, length), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((bsz, length), dtype=torch.long)
        for i, f in enumerate(items):
            input_ids[i, : len(f.input_ids)] = torch.tensor(f.input_ids)
            attention[i, : len(f.input_ids)] = 1
        batch: dict[str, torch.Tensor] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "head_index": torch.tensor([f.head_index for f in items]),
            "tail_index": torch.tensor([f.tail_index for f in items]),
            "head_type": torch.tensor([TYPE_INDEX.get(f.head_type, TYPE_INDEX["unknown"]) for f in items]),
            "tail_type": torch.tensor([TYPE_INDEX.get(f.tail_type, TYPE_INDEX["unknown"]) for f in items]),
        }
        if all(f.label is not None for f in items):
            batch["labels"] = torch.tensor([f.label for f in items])
        if not self.use_image:
            return batch
        dim = self.vision_dim
        images = [self._image(f.image) for f in items]
        has_image = torch.tensor([img is not None for img in images], dtype=torch.bool)
        # a batch without any image carries no region tokens at all (most MNRE batches: far cheaper to fuse)
        n_reg = self.num_regions if has_image.any() else 0
        regions = torch.zeros(bsz, n_reg, dim)
        pooled = torch.zeros(bsz, dim)
        for i, img in enumerate(images):
            if img is not None:
                regions[i], pooled[i] = img
        n_crops = max(len(f.crops) for f in items)
        crop_feats = torch.zeros(bsz, n_crops, dim)
        crop_mask = torch.zeros(bsz, n_crops, dtype=torch.bool)
        for i, f in enumerate(items):
            for k, crop in enumerate(f.crops):
                feats = self._image(crop)
                if feats is not None:
                    crop_feats[i, k] = feats[1]
                    crop_mask[i, k] = True
        batch.update(image_regions=regions, image_pooled=pooled, has_image=has_image, crop_features=crop_feats,
                     crop_mask=crop_mask)
        if any(f.object_box is not None for f in items):
            obj = torch.zeros(bsz, 1, dim)
            obj_has_image = torch.zeros(bsz)
            boxes = torch.zeros(bsz, 4)
            obj_mask = torch.zeros(bsz, dtype=torch.bool)
            for i, f in enumerate(items):
                if f.object_box is None:
                    continue
                obj_mask[i] = True
                boxes[i] = torch.tensor(f.object_box)
                feats = self._image(f.image, f.object_box)
                if feats is not None:
                    obj[i, 0] = feats[1]
                    obj_has_image[i] = 1.0
            batch.update(object_features=obj, object_box=boxes, object_mask=obj_mask, object_has_image=obj_has_image)
        return batch
