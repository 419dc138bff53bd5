"""Running an exported .onnx graph: same boxes as the PyTorch checkpoint (two sizes, with and without the centre
head), detect and eval from the CLI, metadata from the graph or the checkpoint beside it, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cornernet_cli.cli import app
from cornernet_cli.config import DecodeConfig
from cornernet_cli.data.letterbox import PAPER_PADDING, Padding
from cornernet_cli.decoder import Decoder
from cornernet_cli.engine.checkpoint import load_model, save_checkpoint
from cornernet_cli.engine.inference import detect_images
from cornernet_cli.engine.onnx_runner import OnnxNetwork, load_network, load_onnx
from cornernet_cli.errors import CornerNetError
from cornernet_cli.export import export_onnx
from cornernet_cli.model import build_model
from tests.test_evaluate import make_trained_run

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _checkpoint(path, *, centre_head: bool):
    torch.manual_seed(2 if centre_head else 0)  # seeds whose random networks give boxes on noise images
    model = build_model("tiny", num_classes=2, centre_head=centre_head)
    with torch.no_grad():  # spread the heatmap logits, so that scores are not near-ties that float rounding reorders
        for pred in model.predictions:
            for heat in (pred.tl_heat, pred.br_heat, pred.ct_heat):
                if heat is not None:
                    heat[-1].weight.mul_(30)
    save_checkpoint(path, model, class_names=["a", "b"], category_ids=[1, 5], extra={"input_size": 128})
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["corners", "centre-head"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    ckpt = _checkpoint(tmp / "tiny.safetensors", centre_head=request.param)
    graph = tmp / "tiny.onnx"
    export_onnx(ckpt, graph, dynamic=True, height=64, width=64, max_size=512)
    return ckpt, graph


def _images():
    return [np.random.default_rng(i).integers(0, 255, shape, dtype=np.uint8)
            for i, shape in enumerate([(96, 160, 3), (200, 136, 3)])]


def _same(a: np.ndarray, b: np.ndarray, atol_px: float = 1e-3) -> None:
    """Each of the best 50 detections of either array has a twin in the other: same class, box within atol_px,
    score within 1e-5 (nearly tied scores may swap places, so the comparison is by matching, not by row)."""
    assert len(a) > 0 and abs(len(a) - len(b)) <= 1
    for x, y in ((a, b), (b, a)):
        dist = np.abs(x[:50, None, :4] - y[None, :, :4]).max(-1)  # [50, len(y)] largest coordinate difference
        dist[x[:50, None, 5] != y[None, :, 5]] = np.inf
        nearest = dist.argmin(1)
        assert np.all(dist[np.arange(len(nearest)), nearest] <= atol_px)
        np.testing.assert_allclose(x[:50, 4], y[nearest, 4], atol=1e-5)


@pytest.mark.parametrize("flip", [True, False])
def test_same_boxes_as_pytorch_at_two_sizes(exported, flip):
    ckpt, graph = exported
    model, _ = load_model(ckpt)
    net, meta = load_onnx(graph)
    assert meta["class_names"] == ["a", "b"] and meta["category_ids"] == [1, 5]
    assert meta["extra"] == {"input_size": 128}
    assert net.config == model.config
    images = _images()
    # Soft-NMS discards a box whose decayed score falls under score_threshold, and the boxes it would have decayed
    # then score differently: with the default 0.001 a box at that line turns float rounding into different
    # outputs. Without the threshold every step is continuous in the head values.
    params = DecodeConfig(score_threshold=0.0)
    decoder = Decoder.for_network(params, model.config)
    # Two input sizes (127 x 255 and 255 x 255), one image at a time: in a padded batch the uniform padding gives
    # exactly tied heatmap values, which float rounding orders either way.
    for image in images:
        _same(detect_images(net, [image], flip=flip, decoder=decoder)[0],
              detect_images(model, [image], flip=flip, decoder=decoder)[0])


def test_raw_heads_match(exported):
    ckpt, graph = exported
    model, _ = load_model(ckpt)
    net, _ = load_onnx(graph)
    x = torch.randn(2, 3, 127, 255)
    with torch.no_grad():
        want = model(x)[-1]
    got = net(x)[-1]
    assert type(got) is type(want)
    for g, w in zip(got.corners() + (got.ct_heat, got.ct_off), want.corners() + (want.ct_heat, want.ct_off)):
        if w is None:
            assert g is None
        else:
            assert g.shape == w.shape and float((g - w).abs().max()) <= 1e-4


def test_metadata_from_checkpoint_beside_it(exported, tmp_path):
    ckpt, graph = exported
    doc = onnx.load(str(graph))
    del doc.metadata_props[:]
    bare = tmp_path / "tiny.onnx"
    onnx.save(doc, str(bare))
    with pytest.raises(CornerNetError, match="no cornernet metadata"):
        load_onnx(bare)
    (tmp_path / "tiny.safetensors").write_bytes(ckpt.read_bytes())
    net, meta = load_network(bare)
    assert isinstance(net, OnnxNetwork) and meta["class_names"] == ["a", "b"]
    assert net.max_size == 2048  # the default when the graph does not say


def test_static_export_pads_smaller_inputs_and_refuses_larger(exported, tmp_path):
    ckpt, _ = exported
    graph = tmp_path / "static.onnx"
    export_onnx(ckpt, graph, height=255, width=255)
    net, _ = load_onnx(graph)
    assert net.static_size == (255, 255)
    dets = detect_images(net, [_images()[0]], flip=True)[0]  # input 127 x 255, padded to 255 x 255, batch of 2
    assert dets.shape[1] == 6 and np.all(dets[:, 2] <= 160) and np.all(dets[:, 3] <= 96)
    with pytest.raises(CornerNetError, match="static export for 255x255"):
        net(torch.zeros(1, 3, 383, 255))


def test_errors(exported, tmp_path):
    _, graph = exported
    net, _ = load_onnx(graph)
    with pytest.raises(CornerNetError, match="up to 512 pixels"):
        net(torch.zeros(1, 3, 639, 127))
    assert net.max_input_side() == 511
    for padding in (Padding(32, paper=False), Padding(16, paper=False), PAPER_PADDING):
        side = net.max_input_side(padding)  # the largest side whose padded size the graph still pools
        assert padding.size(side) <= 512 < padding.size(side + 1)
    net.max_size = 767  # the size docs/deploy.md suggests for 640 x 480 images
    assert net.max_input_side() == 767 and net.max_input_side(Padding(32, paper=False)) == 736
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(CornerNetError, match="not a readable ONNX model"):
        load_onnx(bad)
    with pytest.raises(CornerNetError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory):
    data, ckpt = make_trained_run(tmp_path_factory.mktemp("onnx-run"))
    graph = ckpt.with_name("best.onnx")
    export_onnx(ckpt, graph, dynamic=True, height=128, width=128, max_size=512)
    return data, ckpt, graph


def test_cli_eval_onnx_matches_checkpoint(trained_onnx, tmp_path):
    data, ckpt, graph = trained_onnx
    metrics = {}
    for name, model in (("pt", ckpt), ("onnx", graph)):
        out = tmp_path / name / "results.json"
        # fp32 on both sides (amp auto is bf16 for a checkpoint on a CPU with native bf16; a graph runs as exported)
        r = CliRunner().invoke(app, ["eval", "--checkpoint", str(model), "--data", str(data), "--split", "val",
                                     "--out", str(out), "--amp", "off"])
        assert r.exit_code == 0, r.output
        metrics[name] = json.loads(out.with_name("metrics.json").read_text())
    assert metrics["pt"]["detections"] == metrics["onnx"]["detections"] > 0
    for key in ("AP", "AP50", "AR100"):
        assert metrics["onnx"][key] == pytest.approx(metrics["pt"][key], abs=1e-3)


def test_cli_detect_onnx(trained_onnx, tmp_path):
    data, ckpt, graph = trained_onnx
    images = sorted((data / "images" / "val").glob("*.jpg"))[:2]
    found = {}
    for name, model in (("pt", ckpt), ("onnx", graph)):
        # fp32 on both sides: amp auto is bf16 for the checkpoint on a CPU with native bf16, and an ONNX graph
        # runs as exported (float32)
        r = CliRunner().invoke(app, ["detect", *map(str, images), "--checkpoint", str(model), "--out",
                                     str(tmp_path / name), "--threshold", "0.05", "--amp", "off"])
        assert r.exit_code == 0, r.output
        found[name] = json.loads((tmp_path / name / "detections.json").read_text())["images"]
    # (box-level parity is the test above: this briefly trained network scores many boxes within 1e-6 of each other)
    assert [e["file"] for e in found["pt"]] == [e["file"] for e in found["onnx"]]
    for p, o in zip(found["pt"], found["onnx"]):
        assert p["detections"] and o["detections"]
        assert abs(p["detections"][0]["score"] - o["detections"][0]["score"]) <= 1e-4
    bad = CliRunner().invoke(app, ["detect", str(images[0]), "--checkpoint", str(graph), "--amp", "bf16",
                                   "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, CornerNetError) and bad.exception.exit_code == 2
    assert "ONNX graph" in str(bad.exception)


def test_decode_config_cap(trained_onnx):
    from cornernet_cli.engine.onnx_runner import fit_max_side, network_decoder

    _, ckpt, graph = trained_onnx
    net, _ = load_network(graph)
    model, _ = load_network(ckpt)
    assert fit_max_side(net, DecodeConfig().max_side) == 511
    assert fit_max_side(model, DecodeConfig().max_side) == 2048
    assert network_decoder(net).settings.max_side == 511  # what detect, eval and Detector decode with
    assert network_decoder(model).settings.max_side == 2048


def test_output_stride_8_graph_matches_pytorch(tmp_path):
    """A squeeze-style model (fire blocks, output stride 8): the graph's outputs are at ceil(H/8), the static
    export crops at stride 8, and both give the checkpoint's boxes."""
    import dataclasses

    from cornernet_cli.config import model_config
    from cornernet_cli.model.cornernet import CornerNet

    torch.manual_seed(1)
    config = dataclasses.replace(model_config("tiny", 2), block="fire", output_stride=8, head_kernel=1)
    model = CornerNet.from_config(config).eval()
    with torch.no_grad():
        for pred in model.predictions:
            for heat in (pred.tl_heat, pred.br_heat):
                heat[-1].weight.mul_(30)
    ckpt = save_checkpoint(tmp_path / "s8.safetensors", model, class_names=["a", "b"], category_ids=[1, 2])
    pt, _ = load_model(ckpt)
    decoder = Decoder.for_network(DecodeConfig(score_threshold=0.0), pt.config)
    image = _images()[0]  # 96 x 160 -> input 127 x 255
    for dynamic, name in ((True, "dyn.onnx"), (False, "static.onnx")):
        export_onnx(ckpt, tmp_path / name, dynamic=dynamic, height=255, width=255, max_size=512)
        net, _ = load_onnx(tmp_path / name)
        assert net.output_stride == 8
        assert tuple(net(torch.zeros(1, 3, 127, 255))[0].tl_heat.shape[-2:]) == (16, 32)
        dets = detect_images(net, [image], flip=False, decoder=decoder)[0]
        if dynamic:
            _same(dets, detect_images(pt, [image], flip=False, decoder=decoder)[0], atol_px=8e-3)
        else:  # padded to 255 x 255, the network sees another canvas: boxes, not parity
            assert len(dets) and np.all(dets[:, 2] <= 160) and np.all(dets[:, 3] <= 96)


