"""Set-up of a training run: the checked training split, the output folder, the seeds, and the model with
its loss, optimiser, GradScaler and weight average (`TrainParts`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cornernet_cli.config import ModelConfig
from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.engine.ema import build_ema
from cornernet_cli.engine.finetune import TransferReport, freeze, transfer_weights
from cornernet_cli.errors import CornerNetError
from cornernet_cli.losses import CornerNetLoss
from cornernet_cli.model.cornernet import CornerNet


def load_train_split(data_dir: str | Path, split: str) -> CocoDetection:
    """The training split of the dataset folder `data_dir`, refused (CornerNetError naming the folder or the
    annotation file) when it has no categories, no images or no boxes to learn from."""
    base = CocoDetection.from_folder(data_dir, split)
    if not base.class_names:
        raise CornerNetError(f"{data_dir}: the {split} split has no categories")
    if len(base) == 0:
        raise CornerNetError(f"{data_dir}: the {split} split has no images")
    if base.num_boxes == 0:
        raise CornerNetError(f"{base.ann_path}: the {split} split has {len(base)} images but no boxes to "
                             f"train on (crowd and zero-size boxes are left out)")
    return base


def check_writable(out_dir: Path) -> None:
    """Create `out_dir` and write a probe file, so that an unwritable folder fails before any training."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CornerNetError(f"cannot write to output folder {out_dir}: {e.strerror or e}") from None


def seed_everything(seed: int) -> None:
    """Seed torch, Python and NumPy, whose generators the model's initialisation draws from."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@dataclass
class TrainParts:
    """What one training step works on. `model` is the plain network the optimiser updates (DDP wraps it
    separately); `ema` its moving average, or None."""

    model: CornerNet
    criterion: CornerNetLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None

    @property
    def eval_model(self) -> nn.Module:
        """What validation, last.safetensors and best.safetensors hold: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model


def build_parts(
    model_cfg: ModelConfig,
    *,
    device: torch.device,
    weights: str,
    freeze_part: str,
    channels_last: bool,
    lr: float,
    weight_decay: float,
    amp: str,
    ema: float,
    pull_weight: float,
    push_weight: float,
    offset_weight: float,
) -> tuple[TrainParts, TransferReport | None]:
    """A freshly initialised model (from the current RNG state) on `device`, with its training companions.

    weights: a checkpoint or weights file to start from ("" for none; transfer_weights loads the tensors
    that fit); freeze_part: "none" or "backbone"; lr: Adam's learning rate before the schedule; amp: "fp16"
    turns the GradScaler on; ema: the decay of the weight average (0: none); *_weight: the loss weights.
    Returns the parts and what was transferred from `weights` (None without weights).
    """
    model = CornerNet.from_config(model_cfg)
    report = transfer_weights(model, weights) if weights else None
    freeze(model, freeze_part)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = CornerNetLoss(pull_weight=pull_weight, push_weight=push_weight, offset_weight=offset_weight)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                                 weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    average = build_ema(model, ema) if ema > 0 else None
    return TrainParts(model=model, criterion=criterion, optimizer=optimizer, scaler=scaler, ema=average), report


__all__ = ["TrainParts", "build_parts", "check_writable", "load_train_split", "seed_everything"]
