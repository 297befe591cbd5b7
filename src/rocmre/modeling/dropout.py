"""Dropout whose random mask is cheap on a CPU (docs/training.md).
:class:`FastDropout` draws 16-bit integers from numpy's PCG64, seeded from torch's generator (so seeds still
determine every mask); keep probability ``1 - round(p * 65536) / 65536``. :func:`use_fast_dropout` does the same for
a Hugging Face encoder's attention dropout (:func:`fast_dropout_attention`). Not used on a GPU."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_LEVELS = 1 << 16


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``x`` with each element zeroed with probability ``p`` and the rest scaled by ``1 / (1 - p)``."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    seed = int(torch.randint(0, 2**62, (1,)).item())
    draws = np.random.Generator(np.random.PCG64(seed)).integers(0, _LEVELS, size=x.numel(), dtype=np.uint16)
    keep = torch.from_numpy(draws >= round(p * _LEVELS)).view(x.shape).to(x.device)
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


#: the attention implementation name :func:`use_fast_dropout` gives Hugging Face encoders
FAST_DROPOUT_ATTENTION = "rocmre_fast_dropout"


def fast_dropout_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs) -> tuple[torch.Tensor, None]:
    """A Hugging Face attention function: softmax(q k^T * scaling + mask) with :func:`fast_dropout`, times v,
    when it drops on a CPU; ``sdpa`` otherwise (evaluation, no dropout, another device)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if dropout == 0.0 or query.device.type != "cpu":
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                               scaling=scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    """Register the attention function, and ``sdpa``'s mask format for it (else Hugging Face passes no mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(FAST_DROPOUT_ATTENTION, fast_dropout_attention)
    AttentionMaskInterface.register(FAST_DROPOUT_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the mask drawn by :func:`fast_dropout` (same ``p``, same module interface)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> int:
    """Turn every ``nn.Dropout`` under ``module`` into a :class:`FastDropout` in place, and Hugging Face encoders
    that attend with ``sdpa`` to :func:`fast_dropout_attention`; returns how many dropout modules changed.
    The attention dropout of ``torch.nn.MultiheadAttention`` (the fusion layers) is left as it is."""
    from transformers import PreTrainedModel

    count = 0
    for sub in module.modules():
        if type(sub) is nn.Dropout:
            sub.__class__ = FastDropout
            count += 1
        elif isinstance(sub, PreTrainedModel) and sub.config._attn_implementation == "sdpa":
            _register_attention()
            sub.set_attn_implementation(FAST_DROPOUT_ATTENTION)
    return count
