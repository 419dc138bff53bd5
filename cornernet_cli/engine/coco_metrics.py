"""COCO box metrics of detection results: pycocotools' COCOeval, run quietly, and its numbers read out.

Metrics are fractions in 0..1, -1 where COCOeval finds no ground truth for them: AP (IoU .50:.95), AP50, AP75,
APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl, plus AP and AP50 per class.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _empty_results(coco_gt):
    """A COCO results object with no detections (pycocotools' loadRes refuses an empty list)."""
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset.get("images", [])),
                   "categories": list(coco_gt.dataset.get("categories", [])), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def run_cocoeval(coco_gt, results: list[dict], image_ids: Sequence[int]):
    """pycocotools COCOeval (bbox) of `results` (COCO result entries) over `image_ids` of `coco_gt`, evaluated,
    accumulated and summarised (quietly)."""
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds keys to the dicts it gets (id, area, ...): give it copies.
        copies = [dict(r, bbox=list(r["bbox"])) for r in results]
        coco_dt = coco_gt.loadRes(copies) if results else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_metrics(coco_gt, results: list[dict], image_ids: Sequence[int]) -> dict[str, Any]:
    """Run COCOeval (bbox) on `results` (COCO result entries) over `image_ids` of `coco_gt`.

    Returns the 12 summary metrics (METRICS, floats, -1 where undefined) and per_class: {class name: AP}
    (AP at IoU .50:.95, all areas, 100 detections; -1 for classes without ground truth in these images).
    """
    return summary_metrics(run_cocoeval(coco_gt, results, image_ids))


def summary_metrics(ev) -> dict[str, Any]:
    """The metrics of `coco_metrics` from an accumulated COCOeval."""
    out: dict[str, Any] = {name: float(v) for name, v in zip(METRICS, ev.stats)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]; T: IoU thresholds .50, .55, ..., .95
    per_class, per_class50 = {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = ev.cocoGt.cats[cat_id]["name"]
        for table, p in ((per_class, precision[:, :, k, 0, -1]), (per_class50, precision[0, :, k, 0, -1])):
            p = p[p > -1]
            table[name] = float(p.mean()) if p.size else -1.0
    out["per_class"] = per_class
    out["per_class_AP50"] = per_class50
    return out
