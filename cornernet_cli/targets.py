"""Training targets for the corner heads (paper section 3.2 and 3.4).

Coordinate conventions used throughout the package:

* Boxes are x1, y1, x2, y2 in continuous pixel coordinates (a pixel column j covers [j, j + 1)).
* Input pixels map to output-map coordinates by the ratio output / input per axis (128 / 511 at 511),
  exactly as the test-time geometry in `cornernet_cli.data.letterbox` does.
* A corner at output coordinate fx lives in cell ix = floor(fx) (clamped to the last cell, see below);
  its offset target is fx - ix in [0, 1]. Flat cell index is y * w + x.
"""

from __future__ import annotations

import math

import numpy as np
import torch

RADIUS_MODES = ("object", "fixed", "none")
FIXED_RADIUS = 2.5  # the paper's fixed-radius ablation (Table 2)


def gaussian_radius(height: float, width: float, min_overlap: float = 0.3) -> float:
    """Largest corner displacement r (output pixels, per axis) keeping IoU >= min_overlap with the box.

    height, width: box size in output pixels. The three worst cases of the paper, each a quadratic
    a r^2 - b r + c = 0 whose smallest admissible root is taken, then the minimum over the cases:

    1. both corners shift the same way (same size, moved by r in x and y): (h - r)(w - r) overlap,
       r^2 - (h + w) r + h w (1 - t) / (1 + t) = 0;
    2. both corners move inwards (box shrinks by 2r): 4 r^2 - 2 (h + w) r + (1 - t) h w = 0;
    3. both corners move outwards (box grows by 2r): 4 t r^2 + 2 t (h + w) r - (1 - t) h w = 0.

    The original code took the wrong root in cases 1 and 2 and divided by 2 instead of 2a; this is the
    corrected formula. Returns 0.0 for an empty box.
    """
    h, w, t = float(height), float(width), float(min_overlap)
    if h <= 0 or w <= 0:
        return 0.0
    b1, c1 = h + w, h * w * (1 - t) / (1 + t)
    r1 = (b1 - math.sqrt(max(b1 * b1 - 4 * c1, 0.0))) / 2
    a2, b2, c2 = 4.0, 2 * (h + w), (1 - t) * h * w
    r2 = (b2 - math.sqrt(max(b2 * b2 - 4 * a2 * c2, 0.0))) / (2 * a2)
    a3, b3, c3 = 4 * t, 2 * t * (h + w), -(1 - t) * h * w
    r3 = (-b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / (2 * a3) if t > 0 else float("inf")
    return max(0.0, min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: float) -> np.ndarray:
    """Draw exp(-(dx^2 + dy^2) / (2 sigma^2)), sigma = (2 radius + 1) / 6, into `heatmap` in place.

    heatmap: [h, w] float array; center: (x, y) integer cell; radius: cells (int in the paper's
    object mode). The bump covers the square |dx|, |dy| <= floor(radius); a non-integer radius (the
    fixed 2.5 ablation) therefore draws a 5 x 5 square with sigma = (2 * 2.5 + 1) / 6 = 1. Existing
    values are kept where larger (np.maximum); the parts outside the map are clipped. radius 0 sets
    the single cell to 1. Returns `heatmap`.
    """
    half = int(math.floor(radius))
    sigma = (2 * radius + 1) / 6
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[:2]
    x0, x1 = max(x - half, 0), min(x + half + 1, width)
    y0, y1 = max(y - half, 0), min(y + half + 1, height)
    if x0 >= x1 or y0 >= y1:
        return heatmap
    dx = np.arange(x0, x1) - x
    dy = np.arange(y0, y1) - y
    bump = np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma * sigma))
    region = heatmap[y0:y1, x0:x1]
    np.maximum(region, bump.astype(heatmap.dtype), out=region)
    return heatmap


