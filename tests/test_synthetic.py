"""The synthetic shapes generator: seeded, exact boxes, sizes in range, fast, and loadable as a dataset."""

from __future__ import annotations

import time
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


def test_generator_speed_at_256():
    rng = np.random.default_rng(0)
    generate_image(rng)
    t = time.perf_counter()
    for _ in range(50):
        generate_image(rng)
    rate = 50 / (time.perf_counter() - t)
    assert rate > 100, f"{rate:.0f} images/s"


def test_dataset_folder(tmp_path: Path):
    docs = write_synthetic_dataset(tmp_path, num_train=6, num_val=3, image_size=96, num_classes=3, seed=4)
    again = write_synthetic_dataset(tmp_path / "b", num_train=4, num_val=1, image_size=96, num_classes=3, seed=4)
    assert docs["train"]["annotations"][: len(again["train"]["annotations"]) // 2] == \
        again["train"]["annotations"][: len(again["train"]["annotations"]) // 2]
    train = CocoDetection.from_folder(tmp_path, "train")
    assert len(train) == 6 and train.class_names == ["rectangle", "ellipse", "triangle"]
    assert train[0].image.shape == (96, 96, 3)
    assert len(CocoDetection.from_folder(tmp_path, "val")) == 3
    with pytest.raises(Exception, match="num-classes"):
        write_synthetic_dataset(tmp_path / "c", num_classes=9)
