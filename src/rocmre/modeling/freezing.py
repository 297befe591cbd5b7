"""Training only part of the text encoder (cheaper steps on a CPU; docs/training.md): fixed word embeddings with
trainable added marker rows (:class:`AddedRowsEmbedding`), frozen lower layers, and a frozen prefix run as a fixed
feature extractor (:func:`run_lower_layers` / :func:`run_upper_layers`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AddedRowsEmbedding(nn.Embedding):
    """An embedding table whose rows from ``first_added`` on train (``added``) and earlier rows are fixed; its state
    dict holds one plain ``weight``, interchangeable with :class:`~torch.nn.Embedding`."""

    def __init__(self, table: nn.Embedding, first_added: int) -> None:
        num, dim = table.weight.shape
        if not 0 < first_added < num:
            raise ValueError(f"first_added must be inside the table (1..{num - 1}), got {first_added}")
        super().__init__(num, dim, padding_idx=table.padding_idx, device=table.weight.device, dtype=table.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(table.weight)
        self.weight.requires_grad_(False)
        self.first_added = first_added
        self.added = nn.Parameter(table.weight.detach()[first_added:].clone())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(input_ids, self.weight, self.padding_idx)
        is_added = input_ids >= self.first_added
        if not bool(is_added.any()):
            return out
        rows = self.added[(input_ids - self.first_added).clamp(min=0)]
        return torch.where(is_added.unsqueeze(-1), rows.to(out.dtype), out)

    def merged_weight(self) -> torch.Tensor:
        """The whole table with the trained rows written in."""
        weight = self.weight.detach().clone()
        weight[self.first_added:] = self.added.detach()
        return weight

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001 (torch's signature)
        destination[prefix + "weight"] = self.merged_weight()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: ANN001 (torch's signature)
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        weight = state_dict[key]
        if weight.shape != self.weight.shape:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)}, the "
                              f"model has {tuple(self.weight.shape)}")
            return
        with torch.no_grad():
            self.weight.copy_(weight)
            self.added.copy_(weight[self.first_added:])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, trainable rows from {self.first_added}"


def freeze_word_embeddings(text_model: nn.Module, first_added: int) -> AddedRowsEmbedding:
    """Replace the encoder's input embedding table by an :class:`AddedRowsEmbedding` (idempotent)."""
    table = text_model.get_input_embeddings()
    if isinstance(table, AddedRowsEmbedding):
        return table
    if not isinstance(table, nn.Embedding):
        raise ValueError(f"frozen_word_embeddings needs an nn.Embedding input table; {type(text_model).__name__} "
                         f"has {type(table).__name__}")
    frozen = AddedRowsEmbedding(table, first_added)
    text_model.set_input_embeddings(frozen)
    return frozen


def freeze_lower_layers(text_model: nn.Module, n_layers: int) -> None:
    """Stop training the embeddings and the first ``n_layers`` transformer layers of a BERT-like encoder (the
    added rows of an :class:`AddedRowsEmbedding` keep training)."""
    layers = getattr(getattr(text_model, "encoder", None), "layer", None)
    if not hasattr(text_model, "embeddings") or not isinstance(layers, nn.ModuleList):
        raise ValueError(f"frozen_text_layers needs an encoder with .embeddings and .encoder.layer; "
                         f"{type(text_model).__name__} has not")
    if n_layers > len(layers):
        raise ValueError(f"frozen_text_layers={n_layers} but the text encoder has {len(layers)} layers")
    for name, param in text_model.embeddings.named_parameters():
        if not name.endswith(".added"):
            param.requires_grad_(False)
    for layer in layers[:n_layers]:
        layer.requires_grad_(False)
    shared_bias = getattr(text_model.encoder, "relative_attention_bias", None)  # MPNet: read by every layer
    if shared_bias is not None:
        shared_bias.requires_grad_(False)


def freeze_marker_rows(text_model: nn.Module) -> None:
    """Fix the added (marker) rows of an :class:`AddedRowsEmbedding` input table too."""
    table = text_model.get_input_embeddings()
    if not isinstance(table, AddedRowsEmbedding):
        raise ValueError("trainable_markers=false needs the word embeddings frozen first (frozen_word_embeddings)")
    table.added.requires_grad_(False)


