"""The one place that turns what a user asked for into a training run's settings.

(preset, dataset, starting weights, budget, explicit overrides) -> TrainSettings: the ModelConfig,
DataConfig and TrainConfig that `train()` takes, the validation folder, and a line per choice made for the
user (printed by the CLI, stored in config.json). `cornernet train`, `cornernet ablate`, `cornernet demo` and
the Python API call `train_settings`; per-preset defaults live in config.TRAIN_DEFAULTS, which lists only what
differs from the dataclasses' defaults (`preset_defaults` puts the two together). Ablation variants and the
demo run fixed step schedules (`step_schedule`) passed as overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
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
_FIELD_DEFAULTS = {f.name: f.default for cls in (DataConfig, TrainConfig) for f in dataclasses.fields(cls)}
_SCALE_KEYS = ("input_size", "random_scales", "test_scale")


@dataclass(frozen=True)
class TrainSettings:
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    val_dir: Path | None
    val_split: str
    preset: str
    choices: list[str] = field(default_factory=list)  # one line per setting chosen for the user, and why


def preset_defaults(preset: str) -> dict[str, Any]:
    """Every DataConfig and TrainConfig field at `preset`'s default, plus the preset's own switches
    (auto_scale, centre_head): the dataclasses' defaults with config.TRAIN_DEFAULTS[preset] over them."""
    return {**_FIELD_DEFAULTS, **TRAIN_DEFAULTS[preset]}


def step_schedule(iters: int, *, warmup_iters: int, lr_steps: Sequence[int] | None = None) -> dict[str, Any]:
    """Overrides of a fixed step-count run: `iters` steps, the learning rate decayed at `lr_steps` (default:
    at 90 % of the run, the paper's), warm-up at most a tenth of the run so that a short run is not all
    warm-up."""
    return {"iters": iters, "lr_steps": (int(iters * 0.9),) if lr_steps is None else tuple(lr_steps),
            "warmup_iters": min(warmup_iters, iters // 10)}


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


def _starting_point(*, weights: str | Path | None, offline: bool, preset: str | None,
                    choices: list[str]) -> tuple[Path | None, str]:
    """The fine-tuning source and the preset: (checkpoint path or None, preset name). A named or foreign
    `weights` is resolved to a checkpoint; preset None is the checkpoint's, else DEFAULT_PRESET. Appends what
    it chose to `choices`."""
    resolved = None
    if weights:
        resolved = resolve_weights(str(weights), offline=offline)
        if str(resolved) != str(weights):
            choices.append(f"weights {weights}: {resolved}")
    source_cfg = read_metadata(resolved)["model_config"] if resolved else None
    if preset is None:
        preset = DEFAULT_PRESET
        if source_cfg is not None:
            preset = preset_of(source_cfg) or DEFAULT_PRESET
            choices.append(f"preset {preset}: the architecture of {resolved}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if source_cfg is not None and preset_of(source_cfg) != preset:
        raise ValueError(f"weights {resolved} are a {preset_of(source_cfg) or 'custom'} network "
                         f"({source_cfg.num_stacks} stacks, channels {list(source_cfg.channels)}), not the "
                         f"preset {preset} asked for; leave the preset out to use the checkpoint's")
    return resolved, preset


def _clock(time_clock: str, device_type: str) -> str:
    """cpu or wall: `time_clock`, with auto meaning cpu on a CPU device and wall-clock on GPUs."""
    if time_clock == "auto":
        return "cpu" if device_type == "cpu" else "wall"
    if time_clock not in ("cpu", "wall"):
        raise ValueError(f"time_clock must be cpu, wall or auto, got {time_clock!r}")
    return time_clock


def _budget(*, preset: str, defaults: Mapping[str, Any], lr_steps_given: bool, time_budget: float | None,
            time_clock: str, explicit_clock: str | None, iters: int | None, choices: list[str]) -> dict[str, Any]:
    """The schedule's settings (iters, time_budget, time_clock, lr_steps) for a time budget, a step count or,
    with neither, the preset's default (`defaults`: TRAIN_DEFAULTS[preset] with the overrides over it).
    time_clock: cpu | wall; explicit_clock: the clock the caller named, None for auto."""
    defaulted = time_budget is None and iters is None and bool(defaults.get("time_budget"))
    if defaulted:
        time_budget = float(defaults["time_budget"])
    if time_budget is not None:
        if lr_steps_given:
            raise ValueError("lr_steps has no effect with a time budget (the step schedule decays at 90% of it); "
                             "give iters for a step-count run")
        choices.append(f"budget {time_budget:g} {time_clock} minutes" + (f" (the {preset} default)" if defaulted
                                                                         else "") + ", learning rate along it")
        return dict(time_budget=float(time_budget), time_clock=time_clock, iters=10**9, lr_steps=())
    if explicit_clock:
        raise ValueError(f"time_clock {explicit_clock} applies to a time budget; give time_budget too")
    if iters is None:
        return {}
    # the paper's decay at 90% of the run, unless the steps are given
    return dict(iters=iters, time_budget=0.0, **({} if lr_steps_given else {"lr_steps": (int(iters * 0.9),)}))


def _scale_rule(*, preset: str, data_dir: Path, split: str, overrides: Mapping[str, Any],
                choices: list[str]) -> dict[str, Any]:
    """input_size, random_scales and test_scale chosen from the median box size of the training split
    (data.scale.choose_scales), those not in `overrides`; {} for a split without boxes."""
    box_sides, image_sides = _box_statistics(data_dir, split)
    if not box_sides.size:
        return {}
    pick = choose_scales(box_sides=box_sides, image_sides=image_sides,
                         nominal_input=int(preset_defaults(preset)["input_size"]))
    chosen = {key: getattr(pick, key) for key in _SCALE_KEYS if key not in overrides}
    used = dataclasses.replace(pick, **{key: overrides.get(key, getattr(pick, key)) for key in _SCALE_KEYS})
    choices.append(f"scale: {used.describe()}")  # the crops used, explicit values included
    return chosen


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
    source, preset = _starting_point(weights=weights, offline=offline, preset=preset, choices=choices)
    d = {**TRAIN_DEFAULTS[preset], **overrides}
    clock = _clock(time_clock, device_type)
    if iters is None and epochs is not None:
        n = len(CocoDetection.from_folder(data_dir, train_split))
        batch_size = int(d.get("batch_size", _FIELD_DEFAULTS["batch_size"]))
        iters = max(1, round(epochs * n / (batch_size * world_size)))
    d.update(_budget(preset=preset, defaults=d, lr_steps_given="lr_steps" in overrides, time_budget=time_budget,
                     time_clock=clock, explicit_clock=None if time_clock == "auto" else time_clock, iters=iters,
                     choices=choices))
    if source:
        # fine-tuning keeps the preset's rate: half of it was measured worse on the validation splits of both
        # transfers in docs/recipes.md (vehicles -> licplates, synthetic shapes -> BCCD)
        d["weights"] = str(source)
    if d.get("freeze", "none") not in ("none", "backbone"):
        raise ValueError(f"freeze must be none or backbone, got {d['freeze']!r}")
    if d.get("freeze", "none") != "none" and not source:
        raise ValueError("freeze backbone needs weights to start from (a random backbone would stay random)")
    if d.pop("auto_scale", False) and not set(_SCALE_KEYS) <= set(overrides):
        d.update(_scale_rule(preset=preset, data_dir=data_dir, split=train_split, overrides=overrides,
                             choices=choices))
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
