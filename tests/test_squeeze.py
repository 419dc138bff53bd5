"""The squeeze preset (CornerNet-Squeeze, CornerNet-Lite) and `import-weights --format squeeze`.

`SqueezeNet` re-implements princeton-vl/CornerNet-Lite's CornerNet-Squeeze with its real parameter names
(core/models/CornerNet_Squeeze.py: fire_module, make_*_layer, model; core/models/py_utils/modules.py: hg_module,
hg, hg_net; utils.py: convolution, residual, corner_pool), computing its forward in the source's order of
operations, with naive corner pooling loops. The source hard-codes its sizes (2 stacks, dims
256,256,384,384,512, modules 2,2,2,2,4, stem 128, corner-pool branches 128, heads 256, 80 classes); here they
are arguments so that a small config of it can run. Like the source, it needs input sides divisible by
8 * 2**levels (its upsampling doubles sizes and the merge adds them); ours also takes odd sizes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cornernet_cli.config import PRESETS, ModelConfig, model_config
from cornernet_cli.engine.checkpoint import load_model, save_checkpoint
from cornernet_cli.import_weights import import_weights, infer_config, rename_state_dict
from cornernet_cli.model import build_model
from cornernet_cli.model.cornernet import CornerNet
from tests.test_import_weights import (
    DummyModule,
    OConvolution,
    OPool,
    OResidual,
    _error,
    assert_same_in_float64,
    assert_same_outputs,
    randomize,
)

MANIFEST = Path(__file__).parent / "manifests" / "cornernet_squeeze_keys.txt"
SQUEEZE_PARAMETERS = 31_771_852  # the released COCO network (80 classes), counted from SqueezeNet below


# ---- CornerNet-Lite's CornerNet-Squeeze, with its parameter names ----------------------------------------


class SFire(nn.Module):  # CornerNet_Squeeze.fire_module (sr = 2)
    def __init__(self, inp_dim, out_dim, sr=2, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inp_dim, out_dim // sr, kernel_size=1, stride=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim // sr)
        self.conv_1x1 = nn.Conv2d(out_dim // sr, out_dim // 2, kernel_size=1, stride=stride, bias=False)
        self.conv_3x3 = nn.Conv2d(out_dim // sr, out_dim // 2, kernel_size=3, padding=1, stride=stride,
                                  groups=out_dim // sr, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.skip = stride == 1 and inp_dim == out_dim

    def forward(self, x):
        bn1 = self.bn1(self.conv1(x))
        bn2 = self.bn2(torch.cat((self.conv_1x1(bn1), self.conv_3x3(bn1)), 1))
        return F.relu(bn2 + x) if self.skip else F.relu(bn2)


def s_layer(inp, out, modules):  # make_layer
    return nn.Sequential(SFire(inp, out), *[SFire(out, out) for _ in range(1, modules)])


def s_layer_revr(inp, out, modules):  # make_layer_revr
    return nn.Sequential(*[SFire(inp, inp) for _ in range(modules - 1)], SFire(inp, out))


def s_hg_layer(inp, out, modules):  # make_hg_layer
    return nn.Sequential(SFire(inp, out, stride=2), *[SFire(out, out) for _ in range(1, modules)])


class SHgModule(nn.Module):  # modules.hg_module with CornerNet_Squeeze's make_* functions
    def __init__(self, n, dims, modules):
        super().__init__()
        curr_mod, next_mod, curr_dim, next_dim = modules[0], modules[1], dims[0], dims[1]
        self.up1 = s_layer(curr_dim, curr_dim, curr_mod)
        self.max1 = nn.Sequential()  # make_pool_layer
        self.low1 = s_hg_layer(curr_dim, next_dim, curr_mod)
        self.low2 = SHgModule(n - 1, dims[1:], modules[1:]) if n > 1 else s_layer(next_dim, next_dim, next_mod)
        self.low3 = s_layer_revr(next_dim, curr_dim, curr_mod)
        self.up2 = nn.ConvTranspose2d(curr_dim, curr_dim, kernel_size=4, stride=2, padding=1)  # make_unpool_layer

    def forward(self, x):
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(self.max1(x)))))


def merge_mod(inp, out):  # model._merge_mod
    return nn.Sequential(nn.Conv2d(inp, out, (1, 1), bias=False), nn.BatchNorm2d(out))


class SHg(nn.Module):  # modules.hg
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s, c, cnv = cfg.num_stacks, cfg.channels[0], cfg.cnv_channels
        self.pre = nn.Sequential(OConvolution(7, 3, cfg.stem_channels, stride=2),
                                 OResidual(cfg.stem_channels, c, stride=2), OResidual(c, c, stride=2))
        self.hgs = nn.ModuleList(SHgModule(len(cfg.channels) - 1, cfg.channels, cfg.blocks) for _ in range(s))
        self.cnvs = nn.ModuleList(OConvolution(3, c, cnv) for _ in range(s))
        self.inters = nn.ModuleList(OResidual(c, c) for _ in range(s - 1))
        self.cnvs_ = nn.ModuleList(merge_mod(cnv, c) for _ in range(s - 1))
        self.inters_ = nn.ModuleList(merge_mod(c, c) for _ in range(s - 1))

    def forward(self, x):
        inter = self.pre(x)
        cnvs = []
        for ind, (hg_, cnv_) in enumerate(zip(self.hgs, self.cnvs)):
            cnv = cnv_(hg_(inter))
            cnvs.append(cnv)
            if ind < len(self.hgs) - 1:
                inter = F.relu(self.inters_[ind](inter) + self.cnvs_[ind](cnv))
                inter = self.inters[ind](inter)
        return cnvs


def s_pred_mod(cnv, hidden, dim):  # model._pred_mod: 1x1 convolution (bias, ReLU), then 1x1
    return nn.Sequential(OConvolution(1, cnv, hidden, with_bn=False), nn.Conv2d(hidden, dim, (1, 1)))


class SqueezeNet(nn.Module):  # CornerNet_Squeeze.model (modules.hg_net); forward = _train's six lists, per stack
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s, cnv, hidden = cfg.num_stacks, cfg.cnv_channels, cfg.head_channels
        self.hg = SHg(cfg)
        self.tl_modules = nn.ModuleList(OPool(cnv, cfg.pool_channels, ("top", "left")) for _ in range(s))
        self.br_modules = nn.ModuleList(OPool(cnv, cfg.pool_channels, ("bottom", "right")) for _ in range(s))
        for name, out in (("heats", cfg.num_classes), ("tags", 1), ("offs", 2)):
            for corner in ("tl", "br"):
                setattr(self, f"{corner}_{name}", nn.ModuleList(s_pred_mod(cnv, hidden, out) for _ in range(s)))

    def forward(self, image):
        outs = []
        for i, cnv in enumerate(self.hg(image)):
            tl, br = self.tl_modules[i](cnv), self.br_modules[i](cnv)
            outs.append((self.tl_heats[i](tl), self.br_heats[i](br), self.tl_tags[i](tl), self.br_tags[i](br),
                         self.tl_offs[i](tl), self.br_offs[i](br)))
        return outs


# A small CornerNet-Squeeze: 2 stacks, 3 levels, two fire modules per level (so up1 / low1 / low3 each have a
# stride-1 fire module besides the first / last), a different width at every level.
SMALL = dataclasses.replace(PRESETS["squeeze"], stem_channels=8, channels=(16, 16, 24, 32), blocks=(2, 2, 1, 2),
                            cnv_channels=16, pool_channels=8, head_channels=12, num_classes=3)


# The released network's sizes as CornerNet_Squeeze.py hard-codes them (written from the source, not our preset).
SOURCE_COCO = ModelConfig(num_stacks=2, stem_channels=128, channels=(256, 256, 384, 384, 512), blocks=(2, 2, 2, 2, 4),
                          cnv_channels=256, pool_channels=128, head_channels=256, num_classes=80)


def released_source_state() -> dict[str, torch.Tensor]:
    """The released network's state dict (keys with ``module.``), on the meta device: shapes, no memory."""
    with torch.device("meta"):
        return DummyModule(SqueezeNet(SOURCE_COCO)).state_dict()


