"""cornernet import-weights: the key maps are checked against re-implementations of the SOURCE networks.

`OriginalNet` names its modules like princeton-vl/CornerNet (models/py_utils/kp.py, utils.py,
models/CornerNet.py) and `MMDetNet` like mmdetection (HourglassNet + CornerHead); each computes its forward
pass in its source's order of operations, with its own naive corner pooling loops. They are filled with
random weights, saved in the source's file layout, imported, and compared with our network.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cornernet_cli.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from cornernet_cli.config import PRESETS, ModelConfig, model_config
from cornernet_cli.data.transforms import MEAN, STD
from cornernet_cli.engine.checkpoint import load_model
from cornernet_cli.errors import CornerNetError
from cornernet_cli.import_weights import (
    fit_state,
    import_weights,
    infer_config,
    preset_name,
    rename_state_dict,
    source_state,
)
from cornernet_cli.model import build_model
from cornernet_cli.model.cornernet import CornerNet, CornerOutputs

REPO = Path(__file__).resolve().parents[1]


# ---- naive corner pooling (independent of cornernet_cli.model.corner_pool) ----------------------------


def naive_pool(x: torch.Tensor, direction: str) -> torch.Tensor:
    """top: max over rows below (k >= i); left: columns to the right; bottom: rows above; right: columns left."""
    dim = -2 if direction in ("top", "bottom") else -1
    n = x.shape[dim]
    order = range(n - 1, -1, -1) if direction in ("top", "left") else range(n)
    out = torch.empty_like(x)
    running = None
    for i in order:
        cur = x.select(dim, i)
        running = cur if running is None else torch.maximum(running, cur)
        out.select(dim, i).copy_(running)
    return out


# ---- the original CornerNet's naming -------------------------------------------------------------------


class OConvolution(nn.Module):  # utils.convolution
    def __init__(self, k, inp, out, stride=1, with_bn=True):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, k, padding=(k - 1) // 2, stride=stride, bias=not with_bn)
        self.bn = nn.BatchNorm2d(out) if with_bn else nn.Sequential()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class OResidual(nn.Module):  # utils.residual
    def __init__(self, inp, out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, padding=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.skip = (nn.Sequential(nn.Conv2d(inp, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
                     if stride != 1 or inp != out else nn.Sequential())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class OKpModule(nn.Module):  # kp.kp_module with CornerNet.py's make_pool_layer (identity) / make_hg_layer (stride 2)
    def __init__(self, n, dims, mods):
        super().__init__()
        c, c2, m = dims[0], dims[1], mods[0]
        self.up1 = nn.Sequential(*[OResidual(c, c) for _ in range(m)])
        self.max1 = nn.Sequential()
        self.low1 = nn.Sequential(OResidual(c, c2, stride=2), *[OResidual(c2, c2) for _ in range(m - 1)])
        self.low2 = (OKpModule(n - 1, dims[1:], mods[1:]) if n > 1
                     else nn.Sequential(*[OResidual(c2, c2) for _ in range(mods[1])]))
        self.low3 = nn.Sequential(*[OResidual(c2, c2) for _ in range(m - 1)], OResidual(c2, c))
        self.up2 = nn.Upsample(scale_factor=2)

    def forward(self, x):
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(self.max1(x)))))


class OPool(nn.Module):  # CornerNet.py pool (tl_pool: TopPool, LeftPool; br_pool: BottomPool, RightPool)
    def __init__(self, dim, pool_dim, directions):
        super().__init__()
        self.directions = directions
        self.p1_conv1 = OConvolution(3, dim, pool_dim)
        self.p2_conv1 = OConvolution(3, dim, pool_dim)
        self.p_conv1 = nn.Conv2d(pool_dim, dim, 3, padding=1, bias=False)
        self.p_bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = OConvolution(3, dim, dim)

    def forward(self, x):
        pool1 = naive_pool(self.p1_conv1(x), self.directions[0])
        pool2 = naive_pool(self.p2_conv1(x), self.directions[1])
        p_bn1 = self.p_bn1(self.p_conv1(pool1 + pool2))
        bn1 = self.bn1(self.conv1(x))
        return self.conv2(F.relu(p_bn1 + bn1))


def o_head(cnv, hidden, out):  # kp_utils.make_kp_layer
    return nn.Sequential(OConvolution(3, cnv, hidden, with_bn=False), nn.Conv2d(hidden, out, 1))


class OriginalNet(nn.Module):  # kp.kp; forward returns every stack's six outputs (as _train, without gathering)
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s, c, cnv = cfg.num_stacks, cfg.channels[0], cfg.cnv_channels
        n = len(cfg.channels) - 1
        self.pre = nn.Sequential(OConvolution(7, 3, cfg.stem_channels, stride=2),
                                 OResidual(cfg.stem_channels, c, stride=2))
        self.kps = nn.ModuleList(OKpModule(n, cfg.channels, cfg.blocks) for _ in range(s))
        self.cnvs = nn.ModuleList(OConvolution(3, c, cnv) for _ in range(s))
        self.tl_cnvs = nn.ModuleList(OPool(cnv, cfg.pool_channels, ("top", "left")) for _ in range(s))
        self.br_cnvs = nn.ModuleList(OPool(cnv, cfg.pool_channels, ("bottom", "right")) for _ in range(s))
        for name, out in (("heats", cfg.num_classes), ("tags", 1), ("regrs", 2)):
            for corner in ("tl", "br"):
                setattr(self, f"{corner}_{name}",
                        nn.ModuleList(o_head(cnv, cfg.head_channels, out) for _ in range(s)))
        self.inters = nn.ModuleList(OResidual(c, c) for _ in range(s - 1))
        self.inters_ = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
                                     for _ in range(s - 1))
        self.cnvs_ = nn.ModuleList(nn.Sequential(nn.Conv2d(cnv, c, 1, bias=False), nn.BatchNorm2d(c))
                                   for _ in range(s - 1))

    def forward(self, image):
        inter = self.pre(image)
        outs = []
        for ind in range(len(self.kps)):
            cnv = self.cnvs[ind](self.kps[ind](inter))
            tl_cnv, br_cnv = self.tl_cnvs[ind](cnv), self.br_cnvs[ind](cnv)
            outs.append((self.tl_heats[ind](tl_cnv), self.br_heats[ind](br_cnv), self.tl_tags[ind](tl_cnv),
                         self.br_tags[ind](br_cnv), self.tl_regrs[ind](tl_cnv), self.br_regrs[ind](br_cnv)))
            if ind < len(self.kps) - 1:
                inter = F.relu(self.inters_[ind](inter) + self.cnvs_[ind](cnv))
                inter = self.inters[ind](inter)
        return outs


class DummyModule(nn.Module):  # nnet/py_factory.py: the saved state dict's keys start with "module."
    def __init__(self, model):
        super().__init__()
        self.module = model


# ---- mmdetection's naming (HourglassNet + CornerHead, mmcv ConvModule / ResLayer / BasicBlock) ----------


class MConvModule(nn.Module):
    def __init__(self, inp, out, k, stride=1, norm=True, act=True):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, k, stride=stride, padding=(k - 1) // 2, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out)
        self.norm, self.act = norm, act

    def forward(self, x):
        x = self.conv(x)
        if self.norm:
            x = self.bn(x)
        return F.relu(x) if self.act else x


class MBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + identity)


def m_res_layer(inplanes, planes, num_blocks, stride=1, downsample_first=True):
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
    if downsample_first:
        layers = [MBasicBlock(inplanes, planes, stride, downsample)]
        layers += [MBasicBlock(planes, planes) for _ in range(num_blocks - 1)]
    else:
        layers = [MBasicBlock(inplanes, inplanes) for _ in range(num_blocks - 1)]
        layers += [MBasicBlock(inplanes, planes, stride, downsample)]
    return nn.Sequential(*layers)


class MHourglassModule(nn.Module):
    def __init__(self, depth, chans, blocks):
        super().__init__()
        self.up1 = m_res_layer(chans[0], chans[0], blocks[0])
        self.low1 = m_res_layer(chans[0], chans[1], blocks[0], stride=2)
        self.low2 = (MHourglassModule(depth - 1, chans[1:], blocks[1:]) if depth > 1
                     else m_res_layer(chans[1], chans[1], blocks[1]))
        self.low3 = m_res_layer(chans[1], chans[0], blocks[0], downsample_first=False)

    def forward(self, x):
        up1 = self.up1(x)
        low3 = self.low3(self.low2(self.low1(x)))
        return up1 + F.interpolate(low3, size=up1.shape[2:], mode="nearest")


class MHourglassNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, s = cfg.channels[0], cfg.num_stacks
        self.stem = nn.Sequential(MConvModule(3, c // 2, 7, stride=2), m_res_layer(c // 2, c, 1, stride=2))
        self.hourglass_modules = nn.ModuleList(
            MHourglassModule(len(cfg.channels) - 1, cfg.channels, cfg.blocks) for _ in range(s))
        self.inters = m_res_layer(c, c, s - 1)
        self.conv1x1s = nn.ModuleList(MConvModule(c, c, 1, act=False) for _ in range(s - 1))
        self.out_convs = nn.ModuleList(MConvModule(c, cfg.cnv_channels, 3) for _ in range(s))
        self.remap_convs = nn.ModuleList(MConvModule(cfg.cnv_channels, c, 1, act=False) for _ in range(s - 1))

    def forward(self, x):
        inter = self.stem(x)
        feats = []
        for ind in range(len(self.hourglass_modules)):
            feat = self.out_convs[ind](self.hourglass_modules[ind](inter))
            feats.append(feat)
            if ind < len(self.hourglass_modules) - 1:
                inter = self.conv1x1s[ind](inter) + self.remap_convs[ind](feat)
                inter = self.inters[ind](F.relu(inter))
        return feats


class MBiCornerPool(nn.Module):
    def __init__(self, inp, directions, feat, out):
        super().__init__()
        self.directions = directions
        self.direction1_conv = MConvModule(inp, feat, 3)
        self.direction2_conv = MConvModule(inp, feat, 3)
        self.aftpool_conv = MConvModule(feat, out, 3, act=False)
        self.conv1 = MConvModule(inp, out, 1, act=False)
        self.conv2 = MConvModule(inp, out, 3)

    def forward(self, x):
        d1 = naive_pool(self.direction1_conv(x), self.directions[0])
        d2 = naive_pool(self.direction2_conv(x), self.directions[1])
        return self.conv2(F.relu(self.aftpool_conv(d1 + d2) + self.conv1(x)))


class MCornerHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, levels, hidden = cfg.cnv_channels, cfg.num_stacks, cfg.head_channels

        def layers(out):
            return nn.Sequential(MConvModule(c, hidden, 3, norm=False), MConvModule(hidden, out, 1, norm=False,
                                                                                    act=False))

        self.tl_pool = nn.ModuleList(MBiCornerPool(c, ("top", "left"), cfg.pool_channels, c) for _ in range(levels))
        self.br_pool = nn.ModuleList(MBiCornerPool(c, ("bottom", "right"), cfg.pool_channels, c)
                                     for _ in range(levels))
        for name, out in (("heat", cfg.num_classes), ("off", 2), ("emb", 1)):
            for corner in ("tl", "br"):
                setattr(self, f"{corner}_{name}", nn.ModuleList(layers(out) for _ in range(levels)))

    def forward(self, feats):
        outs = []
        for i, x in enumerate(feats):
            tl, br = self.tl_pool[i](x), self.br_pool[i](x)
            outs.append((self.tl_heat[i](tl), self.br_heat[i](br), self.tl_emb[i](tl), self.br_emb[i](br),
                         self.tl_off[i](tl), self.br_off[i](br)))
        return outs


class MMDetNet(nn.Module):  # CornerNet detector: forward returns every level's six outputs
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.backbone = MHourglassNet(cfg)
        self.bbox_head = MCornerHead(cfg)

    def forward(self, x):
        return self.bbox_head(self.backbone(x))


# ---- helpers -------------------------------------------------------------------------------------------


def randomize(model: nn.Module) -> nn.Module:
    """Random weights and BN statistics (so that every tensor matters), eval mode."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var") or (name.endswith("weight") and t.dim() == 1):  # BN var, scale
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                scale = 1.5 / t[0].numel() ** 0.5 if t.dim() > 1 else 0.1  # keeps activations O(1)
                t.copy_(torch.randn(t.shape, generator=g) * scale)
    return model.eval()


