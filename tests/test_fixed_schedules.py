"""`cornernet ablate` and `cornernet demo` take their runs from `train_settings`, and get exactly the model, data
and optimisation settings they built for themselves before: each "want" below is that construction, written
out here by hand from the values it used (config.TrainConfig / DataConfig defaults, the preset's schedule)."""

import dataclasses
from pathlib import Path

import pytest

from cornernet_cli.ablate import VARIANTS
from cornernet_cli.ablate.settings import Settings, shared_overrides
from cornernet_cli.config import DataConfig, TrainConfig, model_config
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.demo import DEMO, demo_settings

# The step schedules ablate used per preset: iters, lr, lr_steps, warm-up, batch, crop size, workers, clipping.
_BUDGET_PRESET = dict(iters=3000, lr=1e-3, lr_steps=(2400,), warmup_iters=100, batch_size=8, input_size=256,
                      workers=2, grad_clip=10.0)
_ABLATION_BEFORE = {
    "small": _BUDGET_PRESET,
    "small-fast": _BUDGET_PRESET,
    "hourglass-104": dict(iters=500_000, lr=2.5e-4, lr_steps=(450_000,), warmup_iters=0, batch_size=49,
                          input_size=511, workers=4, grad_clip=0.0),
    "squeeze": dict(iters=500_000, lr=2.5e-4, lr_steps=(450_000,), warmup_iters=0, batch_size=55, input_size=511,
                    workers=4, grad_clip=0.0),
    "tiny": dict(iters=200, lr=1e-3, lr_steps=(160,), warmup_iters=10, batch_size=4, input_size=128, workers=0,
                 grad_clip=10.0),
}


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn-fixed")
    write_synthetic_dataset(out, num_train=6, num_val=2, image_size=96, seed=3)
    return out


def _ablation_before(preset: str, v, *, iters, batch_size, input_size, workers, seed):
    d = _ABLATION_BEFORE[preset]
    steps = iters or d["iters"]
    model = model_config(preset, 1, corner_pool=v.corner_pool)
    data = dataclasses.replace(DataConfig(), input_size=input_size or d["input_size"], radius_mode=v.radius)
    train = TrainConfig(batch_size=batch_size or d["batch_size"], iters=steps, lr=d["lr"],
                        lr_steps=d["lr_steps"] if iters is None else (int(steps * 0.9),),
                        warmup_iters=min(d["warmup_iters"], steps // 10), grad_clip=d["grad_clip"],
                        workers=d["workers"] if workers is None else workers, seed=seed)
    return model, data, train


@pytest.mark.parametrize("preset", list(_ABLATION_BEFORE))
@pytest.mark.parametrize("given", [dict(iters=None, batch_size=None, input_size=None, workers=None, seed=0),
                                   dict(iters=40, batch_size=2, input_size=64, workers=0, seed=3)])
def test_ablation_variants_train_what_they_did(syn, preset, given):
    s = Settings(data_dir=syn, out_dir=syn / "ab", preset=preset, split="val", minutes=None, device="cpu",
                 flip=True, max_images=None, overrides=shared_overrides(preset, **given))
    for v in VARIANTS.values():
        run = s.variant(v)
        assert (run.model, run.data, run.train) == _ablation_before(preset, v, **given), (preset, v.name)
    assert (s.iters, s.batch_size, s.input_size) == (run.train.iters, run.train.batch_size, run.data.input_size)


@pytest.mark.parametrize("iters", [None, 30])
@pytest.mark.parametrize("augment", [False, True])
def test_demo_trains_what_it_did(syn, iters, augment):
    cfg = {**DEMO, "augment": augment}
    run = demo_settings(syn, cfg=cfg, seed=5, iters=iters)
    steps = iters or 450
    want_train = TrainConfig(batch_size=8, iters=steps, lr=2e-3, lr_steps=(int(steps * 0.9),),
                             warmup_iters=min(50, steps // 10), grad_clip=10.0, workers=0, seed=5, amp="off",
                             lr_schedule="cosine", ema=0.999)
    want_data = dataclasses.replace(DataConfig(), input_size=128)
    if not augment:
        want_data = dataclasses.replace(want_data, random_scales=(1.0,), color_jitter=0.0, lighting=0.0)
    assert run.train == want_train and run.data == want_data
    # the demo built its model with the default 80 classes; train() replaces the count by the data's
    assert dataclasses.replace(run.model, num_classes=80) == model_config("small-fast")