def read_manifest() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split()
            keys[name] = tuple(int(d) for d in shape.split("x")) if shape != "scalar" else ()
    return keys


# ---- the preset ------------------------------------------------------------------------------------------


def test_parameter_count_matches_the_source_network():
    with torch.device("meta"):
        ours = build_model("squeeze", 80)
        source = SqueezeNet(SOURCE_COCO)
    assert sum(p.numel() for p in source.parameters()) == SQUEEZE_PARAMETERS
    assert sum(p.numel() for p in ours.parameters()) == SQUEEZE_PARAMETERS
    # the same count from the manifest's shapes (BN running statistics and counters are buffers, not parameters)
    manifest = read_manifest()
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(math.prod(s) for k, s in manifest.items() if not k.endswith(buffers)) == SQUEEZE_PARAMETERS
    # and it is not hourglass-104's: the fire modules and stride 8 are what make it ~6x smaller
    with torch.device("meta"):
        assert sum(p.numel() for p in build_model("hourglass-104", 80).parameters()) > 6 * SQUEEZE_PARAMETERS


def test_config_round_trip_and_old_presets_unchanged():
    squeeze = model_config("squeeze", 80)
    assert (squeeze.block, squeeze.output_stride, squeeze.head_kernel) == ("fire", 8, 1)
    d = squeeze.to_dict()
    assert ModelConfig.from_dict(d) == squeeze and d["block"] == "fire" and d["output_stride"] == 8
    # presets that keep the defaults write none of the new fields, so older versions still read them
    for name in ("hourglass-104", "small", "tiny"):
        d = model_config(name, 3).to_dict()
        assert not {"block", "output_stride", "head_kernel"} & set(d)
        assert ModelConfig.from_dict(d) == model_config(name, 3)
    for bad in (dict(block="dense"), dict(output_stride=16), dict(head_kernel=5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ModelConfig(**bad)


@pytest.mark.parametrize("size", [(127, 95), (64, 64), (33, 50), (9, 17)])
def test_output_stride_8_at_any_size(size):
    model = CornerNet.from_config(SMALL)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        train_outs = model(x)
        eval_outs = model.eval()(x)
    h, w = math.ceil(size[0] / 8), math.ceil(size[1] / 8)
    assert model.output_stride == 8 and len(train_outs) == 2 and len(eval_outs) == 1
    for outs in train_outs + eval_outs:
        assert [tuple(t.shape) for t in outs.heads()] == [(2, 3, h, w), (2, 3, h, w), (2, 1, h, w), (2, 1, h, w),
                                                 (2, 2, h, w), (2, 2, h, w)]
        assert all(torch.isfinite(t).all() for t in outs.heads())


def test_channels_last_and_corner_pool_switch():
    torch.manual_seed(0)
    model = randomize(CornerNet.from_config(SMALL))
    x = torch.randn(1, 3, 72, 88)
    with torch.no_grad():
        want = model(x)[0]
        got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))[0]
        assert_same_outputs(got, want)
        off = randomize(CornerNet.from_config(dataclasses.replace(SMALL, corner_pool=False)))(x)[0]
    assert (off.tl_heat - want.tl_heat).abs().max() > 1e-3  # the pooling is really switched off


