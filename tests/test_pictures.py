"""The pictures of every command: training curves and TensorBoard events, eval's plots, detect's drawing and
extras (--classes, --save-txt, --save-crop), inspect-data, the centre heatmap panel; each PNG / JPEG decodes
and the numbers behind it agree with an independent computation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cornernet_cli.cli import app
from cornernet_cli.config import DataConfig, TrainConfig, model_config
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.detect import crops, draw_detections, yolo_lines
from cornernet_cli.drawing import Style
from cornernet_cli.engine.train import train
from cornernet_cli.errors import CornerNetError
from cornernet_cli.targets import encode_targets
from tests.test_evaluate import make_trained_run


def _decodes(path: Path, min_side: int = 100) -> np.ndarray:
    picture = cv2.imread(str(path))
    assert picture is not None, f"{path} does not decode"
    assert min(picture.shape[:2]) >= min_side and picture.std() > 5, f"{path} looks blank"
    return picture


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("pictures"))


def test_curves_and_tensorboard_events_of_a_stopped_run(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_train=8, num_val=2, image_size=64, num_classes=2, seed=0)
    result = train(data_dir=data, out_dir=tmp_path / "run", model_cfg=model_config("tiny"),
                   data_cfg=DataConfig(input_size=64),
                   train_cfg=TrainConfig(batch_size=2, iters=8, lr=1e-3, lr_steps=(6,), warmup_iters=0, workers=0),
                   val_dir=data, val_every=2, log_every=1, stop_at_step=4, device="cpu", progress=False,
                   tensorboard=True)
    assert result.status == "stopped"  # curves are drawn for every run, not only finished ones
    _decodes(tmp_path / "run" / "curves.png")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    loss = {r["step"]: r["loss"] for r in rows if "loss" in r}
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert logged.keys() == loss.keys() == {1, 2, 3, 4}
    assert all(math.isclose(logged[s], loss[s], rel_tol=1e-6) for s in loss)
    assert [e.step for e in events.Scalars("val/AP50")] == [2, 4]
    assert {"train/lr", "train/focal", "train/push"} <= set(events.Tags()["scalars"])


def test_eval_writes_its_pictures(trained, tmp_path):
    data, ckpt = trained
    r = CliRunner().invoke(app, ["eval", "--checkpoint", str(ckpt), "--data", str(data), "--no-flip", "--out",
                                 str(tmp_path / "e" / "results.json")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for name in ("pr_curve.png", "threshold_curves.png", "confusion_matrix.png", "errors.jpg"):
        _decodes(tmp_path / "e" / name)
    best = metrics["best_f1"]
    confusion = json.loads((tmp_path / "e" / "confusion_matrix.json").read_text())
    counts = np.array(confusion["counts"])
    # the confusion matrix at the best-F1 threshold holds that threshold's hits and errors
    assert confusion["threshold"] == best["threshold"]
    assert np.trace(counts[:-1, :-1]) == best["tp"] and counts[:-1].sum() == best["tp"] + best["fn"]
    assert counts[:, :-1].sum() == best["tp"] + best["fp"]


def test_detect_classes_save_txt_conf_and_crops(trained, tmp_path):
    data, ckpt = trained
    image = data / "images" / "val" / "000001.jpg"
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["detect", str(image), "--checkpoint", str(ckpt), "--threshold", "0", "--no-flip",
                                 "--out", str(out), "--classes", "ellipse", "--save-txt", "--save-conf",
                                 "--save-crop"])
    assert r.exit_code == 0, r.output
    entry = json.loads((out / "detections.json").read_text())["images"][0]
    dets = entry["detections"]
    assert dets and {d["class"] for d in dets} == {"ellipse"}
    lines = (out / "labels" / "000001.txt").read_text().splitlines()
    assert (out / "labels" / "classes.txt").read_text().split() == ["rectangle", "ellipse"]
    assert len(lines) == len(dets)
    w, h = entry["width"], entry["height"]
    for line, d in zip(lines, dets):
        cls, cx, cy, bw, bh, score = line.split()
        x1, y1, x2, y2 = (min(max(v, 0), lim) for v, lim in zip(d["bbox"], (w, h, w, h)))
        assert cls == "1" and float(score) == pytest.approx(d["score"], abs=1e-4)
        assert [float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h] == pytest.approx(
            [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], abs=0.01)
    assert len(list((out / "crops" / "ellipse").glob("000001_*.jpg"))) == len(dets)
    r = CliRunner().invoke(app, ["detect", str(image), "--checkpoint", str(ckpt), "--classes", "zebra", "--out",
                                 str(out)])
    assert isinstance(r.exception, CornerNetError) and "zebra" in str(r.exception)


def test_yolo_lines_and_crops_by_hand():
    dets = np.array([[10, 20, 30, 60, 0.9, 2], [-5, 90, 15, 130, 0.5, 0]])  # the second leaves the image
    assert yolo_lines(dets, 100, 100) == ["2 0.200000 0.400000 0.200000 0.400000",
                                          "0 0.075000 0.950000 0.150000 0.100000"]
    image = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    a, b = crops(image, dets)
    assert a.shape == (40, 20, 3) and (a == image[20:60, 10:30]).all() and b.shape == (10, 15, 3)


def test_drawing_scales_with_the_image_and_upscales_small_ones():
    small, large = Style.for_image((128, 128)), Style.for_image((1200, 1600))
    assert small.font_scale < large.font_scale and small.thickness <= large.thickness
    image = np.full((128, 128, 3), 100, np.uint8)
    drawn = draw_detections(image, np.array([[10, 10, 50, 60, 0.9, 0]]), ["a"], min_side=512)
    assert drawn.shape == (512, 512, 3) and (image == 100).all()
    assert (drawn[150, 40] != 100).any() and (drawn[150, 120] == 100).all()  # the left edge at 4x, not the inside
    # the label text fits inside the object's own width at 4x
    (tw, _), _ = cv2.getTextSize("a 0.90", cv2.FONT_HERSHEY_SIMPLEX, Style.for_image(drawn.shape).font_scale, 1)
    assert tw < 4 * 40


def test_inspect_data_pictures_and_numbers(tmp_path):
    from cornernet_cli.data.look import box_statistics

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_train=6, num_val=3, image_size=96, num_classes=3, seed=2)
    r = CliRunner().invoke(app, ["inspect-data", "--data", str(data), "--out", str(tmp_path / "look"), "--input-size",
                                 "64", "--random-scales", "0.5,1", "--images", "4"])
    assert r.exit_code == 0, r.output
    for name in ("train_boxes.jpg", "val_boxes.jpg", "train_crops.jpg", "labels.png"):
        _decodes(tmp_path / "look" / name)
    stats = json.loads((tmp_path / "look" / "labels.json").read_text())
    docs = {s: json.loads((data / "annotations" / f"{s}.json").read_text()) for s in ("train", "val")}
    for split, doc in docs.items():  # instances per class, counted from the annotation file itself
        expect = [sum(a["category_id"] == c["id"] for a in doc["annotations"]) for c in doc["categories"]]
        assert stats["instances"][split] == expect
    assert stats["boxes_at_input_scale"]["count"] == len(docs["train"]["annotations"])
    assert sum(stats["boxes_at_input_scale"]["radius_counts"]) == 2 * len(docs["train"]["annotations"])

    # one 40 x 20 box: at scale 0.5 it is 80 x 40 input pixels, at scale 2 it is 20 x 10
    s = box_statistics(np.array([[10, 30, 50, 50]]), np.array([[100, 200]]), input_size=64, scales=(0.5, 2))
    assert s["width"].tolist() == [80, 20] and s["height"].tolist() == [40, 10]
    assert s["centre"].tolist() == [[30 / 200, 40 / 100]]
    for (w, h), r in zip(((80, 40), (20, 10)), s["radius"]):  # the radius encode_targets really draws
        t = encode_targets(np.array([[0, 0, w, h]]), np.array([0]), 1, (128, 128), (32, 32))
        assert int((t["tl_heat"][0, 0] > 0).sum()) == r + 1  # the corner's row: the cell and r to its right


def test_inspect_data_unknown_split_is_one_line(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_train=2, num_val=0, image_size=64, seed=0)
    r = CliRunner().invoke(app, ["inspect-data", "--data", str(data), "--split", "test", "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, CornerNetError) and "'test'" in str(r.exception)


def test_visualize_shows_the_centre_heatmap(tmp_path, monkeypatch):
    import matplotlib.axes

    from cornernet_cli.visualize import visualize_heatmaps

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_train=4, num_val=1, image_size=64, num_classes=2, seed=0)
    tcfg = dataclasses.replace(TrainConfig(), batch_size=2, iters=2, lr_steps=(2,), workers=0)
    train(data_dir=data, out_dir=tmp_path / "run", model_cfg=model_config("tiny", 2, centre_head=True),
          data_cfg=DataConfig(input_size=64), train_cfg=tcfg, device="cpu", progress=False)
    titles, original = [], matplotlib.axes.Axes.set_title

    def record(self, label, *args, **kwargs):
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", record)
    out = visualize_heatmaps(data / "images" / "val" / "000000.jpg", checkpoint=tmp_path / "run" / "best.safetensors",
                             out=tmp_path / "v.png")
    _decodes(out)
    assert any(t.startswith("centre heatmap") for t in titles)
    assert sum(t.startswith("class ") for t in titles) == 2  # one class panel gave way to the centre heatmap
