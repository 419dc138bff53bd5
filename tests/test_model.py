import pytest
import torch

from cornernet_cli.config import PRESETS
from cornernet_cli.model import CornerOutputs, build_model
from cornernet_cli.model.corner_pool import CornerPool


def test_hourglass104_parameter_count():
    model = build_model("hourglass-104", num_classes=80)
    assert sum(p.numel() for p in model.parameters()) == 201_035_212


def test_small_preset_under_5m():
    assert sum(p.numel() for p in build_model("small", 80).parameters()) <= 5_000_000


def test_small_fast_is_small_with_narrower_prediction_modules():
    fast, small = build_model("small-fast", 3), build_model("small", 3)
    assert sum(p.numel() for p in fast.parameters()) < sum(p.numel() for p in small.parameters())
    # the backbone is the same network: identical parameter shapes up to the last hourglass
    hg = lambda m: {k: v.shape for k, v in m.state_dict().items() if k.startswith("backbone.hourglasses")}  # noqa: E731
    assert hg(fast) == hg(small)
    assert fast.config.head_channels == 32 and fast.config.cnv_channels == 64


@pytest.mark.parametrize("preset", ["tiny", "small", "small-fast"])
@pytest.mark.parametrize("size", [(127, 127), (255, 383), (96, 200), (33, 17)])
def test_output_shapes_cpu_presets(preset, size):
    model = build_model(preset, num_classes=5)
    H, W = size
    h, w = -(-H // 4), -(-W // 4)
    model.train()
    outs = model(torch.randn(2, 3, H, W))
    assert len(outs) == PRESETS[preset].num_stacks
    for o in outs:
        assert isinstance(o, CornerOutputs)
        assert o.tl_heat.shape == o.br_heat.shape == (2, 5, h, w)
        assert o.tl_emb.shape == o.br_emb.shape == (2, 1, h, w)
        assert o.tl_off.shape == o.br_off.shape == (2, 2, h, w)
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, H, W))
    assert len(outs) == 1 and outs[0].tl_heat.shape == (1, 5, h, w)


@pytest.mark.parametrize("preset", ["hourglass-104", "hourglass-52"])
def test_output_shapes_paper_presets(preset):
    model = build_model(preset, num_classes=3).eval()
    with torch.no_grad():
        for H, W in [(127, 127), (96, 200)]:
            (o,) = model(torch.randn(1, 3, H, W))
            assert o.tl_heat.shape == (1, 3, -(-H // 4), -(-W // 4))
            assert o.br_off.shape == (1, 2, -(-H // 4), -(-W // 4))


def test_heatmap_bias_and_eval_returns_last_stack():
    model = build_model("tiny", num_classes=4)
    for pred in model.predictions:
        assert torch.allclose(pred.tl_heat[-1].bias, torch.full((4,), -2.19))
        assert torch.allclose(pred.br_heat[-1].bias, torch.full((4,), -2.19))
    x = torch.randn(1, 3, 64, 64)
    model.train()
    train_outs = model(x)
    model.eval()
    # BatchNorm differs between modes; compare the last stack in eval mode against a manual forward.
    with torch.no_grad():
        (last,) = model(x)
        feats = model.backbone(x)
        manual = model.predictions[-1](feats[-1])
    assert len(train_outs) == 2
    assert all(torch.equal(a, b) for a, b in zip(last.heads(), manual.heads()))


def test_without_corner_pool_keeps_every_layer():
    with_pool = build_model("tiny", 3, corner_pool=True)
    without = build_model("tiny", 3, corner_pool=False)
    assert [k for k, _ in with_pool.named_parameters()] == [k for k, _ in without.named_parameters()]
    pools = [m for m in without.modules() if isinstance(m, CornerPool)]
    assert pools and not any(p.enabled for p in pools)
    without.load_state_dict(with_pool.state_dict())
    x = torch.randn(1, 3, 40, 40)
    with_pool.eval(), without.eval()
    with torch.no_grad():
        assert not torch.equal(with_pool(x)[0].tl_heat, without(x)[0].tl_heat)


def test_gradients_reach_the_stem():
    model = build_model("tiny", 2).train()
    outs = model(torch.randn(2, 3, 48, 56))
    sum(t.float().pow(2).mean() for o in outs for t in o.heads()).backward()
    assert model.backbone.stem[0][0].weight.grad.abs().sum() > 0


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("resnet-50")


@pytest.mark.parametrize("in_ch, size", [(3, 17), (8, 64), (12, 33), (32, 20)])
def test_pointwise_conv_equals_strided_conv_in_both_memory_formats(in_ch, size):
    """The stride-2 1x1 shortcut (subsample, then 1x1) gives the values and gradients of a strided 1x1 conv,
    also channels_last with < 16 input channels, where oneDNN's strided kernel corrupts the heap (torch 2.13)."""
    from cornernet_cli.model.hourglass import PointwiseConv

    torch.manual_seed(0)
    conv = PointwiseConv(in_ch, 16, stride=2)
    x64 = torch.randn(2, in_ch, size, size + 3, dtype=torch.float64)
    w64 = conv.weight.detach().double().requires_grad_()
    x_ref = x64.clone().requires_grad_()
    ref = torch.nn.functional.conv2d(x_ref, w64, stride=2)
    g = torch.randn_like(ref)
    (ref * g).sum().backward()
    ref = ref.detach()
    for fmt in (torch.contiguous_format, torch.channels_last):
        c = PointwiseConv(in_ch, 16, stride=2)
        c.load_state_dict(conv.state_dict())
        c = c.to(memory_format=fmt)
        x = x64.float().contiguous(memory_format=fmt).requires_grad_()
        y = c(x)
        (y * g.float()).sum().backward()
        assert y.shape == ref.shape
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c.weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-4)


def test_tiny_trains_channels_last_on_cpu():
    """A full forward + backward of the tiny preset (8-channel stem) in channels_last: no crash, finite grads."""
    from cornernet_cli.bench import _synthetic_batch
    from cornernet_cli.losses import CornerNetLoss

    torch.manual_seed(0)
    model = build_model("tiny", 2).to(memory_format=torch.channels_last)
    batch = _synthetic_batch(batch_size=2, input_size=64, num_classes=2, seed=0)
    loss, _ = CornerNetLoss()(model(batch["image"].contiguous(memory_format=torch.channels_last)), batch)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