def test_checkpoint_round_trip(tmp_path):
    model = randomize(CornerNet.from_config(SMALL))
    save_checkpoint(tmp_path / "s.safetensors", model, class_names=["a", "b", "c"], category_ids=[1, 2, 3])
    loaded, meta = load_model(tmp_path / "s.safetensors")
    assert meta["model_config"] == SMALL and loaded.output_stride == 8
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert_same_outputs(loaded(x)[0], model(x)[0])


# ---- the import ------------------------------------------------------------------------------------------


def test_import_reproduces_the_source_network(tmp_path):
    ref = randomize(SqueezeNet(SMALL))
    src = tmp_path / "CornerNet_Squeeze_500000.pkl"
    torch.save(DummyModule(ref).state_dict(), src)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    summary = import_weights(src, fmt="squeeze", out=tmp_path / "sq.safetensors", classes=str(tmp_path / "classes.txt"))
    assert summary.config == SMALL and summary.filled_counters == 0

    model, meta = load_model(tmp_path / "sq.safetensors")
    assert meta["extra"]["imported_from"] == "squeeze" and model.output_stride == 8
    x = torch.randn(2, 3, 64, 128)  # the source needs sides divisible by 8 * 2**3
    with torch.no_grad():
        want = ref(x)
        assert_same_outputs(model(x)[0], want[-1])
    assert_same_in_float64(model, ref, x, x)  # every stack, to 1e-9 in float64
    # the outputs depend on the weights: a fresh random network of the same shape differs
    with torch.no_grad():
        other = randomize(CornerNet.from_config(dataclasses.replace(SMALL)))
        torch.nn.init.normal_(other.predictions[-1].tl_heat[2].weight)
        assert (other.eval()(x)[0].tl_heat - want[-1][0]).abs().max() > 1e-2


