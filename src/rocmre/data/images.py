"""Where a record's image is, and what happens when it is missing."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from rocmre.data.record import DataFormatError


class MissingImagePolicy(StrEnum):
    """``mark`` (default): the record keeps a "no image" marker and is counted. ``error``: stop with an error."""

    MARK = "mark"
    ERROR = "error"


def resolve_image(image_dir: Path | None, image_id: str | None, policy: MissingImagePolicy, *,
                  path: str | Path, line: int, field: str = "img_id") -> Path | None:
    """The image file for ``image_id`` under ``image_dir``, or None (never a substitute image).

    Only existence is checked here (images load lazily); a file that exists but cannot be decoded
    is reported when it is loaded.
    """
    if image_id is None:
        return None
    if image_dir is not None:
        candidate = image_dir / image_id
        if candidate.is_file():
            return candidate
    if policy is MissingImagePolicy.ERROR:
        raise DataFormatError(f"image {image_id!r} not found in {image_dir}", path, line, field)
    return None
