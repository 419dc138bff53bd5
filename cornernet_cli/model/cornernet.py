"""CornerNet: stacked hourglass + corner prediction modules + heads (paper sections 3 and 4.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cornernet_cli.config import ModelConfig, model_config
from cornernet_cli.model.corner_pool import CornerPool
from cornernet_cli.model.hourglass import ConvBNReLU, StackedHourglass

HEAT_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1: the focal-loss prior of the paper's heatmap heads


OUTPUT_NAMES = ("tl_heat", "br_heat", "tl_emb", "br_emb", "tl_off", "br_off")
CENTRE_NAMES = ("ct_heat", "ct_off")


@dataclass(frozen=True, eq=False)
class CornerOutputs:
    """Raw head outputs of one stack, at output resolution h = ceil(H/s), w = ceil(W/s), s = the model's
    output_stride (4; 8 for CornerNet-Squeeze).

    tl_heat, br_heat: [B, C, h, w] heatmap logits (apply sigmoid for scores).
    tl_emb, br_emb:   [B, 1, h, w] associative embeddings.
    tl_off, br_off:   [B, 2, h, w] sub-pixel offsets in output pixels (channel 0 = x, 1 = y).
    ct_heat, ct_off:  a model built with centre_head=True (not in the paper): [B, C, h, w] centre heatmap
                      logits and [B, 2, h, w] centre offsets (x, y); None without a centre head.

    A pytree node (registered below): torch's tree utilities, and DDP when it looks for the output's
    tensors, see the six or eight tensors. No __eq__: comparing tensors has no single truth value.
    """

    tl_heat: torch.Tensor
    br_heat: torch.Tensor
    tl_emb: torch.Tensor
    br_emb: torch.Tensor
    tl_off: torch.Tensor
    br_off: torch.Tensor
    ct_heat: torch.Tensor | None = None
    ct_off: torch.Tensor | None = None

    @classmethod
    def from_heads(cls, heads: Iterable[torch.Tensor]) -> CornerOutputs:
        """Six head tensors in OUTPUT_NAMES order (e.g. an ONNX session's outputs), or eight with the centre
        heads ct_heat and ct_off last (OUTPUT_NAMES + CENTRE_NAMES)."""
        heads = list(heads)
        if len(heads) not in (6, 8):
            raise ValueError(f"expected 6 head tensors (or 8 with a centre head), got {len(heads)}")
        return cls(*heads)

    @property
    def has_centre(self) -> bool:
        return self.ct_heat is not None

    def corners(self) -> tuple[torch.Tensor, ...]:
        """The six corner heads, in OUTPUT_NAMES order."""
        return tuple(getattr(self, name) for name in OUTPUT_NAMES)

    def heads(self) -> tuple[torch.Tensor, ...]:
        """Every head the model has: OUTPUT_NAMES order, then CENTRE_NAMES with a centre head."""
        return self.corners() + ((self.ct_heat, self.ct_off) if self.has_centre else ())

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> CornerOutputs:
        """The same outputs (centre heads included) with `fn` applied to every tensor."""
        return CornerOutputs.from_heads(fn(t) for t in self.heads())


torch.export.register_dataclass(CornerOutputs, serialized_type_name="cornernet_cli.CornerOutputs")


class CornerPoolModule(nn.Module):
    """The paper's corner pooling module (Fig. 7), for one corner type.

    Two 3x3 conv-BN-ReLU branches (pool_channels) are corner-pooled and summed, then 3x3 conv-BN,
    added to a 1x1 conv-BN shortcut of the input, ReLU, and a 3x3 conv-BN-ReLU.
    [B, channels, h, w] -> [B, channels, h, w].
    """

    CONV_BN_PAIRS = (("p_conv", "p_bn"), ("skip_conv", "skip_bn"))  # BNs applied straight to a conv (model.fold)

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


def head(in_channels: int, hidden: int, out_channels: int, bias: float | None = None,
         kernel: int = 3) -> nn.Sequential:
    """kernel x kernel conv with bias + ReLU (no BN; 3x3 in the paper, 1x1 in CornerNet-Squeeze), then a 1x1
    conv with bias to `out_channels`."""
    last = nn.Conv2d(hidden, out_channels, 1)
    if bias is not None:
        nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(in_channels, hidden, kernel, padding=(kernel - 1) // 2), nn.ReLU(inplace=True),
                         last)


class CornerPrediction(nn.Module):
    """Prediction module of one stack for both corner types: [B, cnv, h, w] -> CornerOutputs."""

    def __init__(self, *, cnv_channels: int, pool_channels: int, head_channels: int, num_classes: int,
                 corner_pool: bool = True, centre_head: bool = False, head_kernel: int = 3):
        super().__init__()
        c = cnv_channels
        k = head_kernel
        self.tl_pool = CornerPoolModule(channels=c, pool_channels=pool_channels, directions=("top", "left"),
                                        enabled=corner_pool)
        self.br_pool = CornerPoolModule(channels=c, pool_channels=pool_channels,
                                        directions=("bottom", "right"), enabled=corner_pool)
        self.tl_heat = head(c, head_channels, num_classes, bias=HEAT_BIAS, kernel=k)
        self.br_heat = head(c, head_channels, num_classes, bias=HEAT_BIAS, kernel=k)
        self.tl_emb = head(c, head_channels, 1, kernel=k)
        self.br_emb = head(c, head_channels, 1, kernel=k)
        self.tl_off = head(c, head_channels, 2, kernel=k)
        self.br_off = head(c, head_channels, 2, kernel=k)
        # The centre heads read the hourglass features directly (no corner pooling): a centre lies inside its object.
        self.ct_heat = head(c, head_channels, num_classes, bias=HEAT_BIAS, kernel=k) if centre_head else None
        self.ct_off = head(c, head_channels, 2, kernel=k) if centre_head else None

    def forward(self, cnv: torch.Tensor) -> CornerOutputs:
        tl, br = self.tl_pool(cnv), self.br_pool(cnv)
        heads = (self.tl_heat(tl), self.br_heat(br), self.tl_emb(tl), self.br_emb(br), self.tl_off(tl), self.br_off(br))
        centre = (self.ct_heat(cnv), self.ct_off(cnv)) if self.ct_heat is not None else ()
        out = CornerOutputs.from_heads(heads + centre)
        # a channels_last network gives channels_last heads; the loss and the decode flatten them (small copies)
        return out.map(torch.Tensor.contiguous)


class CornerNet(nn.Module):
    """Stacked hourglass with one corner prediction module per stack (intermediate supervision).

    forward(images [B, 3, H, W], normalised) -> list[CornerOutputs]: one per stack in train mode,
    only the last stack's in eval mode. Outputs are at ceil(H/s) x ceil(W/s), s = output_stride (4 or 8).
    block / output_stride / head_kernel: see `cornernet_cli.config.ModelConfig` (CornerNet-Squeeze: "fire", 8, 1).
    """

    def __init__(self, *, num_stacks: int, stem_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...],
                 cnv_channels: int, pool_channels: int, head_channels: int, num_classes: int,
                 corner_pool: bool = True, centre_head: bool = False, block: str = "residual",
                 output_stride: int = 4, head_kernel: int = 3):
        super().__init__()
        self.backbone = StackedHourglass(num_stacks=num_stacks, stem_channels=stem_channels, channels=channels,
                                         blocks=blocks, cnv_channels=cnv_channels, block=block,
                                         output_stride=output_stride)
        self.predictions = nn.ModuleList(
            CornerPrediction(cnv_channels=cnv_channels, pool_channels=pool_channels, head_channels=head_channels,
                             num_classes=num_classes, corner_pool=corner_pool, centre_head=centre_head,
                             head_kernel=head_kernel)
            for _ in range(num_stacks)
        )
        self.num_classes = num_classes
        self.output_stride = output_stride
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


def build_model(preset: str = "hourglass-104", num_classes: int = 80, corner_pool: bool = True,
                centre_head: bool = False) -> CornerNet:
    """Build a CornerNet from a named preset (see `cornernet_cli.config.PRESETS`).

    corner_pool=False keeps every layer but makes the pooling the identity (the paper's ablation).
    centre_head=True adds a centre heatmap and centre offsets to every prediction module (not in the paper:
    CenterNet's keypoint triplets, Duan et al. 2019); the decoder then drops boxes with no centre inside.
    """
    return CornerNet.from_config(model_config(preset, num_classes, corner_pool, centre_head))


def set_export_mode(model: nn.Module, enabled: bool = True, max_len: int | None = None) -> None:
    """Switch every CornerPool in `model` to the export-friendly doubling implementation (or back)."""
    for m in model.modules():
        if isinstance(m, CornerPool):
            m.export_friendly = enabled
            m.max_len = max_len
