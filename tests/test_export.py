"""cornernet export --format onnx: onnxruntime and PyTorch agree (max abs difference <= 1e-4) on the tiny preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cornernet_cli.engine.checkpoint import load_model, save_checkpoint
from cornernet_cli.errors import CornerNetError
from cornernet_cli.export import OUTPUT_NAMES, export_onnx
from cornernet_cli.model import build_model
from tests.support import require_module

onnx = require_module("onnx")  # skipped where onnx is not installed; under CI a failure
ort = require_module("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tmp_path = tmp_path_factory.mktemp("export")
    model = build_model("tiny", num_classes=3)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, model, class_names=["a", "b", "c"], category_ids=[1, 5, 9])
    return path


def _run(path, images: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    assert [i.name for i in session.get_inputs()] == ["images"]
    return session.run(None, {"images": images.numpy()})


def _torch(checkpoint, images: torch.Tensor):
    model, _ = load_model(checkpoint)  # default cumulative-max corner pooling
    with torch.no_grad():
        return model(images)[-1].heads()


def _max_diff(got, want) -> float:
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def test_static_export_matches_pytorch(tmp_path, checkpoint):
    out = tmp_path / "model.onnx"
    summary = export_onnx(checkpoint, out, height=64, width=80)
    assert summary.max_abs_diff is not None and summary.max_abs_diff <= 1e-4
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    ops = {n.op_type for n in graph.graph.node}
    assert not any("cummax" in op.lower() for op in ops) and all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["cornernet_class_names"]) == ["a", "b", "c"]
    assert json.loads(meta["cornernet_category_ids"]) == [1, 5, 9]
    images = torch.randn(1, 3, 64, 80)
    got = _run(out, images)
    assert got[0].shape == (1, 3, 16, 20)
    assert _max_diff(got, _torch(checkpoint, images)) <= 1e-4


@pytest.fixture(scope="module")
def dynamic_onnx(checkpoint):
    out = checkpoint.parent / "dyn.onnx"
    summary = export_onnx(checkpoint, out, dynamic=True, height=32, width=32, max_size=512)
    assert summary.max_size == 512 and summary.max_abs_diff <= 1e-4
    return out


def test_dynamic_export_two_sizes(dynamic_onnx, checkpoint):
    out = dynamic_onnx
    for shape in [(1, 3, 64, 64), (2, 3, 100, 76)]:  # the second: odd feature sizes, batch 2
        images = torch.randn(*shape)
        got = _run(out, images)
        assert got[0].shape == (shape[0], 3, -(-shape[2] // 4), -(-shape[3] // 4))
        assert _max_diff(got, _torch(checkpoint, images)) <= 1e-4


def test_dynamic_export_pools_far_corners(dynamic_onnx, checkpoint):
    """A strong response far from the corner must reach it: the doubling steps cover max_size, not the example."""
    out = dynamic_onnx
    images = torch.zeros(1, 3, 256, 256)
    images[:, :, 230:, 230:] = 50.0
    assert _max_diff(_run(out, images), _torch(checkpoint, images)) <= 1e-4


def test_export_errors(tmp_path, checkpoint):
    with pytest.raises(CornerNetError, match="max_size"):
        export_onnx(checkpoint, tmp_path / "m.onnx", dynamic=True, height=600, width=64, max_size=512)
    with pytest.raises(CornerNetError, match="not found"):
        export_onnx(tmp_path / "missing.safetensors", tmp_path / "m.onnx")


def test_cli_export(tmp_path, checkpoint):
    from typer.testing import CliRunner

    from cornernet_cli.cli import app

    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "-o", str(out),
                                      "--height", "64", "--width", "64"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "max abs diff" in result.output
    bad = CliRunner().invoke(app, ["export", "--checkpoint", str(checkpoint), "--format", "tflite", "-o", str(out)])
    assert bad.exit_code != 0 and isinstance(bad.exception, CornerNetError)