def encode_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    radius_mode: str = "object",
    min_overlap: float = 0.3,
    centres: bool = False,
) -> dict[str, np.ndarray]:
    """Heatmaps, corner indices and offset targets for one image.

    boxes: [N, 4] x1, y1, x2, y2 in input pixels; labels: [N] ints in [0, num_classes);
    input_size, output_size: (height, width). Any number of objects.

    Boxes are scaled by output / input and clipped to the output map [0, w] x [0, h]. A box with no
    area left (x2 <= x1 or y2 <= y1 after clipping, e.g. entirely outside the map, degenerate, or not
    finite) is DROPPED from every returned array; `keep` lists the surviving input rows. A tiny box
    with positive area is kept even when both corners fall in one cell (the offsets tell them apart).
    A corner exactly on the far border (fx == w) goes to the last cell with offset 1.0, so the box is
    reconstructed exactly.

    radius_mode: "object" (paper): r = int(gaussian_radius(ceil(box h), ceil(box w), min_overlap)) in
    output pixels; "fixed": r = 2.5 for every object (see draw_gaussian for a non-integer radius);
    "none": a single positive cell per corner, no penalty reduction.

    Returns float32 tl_heat, br_heat [C, h, w]; int64 tl_index, br_index [N'] (y * w + x);
    float32 tl_off, br_off [N', 2] (x, y) in [0, 1]; int64 labels [N'] and keep [N'].
    With centres=True (a model with a centre head), also ct_heat [C, h, w] (a gaussian of the same radius
    at each box centre), ct_index [N'] and ct_off [N', 2], built like the corners'.
    """
    if radius_mode not in RADIUS_MODES:
        raise ValueError(f"radius_mode must be one of {', '.join(RADIUS_MODES)}, got {radius_mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    (in_h, in_w), (out_h, out_w) = input_size, output_size
    scaled = boxes * np.array([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h])
    scaled[:, [0, 2]] = np.clip(scaled[:, [0, 2]], 0, out_w)
    scaled[:, [1, 3]] = np.clip(scaled[:, [1, 3]], 0, out_h)
    finite = np.isfinite(scaled).all(axis=1)
    keep = np.flatnonzero(finite & (scaled[:, 2] > scaled[:, 0]) & (scaled[:, 3] > scaled[:, 1]))
    scaled, labels = scaled[keep], labels[keep]

    limit = np.array([out_w - 1, out_h - 1])
    tl_cell = np.minimum(np.floor(scaled[:, :2]), limit).astype(np.int64)
    br_cell = np.minimum(np.floor(scaled[:, 2:]), limit).astype(np.int64)
    centre = (scaled[:, :2] + scaled[:, 2:]) / 2
    ct_cell = np.minimum(np.floor(centre), limit).astype(np.int64)
    tl_heat = np.zeros((num_classes, out_h, out_w), dtype=np.float32)
    br_heat = np.zeros((num_classes, out_h, out_w), dtype=np.float32)
    ct_heat = np.zeros((num_classes, out_h, out_w), dtype=np.float32) if centres else None
    for i, label in enumerate(labels):
        if radius_mode == "object":
            height = math.ceil(scaled[i, 3] - scaled[i, 1])
            width = math.ceil(scaled[i, 2] - scaled[i, 0])
            radius: float = max(0, int(gaussian_radius(height, width, min_overlap)))
        elif radius_mode == "fixed":
            radius = FIXED_RADIUS
        else:
            radius = 0
        draw_gaussian(tl_heat[label], tuple(tl_cell[i]), radius)
        draw_gaussian(br_heat[label], tuple(br_cell[i]), radius)
        if centres:
            draw_gaussian(ct_heat[label], tuple(ct_cell[i]), radius)
    out = {
        "tl_heat": tl_heat,
        "br_heat": br_heat,
        "tl_index": tl_cell[:, 1] * out_w + tl_cell[:, 0],
        "br_index": br_cell[:, 1] * out_w + br_cell[:, 0],
        "tl_off": (scaled[:, :2] - tl_cell).astype(np.float32),
        "br_off": (scaled[:, 2:] - br_cell).astype(np.float32),
        "labels": labels,
        "keep": keep.astype(np.int64),
    }
    if centres:
        out.update(ct_heat=ct_heat, ct_index=ct_cell[:, 1] * out_w + ct_cell[:, 0],
                   ct_off=(centre - ct_cell).astype(np.float32))
    return out


def gather_at(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Read per-cell vectors: maps [B, D, h, w], index [B, M] (flat y * w + x, long) -> [B, M, D].

    Used by the loss (embeddings and offsets at ground-truth corners) and by the decoder (at the
    top-k corners). Padded entries may hold any valid index (0); mask them afterwards.
    """
    b, d = maps.shape[:2]
    flat = maps.reshape(b, d, -1)
    idx = index.long().unsqueeze(1).expand(b, d, index.shape[1])
    return flat.gather(2, idx).transpose(1, 2)
