"""What every ablation variant shares: data, evaluation split, budget and the training run's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cornernet_cli.ablate.variants import Variant
from cornernet_cli.config import PRESETS, DataConfig
from cornernet_cli.data.coco import available_splits
from cornernet_cli.engine.settings import TrainSettings, preset_defaults, step_schedule, train_settings
from cornernet_cli.errors import CornerNetError, SettingError

# The step schedule of presets whose training default is a time budget (the CPU presets): equal step counts
# make the variants comparable, and these are the values the published ablations ran with.
ABLATION_SCHEDULE = dict(iters=3000, lr_steps=(2400,), warmup_iters=100, workers=2)
# The paper's study conditions beyond the preset's learning rate, warm-up and clipping: a step schedule, the
# paper's crop scales at test scale 1, no centre head, weight averaging or cosine decay (a CPU preset's
# recipe), so that the variants differ from the paper's CornerNet in the one thing each changes.
# amp off: the studies in docs/ablations.md were measured in fp32, and a study must not change with the CPU it runs on
_PAPER_CONDITIONS = dict(lr_schedule="step", ema=0.0, centre_head=False, random_scales=DataConfig().random_scales,
                         test_scale=1.0, amp="off")


@dataclass
class Settings:
    """What every variant shares (see `run_ablation`). overrides: what `train_settings` gets for every
    variant (`shared_overrides`)."""

    data_dir: Path
    out_dir: Path
    preset: str
    split: str
    minutes: float | None
    device: str
    flip: bool
    max_images: int | None
    overrides: dict[str, Any]
    exist_ok: bool = False

    @property
    def iters(self) -> int:
        return self.overrides["iters"]

    @property
    def batch_size(self) -> int:
        return self.overrides["batch_size"]

    @property
    def input_size(self) -> int:
        return self.overrides["input_size"]

    @property
    def seed(self) -> int:
        return self.overrides["seed"]

    def variant(self, v: Variant) -> TrainSettings:
        """The training run of variant `v`: the shared settings and its one change."""
        return train_settings(data_dir=self.data_dir, preset=self.preset,
                              overrides={**self.overrides, "radius_mode": v.radius, "corner_pool": v.corner_pool})

    def job(self) -> dict[str, Any]:
        """What makes two ablations the same (recorded in ablation.json): the data and the training settings.
        Evaluation settings are not part of it: changing them re-evaluates the trained variants (documented
        in docs/ablations.md); nor is the device."""
        return {"command": "ablate", "data": str(self.data_dir.resolve()), "preset": self.preset,
                "iters": self.iters, "minutes": self.minutes, "batch_size": self.batch_size,
                "input_size": self.input_size, "seed": self.seed}

    def eval_key(self) -> dict[str, Any]:
        return {"split": self.split, "flip": self.flip, "max_images": self.max_images}


def shared_overrides(preset: str, *, iters: int | None, batch_size: int | None, input_size: int | None,
                     workers: int | None, seed: int) -> dict[str, Any]:
    """The `train_settings` overrides of every variant: the preset's step schedule (ABLATION_SCHEDULE for a
    preset whose default is a time budget) or `iters` steps decayed at 90 %, the paper's study conditions,
    and the given batch size, crop size (pixels), workers and seed (None: the preset's)."""
    d = preset_defaults(preset)
    if d["time_budget"]:
        d.update(ABLATION_SCHEDULE)
    steps = int(iters or d["iters"])
    return {**_PAPER_CONDITIONS,
            **step_schedule(steps, warmup_iters=d["warmup_iters"], lr_steps=d["lr_steps"] if iters is None else None),
            "batch_size": int(batch_size or d["batch_size"]), "input_size": int(input_size or d["input_size"]),
            "workers": int(d["workers"] if workers is None else workers), "seed": seed}


def evaluation_split(data_dir: Path, *, preset: str, split: str | None) -> str:
    """The split to evaluate on (default: test if the data has one, else val), after checking that `preset`
    exists and that `data_dir` is a dataset with a train split and that split."""
    if preset not in PRESETS:
        raise SettingError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if not data_dir.is_dir():
        raise SettingError(f"data_dir {data_dir} is not a folder")
    splits = available_splits(data_dir)
    if "train" not in splits:
        raise CornerNetError(f"dataset {data_dir} has no train split (found: {', '.join(splits) or 'none'})", 2)
    split = split or ("test" if "test" in splits else "val")
    if split not in splits:
        raise SettingError(f"split {split!r} is not in {data_dir} (found: {', '.join(splits)})")
    return split
