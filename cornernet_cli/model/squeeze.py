"""CornerNet-Squeeze's building blocks (Law, Teng, Russakovsky & Deng 2019, "CornerNet-Lite", section 4.2).

The fire module (SqueezeNet's, Iandola et al. 2016, with a depthwise 3x3 expand branch) replaces the residual
block of the hourglass, and each hourglass level is upsampled by a transposed convolution instead of
nearest-neighbour. All tensors are NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

from cornernet_cli.model.pointwise import PointwiseConv


class FireModule(nn.Module):
    """Squeeze: 1x1 conv in_ch -> out_ch / 2 + BN (no ReLU). Expand: a 1x1 conv and a depthwise 3x3 conv
    (one input channel per output channel), out_ch / 2 each, both with `stride`, concatenated (1x1 first), BN.
    Plus the input when stride is 1 and in_ch == out_ch (no projection otherwise); ReLU.

    [B, in_ch, H, W] -> [B, out_ch, ceil(H / stride), ceil(W / stride)]; out_ch must be even.
    """

    CONV_BN_PAIRS = (("conv1", "bn1"),)  # bn2 normalises a concatenation of two convs: not folded (model.fold)

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        if out_ch % 2:
            raise ValueError(f"a fire module needs an even out_ch, got {out_ch}")
        half = out_ch // 2
        self.conv1 = nn.Conv2d(in_ch, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv_1x1 = PointwiseConv(half, half, stride)
        self.conv_3x3 = nn.Conv2d(half, half, 3, stride=stride, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.bn1(self.conv1(x))
        y = self.bn2(torch.cat((self.conv_1x1(s), self.conv_3x3(s)), dim=1))
        return torch.relu(y + x if self.skip else y)


class TransposedUpsample(nn.ConvTranspose2d):
    """x2 upsampling by a 4x4 stride-2 transposed convolution (padding 1, with bias): [B, C, h, w] ->
    [B, C, 2h, 2w], cropped at the bottom / right to the skip connection's size (odd sizes give 2h - 1)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return super().forward(x)[..., : size[0], : size[1]]
