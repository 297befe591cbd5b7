"""The service's request and response models (pydantic): what a client sends and what it gets back."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

EntityType = Literal["person", "organization", "location", "miscellaneous", "object", "unknown"]


def encodable(value: str) -> str:
    """``value`` unchanged when it can be UTF-8 encoded; a ValueError naming the first lone surrogate otherwise
    (JSON's ``\\ud800`` escapes decode to such characters, which no answer or model input can carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"character {e.start} is \\u{ord(value[e.start]):04x}, a lone surrogate (half of a UTF-16 "
                         "pair), which is not valid Unicode text") from None
    return value


def encodable_text(value: str | list[str]) -> str | list[str]:
    """A text or token list whose every string is valid Unicode (see :func:`encodable`)."""
    if isinstance(value, str):
        return encodable(value)
    for i, token in enumerate(value):
        try:
            encodable(token)
        except ValueError as e:
            raise ValueError(f"token {i}: {e}") from None
    return value


#: a string checked to be valid Unicode at the boundary (names, descriptions)
Text = Annotated[str, AfterValidator(encodable)]
#: a sentence or its tokens, checked the same way
TextOrTokens = Annotated[str | list[str], AfterValidator(encodable_text)]


class EntityRef(BaseModel):
    """An entity by token offsets (``start``/``end``), character offsets (``char_start``/``char_end``), an
    image-object ``box`` (tail only), or just a ``name`` to locate in the text."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, description="The mention (located in the text when no offsets are given).")
    start: int | None = Field(None, ge=0, description="First token (with a token-list text).")
    end: int | None = Field(None, ge=1, description="One past the last token.")
    char_start: int | None = Field(None, ge=0, description="First character (with a string text).")
    char_end: int | None = Field(None, ge=1, description="One past the last character.")
    box: list[float] | None = Field(None, min_length=4, max_length=4,
                                    description="Image object [cx, cy, w, h], normalised (tail only).")
    type: EntityType | None = None

    @model_validator(mode="after")
    def _complete(self) -> EntityRef:
        """Offsets come in pairs, end after start; one way of locating the entity; at least one given."""
        for first, last in (("start", "end"), ("char_start", "char_end")):
            a, b = getattr(self, first), getattr(self, last)
            if (a is None) != (b is None):
                given, missing = (first, last) if b is None else (last, first)
                raise ValueError(f"'{given}' needs '{missing}': give both {first!r} and {last!r}")
            if a is not None and b <= a:
                raise ValueError(f"'{last}' ({b}) must be greater than '{first}' ({a})")
        if self.start is not None and self.char_start is not None:
            raise ValueError("give token offsets ('start'/'end') or character offsets ('char_start'/'char_end'), "
                             "not both")
        if self.box is not None and (self.start is not None or self.char_start is not None):
            raise ValueError("an image object has a 'box' and no text offsets")
        if self.name is None and self.start is None and self.char_start is None and self.box is None:
            raise ValueError("give 'name', 'start'/'end', 'char_start'/'char_end' or 'box'")
        return self

    def to_spec(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _entity_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "mention"
    if isinstance(value, dict | EntityRef):
        return "entity"
    return None


EntitySpec = Annotated[
    Annotated[Text, Tag("mention")] | Annotated[EntityRef, Tag("entity")],
    Discriminator(_entity_kind, custom_error_type="entity_spec",
                  custom_error_message="an entity is a string that occurs in the text, or an object with 'name', "
                                       "'start'/'end', 'char_start'/'char_end' or 'box'")]
_UNION_TAGS = {"mention", "entity", "description-list", "relation-object"}


class PredictRequest(BaseModel):
    """One entity pair. ``text`` is a string or a token list; ``image`` is base64 (a ``data:`` URL is fine)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "Barack Obama visited Paris", "head": "Barack Obama", "tail": "Paris", "top_k": 3}]})

    text: TextOrTokens = Field(..., description="The sentence, or its tokens.")
    head: EntitySpec = Field(..., description="An entity string that occurs once, or an entity object.")
    tail: EntitySpec
    image: str | None = Field(None, description="The post's image, base64-encoded.")
    head_type: EntityType | None = None
    tail_type: EntityType | None = None
    top_k: int = Field(3, ge=1, le=100, description="Alternatives to return.")


class Candidate(BaseModel):
    relation: str
    score: float
    description: str | None = None


class PredictResponse(BaseModel):
    """The retrieved relation, its score and matched description, the top-k, and the resolved entities."""

    relation: str
    score: float
    description: str | None
    top_k: list[Candidate]
    head: dict[str, Any]
    tail: dict[str, Any]
    has_image: bool


class RelationInfo(BaseModel):
    name: str
    descriptions: list[str]
    examples: int = Field(0, description="Labelled examples the relation was added with (few-shot prototype).")


class RelationsResponse(BaseModel):
    model_type: str
    negative_label: str
    relations: list[RelationInfo]


class AddRelationsResponse(BaseModel):
    added: list[str] = Field(..., description="New relation names (others got extra descriptions).")
    relations: int = Field(..., description="Relations the model now retrieves from.")


class HealthResponse(BaseModel):
    status: str
    model_type: str
    relations: int
    version: str


class ErrorResponse(BaseModel):
    detail: str
    candidates: list[Any] | None = None


class RelationExample(BaseModel):
    """A labelled pair of a relation (the fields of a PredictRequest, without image and top_k)."""

    model_config = ConfigDict(extra="forbid")

    text: TextOrTokens = Field(..., description="The sentence, or its tokens.")
    head: EntitySpec
    tail: EntitySpec
    head_type: EntityType | None = None
    tail_type: EntityType | None = None


class RelationSpec(BaseModel):
    """A relation to add: descriptions (templates with {head}/{tail} allowed), labelled examples, type signature."""

    model_config = ConfigDict(extra="forbid")

    descriptions: list[Text] = Field(default_factory=list)
    examples: list[RelationExample] = Field(default_factory=list)
    head_types: list[EntityType] = Field(default_factory=list)
    tail_types: list[EntityType] = Field(default_factory=list)
    score_offset: float | None = Field(None, allow_inf_nan=False, ge=-10.0, le=10.0,
                                       description="Added to the relation's score before the decision (a negative "
                                                   "offset keeps a new relation from taking trained ones' pairs).")
    none_margin: float | None = Field(None, allow_inf_nan=False, ge=-10.0, le=10.0,
                                      description="The extra margin over None the relation must clear to be the "
                                                  "answer (its ranking among relations unchanged).")


def _relation_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "description-list"
    if isinstance(value, dict | RelationSpec):
        return "relation-object"
    return None


RelationValue = Annotated[
    Annotated[list[Text], Tag("description-list")] | Annotated[RelationSpec, Tag("relation-object")],
    Discriminator(_relation_kind, custom_error_type="relation_spec",
                  custom_error_message="a relation is a list of descriptions, or an object with 'descriptions', "
                                       "'examples', 'head_types', 'tail_types', 'score_offset', 'none_margin'")]
RelationsBody = TypeAdapter(dict[Text, RelationValue])
PredictBatch = TypeAdapter(list[PredictRequest])
