"""Declarative configuration of a relation model (saved beside its weights as ``config.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: whom the type prior penalises (ModelConfig.type_prior_scope; rocmre.modeling.decision)
TypePriorScope = Literal["all", "added_vs_trained"]


class ModelConfig(BaseModel):
    """Everything that determines a model's architecture and its retrieval behaviour."""

    model_config = ConfigDict(extra="forbid")

    model_type: Literal["roc", "classifier"] = "roc"
    # backbones
    text_backbone: str = "minilm-l6"
    vision_backbone: str = "efficientnet-lite0"
    vision_dim: int | None = None  # filled in from the vision backbone when the model is built
    num_regions: int | None = None
    # structural prompts
    entity_tagger: Literal["spacy", "none"] = "spacy"
    use_types: bool = True
    use_positions: bool = True
    max_length: int = Field(128, ge=16)
    # image branch
    use_image: bool = True
    use_crops: bool = True
    max_crops: int = Field(3, ge=0)
    # fusion and pair head
    fusion_layers: int = Field(2, ge=0)
    # the pretrained word-embedding table is not trained, only the rows of the added entity markers: no dense
    # gradient over the table and no optimizer update of it, a cheaper step on a CPU (benchmarks/cpu_speed.md)
    frozen_word_embeddings: bool = True
    # the text encoder's embeddings (but the marker rows) and its first N layers are not trained (N >= 1): a
    # cheaper backward pass on a CPU (benchmarks/cpu_speed.md); 0 trains the whole encoder
    frozen_text_layers: int = Field(2, ge=0)
    # false: the entity-marker rows are fixed too. With frozen_text_layers = N, nothing below layer N then trains:
    # those layers run without dropout and without a backward pass, and training computes their output once per
    # record (train.cache_frozen_states); a fixed marker should start from a meaningful word (marker_init)
    trainable_markers: bool = False
    # one pretrained word (a single word piece) per marker <h> </h> <t> </t>, whose embedding the marker's row
    # starts from; None: the text encoder's default initialisation of added tokens
    marker_init: list[str] | None = Field(default_factory=lambda: ["<", ">", "{", "}"])
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    pair_dim: int = Field(384, ge=8)
    # "markers": the pair vector is a learned map of the head and tail markers' states; "markers_plus_mean": the
    # text's mean-pooled states plus a learned residual of the markers' states that starts at zero (needs pair_dim
    # equal to the text encoder's width), so training starts from the pretrained sentence vector, the space of a
    # frozen description tower, instead of learning a map into it from the trained relations alone
    pair_pooling: Literal["markers", "markers_plus_mean"] = "markers"
    # relation semantic encoder (ROC)
    descriptions: str = "mnre"
    description_mode: Literal["descriptions", "label_names"] = "descriptions"
    # a data relation the description set lacks (an LLM may fail to describe one): describe it by its bare label
    # name, with a warning and "method": "label-name" in its provenance, or stop ("error")
    missing_descriptions: Literal["error", "label_name"] = "label_name"
    max_descriptions: int | None = Field(None, ge=1)
    # a frozen copy of the pretrained text encoder describes the relations (only the projection trains): the
    # description space stays anchored to the sentence encoder, and description states are computed once
    freeze_description_encoder: bool = False
    # "identity": the description vectors are the description tower's mean-pooled states themselves (no learned
    # map; needs pair_dim equal to the text encoder's width): with a frozen tower, the pair encoder must land in
    # the pretrained sentence space, where a relation never trained on is described as well as the others
    description_projection: Literal["learned", "identity"] = "learned"
    description_max_length: int = Field(48, ge=8)
    # contrastive retrieval
    temperature: float = Field(0.05, gt=0.0)
    # few-shot relations (prediction only): a relation added with labelled examples scores
    # (1 - w) * description score + w * cosine to the mean of its examples' normalised pair vectors; 0.1 is the
    # weight best on validation over every record in benchmarks/results/zero_shot.md (0.5 cost trained relations
    # 25-30 F1 points); models trained before keep the weight saved in their config
    prototype_weight: float = Field(0.1, ge=0.0, le=1.0)
    type_constraint: bool = False
    type_penalty: float = Field(0.2, ge=0.0)
    # which relations the type prior (type_constraint) penalises: "all", or "added_vs_trained": every relation, but
    # only to decide whether an added relation (not in trained_labels) beats the trained ones (the
    # trained relations keep their own order and None decision; rocmre.modeling.decision)
    type_prior_scope: TypePriorScope = "all"
    none_margin: float = 0.0
    # label set (filled in at training time)
    labels: list[str] = Field(default_factory=list)
    # the relations the model was trained on (filled in at training time; empty for models saved before)
    trained_labels: list[str] = Field(default_factory=list)
    negative_label: str = "None"