def test_released_network_maps_every_key():
    """The manifest (the released COCO network's keys and shapes) maps onto the squeeze preset, shapes equal,
    without allocating a tensor (meta device)."""
    manifest = read_manifest()
    state = released_source_state()
    assert {k: tuple(v.shape) for k, v in state.items()} == manifest  # the manifest is the source network's
    source = {k.removeprefix("module."): torch.empty(s, device="meta") for k, s in manifest.items()}
    renamed, names = rename_state_dict(source, "squeeze")
    with torch.device("meta"):
        target = build_model("squeeze", 80).state_dict()
    assert set(renamed) == set(target) and len(renamed) == len(manifest)
    assert all(renamed[k].shape == target[k].shape for k in target)
    assert infer_config(renamed) == model_config("squeeze", 80)
    assert names["backbone.stem.2.skip.0.weight"] == "hg.pre.2.skip.0.weight"
    assert names["backbone.hourglasses.1.low2.low2.low2.low2.3.conv_3x3.weight"] == \
        "hg.hgs.1.low2.low2.low2.low2.3.conv_3x3.weight"
    assert names["backbone.hourglasses.0.up2.bias"] == "hg.hgs.0.up2.bias"
    assert names["predictions.1.br_off.2.bias"] == "br_offs.1.1.bias"
    assert names["predictions.0.tl_emb.0.weight"] == "tl_tags.0.0.conv.weight"
    assert names["predictions.0.tl_pool.skip_conv.weight"] == "tl_modules.0.conv1.weight"


def test_missing_and_extra_keys_fail_naming_them(tmp_path):
    state = DummyModule(randomize(SqueezeNet(SMALL))).state_dict()
    (tmp_path / "c.txt").write_text("a\nb\nc\n")
    for extra_key in ("module.hg.hgs.0.up1.0.conv_5x5.weight", "module.tl_offs.0.2.weight"):
        torch.save(dict(state, **{extra_key: torch.zeros(1)}), tmp_path / "extra.pkl")
        message = _error(lambda: import_weights(tmp_path / "extra.pkl", fmt="squeeze", out=tmp_path / "x.safetensors",
                                                classes=str(tmp_path / "c.txt")))
        assert extra_key.removeprefix("module.") in message and "extra.pkl" in message
    missing = {k: v for k, v in state.items() if k != "module.hg.hgs.1.up2.weight"}
    torch.save(missing, tmp_path / "missing.pkl")
    message = _error(lambda: import_weights(tmp_path / "missing.pkl", fmt="squeeze", out=tmp_path / "x.safetensors",
                                            classes=str(tmp_path / "c.txt")))
    assert "backbone.hourglasses.1.up2.weight" in message and "unfilled" in message
    assert not (tmp_path / "x.safetensors").exists()