def ours_all_stacks(model: CornerNet, x: torch.Tensor):
    """Every stack's outputs with BN in eval mode (train-mode forward, frozen statistics)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        return model(x)


def _tensors(outputs) -> tuple[torch.Tensor, ...]:
    """A stack's head tensors: ours (CornerOutputs) or a reference network's tuple."""
    return outputs.heads() if isinstance(outputs, CornerOutputs) else tuple(outputs)


def assert_same_outputs(got, want) -> None:
    """float32 outputs agree to rounding: 1e-5 of the output's scale (checked exactly in float64 elsewhere)."""
    for g, w in zip(_tensors(got), _tensors(want), strict=True):
        assert g.shape == w.shape
        scale = float(w.abs().max()) + 1e-6
        assert float((g - w).abs().max()) <= 1e-5 * scale + 1e-6, (float((g - w).abs().max()), scale)


def assert_same_in_float64(model: CornerNet, ref: nn.Module, x: torch.Tensor, ref_input: torch.Tensor,
                           tol: float = 1e-9) -> None:
    """In float64 the two networks must agree to `tol` of the output's scale: any mapping error shows, rounding
    does not (mmdetection's stem is converted in float32, hence a looser `tol` there)."""
    model, ref = model.double(), ref.double()
    with torch.no_grad():
        want = ref(ref_input.double())
    for got_stack, want_stack in zip(ours_all_stacks(model, x.double()), want, strict=True):
        for g, w in zip(_tensors(got_stack), _tensors(want_stack), strict=True):
            assert g.shape == w.shape
            assert float((g - w).abs().max()) <= tol * (float(w.abs().max()) + 1e-6)
    model.float(), ref.float()


