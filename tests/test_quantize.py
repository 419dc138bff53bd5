"""int8 export (`export --int8 --calib-data DIR`): a tiny model trained on 4 easy synthetic images, quantised end
to end, loads and detects through the ordinary ONNX path with boxes that agree with the float graph's; a bad
calibration folder is a one-line error naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cornernet_cli.api import Detector, export
from cornernet_cli.cli import app
from cornernet_cli.config import DataConfig, TrainConfig, model_config
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine.checkpoint import save_checkpoint
from cornernet_cli.engine.onnx_runner import load_onnx
from cornernet_cli.errors import CornerNetError, SettingError
from cornernet_cli.model import build_model
from tests.support import require_module

onnx = require_module("onnx")
require_module("onnxruntime")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(float graph, int8 graph, calibration folder) of a tiny model that detects the synthetic shapes it was
    trained on (40 steps; the same recipe as test_train's overfitting test, shorter)."""
    from cornernet_cli.engine.train import train

    tmp = tmp_path_factory.mktemp("int8")
    data = tmp / "syn"
    write_synthetic_dataset(data, num_train=4, num_val=0, image_size=64, num_classes=2, seed=0, max_objects=2,
                            sizes=(20, 44))
    train(data_dir=data, out_dir=tmp / "run", model_cfg=model_config("tiny"),
          data_cfg=DataConfig(input_size=64, random_scales=(1.0,), color_jitter=0.0, lighting=0.0),
          train_cfg=TrainConfig(batch_size=4, iters=40, lr=5e-3, lr_steps=(32,), warmup_iters=5, workers=0, seed=0),
          device="cpu", log_every=1000, save_every=10**6, progress=False)
    checkpoint, calib = tmp / "run" / "last.safetensors", data / "images" / "train"
    export(checkpoint, tmp / "float.onnx", dynamic=True, height=64, width=64, max_size=128)
    r = CliRunner().invoke(app, ["export", "--model", str(checkpoint), "-o", str(tmp / "int8.onnx"), "--dynamic",
                                 "--height", "64", "--width", "64", "--max-size", "128", "--int8", "--calib-data",
                                 str(calib)])
    assert r.exit_code == 0, r.output
    assert "int8, calibrated on 4 images" in " ".join(r.output.split())
    return tmp / "float.onnx", tmp / "int8.onnx", calib


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4] x [M, 4] x1, y1, x2, y2 boxes -> [N, M] IoU."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_int8_graph_is_quantised_and_keeps_the_metadata(graphs):
    float_graph, int8_graph, _ = graphs
    graph = onnx.load(str(int8_graph))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)  # int8 weights
    _, meta = load_onnx(int8_graph)
    _, want = load_onnx(float_graph)
    assert meta["class_names"] == want["class_names"] and meta["model_config"] == want["model_config"]


def test_int8_boxes_agree_with_the_float_graph(graphs):
    """Measured (2026-12-01): every float box scoring >= 0.3 on the 4 training images has an int8 twin of the same
    class with IoU >= 0.99 and a score within 0.01; int8 keeps at most one extra box an image."""
    float_graph, int8_graph, calib = graphs
    fp32, int8 = Detector(float_graph), Detector(int8_graph)
    found = 0
    for path in sorted(calib.iterdir()):
        a, b = fp32.predict(path, threshold=0.3), int8.predict(path, threshold=0.3)
        assert abs(len(a.boxes) - len(b.boxes)) <= 1
        found += len(a.boxes)
        if len(a.boxes):
            iou = _iou(a.boxes, b.boxes) if len(b.boxes) else np.zeros((len(a.boxes), 1))
            iou[a.class_ids[:, None] != b.class_ids[None, :]] = 0
            twin = iou.argmax(1)
            assert np.all(iou.max(1) >= 0.8), iou
            np.testing.assert_allclose(a.scores, b.scores[twin], atol=0.05)
    assert found > 0


def test_bad_calibration_folder_is_one_line(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, build_model("tiny", num_classes=2), class_names=["a", "b"], category_ids=[1, 2])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    for folder, words in ((tmp_path / "empty", "holds no images"), (tmp_path / "missing", "is not a folder")):
        with pytest.raises(SettingError, match=f"^calib_data {folder} {words}"):
            export(checkpoint, tmp_path / "q.onnx", int8=True, calib_data=folder)
        r = CliRunner().invoke(app, ["export", "--model", str(checkpoint), "-o", str(tmp_path / "q.onnx"), "--int8",
                                     "--calib-data", str(folder)])
        assert isinstance(r.exception, CornerNetError) and r.exception.exit_code == 2  # a usage error
        assert str(r.exception).startswith(f"--calib-data {folder} {words}") and "\n" not in str(r.exception)
    with pytest.raises(SettingError, match="int8 needs calib_data"):
        export(checkpoint, tmp_path / "q.onnx", int8=True)
    with pytest.raises(SettingError, match="calib_data only applies with int8"):
        export(checkpoint, tmp_path / "q.onnx", calib_data=tmp_path)
    assert not (tmp_path / "q.onnx").exists()
