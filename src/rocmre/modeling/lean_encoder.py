"""An inference-only forward pass of a BERT text encoder without Hugging Face's per-layer machinery.
:class:`LeanBertForward` runs the same parameters through the same operations with fused QKV products, giving
``last_hidden_state`` equal up to float rounding; used only in eval mode for encoders it matches
(:func:`lean_forward_supported`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rocmre.modeling.dropout import FAST_DROPOUT_ATTENTION
from rocmre.modeling.packed_linear import PackedLinears

#: the encoder attention implementations that equal ``scaled_dot_product_attention`` in eval mode (the fast-dropout
#: one of :mod:`rocmre.modeling.dropout` differs from ``sdpa`` only while dropping)
SDPA_EQUIVALENT = ("sdpa", FAST_DROPOUT_ATTENTION)


def lean_forward_supported(text_model: nn.Module) -> bool:
    """Whether :class:`LeanBertForward` computes exactly what ``text_model`` computes now (a plain BERT encoder
    attending with SDPA; checked on every use, since the attention implementation can be switched)."""
    cfg = getattr(text_model, "config", None)
    layers = getattr(getattr(text_model, "encoder", None), "layer", None)
    return (cfg is not None and getattr(cfg, "model_type", None) == "bert"
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
            and not getattr(cfg, "is_decoder", False) and not getattr(cfg, "add_cross_attention", False)
            and not getattr(cfg, "chunk_size_feed_forward", 0)
            and getattr(cfg, "_attn_implementation", None) in SDPA_EQUIVALENT
            and isinstance(layers, nn.ModuleList) and len(layers) > 0
            # plain query/key/value projections (a quantised model's modules hold no weight tensor to concatenate)
            and all(type(getattr(layer.attention.self, name, None)) is nn.Linear
                    for layer in layers for name in ("query", "key", "value")))


class LeanBertForward:
    """``last_hidden_state`` of a BERT encoder in eval mode, layer by layer; the fused QKV weights are rebuilt when
    a projection changes and after :meth:`clear`."""

    def __init__(self, text_model: nn.Module) -> None:
        if not lean_forward_supported(text_model):
            raise ValueError(f"the lean forward pass implements plain BERT encoders with SDPA attention; "
                             f"{type(text_model).__name__} is not one")
        self.text_model = text_model
        self._qkv: dict[int, tuple[tuple, torch.Tensor, torch.Tensor, list[torch.Tensor]]] = {}
        self.packed = PackedLinears()  # bf16 products with weights packed once (modeling/packed_linear.py)

    def clear(self) -> None:
        """Forget the concatenated and packed projection weights (weights are about to change)."""
        self._qkv = {}
        self.packed.clear()

    def _projection(self, index: int, attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [attention.query, attention.key, attention.value]
        tensors = [t for p in parts for t in (p.weight, p.bias)]
        # (inference tensors, as bf16 copies made under inference mode, keep no version: they are replaced, not edited)
        key = tuple((id(t), 0 if t.is_inference() else t._version) for t in tensors)
        kept = self._qkv.get(index)
        if kept is None or kept[0] != key:
            weight = torch.cat([p.weight.detach() for p in parts])
            bias = torch.cat([p.bias.detach() for p in parts])
            kept = (key, weight, bias, tensors)  # the tensors themselves: their ids stay theirs while kept
            self._qkv[index] = kept
        return kept[1], kept[2]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 n_layers: int | None = None) -> torch.Tensor:
        """(B, L, H) final hidden states (after the first ``n_layers`` layers when given); ``attention_mask``
        (B, L) is 1 at real tokens."""
        model = self.text_model
        linear = self.packed.linear
        hidden = model.embeddings(input_ids=input_ids)
        bsz, length, size = hidden.shape
        # (B, 1, 1, L): every query sees the real tokens; no mask at all when nothing is padded (one pair)
        keep = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for i, layer in enumerate(model.encoder.layer[:n_layers]):
            attention = layer.attention.self
            heads = attention.num_attention_heads
            weight, bias = self._projection(i, attention)
            qkv = linear((i, "qkv"), hidden, weight, bias)
            qkv = qkv.view(bsz, length, 3, heads, size // heads).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep, scale=attention.scaling)
            context = context.transpose(1, 2).reshape(bsz, length, size)
            out = layer.attention.output
            hidden = out.LayerNorm(linear((i, "attention"), context, out.dense.weight, out.dense.bias) + hidden)
            intermediate = layer.intermediate
            inner = intermediate.intermediate_act_fn(linear((i, "intermediate"), hidden, intermediate.dense.weight,
                                                            intermediate.dense.bias))
            out = layer.output
            hidden = out.LayerNorm(linear((i, "output"), inner, out.dense.weight, out.dense.bias) + hidden)
        return hidden
