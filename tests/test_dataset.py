"""CocoDetection label mapping, training samples, collation and the reproducible loader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.data.loader import (
    BATCH_KEYS,
    SeededInfiniteSampler,
    TrainDataset,
    build_train_loader,
    collate,
)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """3 images, categories with ids 3 and 7 (non-contiguous), a crowd box, an image without boxes."""
    (tmp_path / "annotations").mkdir()
    images = []
    for i in range(3):
        img = np.full((80, 120, 3), 100, np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
        images.append({"id": 100 + i, "file_name": f"{i}.png", "width": 120, "height": 80})
    anns = [{"id": 1, "image_id": 100, "category_id": 7, "bbox": [10, 10, 40, 30], "iscrowd": 0, "area": 1200},
            {"id": 2, "image_id": 100, "category_id": 3, "bbox": [50, 20, 30, 40], "iscrowd": 1, "area": 1200},
            {"id": 3, "image_id": 101, "category_id": 3, "bbox": [60, 30, 50, 40], "iscrowd": 0, "area": 2000},
            {"id": 4, "image_id": 101, "category_id": 7, "bbox": [5, 5, 20, 20], "iscrowd": 0, "area": 400}]
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]}
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(doc))
    return tmp_path


def test_coco_detection_mapping_crowd_and_empty(tiny: Path):
    ds = CocoDetection.from_folder(tiny, "train")
    assert ds.class_names == ["three", "seven"] and ds.category_ids == [3, 7] and ds.image_ids == [100, 101, 102]
    s = ds[0]
    assert s.image.shape == (80, 120, 3) and s.image.dtype == np.uint8 and s.path.name == "0.png"
    np.testing.assert_allclose(s.boxes, [[10, 10, 50, 40]])  # crowd box left out
    assert s.labels.tolist() == [1]
    assert ds[1].labels.tolist() == [0, 1] and ds.category_ids[ds[1].labels[0]] == 3
    assert len(ds[2].boxes) == 0 and ds[2].boxes.shape == (0, 4)


def test_sample_shapes_and_targets_point_at_boxes(tiny: Path):
    from cornernet_cli.targets import encode_targets

    ds = TrainDataset(CocoDetection.from_folder(tiny, "train"), input_size=63, scales=(), flip=0.0, color=0.0,
                      light=0.0)
    ds.seed_sample(0)
    s = ds[1]
    assert s["image"].shape == (3, 63, 63) and s["tl_heat"].shape == (2, 16, 16)
    assert s["tl_index"].dtype == torch.int64 and s["tl_off"].shape == (2, 2)
    # no crop (scales=()): the whole 120x80 image is resized to 63x63, so boxes scale by 63/120, 63/80
    boxes = np.array([[60, 30, 110, 70], [5, 5, 25, 25]]) * [63 / 120, 63 / 80, 63 / 120, 63 / 80]
    ref = encode_targets(boxes, np.array([0, 1]), 2, (63, 63), (16, 16))
    for key in ("tl_heat", "br_heat", "tl_index", "br_index", "tl_off", "br_off"):
        np.testing.assert_allclose(s[key].numpy(), ref[key], atol=1e-4)
    empty = ds[2]
    assert empty["tl_index"].shape == (0,) and empty["tl_heat"].sum() == 0


def test_collate_pads_and_masks():
    def sample(n):
        return {"image": torch.zeros(3, 8, 8), "tl_heat": torch.zeros(2, 2, 2), "br_heat": torch.zeros(2, 2, 2),
                "tl_index": torch.arange(n) + 1, "br_index": torch.arange(n) + 2,
                "tl_off": torch.full((n, 2), 0.5), "br_off": torch.full((n, 2), 0.25)}

    batch = collate([sample(2), sample(0), sample(3)])
    assert list(batch) == list(BATCH_KEYS)
    assert batch["tl_index"].shape == (3, 3) and batch["tl_off"].shape == (3, 3, 2)
    assert batch["mask"].tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert batch["tl_index"][2].tolist() == [1, 2, 3] and batch["br_index"][0].tolist() == [2, 3, 0]
    assert batch["br_off"][0, 2].tolist() == [0, 0]
    assert collate([sample(0)])["mask"].shape == (1, 1)


def test_sampler_shards_cover_every_index_once_per_epoch():
    shards = [SeededInfiniteSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    firsts = [s.epoch_indices(0) for s in shards]
    assert all(len(f) == 4 for f in firsts)
    assert set(np.concatenate(firsts).tolist()) == set(range(10))
    it = iter(SeededInfiniteSampler(5, seed=1))
    stream = [next(it) for _ in range(12)]
    assert sorted(i for i, _ in stream[:5]) == list(range(5)) and sorted(i for i, _ in stream[5:10]) == list(range(5))
    resumed = iter(SeededInfiniteSampler(5, seed=1, start=7))
    assert [next(resumed) for _ in range(5)] == stream[7:12]


def test_loader_is_reproducible_and_independent_of_workers(tiny: Path):
    def batches(workers, seed):
        loader = build_train_loader(tiny, "train", input_size=31, batch_size=2, workers=workers, seed=seed,
                                    border=8)
        it = iter(loader)
        return [next(it) for _ in range(3)]

    a, b, c = batches(0, 5), batches(1, 5), batches(0, 6)
    for x, y in zip(a, b):
        assert list(x) == list(BATCH_KEYS)
        for k in BATCH_KEYS:
            assert torch.equal(x[k], y[k]), k
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c))
