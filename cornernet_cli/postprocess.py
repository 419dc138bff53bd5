"""From decoded corners to detections in image pixels: geometry, flip / multi-scale merging, soft-NMS.

The paper's test procedure (and the original code): decode the image and its horizontal mirror as a
batch of two, map the mirror's boxes back (x -> w - x, swapping x1 and x2), undo padding and scaling,
clip to the image, concatenate the detections of both (and of every test scale), apply soft-NMS per
class and keep the best 100. Boxes here are x1, y1, x2, y2 in continuous image pixels.

Deliberate differences from the original: soft-NMS returns only the kept boxes (the original's leaked
discarded and duplicated rows), IoU uses continuous coordinates (no "+1" pixel convention), boxes with
no area after clipping are dropped, and the per-image cut keeps exactly max_per_image boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cornernet_cli.data.letterbox import Letterbox
from cornernet_cli.decode import decode

NMS_METHODS = ("gaussian", "linear", "hard", "none")


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of boxes [..., 4] with boxes [..., N, 4] broadcast as box[..., None, :]; x1, y1, x2, y2."""
    box = box[..., None, :]
    iw = np.clip(np.minimum(box[..., 2], boxes[..., 2]) - np.maximum(box[..., 0], boxes[..., 0]), 0, None)
    ih = np.clip(np.minimum(box[..., 3], boxes[..., 3]) - np.maximum(box[..., 1], boxes[..., 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def soft_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray | None = None,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    max_keep: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (Bodla et al. 2017), independently per class.

    boxes [N, 4] x1, y1, x2, y2; scores [N]; classes [N] ints (None: one class). Repeatedly take the
    highest-scoring remaining box of a class and decay the others of that class by
    gaussian: exp(-iou^2 / sigma); linear: (1 - iou) if iou > iou_threshold; hard: 0 if iou > iou_threshold.
    Boxes whose (decayed) score falls below score_threshold are discarded, as are boxes starting below
    it. method "none" only applies the threshold. Returns (keep [K] indices into the input, new scores
    [K]), sorted by new score, descending; each kept box appears once. max_keep: return only the first
    max_keep of that result (the same rows and order as cutting the full result).

    Vectorised over classes: one step takes one box from every class at once, so the Python loop runs
    as many times as the largest class has boxes, each step being array operations. With max_keep it stops
    once max_keep kept boxes score at least as high as every box still in play: scores only fall, so no later
    box can rank above them, and one that ties ranks after them, being kept later (the sort is stable).
    """
    if method not in NMS_METHODS:
        raise ValueError(f"nms method must be one of {', '.join(NMS_METHODS)}, got {method!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.zeros(len(scores), np.int64) if classes is None else np.asarray(classes).astype(np.int64)
    alive = scores >= score_threshold
    if method == "none" or not alive.any():
        keep = np.flatnonzero(alive)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:max_keep]
        return keep, scores[keep]
    cand = np.flatnonzero(alive)
    # Lay the boxes out as [classes, slots], classes ordered by their box count (largest first).
    labels, inverse, counts = np.unique(classes[cand], return_inverse=True, return_counts=True)
    rank = np.argsort(-counts, kind="stable")
    row_of_label = np.empty_like(rank)
    row_of_label[rank] = np.arange(len(rank))
    rows = row_of_label[inverse]
    order = np.argsort(rows, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts[rank])[:-1]])
    slot = np.empty(len(cand), np.int64)
    slot[order] = np.arange(len(cand)) - starts[rows[order]]
    n_rows, n_slots = len(labels), int(counts.max())
    source = np.full((n_rows, n_slots), -1, np.int64)
    source[rows, slot] = cand
    # Scores of the boxes still in play; -inf marks a taken, discarded or empty slot.
    cur = np.full((n_rows, n_slots), -np.inf)
    cur[rows, slot] = scores[cand]
    x1, y1, x2, y2 = np.zeros((4, n_rows, n_slots))
    for coord, column in zip((x1, y1, x2, y2), boxes[cand].T):
        coord[rows, slot] = column
    area = (x2 - x1) * (y2 - y1)
    sorted_counts = counts[rank]
    all_rows = np.arange(n_rows)

    kept = []
    taken = np.zeros(len(cand))  # the scores kept so far, in order, for the max_keep stop
    n_taken, active = 0, n_rows
    for step in range(n_slots):
        while sorted_counts[active - 1] <= step:  # a class with <= step boxes is already finished
            active -= 1
        best = cur[:active].argmax(axis=1)
        r = all_rows[:active]
        top = cur[r, best]
        has = top > -np.inf
        if not has.any():
            break
        if max_keep is not None and np.count_nonzero(taken[:n_taken] >= top.max()) >= max_keep:
            break
        r, best, top = r[has], best[has], top[has]
        kept.append(source[r, best])
        taken[n_taken : n_taken + len(r)] = top
        n_taken += len(r)
        cur[r, best] = -np.inf
        # IoU of each class's pick with the boxes of its class ([len(r), n_slots]).
        iw = np.maximum(np.minimum(x2[r], x2[r, best][:, None]) - np.maximum(x1[r], x1[r, best][:, None]), 0.0)
        ih = np.maximum(np.minimum(y2[r], y2[r, best][:, None]) - np.maximum(y1[r], y1[r, best][:, None]), 0.0)
        inter = iw * ih
        iou = inter / np.maximum(area[r, best][:, None] + area[r] - inter, 1e-12)
        if method == "gaussian":
            weight = np.exp(-(iou * iou) / sigma)
        elif method == "linear":
            weight = np.where(iou > iou_threshold, 1 - iou, 1.0)
        else:
            weight = np.where(iou > iou_threshold, 0.0, 1.0)
        with np.errstate(invalid="ignore"):  # -inf * 0 is nan, which the comparison below also drops
            decayed = cur[r] * weight
        cur[r] = np.where(decayed >= score_threshold, decayed, -np.inf)
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    new = taken[:n_taken]
    order = np.argsort(-new, kind="stable")[:max_keep]
    return keep[order], new[order]


def detections_to_image(dets: np.ndarray, letterbox: Letterbox, *, mirrored: bool = False) -> np.ndarray:
    """Decoded rows [N, 8+] in output-map coordinates -> image pixels, clipped to the image.

    mirrored: the rows come from the horizontally flipped network input; x is mapped back first
    (x1' = w - x2, x2' = w - x1, w = output width). Rejected rows (score <= -1) and boxes with no area
    after clipping are dropped. Other columns are unchanged.
    """
    dets = np.asarray(dets, dtype=np.float64)
    dets = dets[dets[:, 4] > -1]
    if mirrored:
        out_w = letterbox.output_size[1]
        dets = dets.copy()
        dets[:, [0, 2]] = out_w - dets[:, [2, 0]]
    dets = letterbox.output_to_image(dets)
    height, width = letterbox.image_size
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, width)
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, height)
    return dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]


def image_detections(outputs, letterbox: Letterbox, *, flip: bool = True, k: int = 100, kernel: int = 3,
                     ae_threshold: float = 0.5, num_dets: int = 1000, centre_check: bool = True,
                     centre_n: float = 3.0) -> np.ndarray:
    """Decode one image at one scale, with flip test-time augmentation, into image pixels.

    outputs: CornerOutputs for a batch of 2 ([image, horizontally mirrored image]) when flip, else a
    batch of 1, as the network produced them for `letterbox`'s input. Both are decoded separately
    (as in the original) and the mirror's boxes mapped back. Returns [N, 8] float64: x1, y1, x2, y2
    (image pixels), score, tl_score, br_score, class; not yet NMS-ed (see merge_detections). Centre heads,
    when present and centre_check, apply the centre check with centre_n (see `decode`).
    """
    ct_heat = outputs.ct_heat if centre_check else None
    dets = decode(*outputs.corners(), ct_heat, outputs.ct_off, k=k, kernel=kernel, ae_threshold=ae_threshold,
                  num_dets=num_dets, centre_n=centre_n)
    dets = dets.cpu().numpy()
    expected = 2 if flip else 1
    if len(dets) != expected:
        raise ValueError(f"expected a batch of {expected} (flip={flip}), got {len(dets)}")
    parts = [detections_to_image(dets[0], letterbox)]
    if flip:
        parts.append(detections_to_image(dets[1], letterbox, mirrored=True))
    return np.concatenate(parts, axis=0)


def merge_detections(dets: np.ndarray | Sequence[np.ndarray], *, nms: str = "gaussian", nms_sigma: float = 0.5,
                     nms_iou: float = 0.5, score_threshold: float = 0.001,
                     max_per_image: int = 100) -> np.ndarray:
    """Merge one image's detections (flip halves, all test scales): soft-NMS per class, best max_per_image.

    dets: [N, 6+] or a list of them (e.g. one image_detections result per scale), columns x1, y1, x2,
    y2, score, ..., class (class is the last column). Returns [K, 6] float64: x1, y1, x2, y2, score
    (after soft-NMS), class index; sorted by score, K <= max_per_image.
    """
    if not isinstance(dets, np.ndarray):
        dets = np.concatenate([np.asarray(d, dtype=np.float64).reshape(-1, np.shape(d)[-1]) for d in dets]
                              or [np.zeros((0, 6))], axis=0)
    dets = np.asarray(dets, dtype=np.float64)
    if len(dets) == 0:
        return np.zeros((0, 6))
    keep, scores = soft_nms(dets[:, :4], dets[:, 4], dets[:, -1], method=nms, sigma=nms_sigma,
                            iou_threshold=nms_iou, score_threshold=score_threshold, max_keep=max_per_image)
    return np.concatenate([dets[keep, :4], scores[:, None], dets[keep, -1:]], axis=1)


def to_coco_results(dets: np.ndarray, image_id: int, category_ids: Sequence[int]) -> list[dict]:
    """[K, 6] (x1, y1, x2, y2, score, class index) in image pixels -> COCO result entries.

    category_ids[class index] is the COCO category id. Each entry: image_id, category_id,
    bbox [x, y, width, height] (pixels), score.
    """
    results = []
    for x1, y1, x2, y2, score, cls in np.asarray(dets, dtype=np.float64).reshape(-1, 6):
        results.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[int(cls)]),
            "bbox": [round(float(x1), 3), round(float(y1), 3), round(float(x2 - x1), 3), round(float(y2 - y1), 3)],
            "score": round(float(score), 5),
        })
    return results
