"""Write the key / shape manifest of mmdetection's released CornerNet (hourglass-104) checkpoints.

Generated from mmdetection's own network code: run it on an unpacked mmdetection 2.x source tree (the
release's weights were trained with v2.3+; `pip download --no-deps mmdet==2.28.2` and unzip the wheel):

    python tests/manifests/generate_mmdetection.py /path/to/unpacked > tests/manifests/mmdetection_hourglass104.txt

It loads the real mmdet/models/backbones/hourglass.py, backbones/resnet.py (BasicBlock),
utils/res_layer.py and dense_heads/corner_head.py, builds HourglassNet and CornerHead with the arguments of
configs/cornernet/cornernet_hourglass104_mstest_*_210e_coco.py on the meta device, and lists the detector's
state dict (`backbone.*`, `bbox_head.*`; the released .pth holds it under `state_dict`). mmcv (compiled ops)
is not needed: its few building blocks are stand-ins below that name their parts as mmcv's do (read from
mmcv's cnn/bricks/conv_module.py and norm.py: a ConvModule holds `conv` and, with a norm, `bn`; a norm
built with a postfix is `bn<postfix>`; the conv has a bias only without a norm). The corner-pool op, the
losses and the registries hold no tensors and are placeholders.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn


def build_norm_layer(cfg, num_features, postfix=""):
    assert cfg["type"] == "BN", cfg
    return f"bn{postfix}", nn.BatchNorm2d(num_features)


def build_conv_layer(cfg, *args, **kwargs):
    assert cfg is None, cfg
    return nn.Conv2d(*args, **kwargs)


class BaseModule(nn.Module):
    def __init__(self, init_cfg=None):
        super().__init__()


class Sequential(BaseModule, nn.Sequential):
    def __init__(self, *args, init_cfg=None):
        BaseModule.__init__(self, init_cfg)
        nn.Sequential.__init__(self, *args)


class ConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias="auto", conv_cfg=None, norm_cfg=None, act_cfg="ReLU", **kwargs):
        super().__init__()
        if bias == "auto":
            bias = norm_cfg is None
        self.conv = build_conv_layer(conv_cfg, in_channels, out_channels, kernel_size, stride, padding, dilation,
                                     groups, bias=bias)
        if norm_cfg is not None:
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        if act_cfg is not None:
            self.activate = nn.ReLU()


class Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


def placeholder(*args, **kwargs):
    return None


def package(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(root: str) -> None:
    src = Path(root) / "mmdet" / "models"
    version = (Path(root) / "mmdet" / "version.py").read_text().split("__version__ = ")[1].split("\n")[0]
    package("mmcv")
    package("mmcv.cnn", ConvModule=ConvModule, build_conv_layer=build_conv_layer, build_norm_layer=build_norm_layer,
            build_plugin_layer=placeholder, bias_init_with_prob=lambda p: 0.0)
    package("mmcv.runner", BaseModule=BaseModule, Sequential=Sequential, force_fp32=lambda *a, **k: (lambda f: f))
    package("mmcv.ops", CornerPool=lambda direction: nn.Identity(), batched_nms=placeholder)
    package("mmdet")
    package("mmdet.core", multi_apply=placeholder)
    package("mmdet.models")
    package("mmdet.models.builder", BACKBONES=Registry(), HEADS=Registry(), build_loss=placeholder)
    utils = package("mmdet.models.utils", gaussian_radius=placeholder, gen_gaussian_target=placeholder)
    package("mmdet.models.utils.gaussian_target", gather_feat=placeholder, get_local_maximum=placeholder,
            get_topk_from_heatmap=placeholder, transpose_and_gather_feat=placeholder)
    utils.ResLayer = load("mmdet.models.utils.res_layer", src / "utils" / "res_layer.py").ResLayer
    package("mmdet.models.backbones")
    load("mmdet.models.backbones.resnet", src / "backbones" / "resnet.py")
    hourglass = load("mmdet.models.backbones.hourglass", src / "backbones" / "hourglass.py")
    package("mmdet.models.dense_heads")
    package("mmdet.models.dense_heads.base_dense_head", BaseDenseHead=BaseModule)
    package("mmdet.models.dense_heads.dense_test_mixins", BBoxTestMixin=object)
    corner_head = load("mmdet.models.dense_heads.corner_head", src / "dense_heads" / "corner_head.py")

    with torch.device("meta"):
        detector = nn.Module()
        detector.backbone = hourglass.HourglassNet(downsample_times=5, num_stacks=2,
                                                   stage_channels=[256, 256, 384, 384, 384, 512],
                                                   stage_blocks=[2, 2, 2, 2, 2, 4])
        detector.bbox_head = corner_head.CornerHead(num_classes=80, in_channels=256, num_feat_levels=2,
                                                    corner_emb_channels=1)
    state = detector.state_dict()
    print("# mmdetection's CornerNet hourglass-104 COCO checkpoints (cornernet_hourglass104_mstest_*_210e_coco_*.pth,")
    print("# the tensors under 'state_dict'): key and shape of every tensor. Generated by")
    print(f"# tests/manifests/generate_mmdetection.py from mmdetection {version} (pip wheel): the real HourglassNet")
    print("# and CornerHead code built with the config's arguments on the meta device; mmcv's ConvModule / norm naming")
    print("# by stand-ins (see the generator). One line per tensor: key, then the shape (comma-separated, empty for")
    print(f"# a scalar). {len(state)} tensors, {sum(v.numel() for v in state.values() if v.is_floating_point()):,} "
          f"float values.")
    for key, value in state.items():
        print(f"{key} {','.join(map(str, value.shape))}")


if __name__ == "__main__":
    main(sys.argv[1])
