"""Mixed precision settings shared by training, evaluation, detection and the benchmark.

`--amp off` is fp32. `bf16` autocasts convolutions to bfloat16 on GPUs and on CPUs (fast where the CPU has
native bf16 instructions, e.g. AVX512-BF16 or AMX; slower than fp32 elsewhere). `fp16` is for CUDA only and
trains with a GradScaler. Heads are cast back to fp32 before the loss and the decode.
"""

from __future__ import annotations

import contextlib

import torch

from cornernet_cli.errors import SettingError

AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device` (None for fp32); a SettingError naming `amp` for a bad value."""
    if amp not in AMP_DTYPES:
        raise SettingError(f"amp must be off, bf16 or fp16, got {amp!r}")
    if torch.device(device).type != "cuda" and amp == "fp16":
        raise SettingError("amp fp16 needs device cuda (use bf16 or off on the CPU)")
    return AMP_DTYPES[amp]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype` on the device's type, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
