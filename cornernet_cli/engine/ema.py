"""Exponential moving average (EMA) of the weights, on torch's own `AveragedModel`.

After n updates the average moves towards the live weights with decay d_n = min(decay, (1 + n) / (10 + n)):
early on the average follows the fast-changing network closely (d_1 = 0.18, d_100 = 0.92), later it averages
over about 1 / (1 - decay) steps. Parameters and buffers (BatchNorm statistics) are both averaged, so the
averaged network is used as it is for validation and checkpoints; it is never trained itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(n_averaged: int, decay: float) -> float:
    """The decay used for the update after `n_averaged` earlier updates (the first update copies)."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An `AveragedModel` of `model` (a deep copy, same device and memory format) with the ramped decay."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        weight = 1.0 - ema_decay(int(n_averaged), decay)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the live model
            for a, c in zip(averaged, current):
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
