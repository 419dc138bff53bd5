"""The one place that turns what a user asked for into a training run's settings.

(preset, dataset, starting weights, budget, explicit overrides) -> TrainSettings: the ModelConfig,
DataConfig and TrainConfig that `train()` takes, the validation folder, and a line per choice made for the
user (printed by the CLI, stored in config.json). `cornernet train` and the Python API call
`train_settings`; per-preset defaults live in config.TRAIN_DEFAULTS. (`ablate` and `demo` keep fixed step
schedules of their own: equal steps per ablation variant, and the demo's tuned few minutes.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cornernet_cli.config import (
    DEFAULT_PRESET,
    PRESETS,
    TRAIN_DEFAULTS,
    DataConfig,
    ModelConfig,
    TrainConfig,
    model_config,
    preset_of,
)
from cornernet_cli.data.coco import CocoDetection, available_splits
from cornernet_cli.data.scale import choose_scales
from cornernet_cli.engine.checkpoint import read_metadata
from cornernet_cli.engine.precision import resolve_amp
from cornernet_cli.hub import resolve_weights

_DATA_KEYS = {f.name for f in dataclasses.fields(DataConfig)}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
_MODEL_KEYS = {"centre_head", "corner_pool"}


@dataclass(frozen=True)
class TrainSettings:
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    val_dir: Path | None
    val_split: str
    preset: str
    choices: list[str] = field(default_factory=list)  # one line per setting chosen for the user, and why


def _box_statistics(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """sqrt(w * h) of every box and of every image of a split, image pixels."""
    ds = CocoDetection.from_folder(data_dir, split)
    boxes, images = [], []
    for i in range(len(ds)):
        b, _ = ds.targets(i)
        boxes.append(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
        h, w = ds.image_size(i)
        images.append(np.sqrt(float(h) * float(w)))
    return np.concatenate(boxes) if boxes else np.zeros(0), np.asarray(images)


def train_settings(
    *,
    data_dir: str | Path,
    preset: str | None = None,
    weights: str | Path | None = None,
    offline: bool = False,
    time_budget: float | None = None,
    time_clock: str = "auto",
    iters: int | None = None,
    epochs: float | None = None,
    device_type: str = "cpu",
    world_size: int = 1,
    train_split: str = "train",
    val_dir: str | Path | None = None,
    val_split: str = "val",
    overrides: Mapping[str, Any] | None = None,
) -> TrainSettings:
    """Resolve a training run's settings.

    preset: a name of config.PRESETS; None: the starting checkpoint's, else DEFAULT_PRESET.
    weights: what to fine-tune from: a cornernet checkpoint, original / mmdetection weights or a named model
        (`cornernet_cli.hub.resolve_weights`; offline: never download one). Its layers must be the preset's.
    time_budget: minutes of training-step time (> 0); the schedule then follows the fraction used.
        time_clock: cpu | wall | auto (cpu on a CPU device, wall-clock on GPUs).
    iters / epochs: a step-count run instead (epochs: passes over the training split, across world_size
        processes). With neither, the preset's default budget.
    overrides: explicit values of DataConfig / TrainConfig fields and `centre_head`, `corner_pool`; they win
        over every default and over the data-driven scale rule.
    Raises ValueError naming the parameter for a bad value.
    """
    data_dir = Path(data_dir)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - _DATA_KEYS - _TRAIN_KEYS - _MODEL_KEYS)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    if "iters" in overrides:  # an explicit step count, however it is passed, is a step-count run
        iters = int(overrides.pop("iters")) if iters is None else iters
    if time_budget is not None and (iters is not None or epochs is not None):
        raise ValueError("give either time_budget or iters / epochs, not both")
    if time_budget is not None and not time_budget > 0:
        raise ValueError(f"time_budget must be > 0 minutes, got {time_budget}")
    choices: list[str] = []

    if weights:
        resolved = resolve_weights(str(weights), offline=offline)
        if str(resolved) != str(weights):
            choices.append(f"weights {weights}: {resolved}")
        weights = resolved
    source_cfg = read_metadata(weights)["model_config"] if weights else None
    if preset is None:
        preset = DEFAULT_PRESET
        if source_cfg is not None:
            preset = preset_of(source_cfg) or DEFAULT_PRESET
            choices.append(f"preset {preset}: the architecture of {weights}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if source_cfg is not None and preset_of(source_cfg) != preset:
        raise ValueError(f"weights {weights} are a {preset_of(source_cfg) or 'custom'} network "
                         f"({source_cfg.num_stacks} stacks, channels {list(source_cfg.channels)}), not the "
                         f"preset {preset} asked for; leave the preset out to use the checkpoint's")
    d = {**TRAIN_DEFAULTS[preset], **overrides}

    explicit_clock = time_clock if time_clock != "auto" else None
    if time_clock == "auto":
        time_clock = "cpu" if device_type == "cpu" else "wall"
    if time_clock not in ("cpu", "wall"):
        raise ValueError(f"time_clock must be cpu, wall or auto, got {time_clock!r}")
    if iters is None and epochs is not None:
        n = len(CocoDetection.from_folder(data_dir, train_split))
        iters = max(1, round(epochs * n / (int(d["batch_size"]) * world_size)))
    defaulted = time_budget is None and iters is None and bool(d.get("time_budget"))
    if defaulted:
        time_budget = float(d["time_budget"])
    if time_budget is not None:
        if "lr_steps" in overrides:
            raise ValueError("lr_steps has no effect with a time budget (the step schedule decays at 90% of it); "
                             "give iters for a step-count run")
        d.update(time_budget=float(time_budget), time_clock=time_clock, iters=10**9, lr_steps=())
        choices.append(f"budget {time_budget:g} {time_clock} minutes" + (f" (the {preset} default)" if defaulted
                                                                         else "") + ", learning rate along it")
    else:
        if explicit_clock:
            raise ValueError(f"time_clock {explicit_clock} applies to a time budget; give time_budget too")
        if iters is not None:
            d.update(iters=iters, time_budget=0.0)
            if "lr_steps" not in overrides:
                d["lr_steps"] = (int(iters * 0.9),)  # the paper's decay at 90% of the run

    if weights:
        # fine-tuning keeps the preset's rate: half of it was measured worse on the validation splits of both
        # transfers in docs/recipes.md (vehicles -> licplates, synthetic shapes -> BCCD)
        d["weights"] = str(weights)
    if d.get("freeze", "none") not in ("none", "backbone"):
        raise ValueError(f"freeze must be none or backbone, got {d['freeze']!r}")
    if d.get("freeze", "none") != "none" and not weights:
        raise ValueError("freeze backbone needs weights to start from (a random backbone would stay random)")

    if d.pop("auto_scale", False) and not {"input_size", "random_scales", "test_scale"} <= set(overrides):
        box_sides, image_sides = _box_statistics(data_dir, train_split)
        if box_sides.size:
            pick = choose_scales(box_sides=box_sides, image_sides=image_sides,
                                 nominal_input=int(TRAIN_DEFAULTS[preset]["input_size"]))
            keys = ("input_size", "random_scales", "test_scale")
            for key in keys:
                if key not in overrides:
                    d[key] = getattr(pick, key)
            used = dataclasses.replace(pick, **{k: d[k] for k in keys})  # what an explicit value left of the pick
            choices.append(f"scale: {used.describe()}")
    d.setdefault("val_scales", (d.get("test_scale", 1.0),))
    if d.get("amp") == "auto":  # resolved here, so that config.json and a resume on another machine keep it
        d["amp"] = resolve_amp("auto", device_type)
        choices.append(f"amp {d['amp']}: " + ("this CPU computes bf16 natively" if d["amp"] == "bf16" else
                                             f"fp32 (no native bf16 on this {device_type})"))

    model = model_config(preset, 1, corner_pool=d.pop("corner_pool", True), centre_head=d.pop("centre_head", False))
    data_cfg = DataConfig(**{k: v for k, v in d.items() if k in _DATA_KEYS})
    train_cfg = TrainConfig(**{k: v for k, v in d.items() if k in _TRAIN_KEYS})
    if val_dir is None and val_split in available_splits(data_dir):
        val_dir = data_dir
    return TrainSettings(model=model, data=data_cfg, train=train_cfg, val_dir=Path(val_dir) if val_dir else None,
                         val_split=val_split, preset=preset, choices=choices)
