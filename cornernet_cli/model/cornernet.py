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
    """Raw head outputs of one stack, at output resolution h = ceil(H/s), w = ceil(W/s), s = the model's
    output_stride (4; 8 for CornerNet-Squeeze).

    tl_heat, br_heat: [B, C, h, w] heatmap logits (apply sigmoid for scores).
    tl_emb, br_emb:   [B, 1, h, w] associative embeddings.
    tl_off, br_off:   [B, 2, h, w] sub-pixel offsets in output pixels (channel 0 = x, 1 = y).
    ct_heat, ct_off:  None here; a model built with centre_head=True returns `CentreOutputs`, where they hold
                      the centre heads. They are attributes, never tuple items: the tuple is always the six.
    """

    tl_heat: torch.Tensor
    br_heat: torch.Tensor
    tl_emb: torch.Tensor
    br_emb: torch.Tensor
    tl_off: torch.Tensor
    br_off: torch.Tensor
    ct_heat = None
    ct_off = None

    def map(self, fn) -> CornerOutputs:
        """The same outputs (centre heads included) with `fn` applied to every tensor."""
        corners = [fn(t) for t in self]
        if self.ct_heat is None:
            return CornerOutputs(*corners)
        return CentreOutputs(*corners, ct_heat=fn(self.ct_heat), ct_off=fn(self.ct_off))


class CentreOutputs(CornerOutputs):
    """CornerOutputs of a model with a centre head (CenterNet-style triplets, not in the paper).

    Iterates, unpacks and indexes as the six corner heads; the centre heads are the attributes
    ct_heat [B, C, h, w] (logits) and ct_off [B, 2, h, w] (centre offsets, x then y). Rebuild one with
    `map` or `_replace` (both keep the centre heads; copy and pickle do too), not `type(o)(*o)` or `_make`:
    torch's pytree utilities treat it as a plain namedtuple of the six, so a pytree round trip fails loudly
    here rather than dropping the centre heads.
    """

    def __new__(cls, *corners: torch.Tensor, ct_heat: torch.Tensor, ct_off: torch.Tensor) -> CentreOutputs:
        self = super().__new__(cls, *corners)
        self.ct_heat, self.ct_off = ct_heat, ct_off
        return self

    @classmethod
    def _make(cls, iterable):
        raise TypeError("CentreOutputs needs its centre heads: CentreOutputs(*six, ct_heat=..., ct_off=...)")

    def _replace(self, **changes) -> CentreOutputs:
        centre = {"ct_heat": changes.pop("ct_heat", self.ct_heat), "ct_off": changes.pop("ct_off", self.ct_off)}
        corners = CornerOutputs(*self)._replace(**changes)
        return CentreOutputs(*corners, **centre)

    def __reduce__(self):
        return _centre_outputs, (tuple(self), self.ct_heat, self.ct_off)


def _centre_outputs(corners: tuple, ct_heat: torch.Tensor, ct_off: torch.Tensor) -> CentreOutputs:
    return CentreOutputs(*corners, ct_heat=ct_heat, ct_off=ct_off)


def outputs_from_heads(heads) -> CornerOutputs:
    """Six head tensors (OUTPUT_NAMES order, e.g. an ONNX session's outputs) -> CornerOutputs; eight (a centre
    head's ct_heat and ct_off last) -> CentreOutputs."""
    heads = list(heads)
    if len(heads) == 6:
        return CornerOutputs(*heads)
    if len(heads) == 8:
        return CentreOutputs(*heads[:6], ct_heat=heads[6], ct_off=heads[7])
    raise ValueError(f"expected 6 head tensors (or 8 with a centre head), got {len(heads)}")


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
        out = CornerOutputs(*heads)
        if self.ct_heat is not None:
            out = CentreOutputs(*heads, ct_heat=self.ct_heat(cnv), ct_off=self.ct_off(cnv))
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