def mmdet_input(ours: torch.Tensor) -> torch.Tensor:
    """The input mmdetection's network gets for the image that gives `ours` [B, 3 BGR, H, W] in our pipeline,
    with mmdetection's RGB order and std (255 p - 255 mean) / S; only the mean is ours (see import_weights)."""
    mean = torch.as_tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = ours.double() * std + mean  # BGR, 0..1
    mm_std_rgb = torch.tensor([58.395, 57.12, 57.375], dtype=torch.float64).view(1, 3, 1, 1)
    return ((255 * pixels - 255 * mean).flip(1) / mm_std_rgb).to(ours.dtype)


def tiny(num_classes: int) -> ModelConfig:
    return model_config("tiny", num_classes)


def save_original(path: Path, state: dict, legacy: bool = False) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def original_state(cfg: ModelConfig) -> dict:
    return DummyModule(randomize(OriginalNet(cfg))).state_dict()


# ---- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_original_import_reproduces_source_outputs(tmp_path, legacy):
    cfg = tiny(80)
    ref = randomize(OriginalNet(cfg))
    src = save_original(tmp_path / "CornerNet_500000.pkl", DummyModule(ref).state_dict(), legacy=legacy)
    summary = import_weights(src, fmt="original", out=tmp_path / "imported.safetensors")
    assert summary.preset == "tiny" and summary.config == cfg and summary.filled_counters == 0

    model, meta = load_model(tmp_path / "imported.safetensors")
    assert meta["class_names"] == COCO_CLASS_NAMES and meta["category_ids"] == COCO_CATEGORY_IDS
    assert meta["category_ids"][:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    assert meta["extra"]["imported_from"] == "original"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = ref(x)
        got_eval = model(x)
    assert len(got_eval) == 1
    assert_same_outputs(got_eval[0], want[-1])
    # every stack (intermediate supervision heads included)
    assert_same_in_float64(model, ref, x, x)
    # the outputs genuinely depend on the weights: a different random model differs
    other = build_model("tiny", 80).eval()
    with torch.no_grad():
        assert (other(x)[0].tl_heat - want[-1][0]).abs().max() > 1e-2


def test_mmdetection_import_reproduces_source_outputs(tmp_path):
    cfg = tiny(3)
    ref = randomize(MMDetNet(cfg))
    ckpt = {"meta": {"mmdet_version": "2.25.0", "CLASSES": ("a", "b", "c"), "epoch": 210},
            "state_dict": ref.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005}]}}
    src = tmp_path / "cornernet_hourglass104.pth"
    torch.save(ckpt, src)
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\n")
    summary = import_weights(src, fmt="mmdetection", out=tmp_path / "mm.safetensors", classes=str(classes))
    assert summary.config == cfg

    model, meta = load_model(tmp_path / "mm.safetensors")
    assert meta["class_names"] == ["a", "b", "c"] and meta["category_ids"] == [1, 2, 3]
    x = torch.randn(1, 3, 72, 88)  # ours takes BGR; mmdetection's network takes RGB with its std
    with torch.no_grad():
        assert_same_outputs(model.eval()(x)[0], ref(mmdet_input(x))[-1])
    assert_same_in_float64(model, ref, x, mmdet_input(x.double()), tol=1e-6)
    # a plain channel flip without the std conversion would not match
    with torch.no_grad():
        assert (model(x)[0].tl_heat - ref(x.flip(1))[-1][0]).abs().max() > 1e-3


