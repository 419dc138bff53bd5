"""Error analysis of a COCO evaluation, read from pycocotools' own arrays (no second evaluator).

- Precision-recall curves: `COCOeval.eval["precision"]` [T, R, K, A, M] at IoU 0.5 per class, and its mean
  over IoU 0.5:0.95 and the classes with ground truth, against the 101 recall thresholds 0, 0.01, ..., 1
  (COCO's interpolated precision, so the mean of a curve is the class's AP50, or the AP).
- Precision / recall / F1 against the score threshold: the per-detection matches in `COCOeval.evalImgs` at
  IoU 0.5 (area "all", the largest maxDets, ignored detections and ground truth left out as COCO does),
  per class and pooled over all classes (counts summed: the F1 of one threshold for every class).
- At one score threshold (the best pooled F1 by default): each image's hits, false positives and misses, and a
  confusion matrix with a background class. A detection kept at the threshold and matched at IoU 0.5 is a
  hit (diagonal); matching is greedy by score, so dropping lower-scored detections never changes a higher one's
  match. A false positive that overlaps (IoU >= 0.5) a missed ground-truth box of another class counts as
  that confusion; other false positives are background (true background, predicted class), other misses
  are predicted background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

IOU = 0.5  # the IoU of every curve except the 0.5:0.95 mean: pycocotools' first threshold
THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)  # score thresholds of the curves written to JSON


def pr_curves(ev) -> dict[str, Any]:
    """Precision against recall from an accumulated COCOeval (bbox).

    Returns {"recall": [R] thresholds, "iou": 0.5, "per_class": {name: [R] precision at IoU 0.5} (classes
    with ground truth only), "mean_50": [R] mean over those classes, "mean_50_95": [R] mean over IoU
    0.5:0.95 and those classes}. mean(mean_50) is AP50 and mean(mean_50_95) is AP, as COCOeval reports them.
    """
    precision = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K], area all, largest maxDets
    names = [ev.cocoGt.cats[c]["name"] for c in ev.params.catIds]
    valid = (precision > -1).all(axis=(0, 1))  # -1: the class has no ground truth in these images
    per_class = {n: precision[0, :, k].tolist() for k, n in enumerate(names) if valid[k]}
    empty = [0.0] * precision.shape[1]
    return {"recall": [float(r) for r in ev.params.recThrs], "iou": IOU, "per_class": per_class,
            "mean_50": precision[0][:, valid].mean(axis=1).tolist() if valid.any() else empty,
            "mean_50_95": precision[:, :, valid].mean(axis=(0, 2)).tolist() if valid.any() else empty}


@dataclass
class ClassMatches:
    """One class's detections over all images at IoU 0.5: scores [D], hit [D] bool, and its ground-truth count."""

    scores: np.ndarray
    hit: np.ndarray
    num_gt: int


def _entries(ev) -> list[dict]:
    """COCOeval.evalImgs entries for area "all" (the others repeat the same matches for other box sizes)."""
    area_all = ev.params.areaRng[0]
    return [e for e in ev.evalImgs if e is not None and list(e["aRng"]) == list(area_all)]


def class_matches(ev) -> dict[str, ClassMatches]:
    """Per class name, its non-ignored detections (score, matched at IoU 0.5) and non-ignored ground truth."""
    names = {c: ev.cocoGt.cats[c]["name"] for c in ev.params.catIds}
    parts: dict[int, list] = {c: [] for c in names}
    num_gt = dict.fromkeys(names, 0)
    for e in _entries(ev):
        keep = ~np.asarray(e["dtIgnore"], dtype=bool)[0]
        hit = np.asarray(e["dtMatches"])[0] > 0
        parts[e["category_id"]].append((np.asarray(e["dtScores"], dtype=np.float64)[keep], hit[keep]))
        num_gt[e["category_id"]] += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
    out = {}
    for c, name in names.items():
        scores = np.concatenate([s for s, _ in parts[c]]) if parts[c] else np.zeros(0)
        hit = np.concatenate([h for _, h in parts[c]]) if parts[c] else np.zeros(0, dtype=bool)
        out[name] = ClassMatches(scores, hit, num_gt[c])
    return out


def pooled(matches: dict[str, ClassMatches]) -> ClassMatches:
    """All classes' detections as one set (counts summed over classes)."""
    ms = list(matches.values())
    return ClassMatches(np.concatenate([m.scores for m in ms] or [np.zeros(0)]),
                        np.concatenate([m.hit for m in ms] or [np.zeros(0, dtype=bool)]),
                        sum(m.num_gt for m in ms))


def counts_at(m: ClassMatches, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) among detections with score >= each threshold."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    order = np.argsort(-m.scores, kind="mergesort")
    scores, hit = m.scores[order], m.hit[order]
    kept = np.searchsorted(-scores, -thresholds, side="right")  # detections with score >= t
    cum_tp = np.concatenate([[0], np.cumsum(hit)])
    return cum_tp[kept], kept - cum_tp[kept]


