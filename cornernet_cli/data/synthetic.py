"""A seeded generator of shape images: the embedded dataset of the demo and the tests.

Each image has a smooth random colour background with noise and faint lines (texture), and 1..6 objects
of `num_classes` shape classes. A class is a shape with a base colour (jittered per object), so a small
CPU model learns it in minutes; sizes are ~20..120 px at 256 x 256 (scaled with the image), aspect ratios
~0.5..2, objects may overlap (IoU <= 0.4; the later one is drawn on top, boxes stay the full shape).
Every box is the exact pixel extent of its drawn shape: x1, y1 = first pixel, x2, y2 = last pixel + 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from cornernet_cli.data.image_io import write_image
from cornernet_cli.errors import SettingError

# class name -> base colour (BGR)
SHAPES: dict[str, tuple[int, int, int]] = {
    "rectangle": (50, 50, 220),
    "ellipse": (50, 200, 50),
    "triangle": (220, 90, 40),
    "cross": (40, 220, 230),
    "diamond": (200, 60, 200),
    "ring": (230, 220, 60),
}
MAX_CLASSES = len(SHAPES)


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    if kind == "rectangle":
        mask[:] = 1
    elif kind == "ellipse":
        cv2.ellipse(mask, (((w - 1) / 2, (h - 1) / 2), (w, h), 0.0), 1, -1)
    elif kind == "triangle":
        apex = int(rng.integers(0, w))
        cv2.fillPoly(mask, [np.array([[0, h - 1], [w - 1, h - 1], [apex, 0]], dtype=np.int32)], 1)
    elif kind == "cross":
        th, tw = max(2, h // 3), max(2, w // 3)
        mask[(h - th) // 2 : (h - th) // 2 + th, :] = 1
        mask[:, (w - tw) // 2 : (w - tw) // 2 + tw] = 1
    elif kind == "diamond":
        pts = np.array([[w // 2, 0], [w - 1, h // 2], [w // 2, h - 1], [0, h // 2]], dtype=np.int32)
        cv2.fillPoly(mask, [pts], 1)
    elif kind == "ring":
        t = max(2, min(h, w) // 5)
        cv2.ellipse(mask, (((w - 1) / 2, (h - 1) / 2), (w, h), 0.0), 1, -1)
        inner = np.zeros_like(mask)
        if w > 2 * t and h > 2 * t:
            cv2.ellipse(inner, (((w - 1) / 2, (h - 1) / 2), (w - 2 * t, h - 2 * t), 0.0), 1, -1)
        mask &= 1 - inner
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    grid = rng.integers(40, 215, size=(4, 4, 3)).astype(np.uint8)
    image = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 7))):  # faint lines: texture without objects' colours
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        grey = int(rng.integers(60, 200))
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), (grey, grey, grey),
                 int(rng.integers(1, 3)))
    return image


def generate_image(rng: np.random.Generator, *, image_size: int = 256, num_classes: int = 4,
                   max_objects: int = 6, sizes: tuple[float, float] = (20, 120),
                   max_iou: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: (BGR uint8 [S, S, 3], boxes [N, 4] float32 x1, y1, x2, y2 pixels, labels [N] int64 in [0, K)).

    sizes: the range of an object's side (the geometric mean of width and height) at 256 x 256, scaled with
    the image; max_iou: the largest IoU of a new object's box with an earlier one (0: no overlaps; an object
    that finds no place in 20 tries is left out)."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")
    names = list(SHAPES)[:num_classes]
    size = image_size
    image = _background(rng, size)
    unit = size / 256.0
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(num_classes))
        for _attempt in range(20):
            side = rng.uniform(*sizes) * unit
            aspect = math.exp(rng.uniform(-0.7, 0.7))
            w = int(np.clip(round(side * math.sqrt(aspect)), 8, size - 2))
            h = int(np.clip(round(side / math.sqrt(aspect)), 8, size - 2))
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            cand = np.array([x, y, x + w, y + h], dtype=np.float64)
            if not boxes or _iou(cand, np.array(boxes)).max() <= max_iou:
                break
        else:
            continue
        mask = _shape_mask(names[label], h, w, rng)
        bx, by, bw, bh = cv2.boundingRect(mask)
        colour = np.clip(np.array(SHAPES[names[label]]) + rng.integers(-30, 31, 3), 0, 255)
        roi = image[y : y + h, x : x + w]
        roi[mask.astype(bool)] = colour.astype(np.uint8)
        boxes.append([x + bx, y + by, x + bx + bw, y + by + bh])
        labels.append(label)
    noise = rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return (image, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64))


def write_synthetic_dataset(out: str | Path, *, num_train: int = 200, num_val: int = 50, image_size: int = 256,
                            num_classes: int = 4, seed: int = 0, max_objects: int = 6,
                            sizes: tuple[float, float] = (20, 120), max_iou: float = 0.4) -> dict[str, dict]:
    """Write a dataset folder: out/images/{train,val}/NNNNNN.jpg and out/annotations/{train,val}.json.

    Image i of a split is drawn from the seed (seed, split, i), so the same seed gives the same images whatever
    the counts. Category ids 1..K named after the shapes; max_objects, sizes and max_iou as in `generate_image`.
    Returns the COCO dicts per split.
    """
    out = Path(out)
    names = list(SHAPES)[:num_classes]
    if not 1 <= num_classes <= MAX_CLASSES:
        raise SettingError(f"num_classes must be in 1..{MAX_CLASSES} for synthetic data, got {num_classes}")
    docs = {}
    for split_no, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        if count <= 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(count):
            image, boxes, labels = generate_image(np.random.default_rng([seed, split_no, i]), image_size=image_size,
                                                  num_classes=num_classes, max_objects=max_objects, sizes=sizes,
                                                  max_iou=max_iou)
            name = f"images/{split}/{i:06d}.jpg"
            write_image(out / name, image)
            images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
            for box, label in zip(boxes.tolist(), labels.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label + 1,
                             "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        doc = {"info": {"description": "cornernet synthetic shapes", "seed": seed, "image_size": image_size,
                        "max_objects": max_objects, "sizes": [float(v) for v in sizes], "max_iou": float(max_iou)},
               "images": images, "annotations": anns,
               "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"{split}.json").write_text(json.dumps(doc))
        docs[split] = doc
    return docs
