"""A relation model's configuration, split by role: :class:`ModelConfig` (the architecture; defaults are the
recipe), :class:`TrainedModelConfig` (plus fitted state, ``config.json``) and :class:`DecisionConfig` (how scores
become answers, ``decision_config.json``)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: whom the type prior penalises (DecisionConfig.type_prior_scope; rocmre.modeling.decision)
TypePriorScope = Literal["all", "added_vs_trained"]
#: the pretrained words (one word piece each) the entity markers <h> </h> <t> </t> start from in a frozen prefix
MARKER_WORDS = ("<", ">", "{", "}")
#: tokens of a relation description the description encoder reads
DESCRIPTION_MAX_LENGTH = 48
#: removed settings (docs/experiments.md): the one value an older config may hold ("off"); ANY: any value
ANY = object()
REMOVED = {"cosine_margin": 0.0, "pair_pair_weight": 0.0, "pair_pair_temperature": ANY, "prototype_centering": False,
           "sentence_prior_weight": None, "sentence_prior_view": ANY, "sentence_prior_backbone": ANY,
           "separate_description_encoder": False, "pair_activation": "gelu", "fusion_heads": None,
           "description_pooling": "mean", "learnable_temperature": True, "description_max_length": 48,
           "temperature": ANY}
#: fields of a model saved before decision_config.json: DecisionConfig field -> its key in the old config.json
LEGACY_DECISION_KEYS = {"type_prior": "type_constraint", "type_penalty": "type_penalty",
                        "type_prior_scope": "type_prior_scope", "none_margin": "none_margin",
                        "prototype_weight": "prototype_weight"}
#: what training fills in (TrainedModelConfig); an older run config carried them under ``model``
FITTED = ("vision_dim", "num_regions", "labels", "trained_labels", "negative_label")


def check_removed(data: dict[str, Any], where: str, removed: dict[str, Any]) -> None:
    """Drop the ``removed`` settings of an older config that hold their "off" value; refuse any other value."""
    for key, off in removed.items():
        if key in data:
            value = data.pop(key)
            if off is not ANY and value != off:
                raise ValueError(f"{where}.{key}={value!r}: this setting was removed from rocmre (see "
                                 f"docs/experiments.md); only {off!r} is still read")


def _frozen_prefix(data: dict[str, Any]) -> None:
    """An older config's frozen_word_embeddings / trainable_markers / marker_init as the frozen_text_layers they
    now follow from (only the combinations the recipe and the old defaults used)."""
    old = {k: data.pop(k) for k in ("frozen_word_embeddings", "trainable_markers", "marker_init") if k in data}
    if not old:
        return
    layers = data.setdefault("frozen_text_layers", 0)  # the old default
    markers = old.get("marker_init")
    nothing_frozen = (layers == 0 and not old.get("frozen_word_embeddings", False)
                      and old.get("trainable_markers", True) and markers is None)
    prefix = (isinstance(layers, int) and layers >= 1 and not old.get("trainable_markers", True)
              and markers is not None and tuple(markers) == MARKER_WORDS)
    if not (nothing_frozen or prefix):
        raise ValueError(f"model: frozen_word_embeddings / trainable_markers / marker_init {old} with "
                         f"frozen_text_layers={layers}: these follow from frozen_text_layers now (N >= 1: the word "
                         f"embeddings, the markers (from {' '.join(MARKER_WORDS)}) and the N lowest layers fixed; "
                         "0: the whole encoder trains); other combinations were removed (docs/experiments.md)")


class ModelConfig(BaseModel):
    """The architecture of a relation model (``RunConfig.model``); the defaults are the recommended recipe."""

    model_config = ConfigDict(extra="forbid")

    model_type: Literal["roc", "classifier"] = "roc"
    # backbones
    text_backbone: str = "minilm-l6"
    # a trained model folder (e.g. relation pre-training) whose weights start this model: every weight of the same
    # name and shape is copied (a classifier head over other labels is not); the backbones must match
    init_from: str | None = None
    vision_backbone: str = "efficientnet-lite0"
    # structural prompts
    entity_tagger: Literal["spacy", "none"] = "spacy"
    use_types: bool = True
    use_positions: bool = True
    max_length: int = Field(128, ge=16)
    # image branch: the image, and up to max_crops visual-grounding crops (0: none)
    use_image: bool = True
    max_crops: int = Field(3, ge=0)
    # fusion and pair head
    fusion_layers: int = Field(2, ge=0)
    # N >= 1: word embeddings, markers and the N lowest text layers frozen, their output cached (docs/training.md)
    frozen_text_layers: int = Field(2, ge=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    pair_dim: int = Field(384, ge=8)
    # "markers": a learned map of the marker states; "markers_plus_mean": mean-pooled states plus a zero-initialised
    # residual of the markers (needs pair_dim equal to the encoder width)
    pair_pooling: Literal["markers", "markers_plus_mean"] = "markers"
    # relation semantic encoder (ROC)
    descriptions: str = "mnre"
    description_mode: Literal["descriptions", "label_names"] = "descriptions"
    # a data relation with no description: described by its label name with a warning, or "error"
    missing_descriptions: Literal["error", "label_name"] = "label_name"
    max_descriptions: int | None = Field(None, ge=1)
    # a frozen copy of the pretrained text encoder describes the relations (only the projection trains)
    freeze_description_encoder: bool = False
    # "identity": description vectors are the tower's mean-pooled states (needs pair_dim equal to the encoder width)
    description_projection: Literal["learned", "identity"] = "learned"

    @model_validator(mode="before")
    @classmethod
    def _older_config(cls, data: Any) -> Any:
        """Read the config of an older rocmre: removed settings at their "off" value are dropped (others refused),
        merged ones are mapped, and decision settings and fitted state it kept here are refused or dropped."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        check_removed(data, "model", REMOVED)
        _frozen_prefix(data)
        if data.pop("use_crops", True) is False:
            data["max_crops"] = 0
        defaults = DecisionConfig()
        for field, key in LEGACY_DECISION_KEYS.items():
            if key in data and key not in cls.model_fields:
                value = data.pop(key)
                if value != getattr(defaults, field):
                    raise ValueError(f"model.{key}={value!r} is a decision setting now: set it on the trained model "
                                     f"(RelationExtractor.set_decision({field}=...), saved as decision_config.json)")
        for key in FITTED:
            if key in data and key not in cls.model_fields:
                value = data.pop(key)
                if key in ("vision_dim", "num_regions") and value is not None:
                    raise ValueError(f"model.{key} is filled in from the vision backbone now, not configured")
        return data

    @property
    def marker_init(self) -> tuple[str, ...] | None:
        """The words the entity markers start from: :data:`MARKER_WORDS` in a frozen prefix, else ``None`` (the
        text encoder's initialisation of added tokens)."""
        return MARKER_WORDS if self.frozen_text_layers else None


