"""Output folders (cornernet_cli.engine.rundir): a rerun never replaces an earlier run, two processes never
write one folder, stale locks are taken over; results JSON survives SIGTERM / SIGKILL and a full disk keeps
the previous checkpoint; images that change under a running training stop it cleanly with its state saved.
docs/reliability.md lists the same cases."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_reliability import one_line_error, run_cli

from cornernet_cli.errors import CornerNetError

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--preset", "tiny", "--workers", "0", "--batch-size", "2", "--input-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    from cornernet_cli.data.synthetic import write_synthetic_dataset

    d = tmp_path_factory.mktemp("rundir") / "syn"
    write_synthetic_dataset(d, num_train=4, num_val=2, image_size=64, num_classes=2, seed=0)
    return d


def _train(syn: Path, out: Path, *extra: str, iters: int = 2) -> tuple[int, str, str]:
    return run_cli("train", "--data", syn, "--out", out, "--iters", iters, *TRAIN, *extra)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "cornernet_cli.cli", *map(str, args)]


_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CORNERNET_MALLOC_TUNING": "0"}


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 600) -> None:
    """Wait until `path` exists while `proc` runs (generous: the machine may be shared and slow)."""
    deadline = time.time() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {path} appeared: {proc.stderr.read()}")
        assert time.time() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.2)


# ---- the run-folder rule -----------------------------------------------------------------------------------


def test_rerun_into_a_finished_run_is_refused_and_keeps_its_model(syn, tmp_path):
    out = tmp_path / "run"
    assert _train(syn, out)[0] == 0
    before = {n: (out / n).read_bytes() for n in ("best.safetensors", "last.safetensors", "summary.json")}
    code, _, err = _train(syn, out, "--seed", "1")  # a changed flag, no --resume
    line = one_line_error(err)
    assert code == 1 and str(out) in line and "finished run at step 2" in line
    assert "--resume" in line and "--exist-ok" in line
    assert {n: (out / n).read_bytes() for n in before} == before
    # --resume continues it; --exist-ok replaces it (no file of the first run survives)
    assert _train(syn, out, "--resume", iters=3)[0] == 0
    assert json.loads((out / "summary.json").read_text())["step"] == 3
    assert _train(syn, out, "--exist-ok", "--seed", "1", iters=1)[0] == 0
    assert json.loads((out / "summary.json").read_text())["step"] == 1
    assert (out / "best.safetensors").read_bytes() != before["best.safetensors"]
    code, _, err = _train(syn, out, "--exist-ok", "--resume")
    assert code == 2 and "give one of them" in one_line_error(err)


def test_interrupted_run_is_refused_without_resume(syn, tmp_path):
    import dataclasses

    from cornernet_cli.config import DataConfig, TrainConfig, model_config
    from cornernet_cli.engine.train import train

    out = tmp_path / "run"
    kw = dict(data_dir=syn, out_dir=out, model_cfg=model_config("tiny"), device="cpu", progress=False,
              data_cfg=dataclasses.replace(DataConfig(), input_size=64),
              train_cfg=TrainConfig(batch_size=2, iters=4, workers=0, warmup_iters=0))
    train(**kw, stop_at_step=1)
    assert not (out / "summary.json").read_text().count('"finished"')
    with pytest.raises(CornerNetError, match="holds a stopped run at step 1.*resume"):
        train(**kw)
    (out / "summary.json").unlink()  # as after SIGKILL: only the checkpoints and the resume state
    with pytest.raises(CornerNetError, match=r"an unfinished run \(state.safetensors, last.safetensors\)"):
        train(**kw)


def test_demo_run_twice_restarts_its_own_run(tmp_path):
    from cornernet_cli.demo import run_demo

    kw = dict(iters=2, preset="tiny", num_train=4, num_val=2, num_detect=1, batch_size=2, image_size=64,
              input_size=64)
    first = run_demo(tmp_path, **kw)
    second = run_demo(tmp_path, **kw)  # the demo deliberately starts afresh over its own finished run
    assert first.checkpoint == second.checkpoint and second.checkpoint.is_file()
    assert json.loads((tmp_path / "train" / "summary.json").read_text())["status"] == "finished"


def test_eval_detect_prepare_data_refuse_another_jobs_results(syn, tmp_path):
    from cornernet_cli.engine.checkpoint import save_checkpoint
    from cornernet_cli.model import build_model

    cks = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cks.append(save_checkpoint(tmp_path / f"ck{seed}.safetensors", build_model("tiny", 2),
                                   class_names=["rectangle", "ellipse"]))
    res = tmp_path / "e" / "results.json"
    ev = ["eval", "--data", syn, "--out", res, "--no-flip"]
    assert run_cli(*ev, "--checkpoint", cks[0])[0] == 0
    first = res.read_bytes()
    assert run_cli(*ev, "--checkpoint", cks[0])[0] == 0  # the same job again: rewritten, same results
    assert res.read_bytes() == first
    code, _, err = run_cli(*ev, "--checkpoint", cks[1])
    line = one_line_error(err)
    assert code == 1 and "ck1.safetensors" in line and "--exist-ok" in line and str(res) in line
    assert res.read_bytes() == first
    assert run_cli(*ev, "--checkpoint", cks[1], "--exist-ok")[0] == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["job"]["checkpoint"] == str(cks[1].resolve())
    # flip and scales left to the checkpoint are the values they resolve to (tiny: flip on, scale 1): one job
    both = ["eval", "--data", syn, "--out", tmp_path / "f" / "results.json", "--checkpoint", cks[0]]
    assert run_cli(*both, "--flip", "--scales", "1")[0] == 0
    assert run_cli(*both)[0] == 0

    image = next((syn / "images" / "val").iterdir())
    det = ["detect", image, "--out", tmp_path / "d", "--no-flip"]
    assert run_cli(*det, "--checkpoint", cks[0])[0] == 0
    assert run_cli(*det, "--checkpoint", cks[0])[0] == 0
    code, _, err = run_cli(*det, "--checkpoint", cks[1])
    assert code == 1 and "ck1.safetensors" in one_line_error(err)
    assert run_cli(*det, "--checkpoint", cks[1], "--exist-ok")[0] == 0

    prep = ["prepare-data", "--format", "coco", "--source", syn, "--out", tmp_path / "p"]
    assert run_cli(*prep)[0] == 0
    assert run_cli(*prep)[0] == 0
    code, _, err = run_cli(*prep, "--seed", "3")
    assert code == 1 and "seed 0 there vs 3 now" in one_line_error(err)
    synth = ["prepare-data", "--format", "synthetic", "--out", tmp_path / "p", "--num-train", "3", "--num-val", "0",
             "--image-size", "64"]
    assert run_cli(*synth)[0] == 1
    assert run_cli(*synth, "--exist-ok")[0] == 0
    # the replaced job's val split does not survive next to the new train split
    assert sorted(p.name for p in (tmp_path / "p" / "annotations").iterdir()) == ["train.json"]


def test_ablate_refuses_an_ablation_with_other_settings(syn, tmp_path):
    args = ["ablate", "--data", syn, "--out", tmp_path / "ab", "--radius", "object", "--iters", "1",
            "--batch-size", "2", "--input-size", "64", "--workers", "0", "--preset", "tiny", "--device", "cpu",
            "--no-flip"]
    assert run_cli(*args)[0] == 0
    assert run_cli(*args)[0] == 0  # the same ablation: done before, skipped
    code, out, _ = run_cli(*args[:-1], "--flip")  # other evaluation settings re-evaluate (docs/ablations.md)
    assert code == 0 and json.loads((tmp_path / "ab" / "baseline" / "results.json").read_text())["eval"]["flip"]
    other = tmp_path / "syn2"
    __import__("shutil").copytree(syn, other)
    code, _, err = run_cli(*[other if a == syn else a for a in args])  # another dataset: never its results
    assert code == 1 and f"data '{syn.resolve()}' there vs '{other.resolve()}' now" in one_line_error(err)
    code, _, err = run_cli(*args, "--seed", "2")
    assert code == 1 and "seed 0 there vs 2 now" in one_line_error(err)
    assert run_cli(*args, "--seed", "2", "--exist-ok")[0] == 0
    baseline = json.loads((tmp_path / "ab" / "baseline" / "config.json").read_text())
    assert baseline["train"]["seed"] == 2


# ---- the lock ----------------------------------------------------------------------------------------------


def test_lock_keeps_a_second_holder_out_and_is_released_on_every_exit(tmp_path):
    from cornernet_cli.engine.rundir import LOCK_NAME, FolderLock

    with FolderLock(tmp_path) as lock:
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert lock.taken_over is None
        with pytest.raises(CornerNetError, match=f"in use by pid {os.getpid()} on {socket.gethostname()}"):
            FolderLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(KeyboardInterrupt), FolderLock(tmp_path):
        raise KeyboardInterrupt
    with FolderLock(tmp_path):  # free again after the interruption
        pass


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, monkeypatch):
    from cornernet_cli.engine import rundir

    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "start": "1", "command": "cornernet train"}
    (tmp_path / rundir.LOCK_NAME).write_text(json.dumps(stale))
    with rundir.FolderLock(tmp_path) as lock:
        assert lock.taken_over == stale
    # without kernel locks (a file system without flock, or Windows) the recorded pid decides
    monkeypatch.setattr(rundir, "fcntl", None)
    (tmp_path / rundir.LOCK_NAME).write_text(json.dumps(stale))
    with rundir.FolderLock(tmp_path) as lock:
        assert lock.taken_over == stale
    live = {"pid": os.getppid(), "host": socket.gethostname(), "start": rundir._start_time(os.getppid())}
    (tmp_path / rundir.LOCK_NAME).write_text(json.dumps(live))
    with pytest.raises(CornerNetError, match=f"in use by pid {os.getppid()}"):
        rundir.FolderLock(tmp_path).__enter__()
    reused = {**live, "start": "1"}  # the pid runs, but it is a later process than the lock's owner
    (tmp_path / rundir.LOCK_NAME).write_text(json.dumps(reused))
    with rundir.FolderLock(tmp_path) as lock:
        assert lock.taken_over == reused
    other_host = {**stale, "host": "another-host"}  # cannot tell whether it runs: never taken over
    (tmp_path / rundir.LOCK_NAME).write_text(json.dumps(other_host))
    with pytest.raises(CornerNetError, match="on another-host"):
        rundir.FolderLock(tmp_path).__enter__()


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a subprocess, Linux")
def test_two_trainings_cannot_share_a_run_folder_and_a_killed_ones_lock_is_taken_over(syn, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", syn, "--out", out, *TRAIN, "--iters", "100000", "--save-every", "1"]
    first = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_ENV,
                             start_new_session=True)
    try:
        _wait_for(out / "state.safetensors", first)  # the first run is writing its folder
        second = subprocess.run(_cli(*args[:-4], "--iters", "3", "--resume"), capture_output=True, text=True,
                                env=_ENV, timeout=600)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        line = one_line_error(second.stderr)
        assert f"in use by pid {first.pid} on {socket.gethostname()}" in line and str(out) in line
        assert first.poll() is None  # the first run went on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    assert json.loads((out / ".cornernet.lock").read_text())["pid"] == first.pid  # left behind by SIGKILL
    done = subprocess.run(_cli(*args[:-4], "--iters", "3", "--resume"), capture_output=True, text=True, env=_ENV,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert not (out / ".cornernet.lock").exists()


# ---- interruptions: SIGTERM / SIGKILL while results JSON is written, a full disk during a save ------------

_SLOW_WRITE = """
import os, pathlib, sys, time
original = pathlib.Path.write_text
def slow_write(self, data, *args, **kwargs):
    if len(data) > 20 and ("results.json" in self.name or "detections.json" in self.name):
        with open(self, "w") as f:  # half the JSON reaches the disk, then the process is killed
            f.write(data[: len(data) // 2])
            f.flush()
        pathlib.Path(os.environ["MARKER"]).touch()
        time.sleep(600)
    return original(self, data, *args, **kwargs)
pathlib.Path.write_text = slow_write
from cornernet_cli.cli import main
sys.argv = ["cornernet", *sys.argv[1:]]
main()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="signals to a subprocess, Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("command", ["eval", "detect"])
def test_kill_while_results_json_is_written_leaves_no_half_file(syn, tmp_path, sig, command):
    from cornernet_cli.engine.checkpoint import save_checkpoint
    from cornernet_cli.model import build_model

    ck = save_checkpoint(tmp_path / "ck.safetensors", build_model("tiny", 2), class_names=["rectangle", "ellipse"])
    if command == "eval":
        args, final = ["eval", "--checkpoint", ck, "--data", syn, "--out", tmp_path / "results.json"], \
            tmp_path / "results.json"
    else:
        args, final = ["detect", *sorted((syn / "images" / "val").iterdir()), "--checkpoint", ck, "--out",
                       tmp_path / "d"], tmp_path / "d" / "detections.json"
    marker = tmp_path / "writing"
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, *map(str, args), "--no-flip"], env={
        **_ENV, "MARKER": str(marker)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, p)
        p.send_signal(sig)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    assert not final.exists()  # never a half-written file under the final name (a hidden .tmp at most)
    # left: hidden temporary files, and eval's lock (stale now: the next eval takes it over)
    leftovers = [f.name for f in final.parent.iterdir() if f.name.startswith(f".{final.name}.")]
    assert all(name.endswith(".tmp") or name == f".{final.name}.lock" for name in leftovers), leftovers
    assert subprocess.run(_cli(*args, "--no-flip"), env=_ENV, capture_output=True, timeout=600).returncode == 0
    assert json.loads(final.read_text()) is not None


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   Exception("Error while serializing: I/O error: No space left on device "
                                             "(os error 28)")], ids=["OSError", "safetensors"])
