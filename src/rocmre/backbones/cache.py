"""On-disk (safetensors) and in-memory cache of frozen image features, keyed by image content."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rocmre.backbones.images import (
    ImageLoadError,
    ImageSource,
    crop_box,
    describe_source,
    load_error_reason,
    open_image,
)
from rocmre.paths import default_cache_dir

if TYPE_CHECKING:
    from rocmre.backbones.vision import VisionBackbone

__all__ = ["default_cache_dir", "ImageFeatureCache", "BoxLike", "UPLOAD_ITEMS", "is_in_memory"]

logger = logging.getLogger(__name__)

BoxLike = tuple[float, float, float, float] | Sequence[float] | None

#: Bump when the cache file layout or key recipe changes.
CACHE_FORMAT_VERSION = "1"


def _box_text(box: BoxLike) -> str:
    if box is None:
        return "full"
    values = [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or min(values[2:]) < 0:
        raise ValueError(f"box must be finite (x_center, y_center, width, height), got {box!r}")
    return ",".join(f"{v:.4f}" for v in values)


#: How many features of in-memory images (bytes, PIL images: uploads) are kept; they never go to disk.
UPLOAD_ITEMS = 256


def is_in_memory(image: ImageSource) -> bool:
    """True for image bytes or a PIL image (an upload), False for a file path."""
    return not isinstance(image, str | Path)


class ImageFeatureCache:
    """Frozen vision features computed once per (image content, backbone, preprocessing, box).
    File images are cached on disk (``cache_dir/"image-features"/<backbone>/``) and in a ``memory_items`` LRU; in-memory
    images only in a separate ``upload_items`` LRU. Returned tensors are shared: treat them as read-only."""

    def __init__(self, backbone: VisionBackbone, cache_dir: Path | None = None, batch_size: int = 16,
                 show_progress: bool = True, memory_items: int = 512, upload_items: int = UPLOAD_ITEMS) -> None:
        from rocmre.backbones.vision import safe_name

        self.backbone = backbone
        self.root = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
        self.directory = self.root / "image-features" / safe_name(backbone.name)
        self.batch_size = max(1, int(batch_size))
        self.show_progress = show_progress
        self.memory_items = max(0, int(memory_items))
        self.upload_items = max(0, int(upload_items))
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._uploads: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._path_hashes: dict[tuple[str, int, int], str] = {}

    # ----------------------------------------------------------------- keys
    def _read(self, image: ImageSource) -> tuple[str, bytes | Image.Image | None]:
        """(content sha256, payload to decode). Path hashes are memoised by (path, mtime, size)."""
        if isinstance(image, str | Path):
            path = Path(image)
            try:
                stat = path.stat()
            except OSError as exc:
                raise ImageLoadError(str(image), load_error_reason(exc)) from exc
            memo = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
            if memo in self._path_hashes:
                return self._path_hashes[memo], None
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ImageLoadError(str(image), load_error_reason(exc)) from exc
            digest = hashlib.sha256(data).hexdigest()
            self._path_hashes[memo] = digest
            return digest, data
        if isinstance(image, bytes | bytearray | memoryview):
            data = bytes(image)
            return hashlib.sha256(data).hexdigest(), data
        if isinstance(image, Image.Image):
            h = hashlib.sha256(f"pil|{image.mode}|{image.size}|".encode())
            h.update(image.tobytes())
            return h.hexdigest(), image
        raise TypeError(f"unsupported image source type {type(image).__name__}")

    def key(self, image: ImageSource, box: BoxLike = None) -> str:
        """The cache key of an image (by content) and optional normalised box."""
        return self._key(self._read(image)[0], box)

    def _key(self, content: str, box: BoxLike) -> str:
        recipe = "|".join(
            [CACHE_FORMAT_VERSION, content, self.backbone.name, self.backbone.preprocess_id, _box_text(box)]
        )
        return hashlib.sha256(recipe.encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        """Where the entry with ``key`` is stored."""
        return self.directory / key[:2] / f"{key}.safetensors"

    # -------------------------------------------------------------- storage
    def _remember(self, key: str, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        _lru_put(self._memory, key, value, self.memory_items)

    def _lookup(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            regions, pooled = tensors["regions"], tensors["pooled"]
        except (SafetensorError, OSError, KeyError) as exc:
            logger.warning("ignoring unreadable feature cache file %s: %s", path, exc)
            return None
        if regions.dim() != 2 or pooled.shape != (regions.shape[1],):
            logger.warning("ignoring feature cache file %s with unexpected shapes", path)
            return None
        value = (regions, pooled)
        self._remember(key, value)
        return value

    def _store(self, key: str, regions: torch.Tensor, pooled: torch.Tensor, source: str, box: BoxLike) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "backbone": self.backbone.name,
            "preprocess": self.backbone.preprocess_id,
            "box": _box_text(box),
            "source": source[:200],
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"regions": regions.contiguous(), "pooled": pooled.contiguous()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._remember(key, (regions, pooled))

    def _remember_upload(self, key: str, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        _lru_put(self._uploads, key, value, self.upload_items)

    def _compute(self, items: list[tuple[str, ImageSource | bytes, BoxLike, str]],
                 persist: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Decode, crop and encode a batch of (key, payload, box, source name); store the results on disk (and
        the memory LRU) when ``persist``, else only in the LRU of uploads. Returns the features in order."""
        images = []
        for _, payload, box, name in items:
            image = open_image(payload, name=name)
            images.append(crop_box(image, tuple(box)) if box is not None else image)
        regions, pooled = self.backbone.encode(images)
        # The per-item clones happen outside inference mode, so callers may use them in autograd graphs.
        out = []
        for i, (key, _, box, name) in enumerate(items):
            value = (regions[i].clone(), pooled[i].clone())
            if persist:
                self._store(key, *value, name, box)
            else:
                self._remember_upload(key, value)
            out.append(value)
        return out

    # ------------------------------------------------------------------ API
    def features(self, image: ImageSource, box: BoxLike = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Region features ``(R, D)`` and pooled vector ``(D,)`` (float32, CPU) of an image or a box in it; raises
        :class:`ImageLoadError` when the image cannot be read."""
        content, payload = self._read(image)
        key = self._key(content, box)
        if key in self._uploads:
            self._uploads.move_to_end(key)
            self.hits += 1
            return self._uploads[key]
        cached = self._lookup(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        if is_in_memory(image):
            return self._compute([(key, self._payload(image, payload), box, describe_source(image))], persist=False)[0]
        self._compute([(key, self._payload(image, payload), box, describe_source(image))])
        value = self._lookup(key)
        if value is None:
            raise OSError(f"feature cache entry {self.path_for(key)} vanished right after it was written")
        return value

    @staticmethod
    def _payload(image: ImageSource, payload: bytes | Image.Image | None) -> ImageSource:
        """The bytes to decode; re-reads a file whose hash was memoised without keeping its bytes."""
        if payload is not None:
            return payload
        try:
            return Path(image).read_bytes()  # type: ignore[arg-type]
        except OSError as exc:
            raise ImageLoadError(str(image), load_error_reason(exc)) from exc

    def contains(self, image: ImageSource, box: BoxLike = None) -> bool:
        """Whether the features of ``image`` (and ``box``) are cached (in memory or on disk)."""
        key = self.key(image, box)
        return key in self._memory or key in self._uploads or self.path_for(key).is_file()

    def precompute(self, sources: Iterable[ImageSource], boxes: Iterable[BoxLike] | None = None) -> dict[str, int]:
        """Compute and store the features of every source (optionally one box each) in batches, skipping cached ones and
        counting unreadable ones. Returns ``{"computed", "cached", "failed"}``."""
        sources = list(sources)
        box_list: list[BoxLike] = list(boxes) if boxes is not None else [None] * len(sources)
        if len(box_list) != len(sources):
            raise ValueError(f"got {len(sources)} sources but {len(box_list)} boxes")
        counts = {"computed": 0, "cached": 0, "failed": 0}
        pending: list[tuple[str, ImageSource | bytes, BoxLike, str]] = []
        queued: set[str] = set()

        def flush() -> None:
            if not pending:
                return
            try:
                self._compute(pending)
                counts["computed"] += len(pending)
                self.misses += len(pending)
            except ImageLoadError:
                for item in pending:  # find the bad one(s) and keep the rest
                    try:
                        self._compute([item])
                        counts["computed"] += 1
                        self.misses += 1
                    except ImageLoadError as exc:
                        logger.warning("%s", exc)
                        counts["failed"] += 1
            pending.clear()

        progress = tqdm(total=len(sources), desc=f"image features ({self.backbone.name})", unit="img",
                        disable=not self.show_progress)
        with progress:
            for source, box in zip(sources, box_list, strict=True):
                name = describe_source(source)
                if is_in_memory(source):
                    try:
                        before = self.misses
                        self.features(source, box)
                        counts["computed" if self.misses > before else "cached"] += 1
                    except (ImageLoadError, ValueError) as exc:
                        logger.warning("%s", exc)
                        counts["failed"] += 1
                    progress.update(1)
                    continue
                try:
                    content, payload = self._read(source)
                    key = self._key(content, box)
                except (ImageLoadError, ValueError) as exc:
                    logger.warning("%s", exc)
                    counts["failed"] += 1
                    progress.update(1)
                    continue
                if key in queued or key in self._memory or self.path_for(key).is_file():
                    counts["cached"] += 1
                    progress.update(1)
                    continue
                try:
                    payload = self._payload(source, payload)
                except ImageLoadError as exc:
                    logger.warning("%s", exc)
                    counts["failed"] += 1
                    progress.update(1)
                    continue
                pending.append((key, payload, box, name))
                queued.add(key)
                if len(pending) >= self.batch_size:
                    done = len(pending)
                    flush()
                    progress.update(done)
            done = len(pending)
            flush()
            progress.update(done)
        return counts


def _lru_put(store: OrderedDict, key: str, value: object, limit: int) -> None:
    """Insert ``key`` as the most recent entry of ``store`` and drop the oldest beyond ``limit`` (0: keep none)."""
    if limit == 0:
        return
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)
