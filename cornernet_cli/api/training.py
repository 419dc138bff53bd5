"""`train` of the Python API: `cornernet train`'s settings and per-preset defaults, a `TrainRun` back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from cornernet_cli.engine import train as training
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.precision import AMP_CHOICES
from cornernet_cli.engine.settings import TrainSettings, train_settings
from cornernet_cli.errors import SettingError, check_choice


@dataclass(frozen=True)
class TrainRun:
    """What `train` did.

    out_dir: the run folder (config.json, metrics.jsonl, last / best / state .safetensors, summary.json).
    status: finished | interrupted | stopped | time limit (the last three leave a resume state).
    step: steps done. best_ap: the best validation AP (0..1), None without a validation split.
    checkpoint: best.safetensors (the final model without a validation split): what to load or evaluate.
    settings: the resolved model / data / training configs and a line per setting chosen for the user.
    images_per_s: training throughput over the last steps.
    """

    out_dir: Path
    status: str
    step: int
    best_ap: float | None
    checkpoint: Path
    settings: TrainSettings
    images_per_s: float


def train(
    data: str | Path,
    *,
    out: str | Path = "runs/train",
    preset: str | None = None,
    weights: str | Path | None = None,
    offline: bool = False,
    freeze: str = "none",
    time_budget: float | None = None,
    time_clock: str = "auto",
    iters: int | None = None,
    epochs: float | None = None,
    val: str | Path | None = None,
    val_split: str = "val",
    input_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    lr_steps: Sequence[int] | None = None,
    lr_schedule: str | None = None,
    warmup: int | None = None,
    grad_clip: float | None = None,
    amp: str | None = None,
    pull_weight: float = 0.1,
    push_weight: float = 0.1,
    ema: float | None = None,
    channels_last: bool = True,
    workers: int | None = None,
    seed: int = 0,
    radius: str = "object",
    corner_pool: bool = True,
    centre_head: bool | None = None,
    random_scales: Sequence[float] | None = None,
    test_scale: float | None = None,
    vflip: float = 0.0,
    transpose: float = 0.0,
    val_scales: Sequence[float] | None = None,
    device: str = "auto",
    resume: bool = False,
    exist_ok: bool = False,
    val_every: int = 0,
    save_every: int = 500,
    log_every: int = 10,
    max_minutes: float | None = None,
    max_cpu_minutes: float | None = None,
    tensorboard: bool = False,
    progress: bool = True,
) -> TrainRun:
    """Train CornerNet on a dataset folder: `cornernet train`, with the same settings and per-preset defaults.

    With only `data`, the CPU recipe (docs/recipes.md): preset small-fast with a centre head, crops and test
    scale chosen from the data's box sizes, 25 CPU-minutes with a cosine schedule ending with the budget.
    Settings left at None take the preset's value (config.TRAIN_DEFAULTS); the names are the command's flags
    (`time_budget` is --time, in minutes; `corner_pool=False` is --no-corner-pool). `iters` or `epochs`
    replace the time budget by a step count. weights: fine-tune from a checkpoint, original / mmdetection
    weights or a named model (offline: never download it). progress: draw the progress bar and print each
    setting chosen for you (stderr). Ctrl-C stops at the next step with the state saved; `resume=True`
    continues a run; a folder holding another run is refused unless `exist_ok=True` (replace it).

    Example:
        >>> run = train(data, preset="tiny", iters=2, batch_size=2, input_size=64, out="runs/example",
        ...             progress=False)
        >>> run.step, run.checkpoint.name, run.settings.train.lr_steps
        (2, 'best.safetensors', (1,))
    """
    if amp is not None:
        check_choice("amp", amp, AMP_CHOICES)
    if lr_schedule is not None:
        check_choice("lr_schedule", lr_schedule, ("step", "cosine"))
    check_choice("radius", radius, ("object", "fixed", "none"))
    if not Path(data).is_dir():
        raise SettingError(f"data {str(data)!r} is not a folder (expected a dataset folder from prepare-data)")
    given = dict(input_size=input_size, batch_size=batch_size, lr=lr, lr_steps=lr_steps, lr_schedule=lr_schedule,
                 warmup_iters=warmup, grad_clip=grad_clip, ema=ema, workers=workers, centre_head=centre_head,
                 test_scale=test_scale, random_scales=random_scales, val_scales=val_scales, amp=amp)
    overrides = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in given.items() if v is not None}
    overrides.update(channels_last=channels_last, seed=seed, pull_weight=pull_weight,
                     push_weight=push_weight, radius_mode=radius, vflip=vflip, transpose=transpose, freeze=freeze,
                     corner_pool=corner_pool)
    try:
        s = train_settings(data_dir=data, preset=preset, weights=weights, offline=offline, time_budget=time_budget,
                           time_clock=time_clock, iters=iters, epochs=epochs,
                           device_type=resolve_device(device).type,
                           world_size=int(os.environ.get("WORLD_SIZE", "1")), val_dir=val, val_split=val_split,
                           overrides=overrides)
    except ValueError as e:
        raise SettingError(str(e)) from None
    if progress:
        for line in s.choices:
            Console(stderr=True).print(f"[dim]{escape(line)}[/]", highlight=False)
    result = training.train(data_dir=data, out_dir=out, model_cfg=s.model, data_cfg=s.data, train_cfg=s.train,
                            val_dir=s.val_dir, val_split=s.val_split, device=device, resume=resume,
                            exist_ok=exist_ok, log_every=log_every, val_every=val_every, save_every=save_every,
                            max_minutes=max_minutes, max_cpu_minutes=max_cpu_minutes, tensorboard=tensorboard,
                            progress=progress)
    best = result.out_dir / "best.safetensors"
    return TrainRun(out_dir=result.out_dir, status=result.status, step=result.step, best_ap=result.best_ap,
                    checkpoint=best if best.is_file() else result.out_dir / "last.safetensors", settings=s,
                    images_per_s=result.images_per_s)
