"""Embedded (offline) text and vision backbones, image loading and the image-feature cache.
Submodules are imported lazily so that ``rocmre.backbones.images`` stays cheap to import."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TEXT_BACKBONES": "text",
    "DEFAULT_TEXT_BACKBONE": "text",
    "MPNET_INSTALL_COMMAND": "text",
    "TextBackbone": "text",
    "load_text_backbone": "text",
    "resolve_text_model_path": "text",
    "VISION_BACKBONES": "vision",
    "DEFAULT_VISION_BACKBONE": "vision",
    "VisionBackbone": "vision",
    "load_vision_backbone": "vision",
    "ImageFeatureCache": "cache",
    "default_cache_dir": "cache",
    "ImageLoadError": "images",
    "open_image": "images",
    "crop_box": "images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