def test_mmdetection_odd_sizes_match(tmp_path):
    """mmdetection upsamples to the skip's size like ours, so odd feature sizes agree too."""
    cfg = tiny(2)
    ref = randomize(MMDetNet(cfg))
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "m.pth")
    (tmp_path / "c.json").write_text('{"categories": [{"id": 7, "name": "x"}, {"id": 3, "name": "y"}]}')
    import_weights(tmp_path / "m.pth", fmt="mmdetection", out=tmp_path / "m.safetensors",
                   classes=str(tmp_path / "c.json"))
    model, meta = load_model(tmp_path / "m.safetensors")
    assert meta["class_names"] == ["y", "x"] and meta["category_ids"] == [3, 7]
    x = torch.randn(1, 3, 50, 38)
    with torch.no_grad():
        assert_same_outputs(model(x)[0], ref(mmdet_input(x))[-1])
    assert_same_in_float64(model, ref, x, mmdet_input(x.double()), tol=1e-6)


def test_pre_041_checkpoint_without_counters(tmp_path):
    """PyTorch 0.4.0 (the original's) saved no num_batches_tracked; they are filled with 0."""
    state = {k: v for k, v in original_state(tiny(80)).items() if not k.endswith("num_batches_tracked")}
    summary = import_weights(save_original(tmp_path / "o.pkl", state, legacy=True), fmt="original",
                             out=tmp_path / "o.safetensors")
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in build_model("tiny", 80).modules())
    assert summary.filled_counters == n_bn > 0


