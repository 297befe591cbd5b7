"""The record type every reader produces and every model consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Normalised box of an image object: (x_center, y_center, width, height), each in [0, 1].
Box = tuple[float, float, float, float]


class DataFormatError(ValueError):
    """Bad input, located by file, line and field."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class Entity:
    """One relation argument: a token span ``[start, end)``, or a normalised ``box`` for an image object; ``type``
    is optional (models tag types themselves)."""

    name: str
    start: int | None = None
    end: int | None = None
    type: str | None = None
    box: Box | None = None

    @property
    def is_object(self) -> bool:
        """True for an image object (no token span)."""
        return self.start is None

    @property
    def span(self) -> tuple[int, int]:
        if self.start is None or self.end is None:
            raise ValueError(f"entity {self.name!r} is an image object and has no token span")
        return self.start, self.end


@dataclass
class RelationRecord:
    """One entity pair in one text (and optionally one image), with its relation label."""

    tokens: list[str]
    head: Entity
    tail: Entity
    relation: str | None = None
    image_id: str | None = None
    image_path: Path | None = None
    crop_paths: list[Path] = field(default_factory=list)
    source: str = ""

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def has_image(self) -> bool:
        """Whether the record's image file exists (checked when the record was read)."""
        return self.image_path is not None


def entity_tokens_match(tokens: list[str], name: str) -> bool:
    """A span matches its name when the tokens equal the name, ignoring whitespace.
    MNRE-2 joins tokens with spaces; MNRE-1 writes detokenised names (``#Bears`` for ``# Bears``)."""
    return "".join(tokens) == "".join(name.split())


def check_entity_span(tokens: list[str], entity: Entity, *, path: str | Path | None, line: int | None,
                      field_name: str) -> None:
    """Raise :class:`DataFormatError` when a text entity's span is out of range or misnamed."""
    if entity.is_object:
        return
    start, end = entity.span
    if not (0 <= start < end <= len(tokens)):
        raise DataFormatError(f"span [{start}, {end}) is out of range for {len(tokens)} tokens",
                              path, line, f"{field_name}.pos")
    if not entity_tokens_match(tokens[start:end], entity.name):
        raise DataFormatError(
            f"span [{start}, {end}) covers {' '.join(tokens[start:end])!r}, not the entity name {entity.name!r}",
            path, line, f"{field_name}.pos")