def prf(tp: np.ndarray, fp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision (NaN with no detection kept), recall (NaN with no ground truth) and F1 = 2TP / (2TP + FP + FN)
    (NaN when all three are 0)."""
    tp, fp = np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / num_gt if num_gt else np.full_like(tp, np.nan)
        f1 = 2 * tp / (2 * tp + fp + (num_gt - tp))
    return precision, recall, f1


def best_f1(m: ClassMatches) -> dict[str, Any]:
    """The score threshold (keep score >= threshold) with the highest F1, searched over every detection's
    score; the highest such threshold on ties. Returns {"threshold", "f1", "precision", "recall", "tp", "fp",
    "fn"}; threshold None (and zeros) when there is no detection or no ground truth."""
    candidates = np.unique(m.scores)[::-1]
    if len(candidates) == 0 or m.num_gt == 0:
        return {"threshold": None, "f1": 0.0, "precision": 0.0, "recall": 0.0, "tp": 0, "fp": 0, "fn": m.num_gt}
    tp, fp = counts_at(m, candidates)
    precision, recall, f1 = prf(tp, fp, m.num_gt)
    i = int(np.argmax(f1))  # first maximum: candidates run from the highest score down
    return {"threshold": float(candidates[i]), "f1": float(f1[i]), "precision": float(precision[i]),
            "recall": float(recall[i]), "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(m.num_gt - tp[i])}


def threshold_curves(matches: dict[str, ClassMatches], thresholds: np.ndarray = THRESHOLDS) -> dict[str, Any]:
    """Precision, recall and F1 at each score threshold, per class and pooled ("all"). JSON-ready lists
    (NaN written as None): {"thresholds", "per_class": {name: {"precision", "recall", "f1"}}, "all": {...}}."""
    def curves(m: ClassMatches) -> dict[str, list]:
        p, r, f = prf(*counts_at(m, thresholds), m.num_gt)
        return {k: [None if np.isnan(v) else float(v) for v in a] for k, a in (("precision", p), ("recall", r),
                                                                                ("f1", f))}

    return {"thresholds": [float(t) for t in thresholds],
            "per_class": {n: curves(m) for n, m in matches.items() if m.num_gt},
            "all": curves(pooled(matches))}


@dataclass
class ImageOutcome:
    """One image at one score threshold. Boxes are COCO [x, y, w, h] pixels; classes are names."""

    image_id: int
    hits: list[tuple[list[float], str, float]] = field(default_factory=list)  # detection box, class, score
    false_positives: list[tuple[list[float], str, float]] = field(default_factory=list)
    misses: list[tuple[list[float], str]] = field(default_factory=list)  # ground-truth box, class

    @property
    def errors(self) -> int:
        return len(self.false_positives) + len(self.misses)


def image_outcomes(ev, threshold: float) -> dict[int, ImageOutcome]:
    """Hits, false positives and misses of every evaluated image when detections below `threshold` are
    dropped (IoU 0.5; ignored detections and ground truth, e.g. crowd, left out)."""
    gt_anns, dt_anns = ev.cocoGt.anns, ev.cocoDt.anns
    names = {c: ev.cocoGt.cats[c]["name"] for c in ev.params.catIds}
    out = {i: ImageOutcome(i) for i in ev.params.imgIds}
    for e in _entries(ev):
        o, name = out[e["image_id"]], names[e["category_id"]]
        score_of = dict(zip(e["dtIds"], e["dtScores"]))
        dt_matches = np.asarray(e["dtMatches"])[0]
        dt_ignore = np.asarray(e["dtIgnore"], dtype=bool)[0]
        for dt_id, score, match, ignore in zip(e["dtIds"], e["dtScores"], dt_matches, dt_ignore):
            if ignore or score < threshold:
                continue
            (o.hits if match > 0 else o.false_positives).append((list(dt_anns[dt_id]["bbox"]), name, float(score)))
        gt_matches = np.asarray(e["gtMatches"])[0]
        for gt_id, match, ignore in zip(e["gtIds"], gt_matches, e["gtIgnore"]):
            if not ignore and (match == 0 or score_of[int(match)] < threshold):
                o.misses.append((list(gt_anns[gt_id]["bbox"]), name))
    return out


def confusion_matrix(outcomes: dict[int, ImageOutcome], class_names: list[str]) -> dict[str, Any]:
    """Counts [K + 1, K + 1] (rows: true class, columns: predicted class; index K is background) from the
    image outcomes, and the same normalised by each row's total (None for an empty row). Each false positive,
    strongest first, takes the missed ground-truth box of another class it overlaps most at IoU >= 0.5."""
    k = len(class_names)
    index = {n: i for i, n in enumerate(class_names)}
    counts = np.zeros((k + 1, k + 1), dtype=np.int64)
    for o in outcomes.values():
        for _, name, _ in o.hits:
            counts[index[name], index[name]] += 1
        misses = list(o.misses)
        for box, name, _ in sorted(o.false_positives, key=lambda f: -f[2]):
            others = [j for j, (_, gt_name) in enumerate(misses) if gt_name != name]
            best = None
            if others:
                ious = mask_utils.iou([box], [misses[j][0] for j in others], [0] * len(others))[0]
                if ious.max() >= IOU:
                    best = others[int(np.argmax(ious))]
            true = k if best is None else index[misses.pop(best)[1]]
            counts[true, index[name]] += 1
        for _, name in misses:
            counts[index[name], k] += 1
    totals = counts.sum(axis=1, keepdims=True)
    normalised = [[float(v) / t[0] for v in row] if t[0] else None for row, t in zip(counts, totals)]
    return {"labels": [*class_names, "background"], "rows": "true class", "columns": "predicted class",
            "iou": IOU, "counts": counts.tolist(), "normalised": normalised}


__all__ = ["IOU", "THRESHOLDS", "ClassMatches", "ImageOutcome", "best_f1", "class_matches", "confusion_matrix",
           "counts_at", "image_outcomes", "pooled", "pr_curves", "prf", "threshold_curves"]
