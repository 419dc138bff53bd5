"""Stacked hourglass backbone (Newell et al. 2016) as CornerNet modifies it (paper section 4.1).

All tensors are NCHW. The stem divides the resolution by 4 (7x7/2 conv, stride-2 residual) or, with
output_stride 8 (CornerNet-Squeeze), by 8 (a second stride-2 residual), so a [B, 3, H, W] image gives
[B, C, ceil(H/s), ceil(W/s)] features. Any H, W work: each hourglass level upsamples back to its skip
connection's exact size, so odd sizes do not break it. block "fire" builds CornerNet-Squeeze's hourglass
(cornernet_cli.model.squeeze): fire modules instead of residuals, transposed-convolution upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cornernet_cli.model.pointwise import PointwiseConv
from cornernet_cli.model.squeeze import FireModule, TransposedUpsample


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias, 'same' padding) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class Residual(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus a 1x1 conv-BN shortcut when stride or width changes; ReLU."""

    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))  # BNs applied straight to a conv's output (model.fold)

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


_BLOCKS = {"residual": Residual, "fire": FireModule}


def residuals(in_ch: int, out_ch: int, count: int, stride: int = 1, block: str = "residual") -> nn.Sequential:
    """`count` blocks (Residual, or FireModule with block="fire"); the first goes in_ch -> out_ch with `stride`."""
    make = _BLOCKS[block]
    layers = [make(in_ch, out_ch, stride)]
    layers += [make(out_ch, out_ch) for _ in range(count - 1)]
    return nn.Sequential(*layers)


class NearestUpsample(nn.Module):
    """Nearest-neighbour upsampling of [B, C, h, w] to `size` (the skip connection's (H, W))."""

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="nearest")


class Hourglass(nn.Module):
    """One hourglass, built recursively from `channels` and `blocks` (outermost level first).

    Level with widths (c, c') and block count m (blocks: residuals, or fire modules with block="fire"):
      up1  = m blocks at c;
      low1 = stride-2 block c -> c', then m - 1 blocks at c';
      low2 = the next level, or at the bottom `blocks[-1]` blocks at c';
      low3 = m - 1 blocks at c', then one c' -> c;
      out  = up1 + up2(low3) at up1's size; up2 is nearest-neighbour upsampling, or with block="fire" a 4x4
             stride-2 transposed convolution (cropped to up1's size).
    """

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...], block: str = "residual"):
        super().__init__()
        if len(channels) < 2 or len(channels) != len(blocks):
            raise ValueError("channels and blocks must have the same length (>= 2)")
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {', '.join(_BLOCKS)}, got {block!r}")
        c, c_next = channels[0], channels[1]
        m = blocks[0]
        make = _BLOCKS[block]
        self.up1 = residuals(c, c, m, block=block)
        self.low1 = residuals(c, c_next, m, stride=2, block=block)
        if len(channels) > 2:
            self.low2 = Hourglass(channels[1:], blocks[1:], block=block)
        else:
            self.low2 = residuals(c_next, c_next, blocks[1], block=block)
        self.low3 = nn.Sequential(*[make(c_next, c_next) for _ in range(m - 1)], make(c_next, c))
        self.up2 = TransposedUpsample(c) if block == "fire" else NearestUpsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low3 = self.low3(self.low2(self.low1(x)))
        return up1 + self.up2(low3, up1.shape[-2:])


class StackedHourglass(nn.Module):
    """Stem + `num_stacks` hourglasses; returns each stack's `cnv` features.

    Stem: 7x7/2 conv-BN-ReLU to stem_channels, a stride-2 residual to channels[0], and with output_stride 8
    a second stride-2 residual at channels[0]. Between stacks: 1x1 conv-BN of the stack's input + 1x1 conv-BN
    of its cnv, ReLU, one residual (a residual with either block kind, as CornerNet-Squeeze has it).

    forward: images [B, 3, H, W] -> list of num_stacks tensors [B, cnv_channels, ceil(H/s), ceil(W/s)],
    s = output_stride.
    """

    def __init__(
        self,
        *,
        num_stacks: int,
        stem_channels: int,
        channels: tuple[int, ...],
        blocks: tuple[int, ...],
        cnv_channels: int,
        block: str = "residual",
        output_stride: int = 4,
    ):
        super().__init__()
        if output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {output_stride}")
        c = channels[0]
        extra = [Residual(c, c, 2)] if output_stride == 8 else []
        self.stem = nn.Sequential(ConvBNReLU(3, stem_channels, 7, stride=2), Residual(stem_channels, c, 2), *extra)
        self.hourglasses = nn.ModuleList(Hourglass(channels, blocks, block=block) for _ in range(num_stacks))
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
