"""The validator of prepare-data: decode every image, check every box, and build a clean COCO split.

Rules (each finding becomes a Problem with the file, the value and the action):
- a missing or undecodable image, or an image id / file seen twice: the image is skipped;
- a declared size that disagrees with the decoded image: reported, the decoded size is used;
- a zero- or negative-size box: dropped; a box reaching outside the image by more than `tolerance` pixels:
  clipped (dropped when nothing is left); smaller overshoots are clipped silently;
- a crowd box: kept with iscrowd=1 (ignored for training targets, used by COCO evaluation);
- a duplicate annotation id: reported; annotation ids are renumbered 1..N per split anyway.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cornernet_cli.data.image_io import read_image
from cornernet_cli.data.records import Problem, RawImage
from cornernet_cli.errors import CornerNetError


@dataclass
class SplitResult:
    """A validated split: COCO `images` / `annotations` lists, source paths per image id, stats, problems."""

    name: str
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    paths: dict[int, Path] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    boxes_per_class: dict[int, int] = field(default_factory=dict)
    crowd: int = 0
    dropped: int = 0
    empty_images: int = 0


def _image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    if not path.is_file():
        return None, "missing image"
    try:
        image = read_image(path)
    except CornerNetError:
        return None, "unreadable image"
    return image.shape[:2], None


def validate_split(name: str, images: list[RawImage], num_classes: int, *, tolerance: float = 0.5,
                   workers: int = 4) -> SplitResult:
    """Check `images` (boxes labelled 0..num_classes-1) and build a COCO split with category = label index.

    Image ids are the source's where it has them, else 1..N in order. Boxes in the output are COCO
    [x, y, w, h] pixels; `annotations[i]["category_id"]` is the contiguous label (the caller maps it to ids).
    """
    out = SplitResult(name=name)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        sizes = list(pool.map(_image_size, [im.path for im in images]))
    seen_ids, seen_paths, seen_ann_ids = set(), set(), set()
    next_id = max([im.image_id or 0 for im in images], default=0) + 1
    for raw, (size, err) in zip(images, sizes):
        image_id = raw.image_id
        if image_id is None:
            image_id, next_id = next_id, next_id + 1
        if image_id in seen_ids or raw.path in seen_paths:
            what = f"image id {image_id}" if image_id in seen_ids else f"file {raw.path.name}"
            out.problems.append(Problem(name, "duplicate id", raw.where, f"{what} seen twice", "second copy skipped"))
            continue
        seen_ids.add(image_id)
        seen_paths.add(raw.path)
        if err:
            out.problems.append(Problem(name, err, str(raw.path), f"referenced by {raw.where}", "image skipped"))
            continue
        height, width = size
        if raw.declared_size and tuple(raw.declared_size) != (height, width):
            out.problems.append(Problem(name, "size mismatch", raw.where,
                                        f"annotation says {raw.declared_size[1]}x{raw.declared_size[0]}, "
                                        f"{raw.path.name} is {width}x{height}", "image size used"))
        out.images.append({"id": image_id, "file_name": "", "width": width, "height": height})
        out.paths[image_id] = raw.path
        kept = 0
        for box in raw.boxes:
            x1, y1, x2, y2 = box.box
            if box.normalized:
                x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
            value = f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                out.problems.append(Problem(name, "malformed file", box.where, f"box {value}", "box dropped"))
                out.dropped += 1
                continue
            if box.source_id is not None:
                if box.source_id in seen_ann_ids:
                    out.problems.append(Problem(name, "duplicate id", box.where, f"annotation id {box.source_id}",
                                                "kept, renumbered"))
                seen_ann_ids.add(box.source_id)
            if x2 <= x1 or y2 <= y1:
                kind = "zero-size box" if (x2 == x1 or y2 == y1) and x2 >= x1 and y2 >= y1 else "negative-size box"
                out.problems.append(Problem(name, kind, box.where, f"box {value}", "box dropped"))
                out.dropped += 1
                continue
            cx1, cy1, cx2, cy2 = np.clip([x1, y1, x2, y2], 0, [width, height, width, height]).tolist()
            overshoot = max(-x1, -y1, x2 - width, y2 - height)
            if cx2 <= cx1 or cy2 <= cy1:
                out.problems.append(Problem(name, "box outside image", box.where,
                                            f"box {value} in a {width}x{height} image", "box dropped"))
                out.dropped += 1
                continue
            if overshoot > tolerance:
                out.problems.append(Problem(name, "box outside image", box.where,
                                            f"box {value} in a {width}x{height} image",
                                            f"clipped to [{cx1:g}, {cy1:g}, {cx2:g}, {cy2:g}]"))
            if box.iscrowd:
                out.problems.append(Problem(name, "crowd box", box.where, f"box {value}", "kept, not trained on"))
                out.crowd += 1
            w, h = cx2 - cx1, cy2 - cy1
            out.annotations.append({"id": len(out.annotations) + 1, "image_id": image_id, "category_id": box.label,
                                    "bbox": [round(cx1, 3), round(cy1, 3), round(w, 3), round(h, 3)],
                                    "area": round(w * h, 3), "iscrowd": int(bool(box.iscrowd))})
            if not box.iscrowd:
                out.boxes_per_class[box.label] = out.boxes_per_class.get(box.label, 0) + 1
            kept += 1
        if kept == 0:
            out.empty_images += 1
    if num_classes < 1:
        raise CornerNetError(f"split {name}: no classes found")
    return out
