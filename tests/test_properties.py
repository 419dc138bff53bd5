"""Property-based tests (hypothesis): prepare-data's converters on random boxes, and encode -> decode."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cornernet_cli.data.convert import prepare_data
from cornernet_cli.decode import decode
from cornernet_cli.targets import encode_targets

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
coord = st.floats(min_value=-20, max_value=90) | st.sampled_from([math.nan, math.inf, -math.inf])


def expected_boxes(boxes, width, height):
    """The validator's rule, written out independently: non-finite or no-area boxes dropped, the rest
    clipped to the image (dropped when nothing is left), COCO [x, y, w, h] rounded to 3 decimals."""
    out = []
    for x1, y1, x2, y2, label in boxes:
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            continue
        cx1, cy1 = min(max(x1, 0), width), min(max(y1, 0), height)
        cx2, cy2 = min(max(x2, 0), width), min(max(y2, 0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        out.append((label, round(cx1, 3), round(cy1, 3), round(cx2 - cx1, 3), round(cy2 - cy1, 3)))
    return sorted(out)


@SETTINGS
@given(size=st.tuples(st.integers(16, 64), st.integers(16, 64)),
       boxes=st.lists(st.tuples(coord, coord, coord, coord, st.integers(0, 2)), max_size=6))
def test_coco_source_round_trip(size, boxes):
    width, height = size
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cv2.imwrite(str(d / "a.png"), np.zeros((height, width, 3), np.uint8))
        anns = [{"id": i + 1, "image_id": 7, "category_id": 10 + lab, "bbox": [x1, y1, x2 - x1, y2 - y1]}
                for i, (x1, y1, x2, y2, lab) in enumerate(boxes)]
        doc = {"images": [{"id": 7, "file_name": "a.png", "width": width, "height": height}], "annotations": anns,
               "categories": [{"id": 10 + k, "name": f"c{k}"} for k in range(3)]}
        (d / "src.json").write_text(json.dumps(doc))
        prepare_data(format="coco", source=d / "src.json", out=d / "out", val_fraction=0.0, workers=1)
        got = json.loads((d / "out" / "annotations" / "train.json").read_text())
    # the COCO bbox [x, y, x2 - x1, ...] is what the reader sees: recompute x2 the same way
    src = [(x1, y1, x1 + (x2 - x1), y1 + (y2 - y1), lab) for x1, y1, x2, y2, lab in boxes]
    want = expected_boxes(src, width, height)
    have = sorted((a["category_id"] - 10, *a["bbox"]) for a in got["annotations"])
    assert len(have) == len(want)
    for h, w in zip(have, want):
        assert h[0] == w[0] and np.allclose(h[1:], w[1:], atol=2e-3)
    assert got["images"][0]["id"] == 7 and (got["images"][0]["width"], got["images"][0]["height"]) == size


fraction = st.floats(min_value=-0.2, max_value=1.2, allow_nan=False)


@SETTINGS
@given(size=st.tuples(st.integers(16, 64), st.integers(16, 64)),
       boxes=st.lists(st.tuples(fraction, fraction, fraction, fraction, st.integers(0, 3)), max_size=6))
def test_yolo_source_round_trip(size, boxes):
    """YOLO lines `class cx cy w h` (fractions): class 3 is unknown (2 classes + 1 out of range is reported)."""
    width, height = size
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "images").mkdir()
        (d / "labels").mkdir()
        (d / "classes.txt").write_text("a\nb\nc\n")
        cv2.imwrite(str(d / "images" / "a.png"), np.zeros((height, width, 3), np.uint8))
        lines = [f"{lab} {cx!r} {cy!r} {w!r} {h!r}" for cx, cy, w, h, lab in boxes]
        (d / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
        report = prepare_data(format="yolo", source=d, out=d / "out", val_fraction=0.0, workers=1)
        got = json.loads((d / "out" / "annotations" / "train.json").read_text())
    px = [((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height, lab)
          for cx, cy, w, h, lab in boxes if lab < 3]
    want = expected_boxes(px, width, height)
    have = sorted((a["category_id"] - 1, *a["bbox"]) for a in got["annotations"])
    assert len(have) == len(want)
    for h, w in zip(have, want):
        assert h[0] == w[0] and np.allclose(h[1:], w[1:], atol=2e-3)
    assert sum(p.kind == "unknown class" for p in report.problems) == sum(lab == 3 for *_, lab in boxes)


@st.composite
def scenes(draw):
    """1-6 boxes (input pixels, >= 8 px a side) on a 128 x 128 input, 3 classes, no two sharing a corner cell."""
    n = draw(st.integers(1, 6))
    boxes, labels = [], []
    for _ in range(n):
        x1 = draw(st.floats(0, 110))
        y1 = draw(st.floats(0, 110))
        x2 = draw(st.floats(x1 + 8, 127.9))
        y2 = draw(st.floats(y1 + 8, 127.9))
        boxes.append((x1, y1, x2, y2))
        labels.append(draw(st.integers(0, 2)))
    return np.array(boxes, dtype=np.float64), np.array(labels, dtype=np.int64)


@SETTINGS
@given(scene=scenes())
def test_encode_then_decode_gives_back_the_boxes(scene):
    """Ground-truth heatmaps (as logits), one embedding value per object at its two corners and the offset
    targets, decoded: exactly the boxes come back (output-map coordinates = input * 32 / 128), classes and
    all, with score 1."""
    boxes, labels = scene
    c, size, out = 3, (128, 128), (32, 32)
    t = encode_targets(boxes, labels, c, size, out)
    assume(len(set(t["tl_index"].tolist())) == len(boxes) and len(set(t["br_index"].tolist())) == len(boxes))
    h, w = out

    def logits(heat):
        p = np.clip(heat, 1e-6, 1 - 1e-6)
        return torch.from_numpy(np.log(p / (1 - p))).float()[None]

    emb = {k: torch.zeros(1, 1, h * w) for k in ("tl", "br")}
    off = {k: torch.zeros(1, 2, h * w) for k in ("tl", "br")}
    for k in ("tl", "br"):
        for j, (index, o) in enumerate(zip(t[f"{k}_index"], t[f"{k}_off"])):
            emb[k][0, 0, index] = float(j)  # objects 1 apart > ae_threshold 0.5
            off[k][0, :, index] = torch.tensor(o, dtype=torch.float32)
    dets = decode(logits(t["tl_heat"]), logits(t["br_heat"]), emb["tl"].view(1, 1, h, w),
                  emb["br"].view(1, 1, h, w), off["tl"].view(1, 2, h, w), off["br"].view(1, 2, h, w),
                  k=100, ae_threshold=0.5, num_dets=1000)[0].numpy()
    good = dets[dets[:, 4] > 0.5]
    assert len(good) == len(boxes)
    # Sort both sides on coordinates rounded to 1e-3 (the tolerance), so that float32 rounding of the decoded
    # boxes (e.g. x1 = 3e-137 -> 0.0) cannot pair different boxes.
    want = sorted((int(lab), *np.round(b * 32 / 128, 3)) for b, lab in zip(boxes, labels))
    have = sorted((int(d[7]), *np.round(d[:4].astype(np.float64), 3)) for d in good)
    for hv, wv in zip(have, want):
        assert hv[0] == wv[0]
        assert np.allclose(hv[1:], wv[1:], atol=1e-3), (hv, wv)
    assert np.allclose(good[:, 4], 1.0, atol=1e-5)
