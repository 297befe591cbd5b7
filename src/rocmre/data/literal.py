"""Safe parsing of the one-Python-literal-per-line files used by MNRE and MORE (never ``eval``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rocmre.data.record import DataFormatError


def iter_literal_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of each non-blank line."""
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.strip()
            if text:
                yield lineno, text


def parse_literal(text: str, path: Path, line: int) -> Mapping[str, Any]:
    """Parse one dict literal with :func:`ast.literal_eval`, or raise a located error."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise DataFormatError(f"not a Python/JSON literal ({type(e).__name__}: {e})", path, line) from None
    if not isinstance(value, Mapping):
        raise DataFormatError(f"expected a dict, got {type(value).__name__}", path, line)
    return value


def require(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, line: int,
            field: str | None = None) -> Any:
    """``d[key]`` checked for presence and type."""
    name = field or key
    if key not in d:
        raise DataFormatError("missing", path, line, name)
    value = d[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataFormatError(f"expected {expected}, got {type(value).__name__}", path, line, name)
    return value


def parse_tokens(d: Mapping[str, Any], path: Path, line: int, key: str = "token") -> list[str]:
    tokens = require(d, key, list, path, line)
    if not tokens:
        raise DataFormatError("empty token list", path, line, key)
    if not all(isinstance(t, str) for t in tokens):
        raise DataFormatError("every token must be a string", path, line, key)
    return list(tokens)


def parse_span(entity: Mapping[str, Any], path: Path, line: int, field: str) -> tuple[int, int]:
    pos = require(entity, "pos", (list, tuple), path, line, f"{field}.pos")
    if len(pos) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos):
        raise DataFormatError(f"expected [start, end] integers, got {pos!r}", path, line, f"{field}.pos")
    return int(pos[0]), int(pos[1])


def entity_name(entity: Mapping[str, Any], path: Path, line: int, field: str) -> str:
    name = require(entity, "name", (str, list), path, line, f"{field}.name")
    if isinstance(name, list):
        name = " ".join(str(x) for x in name)
    if not name.strip():
        raise DataFormatError("empty entity name", path, line, f"{field}.name")
    return name


def load_torch_index(path: Path, what: str, expected: str) -> Mapping[Any, Any]:
    """A dict saved with ``torch.save`` (MNRE crop index, MORE object index), loaded without unpickling code."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise DataFormatError(f"cannot read the {what} ({type(e).__name__}: {e})", path) from None
    if not isinstance(data, Mapping):
        raise DataFormatError(f"expected {expected}, got {type(data).__name__}", path)
    return data
