"""The one place that turns a --device value into a torch.device, refusing what this machine cannot run."""

from __future__ import annotations

import torch

from cornernet_cli.errors import SettingError


def resolve_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """`auto` -> cuda:LOCAL_RANK when CUDA is available, else cpu; `cuda` -> cuda:LOCAL_RANK; `cuda:N`, `cpu`.

    Every command calls this before it loads or allocates anything, so an unavailable device is one line
    (a SettingError naming `device`, exit code 2) instead of a traceback from deep inside torch. Selects the CUDA
    device.
    """
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise SettingError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise SettingError(f"device {name} was asked for but CUDA is not available on this machine")
    device = torch.device(f"cuda:{index or local_rank}")
    if device.index >= torch.cuda.device_count():
        found = ", ".join(f"cuda:{i}" for i in range(torch.cuda.device_count()))
        raise SettingError(f"device {name} is not on this machine (its CUDA devices: {found})")
    torch.cuda.set_device(device)
    return device
