"""Starting from weights: transfer by name and shape, re-initialised class heads, freezing, exact resume,
and the one-line refusal of a checkpoint of another architecture."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cornernet_cli.config import model_config
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine.checkpoint import read_checkpoint, save_checkpoint
from cornernet_cli.engine.finetune import freeze, transfer_weights
from cornernet_cli.engine.settings import train_settings
from cornernet_cli.engine.train import train
from cornernet_cli.errors import CornerNetError
from cornernet_cli.model import build_model
from cornernet_cli.model.cornernet import HEAT_BIAS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn3")
    write_synthetic_dataset(out, num_train=12, num_val=4, image_size=96, seed=2, num_classes=3)
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """An 80-class tiny checkpoint with random (non-initial) weights, as a COCO model stands for."""
    torch.manual_seed(7)
    model = build_model("tiny", num_classes=80)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("src") / "coco80.safetensors"
    save_checkpoint(path, model, class_names=[f"c{i}" for i in range(80)])
    return path


def test_transfer_reinitialises_only_the_class_layers(source):
    model = build_model("tiny", num_classes=3, centre_head=True)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, source)
    src, _ = read_checkpoint(source)
    own = model.state_dict()
    for k, v in own.items():
        if k in src and src[k].shape == v.shape:
            assert torch.equal(v, src[k]), k
        else:  # kept the new model's initialisation
            assert torch.equal(v, fresh[k]), k
            assert any(h in k for h in ("tl_heat", "br_heat", "ct_heat", "ct_off")), k
    assert report.reinitialised == ["br_heat", "ct_heat", "ct_off", "tl_heat"]
    assert report.classes == (80, 3)
    # the class layers (weight + bias of the last 1x1 conv, per stack) and the centre head did not transfer
    stacks = model_config("tiny").num_stacks
    assert report.total - report.transferred == stacks * (2 * 2 + 4 * 2)
    heat_bias = [v for k, v in own.items() if k.endswith("tl_heat.2.bias")]
    assert heat_bias and all(torch.allclose(b, torch.full_like(b, HEAT_BIAS)) for b in heat_bias)
    assert "transferred" in report.describe() and "80 -> 3 classes" in report.describe()


def test_same_classes_transfer_everything(source):
    model = build_model("tiny", num_classes=80)
    report = transfer_weights(model, source)
    assert report.transferred == report.total and report.reinitialised == []


def test_other_architecture_is_refused(source, syn):
    model = build_model("small-fast", num_classes=3)
    with pytest.raises(CornerNetError, match="does not fit"):
        transfer_weights(model, source)
    with pytest.raises(ValueError, match="tiny network.*not the preset small-fast"):
        train_settings(data_dir=syn, preset="small-fast", weights=source)


def test_settings_take_the_checkpoint_preset_and_its_rate(source, syn):
    s = train_settings(data_dir=syn, weights=source, iters=5)
    assert s.preset == "tiny" and s.train.weights == str(source)
    assert s.train.lr == pytest.approx(1e-3)  # the tiny preset's rate
    assert train_settings(data_dir=syn, weights=source, iters=5, overrides={"lr": 2e-3}).train.lr == 2e-3


def test_freeze_backbone_keeps_it_exactly(source):
    model = build_model("tiny", num_classes=80)
    transfer_weights(model, source)
    n = freeze(model, "backbone")
    assert n == sum(p.numel() for p in model.backbone.parameters()) > 0
    assert all(p.requires_grad for p in model.predictions.parameters())
    with pytest.raises(ValueError, match="freeze"):
        freeze(model, "heads")


def _finetune(syn, source, out, *, stop=None, resume=False, freeze_part="none", iters=8):
    s = train_settings(data_dir=syn, weights=source, iters=iters,
                       overrides={"input_size": 64, "batch_size": 2, "workers": 0, "seed": 1, "freeze": freeze_part})
    return train(data_dir=syn, out_dir=out, model_cfg=s.model, data_cfg=s.data, train_cfg=s.train, val_dir=None,
                 device="cpu", resume=resume, stop_at_step=stop, save_every=1000, progress=False)


def test_finetune_run_records_the_transfer_and_freezes(syn, source, tmp_path):
    r = _finetune(syn, source, tmp_path / "f", freeze_part="backbone")
    assert r.status == "finished"
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    assert config["weights_transfer"]["classes"] == [80, 3]
    _, meta = read_checkpoint(tmp_path / "f" / "last.safetensors")
    assert meta["extra"]["weights_transfer"]["reinitialised"] == ["br_heat", "tl_heat"]
    src, last = load_file(str(source)), load_file(str(tmp_path / "f" / "last.safetensors"))
    backbone = [k for k in src if k.startswith("backbone.")]
    assert backbone and all(torch.equal(src[k], last[k]) for k in backbone)  # weights and BN statistics kept
    heads = [k for k in src if k.startswith("predictions.") and k in last and src[k].shape == last[k].shape]
    assert any(not torch.equal(src[k], last[k]) for k in heads)  # the prediction modules did learn


def test_finetune_resume_is_exact(syn, source, tmp_path):
    _finetune(syn, source, tmp_path / "a")
    _finetune(syn, source, tmp_path / "b", stop=4)
    _finetune(syn, source, tmp_path / "b", resume=True)
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["weights_transfer"]["source"] == str(source)  # kept through the resume


def test_cli_refuses_another_architecture_in_one_line(syn, source, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cornernet_cli.cli", "train", "--data", str(syn), "--weights",
                        str(source), "--preset", "small", "--iters", "2", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=REPO, env={"CORNERNET_MALLOC_TUNING": "0",
                                                                     "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 3
    assert "--weights" in err and "tiny" in err and "small" in err


def test_cli_finetune_prints_the_transfer(syn, source, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cornernet_cli.cli", "train", "--data", str(syn), "--weights",
                        str(source), "--iters", "2", "--input-size", "64", "--batch-size", "2",
                        "--out", str(tmp_path / "y")], capture_output=True, text=True, cwd=REPO,
                       env={"CORNERNET_MALLOC_TUNING": "0", "PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    assert "preset tiny" in text and "80 -> 3 classes" in text and "re-initialised" in text


def test_freeze_needs_weights(syn):
    with pytest.raises(ValueError, match="freeze backbone needs weights"):
        train_settings(data_dir=syn, preset="tiny", overrides={"freeze": "backbone"})


def test_resume_without_the_weights_is_refused(syn, source, tmp_path):
    _finetune(syn, source, tmp_path / "w", stop=2)
    s = train_settings(data_dir=syn, preset="tiny", iters=8,
                       overrides={"input_size": 64, "batch_size": 2, "workers": 0, "seed": 1})
    with pytest.raises(CornerNetError, match="weights"):
        train(data_dir=syn, out_dir=tmp_path / "w", model_cfg=s.model, data_cfg=s.data, train_cfg=s.train,
              val_dir=None, device="cpu", resume=True, progress=False)
