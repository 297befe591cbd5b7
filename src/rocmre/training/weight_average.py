"""An exponential moving average of a model's trainable weights (``train.ema_decay``), validated and saved
instead of the raw weights; decay ``min(d, (1 + t) / (10 + t))``. It travels with checkpoints (``ema.safetensors``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["EMA_NAME", "WeightAverage"]

EMA_NAME = "ema.safetensors"


class WeightAverage:
    """The running average of ``model``'s parameters that require a gradient (fp32 copies)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses (warm-up: ``(1 + t) / (10 + t)`` while that is smaller)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step)."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], weight)
        self.updates += 1

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (the current ones restored afterwards)."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup, strict=True):
                    p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow weights by parameter name, and the update count (for ``safetensors``)."""
        return {**{n: s.contiguous().cpu() for n, s in zip(self.names, self.shadow, strict=True)},
                "__updates__": torch.tensor(self.updates, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s output; the parameter names must match."""
        missing = [n for n in self.names if n not in state]
        if missing or "__updates__" not in state:
            raise ValueError(f"the saved weight average does not fit this model: missing {missing[:5] or 'the count'}")
        for s, n in zip(self.shadow, self.names, strict=True):
            s.copy_(state[n].to(s.device, s.dtype))
        self.updates = int(state["__updates__"])
