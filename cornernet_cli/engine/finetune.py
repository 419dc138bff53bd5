"""Starting from trained weights: transfer what fits, re-initialise what does not, optionally freeze.

A tensor is transferred when the starting checkpoint has one of the same name and shape. With another class
count the class-specific layers (the last 1x1 conv of tl_heat, br_heat and ct_heat) do not fit and keep the
new model's initialisation, whose heatmap bias is the paper's -2.19 prior; a centre head the checkpoint
lacks starts fresh the same way. Everything else must fit: the settings refuse a checkpoint of another
architecture before this runs, so a partial load here means a bug, and it raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cornernet_cli.engine.checkpoint import read_checkpoint
from cornernet_cli.errors import CornerNetError

# Head layers that may legitimately not fit: class-specific convolutions and the optional centre head.
_MAY_REINIT = ("tl_heat.", "br_heat.", "ct_heat.", "ct_off.")


@dataclass(frozen=True)
class TransferReport:
    source: str
    transferred: int  # tensors copied from the checkpoint
    total: int  # tensors of the new model
    reinitialised: list[str] = field(default_factory=list)  # head names that start from the initialisation
    unused: int = 0  # checkpoint tensors the new model has no place for (a centre head it does not have)
    classes: tuple[int, int] = (0, 0)  # (checkpoint's, new model's)

    def describe(self) -> str:
        line = f"transferred {self.transferred} of {self.total} tensors from {self.source}"
        if self.reinitialised:
            line += f"; re-initialised {', '.join(self.reinitialised)}"
            if self.classes[0] != self.classes[1]:
                line += f" ({self.classes[0]} -> {self.classes[1]} classes)"
        if self.unused:
            line += f"; {self.unused} checkpoint tensors unused"
        return line

    def to_dict(self) -> dict:
        return {"source": self.source, "transferred": self.transferred, "total": self.total,
                "reinitialised": self.reinitialised, "unused": self.unused, "classes": list(self.classes)}


def _head_name(key: str) -> str:
    """predictions.0.tl_heat.2.weight -> tl_heat"""
    return next(p for p in key.split(".") if p + "." in _MAY_REINIT)


def transfer_weights(model: nn.Module, path: str | Path) -> TransferReport:
    """Copy every tensor of the checkpoint at `path` whose name and shape match into `model` (in place)."""
    state, meta = read_checkpoint(path)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    misfits = [k for k in own if k not in fits]
    wrong = [k for k in misfits if not k.split(".", 2)[-1].startswith(_MAY_REINIT)]
    if wrong:
        shown = ", ".join(wrong[:3]) + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
        raise CornerNetError(f"{path} does not fit this architecture: {len(wrong)} tensors missing or of "
                             f"another shape: {shown}")
    with torch.no_grad():
        for k, v in fits.items():
            own[k].copy_(v)
    reinit = sorted({_head_name(k) for k in misfits})
    return TransferReport(source=str(path), transferred=len(fits), total=len(own), reinitialised=reinit,
                          unused=len(set(state) - set(own)),
                          classes=(meta["model_config"].num_classes, getattr(model, "num_classes", 0)))


def freeze(model: nn.Module, part: str) -> int:
    """Stop gradients to `part` of the model: "none" or "backbone" (the stacked hourglass; the prediction
    modules and heads still learn). Returns the number of frozen parameters."""
    if part == "none":
        return 0
    if part != "backbone":
        raise ValueError(f"freeze must be none or backbone, got {part!r}")
    frozen = 0
    for p in model.backbone.parameters():
        p.requires_grad_(False)
        frozen += p.numel()
    return frozen


def keep_frozen_statistics(model: nn.Module, part: str) -> None:
    """Put the frozen part's BatchNorm layers in eval mode (call after every model.train()), so that their
    running statistics stay those of the checkpoint and the forward pass uses them, as at test time."""
    if part == "backbone":
        for m in model.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
