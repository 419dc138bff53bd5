"""CornerNet: stacked hourglass + corner prediction modules + heads (paper sections 3 and 4.1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cornernet_cli.config import ModelConfig, model_config
from cornernet_cli.model.corner_pool import CornerPool
from cornernet_cli.model.hourglass import ConvBNReLU, StackedHourglass

HEAT_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1: the focal-loss prior of the paper's heatmap heads


class CornerOutputs(NamedTuple):
    """Raw head outputs of one stack, at output resolution h = ceil(H/4), w = ceil(W/4).

    tl_heat, br_heat: [B, C, h, w] heatmap logits (apply sigmoid for scores).
    tl_emb, br_emb:   [B, 1, h, w] associative embeddings.
    tl_off, br_off:   [B, 2, h, w] sub-pixel offsets in output pixels (channel 0 = x, 1 = y).
    """

    tl_heat: torch.Tensor
    br_heat: torch.Tensor
    tl_emb: torch.Tensor
    br_emb: torch.Tensor
    tl_off: torch.Tensor
    br_off: torch.Tensor


class CornerPoolModule(nn.Module):
    """The paper's corner pooling module (Fig. 7), for one corner type.

    Two 3x3 conv-BN-ReLU branches (pool_channels) are corner-pooled and summed, then 3x3 conv-BN,
    added to a 1x1 conv-BN shortcut of the input, ReLU, and a 3x3 conv-BN-ReLU.
    [B, channels, h, w] -> [B, channels, h, w].
    """

    def __init__(self, *, channels: int, pool_channels: int, directions: tuple[str, str], enabled: bool = True):
        super().__init__()
        self.branch1 = ConvBNReLU(channels, pool_channels)
        self.branch2 = ConvBNReLU(channels, pool_channels)
        self.pool = CornerPool(directions, enabled=enabled)
        self.p_conv = nn.Conv2d(pool_channels, channels, 3, padding=1, bias=False)
        self.p_bn = nn.BatchNorm2d(channels)
        self.skip_conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.skip_bn = nn.BatchNorm2d(channels)
        self.out = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.branch1(x), self.branch2(x))
        y = self.p_bn(self.p_conv(pooled)) + self.skip_bn(self.skip_conv(x))
        return self.out(F.relu(y, inplace=True))


def head(in_channels: int, hidden: int, out_channels: int, bias: float | None = None) -> nn.Sequential:
    """3x3 conv with bias + ReLU (no BN), then a 1x1 conv with bias to `out_channels`."""
    last = nn.Conv2d(hidden, out_channels, 1)
    if bias is not None:
        nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), last)


class CornerPrediction(nn.Module):
    """Prediction module of one stack for both corner types: [B, cnv, h, w] -> CornerOutputs."""

    def __init__(self, *, cnv_channels: int, pool_channels: int, head_channels: int, num_classes: int,
                 corner_pool: bool = True):
        super().__init__()
        c = cnv_channels
        self.tl_pool = CornerPoolModule(channels=c, pool_channels=pool_channels, directions=("top", "left"),
                                        enabled=corner_pool)
        self.br_pool = CornerPoolModule(channels=c, pool_channels=pool_channels,
                                        directions=("bottom", "right"), enabled=corner_pool)
        self.tl_heat = head(c, head_channels, num_classes, bias=HEAT_BIAS)
        self.br_heat = head(c, head_channels, num_classes, bias=HEAT_BIAS)
        self.tl_emb = head(c, head_channels, 1)
        self.br_emb = head(c, head_channels, 1)
        self.tl_off = head(c, head_channels, 2)
        self.br_off = head(c, head_channels, 2)

    def forward(self, cnv: torch.Tensor) -> CornerOutputs:
        tl, br = self.tl_pool(cnv), self.br_pool(cnv)
        heads = (self.tl_heat(tl), self.br_heat(br), self.tl_emb(tl), self.br_emb(br), self.tl_off(tl), self.br_off(br))
        # a channels_last network gives channels_last heads; the loss and the decode flatten them (small copies)
        return CornerOutputs(*(h.contiguous() for h in heads))


class CornerNet(nn.Module):
    """Stacked hourglass with one corner prediction module per stack (intermediate supervision).

    forward(images [B, 3, H, W], normalised) -> list[CornerOutputs]: one per stack in train mode,
    only the last stack's in eval mode. Outputs are at ceil(H/4) x ceil(W/4).
    """

    def __init__(self, *, num_stacks: int, stem_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...],
                 cnv_channels: int, pool_channels: int, head_channels: int, num_classes: int,
                 corner_pool: bool = True):
        super().__init__()
        self.backbone = StackedHourglass(num_stacks=num_stacks, stem_channels=stem_channels, channels=channels,
                                         blocks=blocks, cnv_channels=cnv_channels)
        self.predictions = nn.ModuleList(
            CornerPrediction(cnv_channels=cnv_channels, pool_channels=pool_channels, head_channels=head_channels,
                             num_classes=num_classes, corner_pool=corner_pool)
            for _ in range(num_stacks)
        )
        self.num_classes = num_classes
        self.config: ModelConfig | None = None  # set by build_model / from_config

    @classmethod
    def from_config(cls, config: ModelConfig) -> CornerNet:
        """The one place that turns a ModelConfig into keyword arguments."""
        model = cls(**config.to_dict())
        model.config = config
        return model

    def forward(self, images: torch.Tensor) -> list[CornerOutputs]:
        features = self.backbone(images)
        if not self.training:
            return [self.predictions[-1](features[-1])]
        return [pred(f) for pred, f in zip(self.predictions, features)]


def build_model(preset: str = "hourglass-104", num_classes: int = 80, corner_pool: bool = True) -> CornerNet:
    """Build a CornerNet from a named preset (see `cornernet_cli.config.PRESETS`).

    corner_pool=False keeps every layer but makes the pooling the identity (the paper's ablation).
    """
    return CornerNet.from_config(model_config(preset, num_classes, corner_pool))


def set_export_mode(model: nn.Module, enabled: bool = True, max_len: int | None = None) -> None:
    """Switch every CornerPool in `model` to the export-friendly doubling implementation (or back)."""
    for m in model.modules():
        if isinstance(m, CornerPool):
            m.export_friendly = enabled
            m.max_len = max_len