def test_format_mix_ups_are_named(tmp_path):
    from tests.test_import_weights import original_state, tiny

    torch.save(DummyModule(SqueezeNet(SMALL)).state_dict(), tmp_path / "sq.pkl")
    assert "fmt squeeze" in _error(lambda: import_weights(tmp_path / "sq.pkl", fmt="original",
                                                               out=tmp_path / "x.safetensors"))
    torch.save(original_state(tiny(80)), tmp_path / "o.pkl")
    assert "fmt original" in _error(lambda: import_weights(tmp_path / "o.pkl", fmt="squeeze",
                                                                out=tmp_path / "x.safetensors"))


def test_cli_import_weights_squeeze(tmp_path):
    from typer.testing import CliRunner

    from cornernet_cli.cli import app

    torch.save(DummyModule(randomize(SqueezeNet(SMALL))).state_dict(), tmp_path / "sq.pkl")
    (tmp_path / "c.txt").write_text("a\nb\nc\n")
    out = tmp_path / "sq.safetensors"
    result = CliRunner().invoke(app, ["import-weights", str(tmp_path / "sq.pkl"), "--format", "squeeze", "-o",
                                      str(out), "--classes", str(tmp_path / "c.txt")])
    assert result.exit_code == 0, result.output
    assert load_model(out)[1]["model_config"] == SMALL


# ---- the pipeline at stride 8 ----------------------------------------------------------------------------


def test_training_step_at_stride_8(tmp_path):
    """A few training steps of a tiny fire-module network: targets at ceil(S / 8), finite losses, weights move."""
    import json

    from cornernet_cli.config import DataConfig, TrainConfig
    from cornernet_cli.data.loader import build_train_loader
    from cornernet_cli.data.synthetic import write_synthetic_dataset
    from cornernet_cli.engine.train import train

    write_synthetic_dataset(tmp_path / "syn", num_train=8, num_val=2, image_size=96, seed=1)
    batch = next(iter(build_train_loader(tmp_path / "syn", "train", input_size=72, batch_size=2, output_stride=8)))
    assert batch["tl_heat"].shape[-2:] == (9, 9) and batch["image"].shape[-2:] == (72, 72)
    assert int(batch["tl_index"].max()) < 81

    tiny_squeeze = dataclasses.replace(model_config("tiny"), block="fire", output_stride=8, head_kernel=1)
    result = train(data_dir=tmp_path / "syn", out_dir=tmp_path / "run", model_cfg=tiny_squeeze,
                   data_cfg=DataConfig(input_size=72), train_cfg=TrainConfig(batch_size=2, iters=3, lr=1e-3,
                   lr_steps=(), workers=0, seed=0), device="cpu", save_every=1000, log_every=1, progress=False)
    assert result.status == "finished" and result.step == 3
    model, meta = load_model(tmp_path / "run" / "last.safetensors")
    config = meta["model_config"]
    assert (config.block, config.output_stride, config.head_kernel) == ("fire", 8, 1)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    torch.manual_seed(0)  # train() seeds the initial weights with the run's seed
    start = CornerNet.from_config(config).state_dict()
    trained = model.state_dict()
    assert all(torch.equal(start[k], trained[k]) or k.endswith(("weight", "bias", "running_mean", "running_var",
                                                                 "num_batches_tracked")) for k in start)
    assert any(not torch.equal(start[k], trained[k]) for k in start if k.endswith("conv_3x3.weight"))


