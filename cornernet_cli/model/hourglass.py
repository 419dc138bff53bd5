"""Stacked hourglass backbone (Newell et al. 2016) as CornerNet modifies it (paper section 4.1).

All tensors are NCHW. The stem divides the resolution by 4 (7x7/2 conv, stride-2 residual), so a
[B, 3, H, W] image gives [B, C, ceil(H/4), ceil(W/4)] features. Any H, W work: each hourglass level
upsamples back to its skip connection's exact size, so odd sizes do not break it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias, 'same' padding) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (no bias) with a stride, computed as subsampling then a stride-1 1x1 convolution: the
    same values and parameters, but it avoids oneDNN's strided 1x1 weight-gradient kernel, which corrupts the
    heap in channels_last with fewer than 16 input channels (torch 2.13 CPU; crashes the `tiny` preset)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        return F.conv2d(x[..., :: s[0], :: s[1]] if s != (1, 1) else x, self.weight, self.bias)


class Residual(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus a 1x1 conv-BN shortcut when stride or width changes; ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.skip = (
            nn.Sequential(PointwiseConv(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x), inplace=True)


def residuals(in_ch: int, out_ch: int, count: int, stride: int = 1) -> nn.Sequential:
    """`count` residual blocks; the first goes in_ch -> out_ch with `stride`."""
    layers = [Residual(in_ch, out_ch, stride)]
    layers += [Residual(out_ch, out_ch) for _ in range(count - 1)]
    return nn.Sequential(*layers)


class Hourglass(nn.Module):
    """One hourglass, built recursively from `channels` and `blocks` (outermost level first).

    Level with widths (c, c') and block count m:
      up1  = m residuals at c;
      low1 = stride-2 residual c -> c', then m - 1 residuals at c';
      low2 = the next level, or at the bottom `blocks[-1]` residuals at c';
      low3 = m - 1 residuals at c', then one c' -> c;
      out  = up1 + upsample_nearest(low3) to up1's size.
    """

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        if len(channels) < 2 or len(channels) != len(blocks):
            raise ValueError("channels and blocks must have the same length (>= 2)")
        c, c_next = channels[0], channels[1]
        m = blocks[0]
        self.up1 = residuals(c, c, m)
        self.low1 = residuals(c, c_next, m, stride=2)
        if len(channels) > 2:
            self.low2 = Hourglass(channels[1:], blocks[1:])
        else:
            self.low2 = residuals(c_next, c_next, blocks[1])
        self.low3 = nn.Sequential(
            *[Residual(c_next, c_next) for _ in range(m - 1)], Residual(c_next, c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low3 = self.low3(self.low2(self.low1(x)))
        return up1 + F.interpolate(low3, size=up1.shape[-2:], mode="nearest")


class StackedHourglass(nn.Module):
    """Stem + `num_stacks` hourglasses; returns each stack's `cnv` features.

    Between stacks: 1x1 conv-BN of the stack's input + 1x1 conv-BN of its cnv, ReLU, one residual.

    forward: images [B, 3, H, W] -> list of num_stacks tensors [B, cnv_channels, ceil(H/4), ceil(W/4)].
    """

    def __init__(
        self,
        *,
        num_stacks: int,
        stem_channels: int,
        channels: tuple[int, ...],
        blocks: tuple[int, ...],
        cnv_channels: int,
    ):
        super().__init__()
        c = channels[0]
        self.stem = nn.Sequential(ConvBNReLU(3, stem_channels, 7, stride=2), Residual(stem_channels, c, 2))
        self.hourglasses = nn.ModuleList(Hourglass(channels, blocks) for _ in range(num_stacks))
        self.cnvs = nn.ModuleList(ConvBNReLU(c, cnv_channels, 3) for _ in range(num_stacks))
        n_inter = num_stacks - 1
        self.inters_ = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)) for _ in range(n_inter)
        )
        self.cnvs_ = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cnv_channels, c, 1, bias=False), nn.BatchNorm2d(c)) for _ in range(n_inter)
        )
        self.inters = nn.ModuleList(Residual(c, c) for _ in range(n_inter))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        inter = self.stem(images)
        features = []
        for i, (hourglass, cnv_layer) in enumerate(zip(self.hourglasses, self.cnvs)):
            cnv = cnv_layer(hourglass(inter))
            features.append(cnv)
            if i < len(self.inters):
                inter = F.relu(self.inters_[i](inter) + self.cnvs_[i](cnv), inplace=True)
                inter = self.inters[i](inter)
        return features