@pytest.mark.parametrize("make", [OriginalNet, MMDetNet])
def test_full_hourglass104_key_maps(make):
    """Built on the meta device (no memory): every source tensor of hourglass-104 maps onto ours, shapes equal."""
    cfg = PRESETS["hourglass-104"]
    with torch.device("meta"):
        ref = make(cfg)
        ours = build_model("hourglass-104", 80)
    state = DummyModule(ref).state_dict() if make is OriginalNet else ref.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    renamed, names = rename_state_dict(state, "original" if make is OriginalNet else "mmdetection")
    assert len(renamed) == len(state)
    target = ours.state_dict()
    assert set(renamed) == set(target)
    assert all(renamed[k].shape == target[k].shape for k in target)
    assert infer_config(renamed) == cfg
    assert sum(p.numel() for p in ref.parameters()) == 201_035_212
    if make is OriginalNet:
        assert names["backbone.hourglasses.1.low2.low2.low2.low2.low2.3.conv2.weight"] == \
            "kps.1.low2.low2.low2.low2.low2.3.conv2.weight"
        assert names["predictions.0.br_off.2.bias"] == "br_regrs.0.1.bias"
        assert names["backbone.inters_.0.1.running_var"] == "inters_.0.1.running_var"
    else:
        assert names["backbone.hourglasses.0.low2.low3.1.skip.0.weight"] == \
            "backbone.hourglass_modules.0.low2.low3.1.downsample.0.weight"
        assert names["predictions.1.tl_pool.p_bn.weight"] == "bbox_head.tl_pool.1.aftpool_conv.bn.weight"