def test_test_procedure_follows_the_preset(monkeypatch):
    """squeeze tests like its source (no flip, top 20 corners, 100 candidates); the paper's presets keep theirs."""
    import numpy as np

    import cornernet_cli.decoder as decoder_module
    from cornernet_cli.config import DecodeConfig, preset_test_settings
    from cornernet_cli.engine.inference import detect_images

    assert preset_test_settings(model_config("squeeze", 3, corner_pool=False)) == dict(flip=False, k=20, num_dets=100,
                                                                                       padding="paper")
    assert preset_test_settings(model_config("hourglass-104", 3)) == dict(flip=True, k=100, num_dets=1000,
                                                                          padding="paper")
    assert preset_test_settings(SMALL)["k"] == 100  # not a preset: the paper's
    seen = []
    real = decoder_module.decode
    monkeypatch.setattr(decoder_module, "decode",
                        lambda *a, **kw: seen.append((kw["k"], kw["num_dets"])) or real(*a, **kw))
    image = np.full((40, 60, 3), 128, np.uint8)
    squeeze = CornerNet.from_config(model_config("squeeze", 3)).eval()
    detect_images(squeeze, [image])
    detect_images(squeeze, [image], decoder=decoder_module.Decoder.for_network(DecodeConfig(k=7, num_dets=30),
                                                                               squeeze.config))
    detect_images(CornerNet.from_config(SMALL).eval(), [image])
    assert seen == [(20, 100), (7, 30), (100, 1000)]


def test_detect_maps_boxes_back_at_stride_8():
    """Ground-truth heatmaps (oracle) with the network's offsets set to 0: the detections land within one output
    cell (8 px) of the true boxes, with flip; a stride-4 mapping would not even match the network's map size."""
    import numpy as np

    from cornernet_cli.engine.oracle import detect_with_oracle

    model = CornerNet.from_config(SMALL).eval()
    with torch.no_grad():
        for head in (model.predictions[-1].tl_off, model.predictions[-1].br_off):
            head[2].weight.zero_()
            head[2].bias.zero_()
    image = np.zeros((100, 140, 3), np.uint8)
    boxes = np.array([[10.0, 12.0, 70.0, 60.0], [80.0, 30.0, 130.0, 95.0]])
    labels = np.array([0, 2])
    dets = detect_with_oracle(model, [image], [(boxes, labels)], mode="heatmaps", flip=True)[0]
    for box, label in zip(boxes, labels):
        best = dets[dets[:, 5] == label][0]
        assert np.abs(best[:4] - box).max() <= 8.0, (best, box)


def test_onnx_export_at_stride_8(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from cornernet_cli.export import export_onnx

    model = CornerNet.from_config(SMALL)
    with torch.no_grad():  # non-trivial BN statistics (randomize's weights grow the outputs to ~1e7 here)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "s.safetensors", model, class_names=["a", "b", "c"], category_ids=[1, 2, 3])
    static = export_onnx(tmp_path / "s.safetensors", tmp_path / "s.onnx", height=64, width=80)
    assert static.max_abs_diff is not None and static.max_abs_diff <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "s.onnx")).metadata_props}
    assert props["cornernet_output_stride"] == "8"
    dynamic = export_onnx(tmp_path / "s.safetensors", tmp_path / "d.onnx", dynamic=True, height=64, width=80,
                          max_size=256)
    assert dynamic.max_abs_diff <= 1e-4
    import onnxruntime as ort

    from cornernet_cli.export import max_abs_difference

    model, _ = load_model(tmp_path / "s.safetensors")
    odd = torch.randn(1, 3, 57, 99)  # odd sizes: the transposed-convolution crop must follow the input
    assert ort is not None and max_abs_difference(tmp_path / "d.onnx", model, odd) <= 1e-4


def test_bench_runs_squeeze_at_its_stride():
    """The benchmark's training step and data figure build targets at the model's stride (8 here)."""
    from cornernet_cli.bench import run_bench

    # batch 2: at 64 px the bottom level is 1 x 1, and training-mode BN needs more than one value per channel
    r = run_bench(preset="squeeze", input_size=64, batch_size=2, repeats=1, warmup=0, threads=1, image_size=(60, 80))
    assert r["parameters"] == SQUEEZE_PARAMETERS
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("forward_ms", "train_step_ms", "data_images_per_s"))
