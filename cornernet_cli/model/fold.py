"""Folding batch normalisation into the convolution before it, for inference.

In eval mode a BatchNorm is an affine map per channel, so conv followed by BN equals one convolution with
scaled weights and a bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`). Folding removes a full pass over every
feature map (about 5 % of small-fast's CPU forward in bf16, docs/performance.md); outputs stay equal up to
float rounding. Only pairs where the BN takes the convolution's output directly are folded: consecutive
layers of an nn.Sequential and the pairs a module lists in `CONV_BN_PAIRS` (attribute names, as its forward
uses them).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_sequential(seq: nn.Sequential) -> int:
    folded = 0
    for i in range(len(seq) - 1):
        if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
            seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
            seq[i + 1] = nn.Identity()
            folded += 1
    return folded


def _fold_named(module: nn.Module) -> int:
    folded = 0
    for conv_name, bn_name in getattr(module, "CONV_BN_PAIRS", ()):
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, each BatchNorm2d that directly follows a Conv2d into it; returns how many were folded.

    model: in eval mode (its BatchNorms use their running statistics; a training-mode model is refused, since
    folding would freeze statistics it is still updating). The folded model has other state_dict keys (convs
    gain a bias, folded BNs are gone): it is for inference, not for saving as a checkpoint.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first)")
    folded = 0
    for module in list(model.modules()):
        folded += _fold_sequential(module) if isinstance(module, nn.Sequential) else _fold_named(module)
    return folded
