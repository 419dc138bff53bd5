"""The training loop: exact resume, DDP on gloo, non-finite loss, SIGTERM, run-folder files."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cornernet_cli.config import DataConfig, TrainConfig, model_config
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine.checkpoint import load_model
from cornernet_cli.engine.train import lr_factor, train
from cornernet_cli.errors import CornerNetError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(out, num_train=16, num_val=4, image_size=96, seed=1)
    return out


def _run(data, out, *, iters=20, stop=None, resume=False, workers=0, **kw):
    return train(data_dir=data, out_dir=out, model_cfg=model_config("tiny"),
                 data_cfg=DataConfig(input_size=64), train_cfg=TrainConfig(
                     batch_size=2, iters=iters, lr=1e-3, lr_steps=(15,), warmup_iters=3, grad_clip=5.0,
                     workers=workers, seed=3),
                 device="cpu", resume=resume, stop_at_step=stop, save_every=1000, progress=False, **kw)


def test_lr_schedule():
    f = [lr_factor(s, warmup_iters=4, lr_steps=(6, 8), gamma=0.1) for s in range(10)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4:6] == [1.0, 1.0] and f[6:8] == pytest.approx([0.1, 0.1]) and f[8:] == pytest.approx([0.01] * 2)


def test_resume_is_exact(syn, tmp_path):
    straight = _run(syn, tmp_path / "a", iters=20)
    assert straight.status == "finished" and straight.step == 20
    half = _run(syn, tmp_path / "b", iters=20, stop=10)
    assert half.status == "stopped" and half.step == 10
    resumed = _run(syn, tmp_path / "b", iters=20, resume=True)
    assert resumed.step == 20
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the weights did move: not a trivial equality
    _run(syn, tmp_path / "c", iters=20, stop=1)
    c = load_file(str(tmp_path / "c" / "last.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_resume_with_state_older_than_last(syn, tmp_path):
    """A kill between the two renames of a save leaves last.safetensors one save ahead of the resume state:
    resuming must still end bit-identical to a straight run (the state carries its own weights)."""
    import shutil

    _run(syn, tmp_path / "a", iters=20)
    _run(syn, tmp_path / "b", iters=20, stop=5)
    shutil.copy(tmp_path / "b" / "state.safetensors", tmp_path / "state5.safetensors")
    _run(syn, tmp_path / "b", iters=20, stop=10, resume=True)
    shutil.copy(tmp_path / "state5.safetensors", tmp_path / "b" / "state.safetensors")  # last is at step 10
    assert _run(syn, tmp_path / "b", iters=20, resume=True).step == 20
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_contents(syn, tmp_path):
    result = _run(syn, tmp_path / "r", iters=6, val_dir=syn, val_every=3, log_every=2)
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"last.safetensors", "best.safetensors", "state.safetensors", "metrics.jsonl", "config.json",
            "summary.json"} <= files
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert all({"focal", "pull", "push", "offset", "lr", "images_per_s"} <= r.keys() for r in train_rows)
    assert [r["step"] for r in val_rows] == [3, 6] and "AP" in val_rows[0]["val"]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["num_classes"] == 4 and config["class_names"] == ["rectangle", "ellipse", "triangle",
                                                                             "cross"]
    model, meta = load_model(tmp_path / "r" / "best.safetensors")
    assert meta["class_names"] == config["class_names"] and result.best_ap is not None


def test_non_finite_loss_stops_and_keeps_last_good(syn, tmp_path, monkeypatch):
    from cornernet_cli import losses

    real = losses.CornerNetLoss.forward
    calls = {"n": 0}

    def poisoned(self, outputs, batch):
        calls["n"] += 1
        total, terms = real(self, outputs, batch)
        return (total * float("nan"), terms) if calls["n"] == 4 else (total, terms)

    monkeypatch.setattr(losses.CornerNetLoss, "forward", poisoned)
    with pytest.raises(CornerNetError, match="non-finite loss at step 3"):
        _run(syn, tmp_path / "nan", iters=10)
    model, meta = load_model(tmp_path / "nan" / "last.safetensors")
    assert meta["extra"]["step"] == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_without_state(syn, tmp_path):
    with pytest.raises(CornerNetError, match="holds no saved state"):
        _run(syn, tmp_path / "empty", resume=True)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "cornernet_cli.cli", *args]


def test_sigterm_saves_and_resume_finishes(syn, tmp_path):
    out = tmp_path / "sig"
    args = ["train", "--data", str(syn), "--out", str(out), "--preset", "tiny", "--input-size", "64",
            "--batch-size", "2", "--iters", "100000", "--workers", "1", "--log-every", "1", "--device", "cpu"]
    # Its own process group, signalled as a whole (as Ctrl-C in a terminal or a scheduler does): the data
    # worker must not die before the main process has saved.
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stdout
    stopped_at = json.loads((out / "summary.json").read_text())["step"]
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    args[args.index("100000")] = str(stopped_at + 2)
    done = subprocess.run(_cli(*args, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == stopped_at + 2


def _reference_two_rank_weights(run: Path, steps: int) -> dict[str, torch.Tensor]:
    """What 2 DDP ranks with batch 1 each must compute, in one process: per step, rank 0's and rank 1's batches
    (their shards of the seeded stream) through one model separately, gradients averaged, then the run's
    clipping, Adam and schedule, from the run's own config.json. (Not one batch of 2: BatchNorm normalises
    over each rank's own images, and the focal loss over each rank's own positives.)"""
    from cornernet_cli.config import ModelConfig
    from cornernet_cli.data.loader import build_train_loader
    from cornernet_cli.losses import CornerNetLoss
    from cornernet_cli.model.cornernet import CornerNet

    config = json.loads((run / "config.json").read_text())
    tc = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["train"].items()})
    dc = DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["data"].items()})
    assert tc.batch_size == 1 and config["world_size"] == 2 and tc.ema == 0 and tc.amp == "off"
    torch.manual_seed(tc.seed)
    model = CornerNet.from_config(ModelConfig.from_dict(config["model"])).to(memory_format=torch.channels_last)
    model.train()
    criterion = CornerNetLoss(pull_weight=tc.pull_weight, push_weight=tc.push_weight, offset_weight=tc.offset_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, warmup_iters=tc.warmup_iters, lr_steps=tc.lr_steps, gamma=tc.lr_gamma, schedule=tc.lr_schedule,
        total=tc.iters))
    ranks = [iter(build_train_loader(config["data_dir"], input_size=dc.input_size, batch_size=1, workers=0,
                                     seed=tc.seed, radius_mode=dc.radius_mode, rank=r, world_size=2, data_cfg=dc))
             for r in (0, 1)]
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for batches in ranks:
            batch = next(batches)
            outputs = model(batch["image"].contiguous(memory_format=torch.channels_last))
            loss, _ = criterion(outputs, batch)
            (loss / 2).backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
    return {k: v.detach() for k, v in model.named_parameters()}


def test_ddp_two_gloo_processes_equal_one_process_averaging_both_shards(syn, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun picks a free port itself (a fixed one can collide with another run)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cornernet_cli.cli", "train", "--data", str(syn), "--out", str(out), "--preset", "tiny",
           "--input-size", "64", "--batch-size", "1", "--iters", "4", "--workers", "0", "--device", "cpu",
           "--lr", "0.001", "--warmup", "1", "--val-every", "0", "--grad-clip", "0"]
    # clipping off: it rescales all gradients by one norm, which turns the all-reduce's float-order
    # differences into weight differences ten times larger (3e-5 instead of 3e-6 after 4 steps, measured)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    a, b = summary["param_checksums"]
    assert a == b
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["best.safetensors", "last.safetensors",
                                                                  "state.safetensors"]
    assert not list(out.glob(".*.tmp"))
    model, meta = load_model(out / "last.safetensors")
    assert meta["extra"]["step"] == 4
    # Rank 0's weights are those of one process that averages the gradients of both ranks' shards; ranks that
    # never synchronised, or both reading the same shard, end elsewhere.
    got = dict(model.named_parameters())
    want = _reference_two_rank_weights(out, steps=4)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("length", [16, 7])
def test_ranks_take_disjoint_shards_of_each_epoch(length):
    """2 and 3 ranks: within each epoch no sample goes to two ranks (except the wrap-around padding that makes
    the epoch divide by the rank count), and together they cover the epoch; resuming at `start` continues
    the stream."""
    from cornernet_cli.data.loader import SeededInfiniteSampler

    for world in (2, 3):
        per_epoch = -(-length // world)
        streams = [list(itertools.islice(SeededInfiniteSampler(length, seed=4, rank=r, world_size=world),
                                         3 * per_epoch + 10)) for r in range(world)]
        for epoch in range(3):
            shards = [[i for i, _ in s[epoch * per_epoch : (epoch + 1) * per_epoch]] for s in streams]
            taken = [i for shard in shards for i in shard]
            assert set(taken) == set(range(length))
            assert len(taken) - len(set(taken)) == per_epoch * world - length  # only the padding repeats
        seeds = [seed for s in streams for _, seed in s[: 3 * per_epoch]]
        assert len(set(seeds)) >= 3 * length  # every (epoch, sample) its own augmentation seed
        later = SeededInfiniteSampler(length, seed=4, rank=1, world_size=world, start=5)
        assert list(itertools.islice(later, 10)) == streams[1][5:15]


def test_cpu_bf16_and_contiguous_training_run(syn, tmp_path):
    """--amp bf16 on the CPU trains (finite weights that moved from the initial ones and differ from the fp32
    run's, amp recorded); --no-channels-last trains too; --amp fp16 on the CPU is refused with one line before
    the run folder is made."""
    import dataclasses

    from cornernet_cli.model.cornernet import CornerNet

    base = TrainConfig(batch_size=2, iters=3, lr=1e-3, lr_steps=(15,), warmup_iters=0, workers=0, seed=3)

    def run(out, **over):
        return train(data_dir=syn, out_dir=out, model_cfg=model_config("tiny"), data_cfg=DataConfig(input_size=64),
                     train_cfg=dataclasses.replace(base, **over), device="cpu", save_every=1000, progress=False)

    assert run(tmp_path / "bf16", amp="bf16").step == 3
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["train"]["amp"] == "bf16"
    assert run(tmp_path / "fp32").status == "finished"
    assert run(tmp_path / "flat", channels_last=False).status == "finished"
    bf16, fp32, flat = (load_file(str(tmp_path / d / "last.safetensors")) for d in ("bf16", "fp32", "flat"))
    torch.manual_seed(base.seed)
    init = CornerNet.from_config(model_config("tiny", 4)).state_dict()
    floats = [k for k in bf16 if bf16[k].is_floating_point()]
    assert all(torch.isfinite(bf16[k]).all() for k in floats)
    assert any(not torch.equal(bf16[k], init[k]) for k in floats)  # it trained
    assert any(not torch.equal(fp32[k], init[k]) for k in floats)
    assert any(not torch.equal(bf16[k], fp32[k]) for k in floats)  # and bf16 did change the arithmetic
    assert all(torch.isfinite(flat[k]).all() for k in floats)
    with pytest.raises(CornerNetError, match="fp16 needs device cuda"):
        run(tmp_path / "fp16", amp="fp16")
    assert not (tmp_path / "fp16").exists()


def test_cli_random_scales_and_val_scales_reach_the_run(syn, tmp_path):
    """--random-scales sets the crop scales of the augmentation, --val-scales the periodic validation's test
    scales; both are in config.json, and a validation at scale 0.5 runs; bad lists are one-line errors."""
    from typer.testing import CliRunner

    from cornernet_cli.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(syn), "--preset", "tiny", "--input-size", "64",
                                 "--batch-size", "2", "--iters", "2", "--workers", "0", "--device", "cpu",
                                 "--random-scales", "1.5,2", "--val-scales", "0.5", "--val-every", "2",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["random_scales"] == [1.5, 2.0] and config["train"]["val_scales"] == [0.5]
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val" in v and v["val"]["scales"] == [0.5] for v in vals)
    r = CliRunner().invoke(app, ["train", "--data", str(syn), "--preset", "tiny", "--val-scales", "0,x",
                                 "--out", str(tmp_path / "bad")])
    assert isinstance(r.exception, CornerNetError) and "--val-scales" in str(r.exception)


def test_cosine_schedule():
    f = [lr_factor(s, warmup_iters=0, lr_steps=(), gamma=0.1, schedule="cosine", total=8) for s in range(9)]
    assert f[0] == 1.0 and f[4] == pytest.approx(0.5) and f[8] == pytest.approx(0.0)
    assert f[2] == pytest.approx((1 + 2 ** -0.5) / 2)  # cos(pi/4)
    assert all(a > b for a, b in zip(f, f[1:]))
    warm = lr_factor(1, warmup_iters=4, lr_steps=(), gamma=0.1, schedule="cosine", total=8)
    assert warm == pytest.approx(0.5 * f[1])
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, warmup_iters=0, lr_steps=(), gamma=0.1, schedule="linear", total=8)


def test_ema_matches_a_hand_average():
    """build_ema against the ramped-decay formula computed by hand over a few updates, buffers included."""
    from cornernet_cli.engine.ema import build_ema, ema_decay

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = build_ema(net, 0.5)
    expected = {k: v.clone().double() for k, v in net.state_dict().items() if v.is_floating_point()}
    ema.update_parameters(net)  # the first update copies
    for n in range(1, 5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.train()(torch.randn(4, 3))  # moves the BatchNorm running statistics
        d = ema_decay(n, 0.5)
        for k, v in net.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v.double()
        ema.update_parameters(net)
    assert [ema_decay(n, 0.999) for n in (0, 1, 100)] == pytest.approx([0.1, 2 / 11, 101 / 110])
    got = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].double(), v, atol=1e-6), k
    assert int(got["1.num_batches_tracked"]) == int(net.state_dict()["1.num_batches_tracked"])
    # and the average is not the live network
    assert not torch.allclose(got["0.weight"], net.state_dict()["0.weight"])


def test_ema_run_saves_averaged_weights_and_resumes_exactly(syn, tmp_path):
    def run(out, **kw):
        return train(data_dir=syn, out_dir=out, model_cfg=model_config("tiny"), data_cfg=DataConfig(input_size=64),
                     train_cfg=TrainConfig(batch_size=2, iters=12, lr=1e-3, lr_schedule="cosine", warmup_iters=2,
                                           ema=0.9, workers=0, seed=3),
                     device="cpu", save_every=1000, progress=False, **kw)

    run(tmp_path / "a")
    run(tmp_path / "b", stop_at_step=5)
    run(tmp_path / "b", resume=True)
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # last.safetensors holds the average, the resume state holds the live weights and the average
    from cornernet_cli.engine.checkpoint import load_train_state

    st = load_train_state(tmp_path / "a" / "state.safetensors")
    assert st["ema_n"] == 12
    assert all(torch.equal(st["ema"][k], a[k]) for k in a)
    assert any(not torch.equal(st["model"][k], a[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(CornerNetError, match="saved with ema"):
        train(data_dir=syn, out_dir=tmp_path / "b", model_cfg=model_config("tiny"),
              data_cfg=DataConfig(input_size=64), train_cfg=TrainConfig(batch_size=2, iters=14, workers=0, seed=3),
              device="cpu", resume=True, progress=False)


def test_resume_refuses_other_trajectory_settings(syn, tmp_path):
    """A cosine run resumed with another schedule, --iters, augmentation or loss weight would not continue the
    same run: one error line names each changed setting; a step-schedule run may still be extended."""
    import dataclasses

    base = TrainConfig(batch_size=2, iters=8, lr=1e-3, lr_schedule="cosine", warmup_iters=2, workers=0, seed=3)

    def run(out, tc=base, dc=DataConfig(input_size=64), **kw):
        return train(data_dir=syn, out_dir=out, model_cfg=model_config("tiny"), data_cfg=dc, train_cfg=tc,
                     device="cpu", save_every=1000, progress=False, **kw)

    run(tmp_path / "a", stop_at_step=3)
    before = (tmp_path / "a" / "config.json").read_text()
    for tc, dc, expect in [
        (dataclasses.replace(base, lr_schedule="step"), DataConfig(input_size=64), "lr_schedule 'cosine' -> 'step'"),
        (dataclasses.replace(base, iters=12), DataConfig(input_size=64), "iters 8 -> 12"),
        (base, DataConfig(input_size=64, vflip=0.5), "vflip 0.0 -> 0.5"),
        (dataclasses.replace(base, push_weight=0.3), DataConfig(input_size=64), "push_weight 0.1 -> 0.3"),
    ]:
        with pytest.raises(CornerNetError, match="saved with other settings") as e:
            run(tmp_path / "a", tc=tc, dc=dc, resume=True)
        assert expect in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "a" / "config.json").read_text() == before  # a refused resume rewrites nothing
    assert run(tmp_path / "a", resume=True).step == 8
    step = dataclasses.replace(base, lr_schedule="step", lr_steps=(6,))
    run(tmp_path / "b", tc=step, stop_at_step=3)
    assert run(tmp_path / "b", tc=dataclasses.replace(step, iters=10), resume=True).step == 10


def test_metrics_rows_of_a_fresh_start_and_a_resume(syn, tmp_path):
    """A fresh run in a used folder starts metrics.jsonl afresh; a resume keeps the rows up to its step and
    logs each later step once. The lr column is the rate the step used."""
    def steps(out):
        return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]

    _run(syn, tmp_path / "a", iters=6, log_every=1)
    assert steps(tmp_path / "a") == [1, 2, 3, 4, 5, 6]
    _run(syn, tmp_path / "a", iters=4, log_every=1, exist_ok=True)  # a fresh start replaces the earlier run
    assert steps(tmp_path / "a") == [1, 2, 3, 4]
    (tmp_path / "a" / "metrics.jsonl").write_text(
        (tmp_path / "a" / "metrics.jsonl").read_text() + '{"step": 9, "loss": 1.0}\n{"step": 1')  # a torn line
    _run(syn, tmp_path / "a", iters=4, stop=2, log_every=1, exist_ok=True)  # fresh again: rows 1, 2
    _run(syn, tmp_path / "a", iters=5, resume=True, log_every=1)
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    # warm-up 3 steps at lr 1e-3: the first step ran at 1/3 of it
    assert rows[0]["lr"] == pytest.approx(1e-3 / 3) and rows[2]["lr"] == pytest.approx(1e-3)


def test_cli_ema_schedule_and_embedding_weights_reach_the_run(syn, tmp_path):
    from typer.testing import CliRunner

    from cornernet_cli.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(syn), "--preset", "tiny", "--input-size", "64",
                                 "--batch-size", "2", "--iters", "3", "--workers", "0", "--device", "cpu",
                                 "--ema", "0.99", "--lr-schedule", "cosine", "--pull-weight", "0.5",
                                 "--push-weight", "0.7", "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = json.loads((out / "config.json").read_text())["train"]
    assert (t["ema"], t["lr_schedule"], t["pull_weight"], t["push_weight"]) == (0.99, "cosine", 0.5, 0.7)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the rate each step used: cosine over 3 steps after the warm-up ramp, not the step schedule's constant
    used = [r["lr"] for r in rows if "lr" in r]
    expect = [t["lr"] * lr_factor(s, warmup_iters=t["warmup_iters"], lr_steps=tuple(t["lr_steps"]), gamma=0.1,
                                  schedule="cosine", total=3) for s in range(3)]
    assert used == pytest.approx(expect[-len(used):]) and used[-1] < 0.3 * t["lr"]
    r = CliRunner().invoke(app, ["train", "--data", str(syn), "--lr-schedule", "linear", "--out", str(tmp_path / "b")])
    assert isinstance(r.exception, CornerNetError) and "--lr-schedule" in str(r.exception)


def test_tiny_overfits_a_handful_of_images(tmp_path):
    """Training learns: `tiny` on 4 synthetic 64 x 64 images (2 classes, at most 2 objects each, no colour
    augmentation) for 120 steps. Measured here (seed 0, 2026-12-01): the mean loss of the last 5 steps is 9.8x
    below that of the first 5, and AP50 on the same images is 1.0 (AP 0.49); an untrained network scores ~0.
    The bounds (loss / 3, AP50 > 0.5) leave that margin; a loop that does not learn fails both."""
    data = tmp_path / "syn"
    write_synthetic_dataset(data, num_train=4, num_val=0, image_size=64, num_classes=2, seed=0, max_objects=2,
                            sizes=(20, 44))
    result = train(data_dir=data, out_dir=tmp_path / "run", model_cfg=model_config("tiny"),
                   data_cfg=DataConfig(input_size=64, random_scales=(1.0,), color_jitter=0.0, lighting=0.0),
                   train_cfg=TrainConfig(batch_size=4, iters=120, lr=3e-3, lr_steps=(96,), warmup_iters=5, workers=0,
                                         seed=0),
                   device="cpu", log_every=1, save_every=10**6, progress=False)
    assert result.status == "finished"
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 3, (first, last)
    from cornernet_cli.engine.evaluate import evaluate_model

    model, meta = load_model(tmp_path / "run" / "last.safetensors")
    metrics = evaluate_model(model, data, "train", class_names=meta["class_names"], flip=False)
    assert metrics["AP50"] > 0.5, metrics
