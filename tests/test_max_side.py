"""Huge images: a box placed by hand on a 3000 x 2200 image comes back in the original image's pixels (within
1 % of its size) from detect, eval and visualize-heatmaps while the network sees a copy shrunk to max_side.

The network is a stand-in that measures the one white rectangle in whatever input it is given (after the
shrink, letterbox and normalisation) and returns ground-truth corner heads for it, so every coordinate step
between the original image and the output map is exercised and nothing else can blur the answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cornernet_cli.config import DecodeConfig
from cornernet_cli.data.transforms import MEAN, STD
from cornernet_cli.model.cornernet import CornerOutputs
from cornernet_cli.targets import encode_targets

HEIGHT, WIDTH = 2200, 3000
BOX = np.array([1130.0, 415.0, 2467.0, 1702.0])  # x1, y1, x2, y2 in the original image's pixels
WHITE = float(((1.0 - MEAN) / STD).mean())  # a white pixel after normalisation; the mean colour is 0


class RectangleFinder(nn.Module):
    """Input [B, 3, H, W] (normalised, a mean-coloured image with one white rectangle, padding 0) -> one stack of
    corner heads at H / 4 x W / 4 whose decode is that rectangle, class 0. The rectangle is measured with
    sub-pixel precision from the coverage the area-interpolated shrink leaves in its border pixels."""

    num_classes = 1
    output_stride = 4

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1, 1, 1, 1))  # inference reads a conv weight's memory format

    def forward(self, images: torch.Tensor) -> list[CornerOutputs]:
        b, _, height, width = images.shape
        h, w = math.ceil(height / 4), math.ceil(width / 4)
        heads = [torch.full((b, 1, h, w), -20.0), torch.full((b, 1, h, w), -20.0), torch.zeros(b, 1, h, w),
                 torch.zeros(b, 1, h, w), torch.zeros(b, 2, h, w), torch.zeros(b, 2, h, w)]
        for i in range(b):
            cover = (images[i].float().mean(0) / WHITE).clamp(0, 1).numpy().astype(np.float64)
            cover[cover < 0.01] = 0  # the background's rounding residue (its uint8 colour is not exactly the mean)
            area = cover.sum()
            box_h = cover.sum(axis=0).max()  # a column through the rectangle: its height
            cx = (cover.sum(axis=0) * (np.arange(width) + 0.5)).sum() / area
            cy = (cover.sum(axis=1) * (np.arange(height) + 0.5)).sum() / area
            box_w = area / box_h
            box = np.array([[cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2]])
            t = encode_targets(box, np.array([0]), 1, (height, width), (h, w))
            for kind, heat, off in (("tl", 0, 4), ("br", 1, 5)):
                index = int(t[f"{kind}_index"][0])
                heads[heat][i, 0].view(-1)[index] = 10.0
                heads[off][i].view(2, -1)[:, index] = torch.from_numpy(t[f"{kind}_off"][0])
        return [CornerOutputs(*heads)]


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    """A COCO root with one 3000 x 2200 validation image holding BOX."""
    root = tmp_path_factory.mktemp("big")
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = np.round(MEAN * 255).astype(np.uint8)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    image[y1:y2, x1:x2] = 255
    (root / "val2017").mkdir()
    cv2.imwrite(str(root / "val2017" / "big.png"), image)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "big.png", "width": WIDTH, "height": HEIGHT}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0}],
        "categories": [{"id": 1, "name": "box"}]}))
    return root


def _assert_near_box(xyxy) -> None:
    size = np.array([BOX[2] - BOX[0], BOX[3] - BOX[1]] * 2)
    err = np.abs(np.asarray(xyxy, dtype=np.float64) - BOX) / size
    assert err.max() < 0.01, (list(xyxy), list(BOX))


@pytest.fixture
def finder(monkeypatch):
    """load_model (detect and visualize-heatmaps read their network from a checkpoint) returns the finder."""
    import cornernet_cli.detect as detect
    import cornernet_cli.engine.checkpoint as checkpoint

    model = RectangleFinder().eval()  # as load_model returns its networks
    meta = {"class_names": ["box"], "category_ids": [1], "model_config": None, "extra": {}}
    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": (model, meta))
    monkeypatch.setattr(checkpoint, "read_metadata", lambda path: meta)
    monkeypatch.setattr(detect, "find_checkpoint", lambda checkpoint, **kw: Path(checkpoint))
    return model


def test_detect_max_side_boxes_in_original_pixels(big_image, finder, tmp_path):
    from cornernet_cli.detect import detect

    seen = []
    finder.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape[-2:])))
    detect([big_image / "val2017" / "big.png"], checkpoint=tmp_path / "stand-in.safetensors", out=tmp_path / "det",
           params=DecodeConfig(max_side=256), threshold=0.5)
    assert seen and all(max(s) <= 256 | 127 for s in seen)  # the network saw the shrunk copy only
    entry = json.loads((tmp_path / "det" / "detections.json").read_text())["images"][0]
    assert (entry["width"], entry["height"]) == (WIDTH, HEIGHT)
    assert len(entry["detections"]) == 1
    _assert_near_box(entry["detections"][0]["bbox"])  # x1, y1, x2, y2 in detections.json


def test_eval_max_side_results_in_original_pixels(big_image, tmp_path):
    from cornernet_cli.engine.evaluate import evaluate_model

    out = tmp_path / "results.json"
    metrics = evaluate_model(RectangleFinder(), big_image, "val", class_names=["box"], category_ids=[1],
                             params=DecodeConfig(max_side=200), results_path=out)
    best = max(json.loads(out.read_text()), key=lambda r: r["score"])
    x, y, w, h = best["bbox"]
    _assert_near_box([x, y, x + w, y + h])
    assert metrics["AP75"] == pytest.approx(1.0)


def test_visualize_max_side_boxes_and_heatmaps_in_original_pixels(big_image, finder, tmp_path, monkeypatch):
    import cornernet_cli.visualize as visualize

    captured = {}
    real = visualize.heads_and_detections

    def spy(*args, **kwargs):
        captured["result"] = real(*args, **kwargs)
        return captured["result"]

    monkeypatch.setattr(visualize, "heads_and_detections", spy)
    # Rendering eight 3000 x 2200 panels takes a loaded CPU a minute and is not what is checked here (the PNG
    # itself: tests/test_visualize.py); the figure is built, not drawn.
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: captured.setdefault("saved", path))
    visualize.visualize_heatmaps(big_image / "val2017" / "big.png", checkpoint=tmp_path / "stand-in",
                                 out=tmp_path / "v.png")  # default max_side 2048 < 3000
    assert "saved" in captured
    dets, outputs, lb = captured["result"]
    assert max(lb.input_size) <= 2048 | 127 and lb.image_size == (HEIGHT, WIDTH)
    _assert_near_box(dets[0, :4])  # the boxes drawn in the first panel
    # the heatmap panels: the top-left peak is shown over the box's top-left corner (within a cell)
    rows, cols = visualize.cell_lookup(lb)
    shown = torch.sigmoid(outputs.tl_heat[0, 0]).numpy()[rows][:, cols]
    ys, xs = np.nonzero(shown > 0.5)
    cell = 4 / lb.scale[0]  # one output cell in original pixels
    assert abs(xs.min() - BOX[0]) <= cell and abs(ys.min() - BOX[1]) <= cell