class TrainedModelConfig(ModelConfig):
    """A model's ``config.json``: its architecture and what training filled in (not configured by a user)."""

    vision_dim: int | None = None  # from the vision backbone when the model is built
    num_regions: int | None = None
    labels: list[str] = Field(default_factory=list)
    # the relations the model was trained on (empty for models saved before this field)
    trained_labels: list[str] = Field(default_factory=list)
    negative_label: str = "None"


class DecisionConfig(BaseModel):
    """How a model's scores become answers (:mod:`rocmre.modeling.decision`), saved beside the weights as
    ``decision_config.json``. Frozen: change it with ``RelationExtractor.set_decision(**changes)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # soft entity-type prior (ROC): a relation whose type signature the tagged types contradict loses type_penalty/side
    type_prior: bool = False
    type_penalty: float = Field(0.2, ge=0.0)
    # "all", or "added_vs_trained": the prior only decides whether an added relation beats the trained ones
    type_prior_scope: TypePriorScope = "all"
    # added to the negative label's score; tuned on validation
    none_margin: float = 0.0
    # few-shot relations score (1 - w) * description score + w * cosine to their examples' mean pair vector
    prototype_weight: float = Field(0.1, ge=0.0, le=1.0)

    @field_validator("type_prior_scope", mode="before")
    @classmethod
    def _scope(cls, value: Any) -> Any:
        scopes = get_args(TypePriorScope)
        if value not in scopes:
            raise ValueError(f"type_prior_scope must be one of {', '.join(scopes)}, not {value!r}")
        return value

    @classmethod
    def from_legacy(cls, config: dict[str, Any]) -> DecisionConfig:
        """The decision settings an older ``config.json`` kept among the model's (``config`` is left as it is)."""
        return cls.model_validate({field: config[key] for field, key in LEGACY_DECISION_KEYS.items() if key in config})
