"""Training well by default: the data-driven scale rule, the budget-driven schedule, per-preset settings, and
the test scale carried from training into eval and detect."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cornernet_cli.detect as detect_module
from cornernet_cli.config import TRAIN_DEFAULTS
from cornernet_cli.data.scale import JITTER, choose_scales
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.detect import detect
from cornernet_cli.engine.checkpoint import read_metadata
from cornernet_cli.engine.evaluate import evaluate
from cornernet_cli.engine.settings import train_settings
from cornernet_cli.engine.train import lr_factor, train


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn-budget")
    write_synthetic_dataset(out, num_train=10, num_val=3, image_size=96, seed=4)
    return out


# ---- the scale rule, on hand-made statistics -----------------------------------------------------------


def test_scale_rule_worked_example_bccd():
    # BCCD-like: 640 x 480 images, cells around 102 px: 0.2 * 256 / 102 = 0.502 -> 0.5
    pick = choose_scales(box_sides=np.array([90.0, 102.0, 120.0]), image_sides=np.full(5, math.sqrt(640 * 480)),
                         nominal_input=256)
    assert pick.test_scale == 0.5
    assert pick.random_scales == pytest.approx(tuple(j / 0.5 for j in JITTER))
    assert pick.input_size == 256  # sqrt(320 * 240) = 277 -> capped at the nominal 256


def test_scale_rule_large_objects_shrink_images_and_crops():
    # 416 px images with ~123 px objects: 51.2 / 123 = 0.416 -> 0.4; the image becomes 166 px -> crop 192
    pick = choose_scales(box_sides=np.array([30.0, 123.0, 300.0]), image_sides=np.array([416.0]), nominal_input=256)
    assert pick.test_scale == 0.4 and pick.input_size == 192
    assert min(pick.random_scales) == pytest.approx(0.7 / 0.4) and max(pick.random_scales) == pytest.approx(1.3 / 0.4)


def test_scale_rule_never_enlarges_and_never_below_a_quarter():
    small = choose_scales(box_sides=np.array([8.0]), image_sides=np.array([128.0]), nominal_input=256)
    assert small.test_scale == 1.0 and small.input_size == 128
    huge = choose_scales(box_sides=np.array([4000.0]), image_sides=np.array([5000.0]), nominal_input=256)
    assert huge.test_scale == 0.25 and huge.input_size == 256
    # the paper's network at its own size: COCO-like 100 px objects stay at scale 1
    assert choose_scales(box_sides=np.array([100.0]), image_sides=np.array([580.0]),
                         nominal_input=511).test_scale == 1.0


def test_scale_rule_uses_the_median_not_the_mean():
    sides = np.array([50.0, 51.0, 52.0, 5000.0])  # one outlier must not move the choice
    assert choose_scales(box_sides=sides, image_sides=np.array([400.0]), nominal_input=256).test_scale == 1.0
    with pytest.raises(ValueError, match="box_sides"):
        choose_scales(box_sides=np.array([]), image_sides=np.array([400.0]), nominal_input=256)


# ---- the budget-driven schedule ------------------------------------------------------------------------


def test_lr_follows_the_budget_fraction():
    f = [lr_factor(s, warmup_iters=0, lr_steps=(), gamma=0.1, schedule="cosine", progress=p)
         for s, p in enumerate([0.0, 0.25, 0.5, 1.0, 1.7])]
    assert f == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.0, 0.0])
    # the step schedule decays once, at 90 % of the budget, whatever the step count
    assert lr_factor(10**6, warmup_iters=0, lr_steps=(5,), gamma=0.1, progress=0.89) == 1.0
    assert lr_factor(3, warmup_iters=0, lr_steps=(5,), gamma=0.1, progress=0.9) == pytest.approx(0.1)
    # warm-up still counts steps
    assert lr_factor(0, warmup_iters=4, lr_steps=(), gamma=0.1, schedule="cosine", progress=0.0) == 0.25


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: a second one spin-waits for a core a loaded machine gives to others, and that spinning
    is CPU time the budget counts (a 0.04-minute budget then fits one step instead of tens)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _budget_run(data, out, *, minutes, resume=False, stop=None):
    s = train_settings(data_dir=data, preset="tiny", time_budget=minutes, time_clock="cpu",
                       overrides={"input_size": 64, "batch_size": 2, "lr_schedule": "cosine", "warmup_iters": 0,
                                  "workers": 0, "seed": 0})
    return train(data_dir=data, out_dir=out, model_cfg=s.model, data_cfg=s.data, train_cfg=s.train, val_dir=None,
                 device="cpu", resume=resume, stop_at_step=stop, save_every=1000, log_every=1, progress=False)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_budget_run_ends_decayed_when_the_budget_ends(syn, tmp_path):
    budget = 0.04  # minutes of CPU time: a few seconds, some tens of steps
    r = _budget_run(syn, tmp_path / "t", minutes=budget)
    assert r.status == "finished" and r.step >= 5
    rows = _rows(tmp_path / "t")
    # it stopped at the first step past the budget (cpu_min is logged rounded to 0.001)
    assert rows[-1]["cpu_min"] >= budget - 5e-4 and rows[-2]["cpu_min"] <= budget + 5e-4
    lrs = [row["lr"] for row in rows]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < 0.05 * lrs[0]  # started at the peak, ended near zero
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone along the budget
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["time_budget"] == budget and summary["iters"] is None


def test_budget_run_resumed_still_ends_decayed(syn, tmp_path):
    budget = 0.04
    first = _budget_run(syn, tmp_path / "r", minutes=budget, stop=3)
    assert first.status == "stopped" and first.step == 3
    second = _budget_run(syn, tmp_path / "r", minutes=budget, resume=True)
    assert second.status == "finished" and second.step > 3
    rows = _rows(tmp_path / "r")
    assert [row["step"] for row in rows] == list(range(1, second.step + 1))  # one row per step, none replayed
    assert rows[-1]["cpu_min"] >= budget - 5e-4 and rows[-1]["lr"] < 0.05 * rows[0]["lr"]
    with pytest.raises(Exception, match="time_budget"):  # resuming with another budget would bend the curve
        _budget_run(syn, tmp_path / "r", minutes=budget * 2, resume=True)
    # resuming a run that has used its whole budget trains nothing more and changes nothing
    before = load_file(str(tmp_path / "r" / "last.safetensors"))
    again = _budget_run(syn, tmp_path / "r", minutes=budget, resume=True)
    assert again.step == second.step and again.status == "finished"
    after = load_file(str(tmp_path / "r" / "last.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(_rows(tmp_path / "r")) == second.step


# ---- per-preset settings, and the test scale carried into eval / detect ----------------------------------


def test_cpu_defaults_are_the_budget_recipe(syn):
    s = train_settings(data_dir=syn)
    assert s.preset == "small-fast" and s.model.centre_head
    assert s.train.time_budget == 25.0 and s.train.time_clock == "cpu" and s.train.lr_schedule == "cosine"
    assert s.train.ema == 0.999 and s.train.workers == 0
    assert s.train.val_scales == (s.data.test_scale,)
    assert any(c.startswith("scale:") for c in s.choices) and any("budget 25" in c for c in s.choices)
    assert train_settings(data_dir=syn, device_type="cuda").train.time_clock == "wall"


def test_explicit_values_win_and_the_paper_preset_is_unchanged(syn):
    s = train_settings(data_dir=syn, iters=300, overrides={"input_size": 96, "test_scale": 0.75, "ema": 0.0})
    assert s.train.time_budget == 0.0 and s.train.iters == 300 and s.train.lr_steps == (270,)
    assert s.data.input_size == 96 and s.data.test_scale == 0.75 and s.train.ema == 0.0
    paper = train_settings(data_dir=syn, preset="hourglass-104")
    # TRAIN_DEFAULTS lists nothing for it: the paper's schedule is TrainConfig's defaults
    assert TRAIN_DEFAULTS["hourglass-104"] == {}
    assert (paper.train.iters, paper.train.lr, paper.train.lr_steps, paper.train.batch_size) == \
        (500_000, 2.5e-4, (450_000,), 49)
    assert paper.data.input_size == 511 and paper.data.test_scale == 1.0 and not paper.model.centre_head
    with pytest.raises(ValueError, match="time_budget or iters"):
        train_settings(data_dir=syn, time_budget=5, iters=10)
    with pytest.raises(ValueError, match="unknown setting"):
        train_settings(data_dir=syn, overrides={"learning_rate": 1})
    # a step count passed as an override is a step-count run too, not lost to the default budget
    assert train_settings(data_dir=syn, overrides={"iters": 30}).train.iters == 30
    with pytest.raises(ValueError, match="lr_steps has no effect"):
        train_settings(data_dir=syn, overrides={"lr_steps": (100,)})
    with pytest.raises(ValueError, match="time_clock wall applies to a time budget"):
        train_settings(data_dir=syn, iters=10, time_clock="wall")


def test_explicit_crop_size_does_not_move_the_test_scale(syn):
    rule = train_settings(data_dir=syn)
    assert train_settings(data_dir=syn, overrides={"input_size": 64}).data.test_scale == rule.data.test_scale


def test_trained_test_scale_is_the_default_of_eval_and_detect(syn, tmp_path, monkeypatch):
    s = train_settings(data_dir=syn, preset="tiny", iters=2,
                       overrides={"input_size": 64, "batch_size": 2, "workers": 0, "test_scale": 0.5})
    train(data_dir=syn, out_dir=tmp_path / "m", model_cfg=s.model, data_cfg=s.data, train_cfg=s.train,
          val_dir=None, device="cpu", save_every=1000, progress=False)
    ckpt = tmp_path / "m" / "last.safetensors"
    assert read_metadata(ckpt)["extra"]["test_scale"] == 0.5
    m = evaluate(checkpoint=ckpt, data_dir=syn, split="val", flip=False, out=tmp_path / "e" / "r.json",
                 progress=False)
    assert m["scales"] == [0.5]
    m1 = evaluate(checkpoint=ckpt, data_dir=syn, split="val", flip=False, scales=(1.0,),
                  out=tmp_path / "e1" / "r.json", progress=False)
    assert m1["scales"] == [1.0]
    seen = []
    real = detect_module.detect_images

    def spy(*args, **kwargs):
        seen.append(tuple(kwargs["scales"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(detect_module, "detect_images", spy)
    image = sorted((syn / "images" / "val").iterdir())[0]
    detect([image], checkpoint=ckpt, out=tmp_path / "d", threshold=0.0, flip=False)
    detect([image], checkpoint=ckpt, out=tmp_path / "d2", threshold=0.0, flip=False, scales=(0.75,))
    assert seen == [(0.5,), (0.75,)]


def test_the_scale_line_describes_the_crops_used(syn):
    s = train_settings(data_dir=syn, overrides={"random_scales": (1.0, 2.0), "input_size": 64})
    line = next(c for c in s.choices if c.startswith("scale:"))
    assert "crops of 64 px cut from 64-128 px" in line, line
