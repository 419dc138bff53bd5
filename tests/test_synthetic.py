"""The synthetic shapes generator: seeded, exact boxes, sizes in range, fast, and loadable as a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.data.synthetic import SHAPES, generate_image, write_synthetic_dataset


def test_same_seed_same_image():
    a = generate_image(np.random.default_rng(11))
    b = generate_image(np.random.default_rng(11))
    c = generate_image(np.random.default_rng(12))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_boxes_are_tight_and_in_range():
    counts, sizes = [], []
    for seed in range(40):
        image, boxes, labels = generate_image(np.random.default_rng(seed), image_size=256, num_classes=4)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        counts.append(len(boxes))
        assert ((boxes >= 0) & (boxes <= 256)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((labels >= 0) & (labels < 4)).all()
        sizes += np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
        # the last-drawn object is on top: its class colour fills its box's border rows (tight box)
        colour = np.array(SHAPES[list(SHAPES)[labels[-1]]])
        x1, y1, x2, y2 = boxes[-1].astype(int)
        near = np.abs(image[y1:y2, x1:x2].astype(int) - colour).max(axis=2) < 50
        assert near[0].any() and near[-1].any() and near[:, 0].any() and near[:, -1].any()
        # and its interior is mostly that colour (a filled shape, not background)
        assert near.mean() > 0.3
    assert min(counts) >= 1 and max(counts) <= 6
    assert min(sizes) > 10 and max(sizes) < 140


def test_dataset_folder(tmp_path: Path):
    docs = write_synthetic_dataset(tmp_path, num_train=6, num_val=3, image_size=96, num_classes=3, seed=4)
    again = write_synthetic_dataset(tmp_path / "b", num_train=4, num_val=1, image_size=96, num_classes=3, seed=4)
    assert docs["train"]["annotations"][: len(again["train"]["annotations"]) // 2] == \
        again["train"]["annotations"][: len(again["train"]["annotations"]) // 2]
    train = CocoDetection.from_folder(tmp_path, "train")
    assert len(train) == 6 and train.class_names == ["rectangle", "ellipse", "triangle"]
    assert train[0].image.shape == (96, 96, 3)
    assert len(CocoDetection.from_folder(tmp_path, "val")) == 3
    with pytest.raises(Exception, match="num_classes"):
        write_synthetic_dataset(tmp_path / "c", num_classes=9)


def test_object_size_range_is_respected():
    """sizes=(lo, hi) bounds each object's side sqrt(w * h) (at 256 px; scaled with the image) up to rounding."""
    for image_size, sizes in ((256, (60, 120)), (128, (32, 120)), (128, (20, 40))):
        unit = image_size / 256
        sides = []
        for i in range(40):
            _, boxes, _ = generate_image(np.random.default_rng(i), image_size=image_size, sizes=sizes)
            sides += np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
        assert len(sides) > 40
        assert min(sides) >= sizes[0] * unit - 2 and max(sides) <= sizes[1] * unit + 2


def test_max_iou_zero_means_no_overlaps():
    """max_iou=0 (the demo's data): no two boxes of an image share a pixel; the default allows overlaps."""
    def overlaps(boxes):
        count = 0
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                count += iw > 0 and ih > 0
        return count

    separate = [overlaps(generate_image(np.random.default_rng(i), image_size=128, max_iou=0.0)[1]) for i in range(60)]
    default = [overlaps(generate_image(np.random.default_rng(i), image_size=128)[1]) for i in range(60)]
    assert sum(separate) == 0 and sum(default) > 0