def test_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint(syn, tmp_path, monkeypatch, error):
    """The third save (step 3, --save-every 1) meets a full disk half-way through writing last.safetensors:
    one error line naming the file, and last/state.safetensors still hold the step-2 save, which resumes."""
    from cornernet_cli.engine import checkpoint

    real_save, calls = checkpoint.save_file, []

    def full_disk(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 5:  # saves write last then state: call 5 is last.safetensors at step 3
            Path(path).write_bytes(b"\0" * 1000)  # part of it reached the disk
            raise error
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    out = tmp_path / "run"
    code, _, err = _train(syn, out, "--save-every", "1", iters=6)
    line = one_line_error(err)
    assert code == 1 and f"cannot write {out / 'last.safetensors'}: " in line and "No space left" in line
    assert "previous last.safetensors is unchanged" in line
    _, meta = checkpoint.read_checkpoint(out / "last.safetensors")
    assert meta["extra"]["step"] == 2
    assert checkpoint.load_train_state(out / "state.safetensors")["step"] == 2
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert _train(syn, out, "--save-every", "1", "--resume", iters=4)[0] == 0


# ---- images that change while training runs ------------------------------------------------------------------


def test_image_removed_during_training_stops_with_the_state_saved(syn, tmp_path, monkeypatch):
    import shutil

    from cornernet_cli.data import loader

    data = tmp_path / "data"
    shutil.copytree(syn, data)
    real_collate, batches = loader.collate, []

    def collate_then_break_the_data(samples):
        batches.append(1)
        if len(batches) == 3:  # after the third batch is read, the dataset is rewritten under the run
            for image in (data / "images" / "train").iterdir():
                image.write_bytes(image.read_bytes()[:50])
        return real_collate(samples)

    monkeypatch.setattr(loader, "collate", collate_then_break_the_data)
    out = tmp_path / "run"
    code, _, err = _train(data, out, "--save-every", "100", iters=10)
    line = one_line_error(err)
    assert code == 1 and "cannot decode image" in line and str(data / "images" / "train") in line
    assert "stopped at step 3 with the state saved" in line and "--resume" in line
    from cornernet_cli.engine.checkpoint import load_train_state

    assert load_train_state(out / "state.safetensors")["step"] == 3
    monkeypatch.setattr(loader, "collate", real_collate)
    shutil.rmtree(data / "images")
    shutil.copytree(syn / "images", data / "images")
    assert _train(data, out, "--save-every", "100", "--resume", iters=10)[0] == 0
    assert json.loads((out / "summary.json").read_text())["step"] == 10


def test_unreadable_image_in_a_worker_is_one_line(syn, tmp_path):
    """With data workers the error happens in another process, which torch reports with that process's
    traceback; the user still gets one line naming the image."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(syn, data)
    bad = sorted((data / "images" / "train").iterdir())[0]
    bad.write_bytes(b"not an image any more")
    p = subprocess.run(_cli("train", "--data", data, "--out", tmp_path / "run", "--iters", "4",
                            *[a if a != "0" else "1" for a in TRAIN]), capture_output=True, text=True, env=_ENV,
                       timeout=600)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "DataLoader worker" not in p.stderr
    line = one_line_error(p.stderr)
    assert f"cannot decode image {bad}" in line and "stopped at step 0" in line
