"""Training only part of the text encoder (cheaper steps on a CPU; benchmarks/cpu_speed.md).

* :class:`AddedRowsEmbedding`: the pretrained word-embedding table stays fixed while the rows of tokens added to
  the vocabulary (the entity markers) train. The step then has no dense gradient over the whole table and no
  optimizer update of its ~11.7M entries (MiniLM); it saves and loads as the ordinary ``weight``.
* :func:`freeze_lower_layers`: the embeddings and the lowest N transformer layers are not trained (the added
  rows still are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AddedRowsEmbedding(nn.Embedding):
    """An embedding table whose rows from ``first_added`` on train and whose earlier rows are fixed.

    ``weight`` keeps the whole table (frozen); ``added`` holds the trainable rows. The state dict holds one
    ``weight`` with the added rows written in, so a model saved with this module loads into a plain
    :class:`~torch.nn.Embedding` and the other way round.
    """

    def __init__(self, table: nn.Embedding, first_added: int) -> None:
        num, dim = table.weight.shape
        if not 0 < first_added < num:
            raise ValueError(f"first_added must be inside the table (1..{num - 1}), got {first_added}")
        super().__init__(num, dim, padding_idx=table.padding_idx, device=table.weight.device,
                         dtype=table.weight.dtype)
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
