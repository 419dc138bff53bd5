"""A strided 1x1 convolution that avoids a oneDNN fault (shared by the residual block and the fire module)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (no bias) with a stride, computed as subsampling then a stride-1 1x1 convolution: the
    same values and parameters, but it avoids oneDNN's strided 1x1 weight-gradient kernel, which corrupts the
    heap in channels_last with fewer than 16 input channels (torch 2.13 CPU; crashes the `tiny` preset)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        return F.conv2d(x[..., :: s[0], :: s[1]] if s != (1, 1) else x, self.weight, self.bias)
