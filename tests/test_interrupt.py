"""Interrupted runs: SIGKILL in the middle of training (then --resume finishes it), and SIGKILL while a
checkpoint is being written (the file on disk is always a complete old or new checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cornernet_cli.engine.checkpoint import load_model, load_train_state, read_checkpoint

REPO = Path(__file__).resolve().parents[1]


# one thread per child: on a shared 2-core machine, torch's default 2 threads spin against other load
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cornernet_cli.cli", *map(str, args)]


def _check_run_folder(out: Path) -> None:
    """Every *.safetensors loads; anything else that looks like a checkpoint is not there."""
    names = sorted(p.name for p in out.iterdir())
    for p in out.glob("*.safetensors"):
        if p.name == "state.safetensors":
            assert isinstance(load_train_state(p)["step"], int)
        else:
            load_model(p)
    leftovers = [n for n in names if n.endswith(".safetensors") and n not in
                 ("last.safetensors", "best.safetensors", "state.safetensors")]
    assert not leftovers, names
    assert all(n.startswith(".") for n in names if ".tmp" in n), names


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a subprocess, Linux")
def test_sigkill_mid_training_then_resume_finishes(tmp_path):
    from cornernet_cli.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "syn", num_train=8, num_val=2, image_size=64, num_classes=2, seed=0)
    out = tmp_path / "run"
    args = ["train", "--data", tmp_path / "syn", "--out", out, "--preset", "tiny", "--input-size", "64",
            "--batch-size", "2", "--iters", "400", "--workers", "0", "--save-every", "2", "--log-every", "1",
            "--device", "cpu"]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=ENV)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "state.safetensors").exists() and metrics.exists() and metrics.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # it really died mid-run
    _check_run_folder(out)
    killed_at = load_train_state(out / "state.safetensors")["step"]
    assert killed_at >= 2

    args[args.index("400")] = str(killed_at + 4)
    done = subprocess.run(_cli(*args, "--resume"), capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=ENV)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == killed_at + 4
    _check_run_folder(out)
    assert read_checkpoint(out / "last.safetensors")[1]["extra"]["step"] == killed_at + 4


WRITER = textwrap.dedent("""
    import sys, torch
    from cornernet_cli.engine.checkpoint import save_checkpoint
    from cornernet_cli.model import build_model
    model = build_model("tiny", 2)
    model.register_buffer("ballast", torch.zeros(12_000_000))  # ~48 MB: every save takes a while
    i = int(sys.argv[2])
    while True:
        i += 1
        with torch.no_grad():
            model.ballast.fill_(i)
        save_checkpoint(sys.argv[1], model, class_names=["a", "b"], extra={"i": i})
        print(i, flush=True)
""")


READER = textwrap.dedent("""
    import json, sys
    from safetensors import safe_open
    with safe_open(sys.argv[1], framework="pt") as f:
        i = json.loads(f.metadata()["extra"])["i"]
        ballast = f.get_tensor("ballast")
    print(json.dumps([i, float(ballast.min()), float(ballast.max())]))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a subprocess, Linux")
def test_sigkill_during_checkpoint_writes_leaves_old_or_new_file(tmp_path):
    """A child saves a ~48 MB checkpoint in a loop; it is SIGKILLed at several moments, mostly mid-write.
    Each time the file on disk reads completely (safetensors header + every tensor) and holds one save's
    tensors throughout (its `i` matches the ballast values)."""
    target = tmp_path / "ck.safetensors"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    last_i = 0
    for delay in (0.0, 0.03, 0.11, 0.2):
        proc = subprocess.Popen([sys.executable, str(script), str(target), str(last_i)], stdout=subprocess.PIPE,
                                text=True, cwd=REPO, env=ENV)
        first = proc.stdout.readline()  # one complete save, then kill during a later one
        assert first.strip(), "writer died before its first save"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rest = proc.communicate(timeout=60)[0].split()
        saved = [int(first)] + [int(v) for v in rest]
        # read in a child: a 48 MB tensor read here would leave torch / safetensors state in the test process
        check = subprocess.run([sys.executable, "-c", READER, str(target)], capture_output=True, text=True,
                               env=ENV, timeout=60)
        assert check.returncode == 0, check.stderr
        i, low, high = json.loads(check.stdout)
        assert i in (saved[-1], saved[-1] + 1)  # the last reported save, or one finished just before the kill
        assert low == high == i
        last_i = i
        leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("ck.safetensors", "writer.py")]
        # hidden temp files (ours: .ck.safetensors.*.tmp; safetensors' own: .tmp*) never pass for a checkpoint
        assert all(n.startswith(".") and not n.endswith(".safetensors") for n in leftovers), leftovers
        for n in leftovers:
            os.unlink(tmp_path / n)


def _bf16_native() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a subprocess, Linux")
@pytest.mark.parametrize("amp", ["off", pytest.param("bf16", marks=pytest.mark.skipif(
    not _bf16_native(), reason="this CPU has no native bf16 (oneDNN)"))])
def test_sigkill_with_a_worker_and_validation_then_resume_is_bit_identical(tmp_path, amp):
    """docs/reliability.md: after SIGKILL, --resume continues from the last save. Here with a spawned data
    worker and validations between the saves: the resumed run's weights (last and best) equal a straight run's
    bit for bit. The straight run goes alongside the one that is killed."""
    from cornernet_cli.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "syn", num_train=8, num_val=2, image_size=64, num_classes=2, seed=0)

    def args(out):  # --lr-steps fixed: by default it follows --iters
        return ["train", "--data", tmp_path / "syn", "--out", out, "--preset", "tiny", "--input-size", "64",
                "--batch-size", "2", "--iters", "10", "--lr-steps", "7", "--workers", "1", "--save-every", "2",
                "--val-every", "3", "--log-every", "1", "--device", "cpu", "--amp", amp, "--seed", "5"]

    straight = subprocess.Popen(_cli(*args(tmp_path / "a")), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=REPO, env=ENV)
    out = tmp_path / "b"
    proc = subprocess.Popen(_cli(*args(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                            env=ENV, start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    # a row for step 5: the save at step 4 (after the validation at 3) is on disk
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and '"step": 5,' in metrics.read_text():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the main process and its data worker, no chance to save
    proc.communicate(timeout=60)
    assert not (out / "summary.json").exists()
    killed = load_train_state(out / "state.safetensors")
    assert 4 <= killed["step"] < 10
    done = subprocess.run(_cli(*args(out), "--resume"), capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(out / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    # not a trivial equality: the weights moved after the kill point
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    assert any(not torch.equal(killed["model"][k], a[k]) for k in a if a[k].is_floating_point())
