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
    """The image file for ``image_id`` under ``image_dir``, or None; under ``error`` it is also checked to decode."""
    if image_id is None:
        return None
    if image_dir is not None:
        candidate = image_dir / image_id
        if candidate.is_file():
            if policy is MissingImagePolicy.ERROR:
                check_readable(candidate, path=path, line=line, field=field)
            return candidate
    if policy is MissingImagePolicy.ERROR:
        raise DataFormatError(f"image {image_id!r} not found in {image_dir}", path, line, field)
    return None


def check_readable(image: Path, *, path: str | Path, line: int | None, field: str = "img_id") -> None:
    """Raise :class:`DataFormatError` at ``path:line`` (naming ``image``) when ``image`` does not decode."""
    from rocmre.backbones.images import ImageLoadError, check_image

    try:
        check_image(image)
    except ImageLoadError as e:
        raise DataFormatError(str(e), path, line, field) from None
