"""COCO-format datasets: find a split in a --data folder, and read images with their boxes.

Two folder layouts are accepted by every command that takes --data DIR:

- the prepare-data layout: DIR/annotations/{train,val,test}.json, image ``file_name`` relative to DIR;
- the standard COCO root: DIR/annotations/instances_{split}2017.json with images in DIR/{split}2017/.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from cornernet_cli.data.image_io import read_image
from cornernet_cli.errors import CornerNetError

SPLITS = ("train", "val", "test")


def _split_candidates(data_dir: Path, split: str) -> list[tuple[Path, Path]]:
    return [
        (data_dir / "annotations" / f"{split}.json", data_dir),
        (data_dir / "annotations" / f"instances_{split}2017.json", data_dir / f"{split}2017"),
        (data_dir / "annotations" / f"instances_{split}.json", data_dir / split),
    ]


def available_splits(data_dir: str | Path) -> list[str]:
    """Split names that `resolve_split` finds in `data_dir` (any layout), in train, val, test order first."""
    data_dir = Path(data_dir)
    found = []
    for split in SPLITS:
        if any(ann.exists() for ann, _ in _split_candidates(data_dir, split)):
            found.append(split)
    ann_dir = data_dir / "annotations"
    if ann_dir.is_dir():
        for p in sorted(ann_dir.glob("*.json")):
            name = p.stem.removeprefix("instances_").removesuffix("2017")
            if name not in found:
                found.append(name)
    return found


def _fallback_root(data_dir: Path, root: Path, ann: Path) -> Path:
    """The image folder when the expected one is missing: the first of DIR/images, DIR, DIR/*2017 that holds
    the split's first image (COCO subsets such as coco128 keep train2017 images in val2017/)."""
    try:
        images = json.loads(ann.read_text()).get("images") or []
    except (OSError, ValueError):
        return root
    if not images:
        return root
    name = images[0].get("file_name", "")
    for cand in [data_dir / "images", data_dir, *sorted(data_dir.glob("*2017"))]:
        if cand.is_dir() and (cand / name).is_file():
            return cand
    return root


def contained_path(root: Path, file_name: object, *, allow_parent: bool = False) -> Path | None:
    """`root / file_name` when `file_name` is a relative path that stays inside `root` after normalising
    "." and ".." (lexically; symlinks are not followed), else None. With `allow_parent`, ".." may lead out of
    `root` (the prepare-data layout references source images that way) but the path must still be relative."""
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        return None
    rel = Path(file_name)
    if rel.is_absolute() or rel.drive:
        return None
    if not allow_parent and os.path.normpath(rel).split(os.sep)[0] == "..":
        return None
    return root / rel


def resolve_split(data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation JSON path, image root) for `split` of the dataset folder `data_dir`.

    Image paths are ``image_root / image["file_name"]``. Accepts the prepare-data layout
    (annotations/{split}.json, root = data_dir) and the standard COCO root
    (annotations/instances_{split}2017.json, root = data_dir/{split}2017; when that folder is missing, the
    first of data_dir/images, data_dir, data_dir/*2017 that holds the split's first image).
    Raises CornerNetError naming the folder and listing the splits that exist when `split` is missing.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CornerNetError(f"dataset folder {data_dir} does not exist")
    for ann, root in _split_candidates(data_dir, split):
        if ann.exists() and not ann.is_file():
            raise CornerNetError(f"{ann} is not a file (expected a COCO JSON file)")
        if ann.is_file():
            return ann, root if root.is_dir() else _fallback_root(data_dir, root, ann)
    found = available_splits(data_dir)
    have = ", ".join(found) if found else (
        "none (expected annotations/{train,val}.json or annotations/instances_{train,val}2017.json)")
    raise CornerNetError(f"dataset {data_dir} has no split {split!r}; splits found: {have}")


def load_coco(ann_path: str | Path):
    """pycocotools COCO object for `ann_path`, quietly; CornerNetError naming the file when it is not COCO JSON."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_path))
    except RecursionError:
        raise CornerNetError(f"cannot read COCO annotations {ann_path}: JSON nested too deeply") from None
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise CornerNetError(f"cannot read COCO annotations {ann_path}: {type(e).__name__}: {e}") from None


@dataclass
class Sample:
    """One image with its targets. image: BGR uint8 [H, W, 3]; boxes: [N, 4] float32 x1, y1, x2, y2 in
    image pixels (continuous coordinates, x2 = x + w of the COCO box); labels: [N] int64 contiguous in [0, C)."""

    image: np.ndarray
    path: Path
    image_id: int
    boxes: np.ndarray
    labels: np.ndarray


class CocoDetection:
    """A COCO-format split: images, boxes and a contiguous label mapping.

    class_names[i] and category_ids[i] describe contiguous label i (categories sorted by COCO id), so
    `category_ids[label]` maps predictions back to COCO ids. Crowd boxes and boxes with no area are left
    out of `boxes` / `labels` (they are not training targets); images without boxes are kept.
    """

    def __init__(self, ann_path: str | Path, image_root: str | Path, *, allow_parent: bool | None = None):
        self.ann_path, self.image_root = Path(ann_path), Path(image_root)
        self.coco = load_coco(ann_path)
        if allow_parent is None:  # COCO layouts (instances_*.json) stay inside the root; prepare-data's may not
            allow_parent = not self.ann_path.name.startswith("instances_")
        self._check(allow_parent)
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        self.category_ids: list[int] = [int(c["id"]) for c in cats]
        self.class_names: list[str] = [str(c["name"]) for c in cats]
        self.label_of: dict[int, int] = {cid: i for i, cid in enumerate(self.category_ids)}
        self.image_ids: list[int] = sorted(self.coco.getImgIds())
        self._targets = [self._load_targets(i) for i in self.image_ids]

    @classmethod
    def from_folder(cls, data_dir: str | Path, split: str) -> CocoDetection:
        """The split `split` of a --data folder (see `resolve_split`). In the prepare-data layout image paths
        may lead out of the folder with ".." (to the referenced source images); in the COCO layouts
        (annotations/instances_*.json) they must stay inside the image folder. Absolute paths are refused."""
        return cls(*resolve_split(data_dir, split))

    def _check(self, allow_parent: bool) -> None:
        """One-line CornerNetError naming the file and the value for: an image path that is absolute or
        escapes the image root, missing image files, a bbox that is not 4 finite numbers, a category id not
        in the categories. (Run prepare-data to drop such entries with a report instead.)"""
        where = self.ann_path
        missing = []
        for info in self.coco.imgs.values():
            name = info.get("file_name")
            path = contained_path(self.image_root, name, allow_parent=allow_parent)
            if path is None:
                raise CornerNetError(f"{where}: image {info.get('id')} has file_name {name!r}: not a relative path "
                                     f"inside the dataset root {self.image_root} (refused)")
            if not path.is_file():
                missing.append(path)
        if missing:
            raise CornerNetError(f"{where}: {len(missing)} image file(s) missing, first: {missing[0]} (prepare-data "
                                 f"drops them with a report)")
        cats = set(self.coco.cats)
        for ann in self.coco.anns.values():
            bbox = ann.get("bbox")
            try:
                ok = len(bbox) == 4 and all(math.isfinite(float(v)) for v in bbox)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise CornerNetError(f"{where}: annotation {ann.get('id')} has bbox {bbox!r}; expected 4 finite "
                                     f"numbers (prepare-data drops such boxes with a report)")
            if ann.get("category_id") not in cats:
                raise CornerNetError(f"{where}: annotation {ann.get('id')} has category_id "
                                     f"{ann.get('category_id')!r}, not one of the categories {sorted(cats)}")

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_boxes(self) -> int:
        """Training boxes over all images (crowd and zero-size boxes not counted)."""
        return sum(len(boxes) for boxes, _ in self._targets)

    def _load_targets(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0 or ann["category_id"] not in self.label_of:
                continue
            boxes.append((x, y, x + w, y + h))
            labels.append(self.label_of[ann["category_id"]])
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64))

    def image_path(self, index: int) -> Path:
        return self.image_root / self.coco.imgs[self.image_ids[index]]["file_name"]  # checked in _check

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) as written in the annotation file."""
        info = self.coco.imgs[self.image_ids[index]]
        return int(info["height"]), int(info["width"])

    def targets(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [N, 4] float32 x1, y1, x2, y2 pixels, labels [N] int64) without reading the image."""
        boxes, labels = self._targets[index]
        return boxes.copy(), labels.copy()

    def __getitem__(self, index: int) -> Sample:
        path = self.image_path(index)
        boxes, labels = self.targets(index)
        return Sample(read_image(path), path, self.image_ids[index], boxes, labels)
