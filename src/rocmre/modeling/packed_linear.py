"""bf16 matrix products on a CPU with the weights packed once by oneDNN, for inference (same numbers as
``F.linear`` under autocast). Anything else (fp32, GPU, training) is an ordinary ``F.linear``; a changed weight is
packed again, :meth:`PackedLinears.clear` drops them all."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator

import torch
import torch.nn.functional as F

_SUPPORT: bool | None = None
_DISABLED = 0  # > 0 inside packing_disabled()


@contextlib.contextmanager
def packing_disabled() -> Iterator[None]:
    """Every product through plain ``F.linear`` inside the block (for comparisons: the numbers are the same)."""
    global _DISABLED
    _DISABLED += 1
    try:
        yield
    finally:
        _DISABLED -= 1


def packing_supported() -> bool:
    """Whether this torch build and CPU run packed bf16 products (checked once, on a tiny product)."""
    global _SUPPORT
    if _SUPPORT is None:
        try:
            mkldnn = torch.ops.mkldnn
            ok = bool(torch.backends.mkldnn.is_available() and mkldnn._is_mkldnn_bf16_supported())
            if ok:  # the operators exist and agree with F.linear on a tiny product
                x = torch.randn(3, 8).to(torch.bfloat16)
                w = torch.randn(4, 8).to(torch.bfloat16)
                b = torch.randn(4).to(torch.bfloat16)
                got = mkldnn._linear_pointwise(x, mkldnn._reorder_linear_weight(w, None), b, "none", [], "")
                ok = bool(torch.allclose(got.float(), F.linear(x, w, b).float(), atol=1e-2, rtol=1e-2))
        except (AttributeError, RuntimeError):
            ok = False
        _SUPPORT = ok
    return _SUPPORT


def _owner(t: torch.Tensor) -> torch.Tensor:
    """The tensor ``t`` is a view of (itself when it is none): views made anew on each call (an attention layer's
    ``in_proj_bias.chunk(3)``) then keep one packed entry instead of being packed again every call."""
    return t if t._base is None else t._base


def _version(t: torch.Tensor) -> int:
    # inference tensors (bf16 copies made under inference mode) keep no version: they are replaced, not edited
    return 0 if t.is_inference() else t._version


class PackedLinears:
    """``linear(key, x, weight, bias)``: ``F.linear`` with bf16 autocast semantics, through a packed copy of
    ``weight`` kept under ``key`` (one key per layer slot, so a replaced weight replaces its packed copy)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple] = {}

    def clear(self) -> None:
        """Forget every packed weight (weights are about to change)."""
        self._entries = {}

    @staticmethod
    def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether the packed path computes this product: bf16 weight on a CPU, no autograd, bf16 inputs or bf16
        autocast active (which would cast them)."""
        return (weight.dtype == torch.bfloat16 and x.device.type == "cpu" and weight.device.type == "cpu"
                and not torch.is_grad_enabled()
                and (x.dtype == torch.bfloat16 or (x.dtype == torch.float32 and torch.is_autocast_enabled("cpu")
                                                   and torch.get_autocast_dtype("cpu") == torch.bfloat16))
                and not _DISABLED and packing_supported())

    def linear(self, key: Hashable, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               source: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ weight.T + bias``; ``source`` is the tensor ``weight`` is a view of (an attention layer's packed
        input projection), whose identity and version decide when the packed copy is made again."""
        if not self.applies(x, weight):
            return F.linear(x, weight, bias)
        owner = _owner(weight) if source is None else source
        bias_owner = None if bias is None else _owner(bias)
        entry = self._entries.get(key)
        if (entry is None or entry[0] is not owner or entry[1] != _version(owner)
                or entry[2] is not bias_owner or (bias is not None and entry[3] != _version(bias_owner))):
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
            low_bias = None if bias is None else bias.detach().to(torch.bfloat16)
            entry = (owner, _version(owner), bias_owner, None if bias is None else _version(bias_owner), packed,
                     low_bias)
            self._entries[key] = entry
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        out = torch.ops.mkldnn._linear_pointwise(flat, entry[4], entry[5], "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])