def _error(fn) -> str:
    with pytest.raises(CornerNetError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("extra_key", ["module.tl_heats.0.1.extra", "module.kps.0.up1.0.conv3.weight"])
def test_extra_source_key_fails_naming_it(tmp_path, extra_key):
    state = original_state(tiny(80))
    state[extra_key] = torch.zeros(3)
    src = save_original(tmp_path / "extra.pkl", state)
    message = _error(lambda: import_weights(src, fmt="original", out=tmp_path / "x.safetensors"))
    assert extra_key.removeprefix("module.") in message and str(src) in message
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_source_key_fails_naming_it(tmp_path):
    state = original_state(tiny(80))
    del state["module.tl_regrs.1.1.bias"]
    src = save_original(tmp_path / "missing.pkl", state)
    message = _error(lambda: import_weights(src, fmt="original", out=tmp_path / "x.safetensors"))
    assert "predictions.1.tl_off.2.bias" in message and "unfilled" in message
    assert not (tmp_path / "x.safetensors").exists()


def test_wrong_format_and_class_count(tmp_path):
    src = save_original(tmp_path / "o.pkl", original_state(tiny(80)))
    assert "fmt original" in _error(
        lambda: import_weights(src, fmt="mmdetection", out=tmp_path / "x.safetensors"))
    torch.save({"state_dict": MMDetNet(tiny(80)).state_dict()}, tmp_path / "m.pth")
    assert "fmt mmdetection" in _error(
        lambda: import_weights(tmp_path / "m.pth", fmt="original", out=tmp_path / "x.safetensors"))
    (tmp_path / "two.txt").write_text("a\nb\n")
    assert "2 classes" in _error(lambda: import_weights(src, fmt="original", out=tmp_path / "x.safetensors",
                                                        classes=str(tmp_path / "two.txt")))
    assert "hourglass-52" in _error(lambda: import_weights(src, fmt="original", out=tmp_path / "x.safetensors",
                                                           preset="hourglass-52"))
    assert "not found" in _error(lambda: import_weights(tmp_path / "nope.pkl", fmt="original",
                                                        out=tmp_path / "x.safetensors"))
    (tmp_path / "junk.pkl").write_bytes(b"not a checkpoint")
    assert "junk.pkl" in _error(lambda: import_weights(tmp_path / "junk.pkl", fmt="original",
                                                       out=tmp_path / "x.safetensors"))


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.target))}",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    touched = tmp_path / "pwned"
    src = tmp_path / "evil.pkl"
    torch.save({"module.pre.0.conv.weight": torch.zeros(1), "payload": _Evil(touched)}, src)
    assert not touched.exists()
    message = _error(lambda: import_weights(src, fmt="original", out=tmp_path / "x.safetensors"))
    assert "refused" in message and "evil.pkl" in message
    assert not touched.exists()
    # the command line prints it as one line and exits non-zero
    proc = subprocess.run([sys.executable, "-c", "from cornernet_cli.cli import main; main()", "import-weights",
                           str(src), "--format", "original", "-o", str(tmp_path / "x.safetensors")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not touched.exists()


def test_cli_import_weights(tmp_path):
    from typer.testing import CliRunner

    from cornernet_cli.cli import app

    src = save_original(tmp_path / "o.pkl", original_state(tiny(80)))
    out = tmp_path / "imported.safetensors"
    result = CliRunner().invoke(app, ["import-weights", str(src), "--format", "original", "-o", str(out),
                                      "--classes", "coco"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "tiny" in result.output
    model, meta = load_model(out)
    assert meta["model_config"] == tiny(80)


# ---- the released files' key / shape manifests (tests/manifests/) --------------------------------------

MANIFESTS = Path(__file__).parent / "manifests"


def read_manifest(path: Path) -> dict[str, torch.Tensor]:
    """A manifest (lines `key shape`, '#' comments) as a state dict of meta tensors: shapes without memory."""
    state = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, shape = line.partition(" ")
            state[key] = torch.empty([int(d) for d in shape.split(",") if d], device="meta")
    return state


@pytest.mark.parametrize("manifest, fmt, wrap", [("original_hourglass104.txt", "original", False),
                                                 ("mmdetection_hourglass104.txt", "mmdetection", True)])
def test_released_files_map_onto_hourglass104(manifest, fmt, wrap):
    """Every tensor of the real release (its key and shape, generated from the publisher's own network code)
    lands on exactly one tensor of our hourglass-104 with its shape, and every one of ours is filled."""
    path = MANIFESTS / manifest
    if not path.is_file():
        pytest.fail(f"{path} is missing; see tests/manifests/ for how it is generated")
    source = read_manifest(path)
    obj = {"state_dict": source, "meta": {}} if wrap else source
    state, names = rename_state_dict(source_state(obj, fmt, origin=path), fmt, origin=str(path))
    assert len(state) == len(source)  # every key mapped, none onto another's name
    config = infer_config(state, origin=str(path))
    assert preset_name(config) == "hourglass-104" and config.num_classes == 80
    model, filled, counters = fit_state(state, config, source_names=names, origin=str(path))
    assert sum(p.numel() for p in model.parameters()) == 201_035_212  # the paper's count
    bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert counters == (bn if not any(k.endswith("num_batches_tracked") for k in source) else 0)
