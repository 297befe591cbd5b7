"""What the machine offers, detected and never assumed: native bfloat16, and the hardware in words."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def bf16_supported() -> bool:
    """Whether this machine computes bfloat16 natively (so autocast pays instead of emulating it)."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(setting: str) -> str:
    """``auto`` -> ``bf16`` where the hardware computes bfloat16 natively (CUDA, or a CPU with AVX512-BF16 or AMX),
    else ``fp32``; any other setting as it is."""
    if setting != "auto":
        return setting
    return "bf16" if bf16_supported() else "fp32"


def machine_description() -> str:
    """The hardware a run used, in words."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), {platform.machine()}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads " \
           f"{torch.get_num_threads()}"
