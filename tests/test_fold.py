"""Folding BatchNorm into convolutions changes no output (beyond float rounding) and folds every direct pair."""

import copy

import pytest
import torch
from torch import nn

from cornernet_cli.model import build_model
from cornernet_cli.model.fold import fold_batchnorm


def _with_statistics(model: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics, so that a wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean = torch.randn(n, generator=g) * 0.2
            m.running_var = 0.5 + torch.rand(n, generator=g)
    return model.eval()


@pytest.mark.parametrize("preset,size,left", [("tiny", 64, 0), ("small-fast", 64, 0), ("squeeze", 128, None)])
def test_folded_model_gives_the_same_heads(preset, size, left):
    torch.manual_seed(0)
    model = _with_statistics(build_model(preset, num_classes=3, centre_head=preset != "squeeze"))
    folded = copy.deepcopy(model)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    count = fold_batchnorm(folded)
    remaining = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert count + remaining == bns and count > 0
    if left is None:  # squeeze: each fire module's bn2 normalises a concatenation and stays
        fires = sum(type(m).__name__ == "FireModule" for m in model.modules())
        assert remaining == fires
    else:
        assert remaining == left
    x = torch.randn(2, 3, size, size + 32)
    with torch.no_grad():
        expect, got = model(x)[-1], folded(x)[-1]
    for a, b in zip(expect.heads(), got.heads()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_fold_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model("tiny", num_classes=2).train())
