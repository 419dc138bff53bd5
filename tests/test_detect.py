"""cornernet detect: images, folders, globs and a video; drawn files, detections.json, skipped bad files."""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cornernet_cli.cli import app
from cornernet_cli.detect import collect_inputs, draw_detections, newest_checkpoint
from cornernet_cli.errors import CornerNetError
from tests.test_evaluate import make_trained_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("detect"))


def test_detect_images_folder_glob_video_and_bad_file(trained, tmp_path):
    data, ckpt = trained
    val = data / "images" / "val"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 128))
    assert writer.isOpened()
    for f in sorted(val.glob("*.jpg"))[:3]:
        writer.write(cv2.imread(str(f)))
    writer.release()
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["detect", str(val / "000001.jpg"), str(val), str(val / "00000[01].jpg"),
                                 str(bad), str(video), "--checkpoint", str(ckpt), "--out", str(out),
                                 "--threshold", "0.05", "--no-flip"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "detections.json").read_text())
    files = [e["file"] for e in doc["images"]]
    assert sum(f.endswith(".jpg") for f in files) == 4  # duplicates from the file, folder and glob run once
    assert sum(f.endswith("clip.avi") for f in files) == 3 and [e["frame"] for e in doc["images"][-3:]] == [0, 1, 2]
    assert [s["file"] for s in doc["skipped"]] == [str(bad)]
    for e in doc["images"]:
        assert e["width"] == 128 and e["height"] == 128
        for d in e["detections"]:
            assert d["class"] in ("rectangle", "ellipse") and d["category_id"] in (1, 2) and d["score"] >= 0.05
            x1, y1, x2, y2 = d["bbox"]
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
    drawn = sorted(p.name for p in out.iterdir())
    assert {"000001.jpg", "000003.jpg", "detections.json"} <= set(drawn)
    assert any(n.startswith("clip.") for n in drawn)
    cap = cv2.VideoCapture(str(next(p for p in out.iterdir() if p.name.startswith("clip."))))
    assert cap.isOpened() and cap.read()[0]
    cap.release()
    assert "broken.jpg" in r.output


def test_default_checkpoint_is_the_newest_run(tmp_path):
    with pytest.raises(CornerNetError, match="cornernet demo"):
        newest_checkpoint(tmp_path / "runs")
    for i, name in enumerate(["a", "b"]):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "best.safetensors").write_bytes(b"x")
        os.utime(tmp_path / "runs" / name / "best.safetensors", (time.time() + 10 * i,) * 2)
    assert newest_checkpoint(tmp_path / "runs").parent.name == "b"


def test_collect_inputs_reports_missing(tmp_path):
    paths, problems = collect_inputs([tmp_path / "nope.jpg", str(tmp_path / "*.png")])
    assert paths == [] and len(problems) == 2


def test_draw_detections_draws_boxes():
    image = np.full((64, 64, 3), 128, np.uint8)
    out = draw_detections(image, np.array([[10, 20, 40, 50, 0.9, 1]]), ["a", "b"])
    assert (out != image).any() and (image == 128).all()
    assert (out[35, 10] != 128).any() and (out[35, 25] == 128).all()  # the left edge, not the inside


def test_bf16_autocast_on_cpu_matches_fp32_and_bad_amp_is_one_line(trained, tmp_path):
    """--amp bf16 runs the network in bfloat16 on the CPU and decodes in fp32: the same top detections as
    fp32 up to bf16 rounding; --amp fp16 on the CPU and unknown values are refused before any work."""
    import torch

    from cornernet_cli.engine.checkpoint import load_model
    from cornernet_cli.engine.inference import detect_images, letterbox_batch, network_heads

    data, ckpt = trained
    model, _ = load_model(ckpt)
    image = cv2.imread(str(data / "images" / "val" / "000001.jpg"))
    fp32 = detect_images(model, [image], flip=True)[0]
    bf16 = detect_images(model, [image], flip=True, amp="bf16")[0]
    batch, _ = letterbox_batch([image], scale=1.0, flip=True, stride=model.output_stride, max_side=2048)
    heads32, heads16 = (network_heads(model, batch, device=torch.device("cpu"), amp=a) for a in ("off", "bf16"))
    assert fp32.dtype == bf16.dtype and fp32.shape[1] == bf16.shape[1] == 6 and len(bf16) > 0
    # the network really ran in bf16 (its heads differ by bf16 rounding), and they reach decode as fp32
    for a, b in zip(heads32.heads(), heads16.heads()):
        assert a.dtype == b.dtype == torch.float32
        assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.1, rtol=0.05)
    # the best box survives bf16 (scores of an untrained net are close, so compare the best, loosely)
    assert abs(float(fp32[0, 4]) - float(bf16[0, 4])) < 0.05
    for amp, word in (("fp16", "needs --device cuda"), ("fp8", "--amp must be")):
        r = CliRunner().invoke(app, ["detect", str(data / "images" / "val"), "--checkpoint", str(ckpt), "--out",
                                     str(tmp_path / amp), "--amp", amp])
        assert isinstance(r.exception, CornerNetError) and r.exception.exit_code == 2 and word in str(r.exception)
        assert not (tmp_path / amp).exists()
