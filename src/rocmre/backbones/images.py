"""Image loading and box cropping with PIL and numpy only (no torchvision)."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["ImageLoadError", "ImageSource", "MAX_IMAGE_PIXELS", "MAX_ASPECT_RATIO", "open_image", "check_image",
           "check_image_size", "crop_box", "describe_source", "load_error_reason"]

#: Anything :func:`open_image` accepts.
ImageSource = str | Path | bytes | bytearray | memoryview | Image.Image

#: Largest decoded image accepted (width x height). Checked from the header, before decoding, so a tiny file that
#: would decode to gigabytes is refused cheaply; above it :class:`ImageLoadError`.
MAX_IMAGE_PIXELS = 40_000_000
#: Most elongated image that is resized as is. A longer side beyond ``MAX_ASPECT_RATIO`` times the shorter one is
#: centre-cropped before resizing (see ``rocmre.backbones.vision.resize_short_side``), so a 20000x1 strip costs no
#: more than a 20x1 one; the centre crop the backbones take is unchanged.
MAX_ASPECT_RATIO = 20.0


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


def check_image_size(size: tuple[int, int], label: str) -> None:
    """Raise :class:`ImageLoadError` for an empty image or one over :data:`MAX_IMAGE_PIXELS` pixels."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(label, f"the image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageLoadError(label, f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels, over "
                                    f"the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels")


def load_error_reason(exc: BaseException) -> str:
    """A readable reason for a PIL/OS error, without PIL's ``<_io.BytesIO object at 0x...>``."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image file (empty, truncated or another kind of file)"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(exc, Image.DecompressionBombError):
        return f"the image is too large to decode safely ({exc})"
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _opened(source: str | Path | bytes | bytearray | memoryview, label: str,
            formats: Sequence[str] | None = None) -> Iterator[Image.Image]:
    """``Image.open`` of a path or bytes (header only; only ``formats``, Pillow's names, when given), size-checked,
    with every failure an :class:`ImageLoadError`."""
    if isinstance(source, str | Path):
        fp: str | Path | io.BytesIO = Path(source)
    elif isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageLoadError(label, "no image data (0 bytes)")
        fp = io.BytesIO(bytes(source))
    else:
        raise TypeError(f"unsupported image source type {type(source).__name__}: expected a path, bytes or a PIL "
                        "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp, formats=formats)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(label, load_error_reason(exc)) from exc
    with image:
        check_image_size(image.size, label)
        try:
            yield image
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as exc:
            # OSError covers truncated data ("image file is truncated") and broken streams.
            raise ImageLoadError(label, load_error_reason(exc)) from exc


def open_image(source: ImageSource, name: str | None = None, formats: Sequence[str] | None = None) -> Image.Image:
    """Open ``source`` (a path, encoded bytes or a PIL image) fully decoded as RGB; ``formats`` (Pillow's names)
    restricts the decoders tried. :class:`ImageLoadError` naming the file when it is missing, corrupt or larger than
    :data:`MAX_IMAGE_PIXELS`."""
    label = name or describe_source(source)
    if isinstance(source, Image.Image):
        check_image_size(source.size, label)
        return _to_rgb(source)
    with _opened(source, label, formats) as image:
        image.load()
        return _to_rgb(image)


def check_image(source: str | Path | bytes, name: str | None = None, *, full: bool = False) -> tuple[int, int]:
    """Check cheaply that ``source`` decodes (header, size bound, JPEG at 1/8 scale, PNG checksums; ``full=True``
    decodes fully); returns its (width, height) or raises :class:`ImageLoadError`."""
    label = name or describe_source(source)
    with _opened(source, label) as image:
        size = image.size
        if full:
            image.load()
        elif image.format == "JPEG":
            image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
        elif image.format == "PNG":
            image.verify()
        else:
            image.load()
        return size


def box_pixels(size: tuple[int, int], box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Pixel rectangle ``(left, top, right, bottom)`` of a normalised ``(cx, cy, w, h)`` box.
    The rectangle is clamped to the image and is at least 1 px wide and high."""
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
    """Crop a normalised ``(x_center, y_center, width, height)`` box out of ``image`` (clamped, at least 1 px)."""
    return image.crop(box_pixels(image.size, box))
