"""Mixed precision settings shared by training, evaluation, detection and the benchmark.

`--amp off` is fp32. `bf16` autocasts convolutions to bfloat16 on GPUs and on CPUs (fast where the CPU has
native bf16 instructions, e.g. AVX512-BF16 or AMX; slower than fp32 elsewhere). `fp16` is for CUDA only and
trains with a GradScaler. Heads are cast back to fp32 before the loss and the decode.

`auto` picks the fast path by itself: bf16 on a CPU with native bf16 instructions, fp32 elsewhere (GPUs
included, whose recipes were measured in fp32). Measured on an AMD EPYC with AVX512-BF16, one thread
(docs/performance.md): a small-fast training step 1.7x faster, and BCCD test AP within 0.003 of fp32.
"""

from __future__ import annotations

import contextlib

import torch

from cornernet_cli.errors import SettingError

AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX tiles), where oneDNN's bf16
    convolutions beat fp32; elsewhere bf16 is emulated and slower."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """`amp` with "auto" replaced by what it means on `device`: bf16 on a CPU with native bf16, else off."""
    if amp not in AMP_CHOICES:
        raise SettingError(f"amp must be auto, off, bf16 or fp16, got {amp!r}")
    if amp != "auto":
        return amp
    return "bf16" if torch.device(device).type == "cpu" and native_bf16() else "off"


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for `amp` (auto | off | bf16 | fp16, see `resolve_amp`) on `device` (None for fp32);
    a SettingError naming `amp` for a bad value."""
    amp = resolve_amp(amp, device)
    if torch.device(device).type != "cuda" and amp == "fp16":
        raise SettingError("amp fp16 needs device cuda (use bf16 or off on the CPU)")
    return AMP_DTYPES[amp]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype` on the device's type, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
