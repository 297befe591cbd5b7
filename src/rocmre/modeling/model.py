"""The relation model: ROC (retrieval over relation descriptions) or the classification baseline.

Both share :class:`~rocmre.modeling.fusion.MultimodalPairEncoder`; they differ only in the head:
ROC scores a pair against every relation's description vectors (cosine similarity over a temperature,
trained with InfoNCE), the classifier applies a linear layer and cross-entropy.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.descriptions.store import RelationDescriptions
from rocmre.modeling.config import ModelConfig
from rocmre.modeling.fusion import MultimodalPairEncoder

KNOWN_VISION_SHAPES = {"efficientnet-lite0": (1280, 49)}
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DESCRIPTIONS_NAME = "descriptions.json"
TEXT_ENCODER_DIR = "text_encoder"


@dataclass
class RelationModelOutput:
    """What a forward pass returns."""

    logits: torch.Tensor  # (B, R): the scores training uses (ROC: cosine / temperature)
    scores: torch.Tensor  # (B, R): ROC: cosine similarity after type constraints; classifier: logits
    pair_embeddings: torch.Tensor  # (B, D)
    loss: torch.Tensor | None = None
    best_description: torch.Tensor | None = None  # (B, R) index of each relation's best-matching description


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch pair-pair term: pairs with the same relation attract, others repel (SupCon)."""
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e4)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    has_pos = positives.any(1)
    if not has_pos.any():
        return z.sum() * 0.0
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    mean_pos = (log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
    return -mean_pos[has_pos].mean()


class RelationModel(nn.Module):
    """ROC or classifier over a multimodal entity-pair encoder. Use :meth:`build` or :meth:`from_pretrained`."""

    def __init__(self, config: ModelConfig, text_model: nn.Module, tokenizer, descriptions: RelationDescriptions):
        super().__init__()
        if config.vision_dim is None or config.num_regions is None:
            raise ValueError("config.vision_dim and config.num_regions must be set (use RelationModel.build)")
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = MultimodalPairEncoder(config, text_model, config.vision_dim, config.num_regions)
        hidden = self.encoder.hidden
        self.descriptions = descriptions
        if config.model_type == "roc":
            self.description_encoder = copy.deepcopy(text_model) if config.separate_description_encoder else None
            self.description_projection = nn.Linear(hidden, config.pair_dim)
            self.log_inverse_temperature = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)),
                                                        requires_grad=config.learnable_temperature)
            self.classifier = None
        else:
            self.classifier = nn.Linear(config.pair_dim, len(config.labels))
        self._description_cache: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None

    # -- relation set -------------------------------------------------------------------------
    @property
    def relation_labels(self) -> list[str]:
        """The relations the model can answer with, in score order."""
        if self.config.model_type == "roc":
            return self.descriptions.labels
        return list(self.config.labels)

    def set_descriptions(self, descriptions: RelationDescriptions) -> None:
        """Replace the relation set (ROC only: new relations are retrieved at once, without retraining)."""
        if self.config.model_type != "roc":
            raise TypeError("a classification model has a fixed label set: relations cannot be added or removed")
        if self.config.negative_label not in descriptions:
            raise ValueError(f"the negative label {self.config.negative_label!r} must keep its description")
        self.descriptions = descriptions
        self.config.labels = descriptions.labels
        self._description_cache = None

    def _description_texts(self, descriptions: RelationDescriptions) -> list[list[str]]:
        if self.config.description_mode == "label_names":
            return [[label] for label in descriptions.labels]
        n = self.config.max_descriptions
        return [descriptions.texts(label)[:n] if n else descriptions.texts(label) for label in descriptions.labels]

    def type_compatibility(self) -> torch.Tensor:
        """(R, 2, T) bool: whether each entity type may fill each relation's head/tail (from the signatures)."""
        n_types = len(ENTITY_TYPES)
        out = torch.ones(len(self.relation_labels), 2, n_types, dtype=torch.bool)
        for r, label in enumerate(self.relation_labels):
            entry = self.descriptions.relations.get(label)
            for side, allowed in enumerate((entry.head_types, entry.tail_types) if entry else ((), ())):
                if allowed:
                    out[r, side] = torch.tensor([t in allowed or t == "unknown" for t in ENTITY_TYPES])
        return out

    # -- encoders -----------------------------------------------------------------------------
    def encode_pairs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(batch)

    def encode_descriptions(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised description vectors (M, D)."""
        device = self.description_projection.weight.device
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.description_max_length,
                             return_tensors="pt").to(device)
        model = self.description_encoder if self.description_encoder is not None else self.encoder.text_model
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return F.normalize(self.description_projection(mean_pool(hidden, enc["attention_mask"])), dim=-1)

    def description_vectors(self, per_relation: int | None = None, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors (M, D), relation index (M,)). In training, ``per_relation`` samples that many per relation."""
        texts_per_rel = self._description_texts(self.descriptions)
        if not self.training and per_relation is None and self._description_cache is not None:
            vecs, index, labels = self._description_cache
            if labels == self.relation_labels and vecs.device == self.description_projection.weight.device:
                return vecs, index
        texts, index = [], []
        for r, options in enumerate(texts_per_rel):
            if per_relation is not None and len(options) > per_relation:
                pick = torch.randperm(len(options), generator=generator)[:per_relation].tolist()
                options = [options[i] for i in sorted(pick)]
            texts += options
            index += [r] * len(options)
        vecs = self.encode_descriptions(texts)
        index_t = torch.tensor(index, device=vecs.device)
        if not self.training and per_relation is None:
            self._description_cache = (vecs.detach(), index_t, list(self.relation_labels))
        return vecs, index_t

    def train(self, mode: bool = True) -> RelationModel:
        if mode:  # weights are about to change: description vectors must be recomputed
            self._description_cache = None
        return super().train(mode)

    # -- scoring ------------------------------------------------------------------------------
    def relation_similarity(self, pairs: torch.Tensor, desc: torch.Tensor, index: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarity of each pair to each relation (B, R), and each relation's best description (B, R)."""
        n_rel = len(self.relation_labels)
        sims = pairs @ desc.T  # (B, M)
        scores = torch.empty(pairs.shape[0], n_rel, device=pairs.device, dtype=sims.dtype)
        best = torch.empty(pairs.shape[0], n_rel, dtype=torch.long, device=pairs.device)
        for r in range(n_rel):
            cols = (index == r).nonzero().squeeze(1)
            if self.config.description_pooling == "mean":
                centre = F.normalize(desc[cols].mean(0), dim=-1)
                scores[:, r] = pairs @ centre
            else:
                scores[:, r] = sims[:, cols].max(1).values
            best[:, r] = sims[:, cols].argmax(1)
        return scores, best

    def constrain_types(self, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Type-constrained retrieval: lower the score of relations whose signature contradicts the tagged types."""
        if not self.config.type_constraint or self.config.model_type != "roc":
            return scores
        ok = self.type_compatibility().to(scores.device)  # (R, 2, T)
        head_ok = ok[:, 0, :][:, batch["head_type"]].T  # (B, R)
        tail_ok = ok[:, 1, :][:, batch["tail_type"]].T
        return scores - self.config.type_penalty * ((~head_ok).to(scores.dtype) + (~tail_ok).to(scores.dtype))

    def apply_none_margin(self, scores: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        """Add the (validation-tuned) margin to the negative relation's score."""
        margin = self.config.none_margin if margin is None else margin
        if not margin or self.config.negative_label not in self.relation_labels:
            return scores
        neg = self.relation_labels.index(self.config.negative_label)
        scores = scores.clone()
        scores[..., neg] += margin
        return scores

    def forward(self, batch: dict[str, torch.Tensor], descriptions_per_relation: int | None = None,
                generator: torch.Generator | None = None) -> RelationModelOutput:
        pairs = self.encode_pairs(batch)
        labels = batch.get("labels")
        if self.classifier is not None:
            logits = self.classifier(pairs)
            loss = F.cross_entropy(logits, labels) if labels is not None else None
            return RelationModelOutput(logits, logits, pairs, loss)
        pairs_n = F.normalize(pairs, dim=-1)
        desc, index = self.description_vectors(descriptions_per_relation if self.training else None, generator)
        cosine, best = self.relation_similarity(pairs_n, desc, index)
        inv_t = self.log_inverse_temperature.exp().clamp(max=100.0)
        logits = cosine * inv_t
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels)
            if self.config.pair_pair_weight > 0:
                loss = loss + self.config.pair_pair_weight * supervised_contrastive(
                    pairs_n, labels, self.config.pair_pair_temperature)
        return RelationModelOutput(logits, self.constrain_types(cosine, batch), pairs_n, loss, best)

    # -- building, saving, loading ------------------------------------------------------------
    @classmethod
    def build(cls, config: ModelConfig, descriptions: RelationDescriptions | None = None,
              cache_dir: Path | None = None) -> RelationModel:
        """A fresh model from pretrained backbones (entity markers added to the tokenizer)."""
        from rocmre.backbones.text import load_text_backbone
        from rocmre.modeling.features import add_marker_tokens

        config = config.model_copy(deep=True)
        backbone = load_text_backbone(config.text_backbone, cache_dir=cache_dir)
        tokenizer, text_model = backbone.tokenizer, backbone.model
        if add_marker_tokens(tokenizer):
            text_model.resize_token_embeddings(len(tokenizer))
        if config.vision_dim is None or config.num_regions is None:
            config.vision_dim, config.num_regions = vision_shape(config.vision_backbone)
        if config.model_type == "roc":
            if descriptions is None:
                raise ValueError("a ROC model needs relation descriptions")
            config.labels = descriptions.labels
        elif descriptions is None:
            descriptions = RelationDescriptions(name="labels", negative_label=config.negative_label)
        if config.negative_label not in config.labels:
            raise ValueError(f"the negative label {config.negative_label!r} is not among {config.labels}")
        return cls(config, text_model, tokenizer, descriptions)

    def save_pretrained(self, directory: str | Path) -> None:
        """Config, safetensors weights, tokenizer + text-encoder config, and the relation descriptions."""
        directory = Path(directory)
        (directory / TEXT_ENCODER_DIR).mkdir(parents=True, exist_ok=True)
        self.config.labels = self.relation_labels
        (directory / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "rocmre"})
        self.encoder.text_model.config.save_pretrained(directory / TEXT_ENCODER_DIR)
        self.tokenizer.save_pretrained(directory / TEXT_ENCODER_DIR)
        if self.config.model_type == "roc":
            self.descriptions.save(directory / DESCRIPTIONS_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, descriptions: RelationDescriptions | None = None,
                        device: str | torch.device = "cpu") -> RelationModel:
        """Load a model saved by :meth:`save_pretrained`; ``descriptions`` replaces its relation set (ROC)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory} is not a rocmre model folder (no {CONFIG_NAME})")
        config = ModelConfig.model_validate_json((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        tokenizer = AutoTokenizer.from_pretrained(directory / TEXT_ENCODER_DIR)
        text_model = AutoModel.from_config(AutoConfig.from_pretrained(directory / TEXT_ENCODER_DIR))
        saved = (RelationDescriptions.load(directory / DESCRIPTIONS_NAME) if config.model_type == "roc"
                 else RelationDescriptions(name="labels", negative_label=config.negative_label))
        model = cls(config, text_model, tokenizer, saved)
        missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{directory / WEIGHTS_NAME} does not match the config: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        if descriptions is not None:
            model.set_descriptions(descriptions)
        return model.to(device).eval()


def vision_shape(name: str) -> tuple[int, int]:
    """(feature dim, number of region tokens) of a vision backbone."""
    if name in KNOWN_VISION_SHAPES:
        return KNOWN_VISION_SHAPES[name]
    from rocmre.backbones.vision import load_vision_backbone

    vb = load_vision_backbone(name)
    return vb.feature_dim, vb.num_regions


def load_metrics(directory: str | Path) -> dict:
    path = Path(directory) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
