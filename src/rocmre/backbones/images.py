"""Image loading and box cropping with PIL and numpy only (no torchvision)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image

__all__ = ["ImageLoadError", "ImageSource", "open_image", "crop_box", "describe_source"]

#: Anything :func:`open_image` accepts.
ImageSource = str | Path | bytes | Image.Image


class ImageLoadError(ValueError):
    """An image could not be read or decoded; ``source`` names the file (or the bytes)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot load image {source}: {reason}")


def describe_source(source: ImageSource) -> str:
    """A short human-readable name for an image source, used in error messages."""
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return f"<{type(source).__name__}>"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert to RGB; transparent pixels become white rather than black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Open ``source`` (a path, encoded image bytes or a PIL image) fully decoded as RGB.

    Raises :class:`ImageLoadError` naming the file (or ``name``) when it is missing, unreadable
    or corrupt.
    """
    label = name or describe_source(source)
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    try:
        if isinstance(source, str | Path):
            with Image.open(Path(source)) as image:
                image.load()
                return _to_rgb(image)
        if isinstance(source, bytes | bytearray | memoryview):
            with Image.open(io.BytesIO(bytes(source))) as image:
                image.load()
                return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # OSError covers missing files, UnidentifiedImageError and truncated data.
        raise ImageLoadError(label, f"{type(exc).__name__}: {exc}") from exc
    raise TypeError(f"unsupported image source type {type(source).__name__}")


def box_pixels(size: tuple[int, int], box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Pixel rectangle ``(left, top, right, bottom)`` of a normalised ``(cx, cy, w, h)`` box.

    The rectangle is clamped to the image and is at least 1 px wide and high.
    """
    if len(box) != 4:
        raise ValueError(f"box must be (x_center, y_center, width, height), got {box!r}")
    cx, cy, bw, bh = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (cx, cy, bw, bh)):
        raise ValueError(f"box has non-finite values: {box!r}")
    if bw < 0 or bh < 0:
        raise ValueError(f"box has negative width or height: {box!r}")
    width, height = size

    def span(center: float, extent: float, limit: int) -> tuple[int, int]:
        lo = math.floor(max(0.0, min(1.0, center - extent / 2)) * limit + 1e-6)
        hi = math.ceil(max(0.0, min(1.0, center + extent / 2)) * limit - 1e-6)
        lo = min(lo, limit - 1)
        hi = max(hi, lo + 1)
        return lo, min(hi, limit)

    left, right = span(cx, bw, width)
    top, bottom = span(cy, bh, height)
    return left, top, right, bottom


def crop_box(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """Crop a normalised ``(x_center, y_center, width, height)`` box out of ``image``.

    The crop is ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)`` scaled to the image size, clamped to
    the image and at least 1 px on each side.
    """
    return image.crop(box_pixels(image.size, box))
