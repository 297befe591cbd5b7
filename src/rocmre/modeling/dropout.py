"""Dropout whose random mask is cheap on a CPU.

``torch.nn.Dropout`` draws its mask with ``bernoulli_``, one Mersenne-Twister draw per element: on 2 CPU cores
that is about a fifth of a MiniLM training step (benchmarks/cpu_speed.md). :class:`FastDropout` draws 16-bit
integers from numpy's PCG64 instead (a fresh generator per call, seeded from torch's default generator, so
``torch.manual_seed`` and the Trainer's saved RNG state still determine every mask). The keep probability is
``1 - round(p * 65536) / 65536`` (p = 0.1 is off by 6e-6). Same expectation as ``nn.Dropout``, other masks: the
switch ``train.fast_dropout`` changes a seeded run's numbers, and on a GPU it is not used.
"""

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


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the mask drawn by :func:`fast_dropout` (same ``p``, same module interface)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> int:
    """Turn every ``nn.Dropout`` under ``module`` into a :class:`FastDropout` in place; returns how many.

    Attention-probability dropout inside fused attention kernels (a ``p`` read by the kernel, not a module call)
    is left as it is."""
    count = 0
    for sub in module.modules():
        if type(sub) is nn.Dropout:
            sub.__class__ = FastDropout
            count += 1
    return count
