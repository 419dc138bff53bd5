"""Round trip: ground truth -> encode_targets -> targets as logits -> decode -> post-processing -> same boxes.

This is the decoder's upper bound (the paper: 86.1 AP on COCO with ground-truth heatmaps and offsets).
The embedding and offset maps are shared by all classes, so two objects whose corners fall in the same
output cell cannot both be represented; the generator avoids that (and only that).
"""

import numpy as np
import pytest
import torch

from cornernet_cli.data.letterbox import PAPER_PADDING, Padding, letterbox
from cornernet_cli.model.cornernet import CornerOutputs
from cornernet_cli.postprocess import box_iou, image_detections, merge_detections
from cornernet_cli.targets import encode_targets

NUM_CLASSES = 12


def _cells(box_in, info):
    t = encode_targets(box_in[None], [0], 1, info.input_size, info.output_size)
    return int(t["tl_index"][0]), int(t["br_index"][0])


def _ground_truth(rng, height, width, n, to_inputs):
    """n boxes in image pixels; to_inputs maps them to every network input they will be encoded in."""
    boxes, used = [], set()
    while len(boxes) < n:
        kind = rng.integers(0, 4)
        if kind == 0:    # tiny
            w, h = rng.uniform(1.5, 6, 2)
        else:
            w, h = rng.uniform(8, width * 0.6), rng.uniform(8, height * 0.6)
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        if kind == 2:    # touching the borders
            x1, y1 = (0.0 if rng.random() < 0.5 else width - w), (0.0 if rng.random() < 0.5 else y1)
        if kind == 3 and boxes:  # overlapping a previous box
            px1, py1, px2, py2 = boxes[rng.integers(len(boxes))]
            x1, y1 = px1 + rng.uniform(-4, 4), py1 + rng.uniform(-4, 4)
            w, h = max(px2 - px1 + rng.uniform(-6, 6), 3), max(py2 - py1 + rng.uniform(-6, 6), 3)
        box = np.clip([x1, y1, x1 + w, y1 + h], 0, [width, height, width, height])
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        cells = [(i, corner, cell) for i, (to_input, info) in enumerate(to_inputs)
                 for corner, cell in enumerate(_cells(to_input(box[None])[0], info))]
        if used.intersection(cells):
            continue
        used.update(cells)
        boxes.append(box)
    return np.array(boxes), rng.integers(0, NUM_CLASSES, n)


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _heads(boxes_in, labels, info):
    """Targets for boxes in network-input pixels turned into head outputs: logits, embeddings, offsets."""
    t = encode_targets(boxes_in, labels, NUM_CLASSES, info.input_size, info.output_size)
    assert len(t["keep"]) == len(boxes_in)
    h, w = info.output_size
    emb = np.zeros((2, h * w), np.float32)
    off = np.zeros((2, 2, h * w), np.float32)
    ids = np.arange(1, len(boxes_in) + 1, dtype=np.float32)  # 1 apart: only true pairs within 0.5
    emb[0, t["tl_index"]], emb[1, t["br_index"]] = ids, ids
    off[0][:, t["tl_index"]], off[1][:, t["br_index"]] = t["tl_off"].T, t["br_off"].T
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return (tensor(_logit(t["tl_heat"])), tensor(_logit(t["br_heat"])), tensor(emb[0].reshape(1, h, w)),
            tensor(emb[1].reshape(1, h, w)), tensor(off[0].reshape(2, h, w)), tensor(off[1].reshape(2, h, w)))


def _recovered(dets, boxes, labels):
    for box, label in zip(boxes, labels):
        same = dets[dets[:, 5] == label]
        if not len(same) or box_iou(box, same[:, :4]).max() < 0.95:
            return False
    return True


@pytest.mark.parametrize("padding", [PAPER_PADDING, Padding(32, paper=False)], ids=["paper", "tight"])
@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 0.75), (2, 1.3)])
def test_round_trip_single(seed, scale, padding):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(150, 300)), int(rng.integers(150, 300))
    _, info = letterbox(np.zeros((height, width, 3), np.uint8), scale, padding)
    boxes, labels = _ground_truth(rng, height, width, 60, [(info.image_to_input, info)])
    heads = [x.unsqueeze(0) for x in _heads(info.image_to_input(boxes), labels, info)]
    dets = image_detections(CornerOutputs(*heads), info, flip=False)
    merged = merge_detections([dets])
    assert len(merged) <= 100
    assert _recovered(merged, boxes, labels)


def test_round_trip_flip_batch():
    rng = np.random.default_rng(5)
    height, width = 211, 277
    _, info = letterbox(np.zeros((height, width, 3), np.uint8), 1.0)

    def mirrored(b):  # the horizontally mirrored network input
        out = info.image_to_input(b)
        out[:, [0, 2]] = info.input_size[1] - out[:, [2, 0]]
        return out

    boxes, labels = _ground_truth(rng, height, width, 40, [(info.image_to_input, info), (mirrored, info)])
    inp, mirror = info.image_to_input(boxes), mirrored(boxes)
    pair = [torch.stack(x) for x in zip(_heads(inp, labels, info), _heads(mirror, labels, info))]
    dets = image_detections(CornerOutputs(*pair), info, flip=True)
    for box, label in zip(boxes, labels):  # found twice: in the image and in the mirror, mapped back
        same = dets[dets[:, 7] == label]
        assert (box_iou(box, same[:, :4]) >= 0.95).sum() >= 2
    assert _recovered(merge_detections(dets), boxes, labels)