def init_marker_rows(text_model: nn.Module, tokenizer, markers: Sequence[str], words: Sequence[str]) -> None:
    """Copy the pretrained embedding of ``words[i]`` (one word piece each) into the row of ``markers[i]``."""
    if len(words) != len(markers):
        raise ValueError(f"marker_init needs {len(markers)} words, one per marker {list(markers)}; got {list(words)}")
    table = text_model.get_input_embeddings()
    unknown = tokenizer.unk_token_id
    with torch.no_grad():
        for marker, word in zip(markers, words, strict=True):
            pieces = tokenizer.tokenize(word)
            if len(pieces) != 1 or tokenizer.convert_tokens_to_ids(pieces[0]) == unknown:
                raise ValueError(f"marker_init: {word!r} (for {marker}) must be a single known word piece of the "
                                 f"text encoder's vocabulary; it tokenises as {pieces}")
            source = tokenizer.convert_tokens_to_ids(pieces[0])
            target = tokenizer.convert_tokens_to_ids(marker)
            table.weight[target] = table.weight[source]


def frozen_prefix_layers(text_model: nn.Module, n_layers: int) -> int:
    """``n_layers`` when nothing outside the layers above ``n_layers`` (and the pooler) trains: the embeddings,
    marker rows included, the first ``n_layers`` layers and anything the layers share (MPNet's relative position
    bias). Their output then depends on the input alone. Else 0."""
    layers = getattr(getattr(text_model, "encoder", None), "layer", None)
    if n_layers <= 0 or not isinstance(layers, nn.ModuleList):
        return 0
    trained_above = {id(p) for layer in layers[n_layers:] for p in layer.parameters()}
    pooler = getattr(text_model, "pooler", None)
    if pooler is not None:
        trained_above |= {id(p) for p in pooler.parameters()}
    below = [p for p in text_model.parameters() if id(p) not in trained_above]
    return 0 if any(p.requires_grad for p in below) else n_layers


#: encoders that :func:`run_lower_layers` / :func:`run_upper_layers` can split (Hugging Face ``model_type``)
SPLITTABLE_ENCODERS = ("bert", "mpnet")


def _layer_inputs(text_model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
    """What every layer takes besides the hidden states: the attention mask in the encoder's format, and MPNet's
    relative position bias."""
    from transformers.masking_utils import create_bidirectional_mask

    kind = getattr(text_model.config, "model_type", None)
    if kind not in SPLITTABLE_ENCODERS:
        raise ValueError(f"running the text encoder in two parts is implemented for {', '.join(SPLITTABLE_ENCODERS)} "
                         f"encoders; {type(text_model).__name__} is not one: set train.cache_frozen_states=false")
    mask = create_bidirectional_mask(config=text_model.config, inputs_embeds=hidden, attention_mask=attention_mask)
    if kind == "mpnet":
        return mask, text_model.encoder.compute_position_bias(hidden)
    return (mask,)


def _run_layers(layers, hidden: torch.Tensor, extra: tuple) -> torch.Tensor:
    for layer in layers:
        out = layer(hidden, *extra)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def run_lower_layers(text_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     n_layers: int) -> torch.Tensor:
    """Hidden states (B, L, H) after the embeddings and the first ``n_layers`` layers (BERT or MPNet)."""
    hidden = text_model.embeddings(input_ids=input_ids)
    extra = _layer_inputs(text_model, hidden, attention_mask)
    return _run_layers(text_model.encoder.layer[:n_layers], hidden, extra)


def run_upper_layers(text_model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                     n_layers: int) -> torch.Tensor:
    """The encoder's last hidden state, continuing from the output of its first ``n_layers`` layers; together with
    :func:`run_lower_layers` the same as one forward pass."""
    extra = _layer_inputs(text_model, hidden, attention_mask)
    return _run_layers(text_model.encoder.layer[n_layers:], hidden, extra)


def pad_states(rows: Sequence[torch.Tensor], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded per-sequence states (L_i, H) stacked into (B, width, H), zeros after each row, with the attention
    mask (B, width) of ones over each row; ``width`` defaults to the longest row."""
    width = max(r.shape[0] for r in rows) if width is None else width
    states = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=states.device)
    for i, r in enumerate(rows):
        states[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    return states, mask