def test_resolve_network(exported, tmp_path):
    from cornernet_cli.engine.onnx_runner import read_network_metadata, resolve_network

    ckpt, graph = exported
    assert resolve_network(graph) == graph and resolve_network(str(ckpt)) == ckpt
    assert read_network_metadata(graph)["class_names"] == read_network_metadata(ckpt)["class_names"] == ["a", "b"]
    with pytest.raises(CornerNetError, match="ONNX model not found"):
        resolve_network(tmp_path / "missing.onnx")
    with pytest.raises(CornerNetError, match="no known model name"):
        resolve_network("no-such-model")


def test_api_detector_takes_a_graph(trained_onnx):
    import cv2

    from cornernet_cli import Detector

    data, ckpt, graph = trained_onnx
    image = cv2.imread(str(sorted((data / "images" / "val").glob("*.jpg"))[0]))
    pt, ox = Detector(ckpt), Detector(graph)
    assert isinstance(ox.model, OnnxNetwork) and ox.classes == pt.classes and ox.test_scales == pt.test_scales
    a = pt.predict(image, threshold=0.05, flip=False, amp="off")  # the graph runs in float32
    b = ox.predict(image, threshold=0.05, flip=False)
    assert len(a.scores) and abs(float(a.scores[0]) - float(b.scores[0])) <= 1e-4
    with pytest.raises(CornerNetError, match="ONNX graph"):
        ox.predict(image, amp="bf16")
