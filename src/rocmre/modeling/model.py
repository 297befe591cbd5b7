"""The relation model: ROC (cosine retrieval over relation descriptions) or the classification baseline, over one
shared :class:`~rocmre.modeling.fusion.MultimodalPairEncoder`."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rocmre.data.entity_types import ENTITY_TYPES
from rocmre.descriptions.store import RelationDescriptions, example_to_pair, fill_template, is_template
from rocmre.modeling.config import (
    DESCRIPTION_MAX_LENGTH,
    LEGACY_DECISION_KEYS,
    DecisionConfig,
    ModelConfig,
    TrainedModelConfig,
)
from rocmre.modeling.freezing import (
    freeze_lower_layers,
    freeze_marker_rows,
    freeze_word_embeddings,
    frozen_prefix_layers,
    init_marker_rows,
    pad_states,
    run_lower_layers,
    run_upper_layers,
)
from rocmre.modeling.fusion import MultimodalPairEncoder, mean_pool
from rocmre.modeling.losses import LEGACY_TEMPERATURE_KEY, default_loss
from rocmre.modeling.prompting import MARKERS

logger = logging.getLogger(__name__)

KNOWN_VISION_SHAPES = {"efficientnet-lite0": (1280, 49)}
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DECISION_NAME = "decision_config.json"
DESCRIPTIONS_NAME = "descriptions.json"
TEXT_ENCODER_DIR = "text_encoder"
#: filled description templates kept encoded at prediction time (the oldest are dropped beyond this)
MAX_FILLED_TEXTS = 4096
_TYPE_PROMPT = re.compile(r"\[\s*(?:" + "|".join(ENTITY_TYPES) + r")\s*\]")


def fix_identity(linear: nn.Linear) -> None:
    """Make ``linear`` the identity map and freeze it (``model.description_projection="identity"``)."""
    if linear.in_features != linear.out_features:
        raise ValueError(f"model.description_projection='identity' needs model.pair_dim equal to the text encoder's "
                         f"width ({linear.in_features}), got {linear.out_features}")
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.in_features))
        linear.bias.zero_()
    linear.requires_grad_(False)


@dataclass
class RelationModelOutput:
    """What a forward pass returns."""

    logits: torch.Tensor  # (B, R): the scores training uses (ROC: cosine / temperature)
    scores: torch.Tensor  # (B, R): ROC: cosine similarity; classifier: logits (decisions: modeling/decision.py)
    pair_embeddings: torch.Tensor  # (B, D)
    loss: torch.Tensor | None = None
    best_description: torch.Tensor | None = None  # (B, R) index of each relation's best-matching description


def multi_description_rows(index: torch.Tensor, n_rel: int) -> torch.Tensor:
    """The description rows (positions in ``index``) of relations that have several descriptions."""
    return torch.nonzero(torch.bincount(index, minlength=n_rel)[index] > 1).squeeze(1)


def best_among_rows(sub: torch.Tensor, sub_index: torch.Tensor, n_rel: int) -> torch.Tensor:
    """(B, R) position, within its relation, of each relation's best-matching description (first on ties), from
    the similarities ``sub`` (B, K) to the rows of :func:`multi_description_rows` only (their grouped relations
    ``sub_index`` (K,)); every other relation answers 0, so one-description relations add almost nothing."""
    bsz, device = sub.shape[0], sub.device
    best = torch.zeros((bsz, n_rel), dtype=torch.long, device=device)
    if len(sub_index) == 0:
        return best
    rel_ids, local_index = torch.unique_consecutive(sub_index, return_inverse=True)
    n_sub = len(rel_ids)
    group_max = torch.full((bsz, n_sub), -2.0, device=device, dtype=sub.dtype).scatter_reduce(
        1, local_index.expand(bsz, -1), sub, reduce="amax", include_self=False)
    starts = torch.zeros(n_sub, dtype=torch.long, device=device).scatter_reduce(
        0, local_index, torch.arange(len(sub_index), device=device), reduce="amin", include_self=False)
    position = torch.arange(len(sub_index), device=device) - starts[local_index]  # position within its relation
    is_max = sub >= group_max.gather(1, local_index.expand(bsz, -1))
    never = torch.full_like(position, len(sub_index)).expand(bsz, -1)
    found = torch.full((bsz, n_sub), len(sub_index), dtype=torch.long, device=device).scatter_reduce(
        1, local_index.expand(bsz, -1), torch.where(is_max, position.expand(bsz, -1), never), reduce="amin",
        include_self=False)
    return best.index_copy(1, rel_ids, found)


class RelationModel(nn.Module):
    """ROC or classifier over a multimodal entity-pair encoder. Use :meth:`build` or :meth:`from_pretrained`."""

    def __init__(self, config: TrainedModelConfig, text_model: nn.Module, tokenizer, descriptions: RelationDescriptions,
                 *, loss: nn.Module | None = None, decision: DecisionConfig | None = None) -> None:
        """``loss`` turns scores into logits and the training loss (default: :func:`default_loss` of the model
        type); ``decision`` is how scores become answers (default: :class:`DecisionConfig`'s)."""
        super().__init__()
        # the first submodule, so that its parameters come first (the order the optimizer and clipping see)
        self.loss = loss if loss is not None else default_loss(config.model_type)
        self.decision = decision if decision is not None else DecisionConfig()
        if config.vision_dim is None or config.num_regions is None:
            raise ValueError("config.vision_dim and config.num_regions must be set (use RelationModel.build)")
        self.config = config
        self.tokenizer = tokenizer
        if config.frozen_text_layers:  # the word embeddings, the markers and the lowest layers
            freeze_word_embeddings(text_model, min(tokenizer.convert_tokens_to_ids(list(MARKERS))))
            freeze_marker_rows(text_model)
            freeze_lower_layers(text_model, config.frozen_text_layers)
        #: the first N text layers (embeddings included) take no gradient at all: run as a fixed feature extractor
        self.frozen_prefix_layers = frozen_prefix_layers(text_model, config.frozen_text_layers)
        self.encoder = MultimodalPairEncoder(config, text_model, config.vision_dim, config.num_regions)
        hidden = self.encoder.hidden
        self.descriptions = descriptions
        if config.model_type == "roc":
            # a frozen copy of the text encoder anchors the descriptions to the pretrained sentence space
            self.description_encoder = (copy.deepcopy(text_model).requires_grad_(False)
                                        if config.freeze_description_encoder else None)
            self.description_projection = nn.Linear(hidden, config.pair_dim)
            if config.description_projection == "identity":
                fix_identity(self.description_projection)
            self.classifier = None
        else:
            self.classifier = nn.Linear(config.pair_dim, len(config.labels))
        self._description_cache: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None
        # eval: relation centres of the cached description vectors, and the rows of multi-description relations
        self._centre_cache: tuple[torch.Tensor, ...] | None = None
        # pooled encoder states of description texts, reused between refreshes (see ``forward``)
        self._pooled_states: dict[str, torch.Tensor] = {}
        # training with a frozen prefix: its output for each description text (it never changes)
        self._prefix_states: dict[str, torch.Tensor] = {}
        #: whether training keeps those states (the trainer sets ``train.cache_frozen_states``)
        self.cache_frozen_states = True
        # prediction only: filled-template vectors, few-shot prototypes (label -> (fingerprint, vector)), templates
        self._filled_vectors: dict[str, torch.Tensor] = {}
        self._prototypes: dict[str, tuple[str, torch.Tensor]] = {}
        self._template_cache: tuple[torch.Tensor, list[tuple[int, list[str]]]] | None = None
        self.max_filled_texts = MAX_FILLED_TEXTS  # raise it to keep more filled templates encoded
        #: featurises relation examples for prototypes (a ModelRuntime; made on first use unless set)
        self.example_runtime: Any = None

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
        #: incremented by every ``train()``: prediction-time weight copies are rebuilt after it
        self.weights_generation = 0

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

    def added_relations(self) -> list[bool]:
        """Per relation (score order), whether it was added without training: not among ``config.trained_labels``,
        or, for a model saved before that field, given a description with ``added_at_inference`` provenance."""
        trained = set(self.config.trained_labels)
        if trained:
            return [label not in trained for label in self.relation_labels]
        entries = self.descriptions.relations if self.descriptions is not None else {}
        return [label in entries and any(d.provenance.get("added_at_inference") for d in entries[label].descriptions)
                for label in self.relation_labels]

    # -- encoders -----------------------------------------------------------------------------
    def encode_pairs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(batch)

    def _pooled(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled encoder states (M, H) of description texts (with gradients unless the tower is frozen)."""
        device = self.description_projection.weight.device
        if self.config.freeze_description_encoder:
            self._encode_frozen(texts)
            return torch.stack([self._pooled_states[t] for t in texts]).to(device)
        model = self.encoder.text_model
        if self.training and self.frozen_prefix_layers and self.cache_frozen_states:
            # the frozen prefix's output for a description text never changes: computed once, like the pairs'
            states, mask = self._description_prefix_states(texts, device)
            hidden = run_upper_layers(model, states, mask, self.frozen_prefix_layers)
        else:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=DESCRIPTION_MAX_LENGTH,
                                 return_tensors="pt").to(device)
            mask = enc["attention_mask"]
            hidden = model(input_ids=enc["input_ids"], attention_mask=mask).last_hidden_state
        pooled = mean_pool(hidden, mask).float()
        if self.training:  # kept for steps that do not refresh the descriptions (train.description_refresh_steps)
            for t, v in zip(texts, pooled.detach(), strict=True):
                self._pooled_states[t] = v
        return pooled

    @torch.no_grad()
    def _description_prefix_states(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (M, L, H), attention mask (M, L)) of the frozen prefix for description texts, each text's states
        computed on first use (under the caller's autocast) and kept."""
        kept = self._prefix_states
        missing = list(dict.fromkeys(t for t in texts if t not in kept))
        if missing:
            enc = self.tokenizer(missing, padding=True, truncation=True,
                                 max_length=DESCRIPTION_MAX_LENGTH, return_tensors="pt").to(device)
            states = run_lower_layers(self.encoder.text_model, enc["input_ids"], enc["attention_mask"],
                                      self.frozen_prefix_layers)
            for t, row, m in zip(missing, states, enc["attention_mask"], strict=True):
                kept[t] = row[: int(m.sum())].clone()
        return pad_states([kept[t] for t in texts])

    @torch.no_grad()
    def _encode_frozen(self, texts: list[str]) -> None:
        """Pooled states of the frozen description tower for every description of the relation set (and
        ``texts``), computed once in a fixed order and batch layout so that results do not depend on call order."""
        wanted = [t for options in self._description_texts(self.descriptions) for t in options] + list(texts)
        missing = list(dict.fromkeys(t for t in wanted if t not in self._pooled_states))
        if not missing:
            return
        device = self.description_projection.weight.device
        was_training = self.description_encoder.training
        self.description_encoder.eval()
        for start in range(0, len(missing), 64):
            chunk = missing[start:start + 64]
            enc = self.tokenizer(chunk, padding=True, truncation=True,
                                 max_length=DESCRIPTION_MAX_LENGTH, return_tensors="pt").to(device)
            hidden = self.description_encoder(input_ids=enc["input_ids"],
                                              attention_mask=enc["attention_mask"]).last_hidden_state
            for t, v in zip(chunk, mean_pool(hidden.float(), enc["attention_mask"]), strict=True):
                self._pooled_states[t] = v.cpu()
        self.description_encoder.train(was_training)

    def encode_descriptions(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised description vectors (M, D)."""
        pooled = self._pooled(texts).to(self.description_projection.weight.dtype)
        return F.normalize(self.description_projection(pooled), dim=-1)

    def description_vectors(self, per_relation: int | None = None, generator: torch.Generator | None = None,
                            refresh: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors (M, D), relation index (M,)); in training ``per_relation`` samples that many per relation, and
        ``refresh=False`` reuses the kept pooled states (only the projection trains)."""
        if not self.training and per_relation is None and self._description_cache is not None:
            vecs, index, labels = self._description_cache
            if labels == self.relation_labels and vecs.device == self.description_projection.weight.device:
                return vecs, index
        texts_per_rel = self._description_texts(self.descriptions)
        if self.training and not refresh and self._pooled_states:
            texts, index = [], []
            for r, options in enumerate(texts_per_rel):
                kept = [t for t in options if t in self._pooled_states]
                texts += kept
                index += [r] * len(kept)
            if len(set(index)) == len(texts_per_rel):
                device = self.description_projection.weight.device
                pooled = torch.stack([self._pooled_states[t] for t in texts]).to(device)
                vecs = F.normalize(self.description_projection(pooled.to(self.description_projection.weight.dtype)),
                                   dim=-1)
                return vecs, torch.tensor(index, device=device)
        texts, index = [], []
        for r, options in enumerate(texts_per_rel):
            if per_relation is not None and len(options) > per_relation:
                pick = torch.randperm(len(options), generator=generator)[:per_relation].tolist()
                options = [options[i] for i in sorted(pick)]
            texts += options
            index += [r] * len(options)
        if self.training:
            vecs = self.encode_descriptions(texts)
        else:  # thousands of relations: encode in chunks so memory stays flat
            vecs = torch.cat([self.encode_descriptions(texts[s:s + 256]) for s in range(0, len(texts), 256)])
        index_t = torch.tensor(index, device=vecs.device)
        if not self.training and per_relation is None:
            self._description_cache = (vecs.detach(), index_t, list(self.relation_labels))
        return vecs, index_t

    def forget_description_states(self) -> None:
        """Drop the pooled description states kept between refreshes (a frozen tower's states stay: they never
        change)."""
        if not self.config.freeze_description_encoder:
            self._pooled_states = {}

    def train(self, mode: bool = True) -> RelationModel:
        if mode:  # weights are about to change: description vectors (and weight copies) must be recomputed
            self.weights_generation = getattr(self, "weights_generation", 0) + 1
            self._description_cache = None
            self._filled_vectors = {}
            self._prototypes = {}
        super().train(mode)
        if self.frozen_prefix_layers:  # a fixed feature extractor: no dropout (its output can then be cached)
            text_model = self.encoder.text_model
            text_model.embeddings.eval()
            text_model.encoder.layer[:self.frozen_prefix_layers].eval()
        if self.config.model_type == "roc" and self.config.freeze_description_encoder:
            self.description_encoder.eval()  # frozen: no dropout either
        elif mode is False and not self.config.freeze_description_encoder:
            self._pooled_states = {}
        return self

    # -- scoring ------------------------------------------------------------------------------
    def relation_similarity(self, pairs: torch.Tensor, desc: torch.Tensor, index: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarity of each pair to each relation (B, R) and each relation's best description (B, R);
        ``index`` is grouped by relation."""
        n_rel = len(self.relation_labels)
        cached = self._centre_cache
        if not self.training and cached is not None and cached[0] is desc:
            _, centres, multi_desc, multi_index = cached
        else:
            centres = F.normalize(torch.zeros(n_rel, desc.shape[1], device=desc.device, dtype=desc.dtype)
                                  .index_add(0, index, desc), dim=-1)
            multi = multi_description_rows(index, n_rel)  # only they have a best description to find
            multi_desc, multi_index = desc[multi], index[multi]
            self._centre_cache = None if self.training else (desc, centres.detach(), multi_desc.detach(), multi_index)
        scores = pairs @ centres.T.to(pairs.dtype)
        with torch.no_grad():
            best = best_among_rows(pairs @ multi_desc.T.to(pairs.dtype), multi_index, n_rel)
        return scores, best

    def forward(self, batch: dict[str, torch.Tensor], descriptions_per_relation: int | None = None,
                generator: torch.Generator | None = None, refresh_descriptions: bool = True) -> RelationModelOutput:
        """Scores of each pair over the relations; with ``labels`` in the batch, the training loss (the model's
        ``loss`` module) too."""
        pairs = self.encode_pairs(batch)
        labels = batch.get("labels")
        if self.classifier is not None:
            scores = self.classifier(pairs)
            logits, loss = self.loss(scores, labels)
            return RelationModelOutput(logits, scores, pairs, loss)
        pairs_n = F.normalize(pairs, dim=-1)
        desc, index = self.description_vectors(descriptions_per_relation if self.training else None, generator,
                                               refresh=refresh_descriptions)
        pairs_n = pairs_n.to(desc.dtype)
        cosine, best = self.relation_similarity(pairs_n, desc, index)
        if not self.training:  # prediction only: description templates, then few-shot prototypes
            cosine, best = self._template_scores(batch, pairs_n, desc, cosine, best)
            cosine = self._with_prototypes(pairs_n, cosine)
        logits, loss = self.loss(cosine, labels)
        return RelationModelOutput(logits, cosine, pairs_n, loss, best)

    # -- prediction: description templates and few-shot prototypes -----------------------------
    def entity_names(self, batch: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
        """(head, tail) mention of each pair, read back from its marked input ids as the tokenizer writes them
        (lower-cased by an uncased one); the type prompt between a marker and the mention is left out."""
        marker_ids = self.tokenizer.convert_tokens_to_ids(list(MARKERS))
        head_end, tail_end = marker_ids[1], marker_ids[3]
        skip = set(marker_ids)
        names = []
        for row, mask, h, t in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
                                   batch["head_index"].tolist(), batch["tail_index"].tolist(), strict=True):
            row = row[:sum(mask)]

            def mention(start: int, end_id: int, row: list[int] = row) -> str:
                end = row.index(end_id, start + 1) if end_id in row[start + 1:] else len(row)
                text = self.tokenizer.decode([i for i in row[start + 1:end] if i not in skip], skip_special_tokens=True)
                return " ".join(_TYPE_PROMPT.sub(" ", text).split())

            names.append((mention(h, head_end), mention(t, tail_end)))
        return names

    def _template_relations(self, desc: torch.Tensor) -> list[tuple[int, list[str]]]:
        """(relation index, its description texts) of every relation with a template, cached per vector set."""
        cached = self._template_cache
        if cached is not None and cached[0] is desc:
            return cached[1]
        found: list[tuple[int, list[str]]] = []
        if self.config.description_mode != "label_names":
            found = [(r, texts) for r, texts in enumerate(self._description_texts(self.descriptions))
                     if any(is_template(t) for t in texts)]
        self._template_cache = (desc, found)
        return found

    def _encode_filled(self, texts: list[str]) -> torch.Tensor:
        """Description vectors (N, D) of prediction-time texts (filled templates), kept for repeated texts."""
        cache = self._filled_vectors
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            device = self.description_projection.weight.device
            model = self.description_encoder if self.description_encoder is not None else self.encoder.text_model
            with torch.inference_mode(False), torch.no_grad():
                for start in range(0, len(missing), 256):
                    chunk = missing[start:start + 256]
                    enc = self.tokenizer(chunk, padding=True, truncation=True,
                                         max_length=DESCRIPTION_MAX_LENGTH, return_tensors="pt").to(device)
                    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
                    pooled = mean_pool(hidden.float(), enc["attention_mask"])
                    vecs = F.normalize(self.description_projection(pooled.to(self.description_projection.weight.dtype)),
                                       dim=-1)
                    cache.update(zip(chunk, vecs, strict=True))
            wanted = set(texts)
            for old in list(cache)[:max(0, len(cache) - self.max_filled_texts)]:
                if old not in wanted:
                    del cache[old]
        return torch.stack([cache[t] for t in texts])

    def _template_scores(self, batch: Mapping[str, torch.Tensor], pairs: torch.Tensor, desc: torch.Tensor,
                         cosine: torch.Tensor, best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the relations with description templates, each filled with every pair's mentions (eval)."""
        templated = self._template_relations(desc)
        if not templated:
            return cosine, best
        names = self.entity_names(batch)
        cosine, best = cosine.clone(), best.clone()
        for r, texts in templated:
            filled = [fill_template(t, h, tl) if is_template(t) else t for h, tl in names for t in texts]
            vecs = self._encode_filled(filled).to(pairs.dtype).view(len(names), len(texts), -1)  # (B, n, D)
            cosine[:, r] = (F.normalize(vecs.sum(1), dim=-1) * pairs).sum(-1).to(cosine.dtype)
            best[:, r] = torch.einsum("bnd,bd->bn", vecs, pairs).argmax(1)
        return cosine, best

    def prototype_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(prototypes (R, D), mask (R,)): for each relation with examples, the mean of its examples' normalised
        pair vectors (normalised again), computed in eval mode without gradients and kept until the examples or
        the weights change; ``None`` when no relation has examples (ROC only)."""
        if self.config.model_type != "roc":
            return None
        entries = self.descriptions.relations
        with_examples = self.descriptions.labels_with_examples()
        if not with_examples:  # (the common case: one pass, no list of every label)
            return None
        labels = self.relation_labels
        position = {label: r for r, label in enumerate(labels)}
        wanted = sorted((position[label], label, entries[label].examples) for label in with_examples
                        if label in position)
        if not wanted:
            return None
        device = self.description_projection.weight.device
        vectors, kept = [], {}
        for _, label, examples in wanted:
            key = json.dumps(examples, sort_keys=True, default=str)
            cached = self._prototypes.get(label)
            if cached is None or cached[0] != key:
                cached = (key, self._prototype(examples))
            kept[label] = cached
            vectors.append(cached[1].to(device))
        self._prototypes = kept  # removed relations drop theirs
        index = torch.tensor([r for r, _, _ in wanted], device=device)
        rows = torch.zeros(len(labels), vectors[0].shape[-1], device=device).index_copy(0, index, torch.stack(vectors))
        mask = torch.zeros(len(labels), dtype=torch.bool, device=device).index_fill(0, index, True)
        return rows, mask

    def _prototype(self, examples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """The normalised mean of the examples' normalised pair vectors (fp32, eval mode, no gradients)."""
        from rocmre.data.inputs import pair_to_record

        runtime = self.example_runtime
        if runtime is None:
            raise RuntimeError("relation examples are featurised by a ModelRuntime: score through one (or "
                               "RelationExtractor), or set model.example_runtime")
        device = self.description_projection.weight.device
        was_training = self.encoder.training
        with torch.inference_mode(False), torch.no_grad(), torch.autocast(device.type, enabled=False):
            records = [pair_to_record(example_to_pair(e)) for e in examples]
            batch = {k: v.to(device) for k, v in runtime.collator(runtime.featurize(records, with_labels=False))
                     .items()}
            self.encoder.eval()  # no dropout
            try:
                z = F.normalize(self.encode_pairs(batch).float(), dim=-1)
            finally:
                self.encoder.train(was_training)
        return F.normalize(z.mean(0), dim=-1)

    def _with_prototypes(self, pairs: torch.Tensor, cosine: torch.Tensor) -> torch.Tensor:
        """``(1 - w) * description score + w * prototype score`` for the relations that have examples (eval)."""
        weight = self.decision.prototype_weight
        proto = self.prototype_vectors() if weight > 0 else None
        if proto is None:
            return cosine
        rows, mask = proto
        proto_scores = (pairs @ rows.T.to(pairs.dtype)).to(cosine.dtype)
        return torch.where(mask, (1.0 - weight) * cosine + weight * proto_scores, cosine)

    # -- building, saving, loading ------------------------------------------------------------
    @classmethod
    def build(cls, config: ModelConfig, descriptions: RelationDescriptions | None = None,
              cache_dir: Path | None = None, *, labels: Sequence[str] | None = None, negative_label: str | None = None,
              loss: nn.Module | None = None) -> RelationModel:
        """A fresh model from pretrained backbones (entity markers added to the tokenizer): ROC over
        ``descriptions``, or a classifier over ``labels``; ``negative_label`` as the data names it."""
        from rocmre.backbones.text import load_text_backbone
        from rocmre.modeling.features import add_marker_tokens

        config = TrainedModelConfig.model_validate(config.model_dump())
        if negative_label is not None:
            config.negative_label = negative_label
        backbone = load_text_backbone(config.text_backbone, cache_dir=cache_dir)
        tokenizer, text_model = backbone.tokenizer, backbone.model
        if add_marker_tokens(tokenizer):
            text_model.resize_token_embeddings(len(tokenizer))
        if config.marker_init:
            init_marker_rows(text_model, tokenizer, MARKERS, list(config.marker_init))
        if config.vision_dim is None or config.num_regions is None:
            config.vision_dim, config.num_regions = vision_shape(config.vision_backbone)
        if config.model_type == "roc":
            if descriptions is None:
                raise ValueError("a ROC model needs relation descriptions")
            config.labels = descriptions.labels
        else:
            config.labels = list(labels) if labels is not None else config.labels
            descriptions = descriptions or RelationDescriptions(name="labels", negative_label=config.negative_label)
        if config.negative_label not in config.labels:
            raise ValueError(f"the negative label {config.negative_label!r} is not among {config.labels}")
        return cls(config, text_model, tokenizer, descriptions, loss=loss)

    def set_decision(self, **changes: Any) -> DecisionConfig:
        """Replace :attr:`decision` by a copy with ``changes`` (:class:`DecisionConfig` fields), checked, and return
        it: an unknown name or a bad value raises ``ValueError``, the type prior on a classifier ``TypeError``."""
        decision = DecisionConfig.model_validate({**self.decision.model_dump(), **changes})
        if decision.type_prior and self.config.model_type != "roc":
            raise TypeError("the type prior applies to ROC models (a classifier has no relation signatures)")
        self.decision = decision
        return decision

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """As :meth:`torch.nn.Module.load_state_dict`; weights saved before the loss was a module of its own (the
        temperature at the top level) are read too."""
        if LEGACY_TEMPERATURE_KEY in state_dict:
            state_dict = {("loss." + k if k == LEGACY_TEMPERATURE_KEY else k): v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict, assign)

    def save_pretrained(self, directory: str | Path) -> None:
        """Config, decision settings, safetensors weights, tokenizer + text-encoder config, and the relation
        descriptions."""
        directory = Path(directory)
        (directory / TEXT_ENCODER_DIR).mkdir(parents=True, exist_ok=True)
        self.config.labels = self.relation_labels
        (directory / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (directory / DECISION_NAME).write_text(self.decision.model_dump_json(indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "rocmre"})
        self.encoder.text_model.config.save_pretrained(directory / TEXT_ENCODER_DIR)
        self.tokenizer.save_pretrained(directory / TEXT_ENCODER_DIR)
        if self.config.model_type == "roc":
            self.descriptions.save(directory / DESCRIPTIONS_NAME)

    def init_weights_from(self, directory: str | Path) -> dict[str, Any]:
        """Start from a trained model folder's weights (``model.init_from``): every weight of the same name and shape
        is copied, the rest keep their fresh values (a classifier head over other labels, ROC's description
        projection for a classifier). The text backbone and the frozen prefix must match. Returns what was copied."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"model.init_from: {directory} is not a rocmre model folder (no {CONFIG_NAME}); "
                                    "make the relation pre-trained one with `rocmre train --config "
                                    "configs/relations_pretrain.yaml`")
        source, _ = read_model_config(directory)
        for key in ("text_backbone", "frozen_text_layers", "pair_dim", "fusion_layers", "pair_pooling"):
            if getattr(source, key) != getattr(self.config, key):
                raise ValueError(f"model.init_from: {directory} has {key}={getattr(source, key)!r}, this model "
                                 f"{getattr(self.config, key)!r}; they must match")
        saved = load_file(str(directory / WEIGHTS_NAME))
        if LEGACY_TEMPERATURE_KEY in saved:
            saved["loss." + LEGACY_TEMPERATURE_KEY] = saved.pop(LEGACY_TEMPERATURE_KEY)
        own = self.state_dict()
        copied = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
        super().load_state_dict(copied, strict=False)
        fresh = sorted(k for k in own if k not in copied)
        logger.info("initialised %d of %d weights from %s (fresh: %s)", len(copied), len(own), directory,
                    ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else ""))
        return {"from": str(directory), "copied": len(copied), "fresh": fresh,
                "ignored": sorted(k for k in saved if k not in copied)}

    @classmethod
    def from_pretrained(cls, directory: str | Path, descriptions: RelationDescriptions | None = None,
                        device: str | torch.device = "cpu") -> RelationModel:
        """Load a model saved by :meth:`save_pretrained` (or by an older rocmre, whose ``config.json`` held the
        decision settings); ``descriptions`` replaces its relation set (ROC)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            hint = (f": it holds the checkpoints of an unfinished training; continue it with `rocmre train --resume "
                    f"{directory}`") if (directory / "checkpoints").is_dir() else ""
            raise FileNotFoundError(f"{directory} is not a rocmre model folder (no {CONFIG_NAME}){hint}")
        config, decision = read_model_config(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory / TEXT_ENCODER_DIR)
        text_model = AutoModel.from_config(AutoConfig.from_pretrained(directory / TEXT_ENCODER_DIR))
        saved = (RelationDescriptions.load(directory / DESCRIPTIONS_NAME) if config.model_type == "roc"
                 else RelationDescriptions(name="labels", negative_label=config.negative_label))
        model = cls(config, text_model, tokenizer, saved, decision=decision)
        missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{directory / WEIGHTS_NAME} does not match the config: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        if descriptions is not None:
            model.set_descriptions(descriptions)
        return model.to(device).eval()


def read_model_config(directory: Path) -> tuple[TrainedModelConfig, DecisionConfig]:
    """A model folder's config and decision settings: ``decision_config.json``, or for a folder saved before it,
    the decision settings its ``config.json`` held."""
    try:
        raw = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / CONFIG_NAME}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{directory / CONFIG_NAME}: expected a JSON object")
    legacy = {key: raw.pop(key) for key in LEGACY_DECISION_KEYS.values() if key in raw}
    raw.setdefault("frozen_text_layers", 0)  # older than that setting: nothing was frozen
    config = TrainedModelConfig.model_validate(raw)
    file = directory / DECISION_NAME
    decision = (DecisionConfig.model_validate_json(file.read_text(encoding="utf-8")) if file.is_file()
                else DecisionConfig.from_legacy(legacy))
    return config, decision


def vision_shape(name: str) -> tuple[int, int]:
    """(feature dim, number of region tokens) of a vision backbone."""
    if name in KNOWN_VISION_SHAPES:
        return KNOWN_VISION_SHAPES[name]
    from rocmre.backbones.vision import load_vision_backbone

    vb = load_vision_backbone(name)
    return vb.feature_dim, vb.num_regions
