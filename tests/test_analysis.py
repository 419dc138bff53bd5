"""Evaluation pictures: the numbers behind them (PR points, best-F1 threshold, confusion counts, per-image
errors) on a hand-worked case, and the files `write_analysis` writes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.engine import analysis
from cornernet_cli.engine.coco_metrics import run_cocoeval, summary_metrics
from cornernet_cli.engine.eval_plots import PLOT_FILES, write_analysis

# Two images, classes A (id 1) and B (id 2). Image 1: A at (0, 0, 10, 10), B at (20, 20, 10, 10).
# Image 2: A at (0, 0, 20, 20) and A at (50, 50, 10, 10).
GT = [(1, 1, [0, 0, 10, 10]), (1, 2, [20, 20, 10, 10]), (2, 1, [0, 0, 20, 20]), (2, 1, [50, 50, 10, 10])]
# Detections (all class A), by score: 0.9 hits image 1's A; 0.8 lies on image 1's B (a confusion B -> A);
# 0.75 is on empty ground (background); 0.7 hits image 2's large A; 0.5 duplicates it (IoU 0.82, a false
# positive). Image 2's small A is never found.
DT = [(1, 1, [0, 0, 10, 10], 0.9), (1, 1, [20, 20, 10, 10], 0.8), (2, 1, [100, 100, 10, 10], 0.75),
      (2, 1, [0, 0, 20, 20], 0.7), (2, 1, [1, 1, 20, 20], 0.5)]


@pytest.fixture
def case(tmp_path):
    (tmp_path / "images").mkdir()
    images = []
    for i in (1, 2):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), np.full((120, 120, 3), 40 * i, np.uint8))
        images.append({"id": i, "file_name": f"images/{i}.jpg", "width": 120, "height": 120})
    anns = [{"id": n + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for n, (im, c, b) in enumerate(GT)]
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.json").write_text(json.dumps(doc))
    ds = CocoDetection.from_folder(tmp_path, "val")
    results = [{"image_id": im, "category_id": c, "bbox": [float(v) for v in b], "score": s} for im, c, b, s in DT]
    return ds, run_cocoeval(ds.coco, results, ds.image_ids)


def test_pr_points_are_the_hand_worked_ones(case):
    _, ev = case
    curves = analysis.pr_curves(ev)
    recall = np.asarray(curves["recall"])
    # Class A by score: hit, FP, FP, hit, FP over 3 ground-truth boxes: recall 1/3 at precision 1, then 2/3 at
    # precision 1/2; COCO's interpolated precision is the best precision at any recall >= r.
    expect = np.where(recall <= 1 / 3, 1.0, np.where(recall <= 2 / 3, 0.5, 0.0))
    np.testing.assert_allclose(curves["per_class"]["A"], expect)
    np.testing.assert_allclose(curves["per_class"]["B"], 0.0)  # one box, never detected
    np.testing.assert_allclose(curves["mean_50"], expect / 2)
    metrics = summary_metrics(ev)
    assert np.mean(curves["mean_50"]) == pytest.approx(metrics["AP50"])
    assert np.mean(curves["mean_50_95"]) == pytest.approx(metrics["AP"])


def test_best_f1_threshold_and_threshold_curves(case):
    _, ev = case
    matches = analysis.class_matches(ev)
    assert matches["A"].num_gt == 3 and matches["B"].num_gt == 1
    assert sorted(zip(matches["A"].scores, matches["A"].hit)) == [(0.5, False), (0.7, True), (0.75, False),
                                                                  (0.8, False), (0.9, True)]
    # Pooled over 4 ground-truth boxes: F1 = 2TP / (2TP + FP + FN) at 0.9, 0.8, 0.75, 0.7, 0.5 is
    # 2/5, 2/6, 2/7, 4/8, 4/9: the best is keeping score >= 0.7.
    best = analysis.best_f1(analysis.pooled(matches))
    assert best == {"threshold": 0.7, "f1": 0.5, "precision": 0.5, "recall": 0.5, "tp": 2, "fp": 2, "fn": 2}
    curves = analysis.threshold_curves(matches)
    t = curves["thresholds"]
    at = {round(x, 2): i for i, x in enumerate(t)}
    assert curves["all"]["f1"][at[0.7]] == pytest.approx(0.5)
    assert curves["all"]["precision"][at[0.76]] == pytest.approx(1 / 2)  # 0.9 hit, 0.8 FP
    assert curves["all"]["recall"][at[0.95]] == 0.0 and curves["all"]["precision"][at[0.95]] is None
    assert curves["per_class"]["A"]["recall"][at[0.0]] == pytest.approx(2 / 3)
    assert curves["per_class"]["B"]["f1"][at[0.0]] == 0.0


def test_confusion_matrix_and_image_errors(case):
    _, ev = case
    outcomes = analysis.image_outcomes(ev, 0.7)
    one, two = outcomes[1], outcomes[2]
    assert [(h[1], h[2]) for h in one.hits] == [("A", 0.9)] and [(f[1], f[2]) for f in one.false_positives] == \
        [("A", 0.8)] and one.misses == [([20, 20, 10, 10], "B")]
    assert [h[2] for h in two.hits] == [0.7] and [f[2] for f in two.false_positives] == [0.75]
    assert two.misses == [([50, 50, 10, 10], "A")] and one.errors == 2 and two.errors == 2
    cm = analysis.confusion_matrix(outcomes, ["A", "B"])
    assert cm["labels"] == ["A", "B", "background"]
    # rows true A, B, background; columns predicted A, B, background
    assert cm["counts"] == [[2, 0, 1], [1, 0, 0], [1, 0, 0]]
    assert cm["normalised"][0] == pytest.approx([2 / 3, 0, 1 / 3]) and cm["normalised"][1] == [1.0, 0.0, 0.0]
    # at 0.8 image 2's large A, found only by the 0.7 detection, is missed too
    assert sorted(m[0] for m in analysis.image_outcomes(ev, 0.8)[2].misses) == [[0, 0, 20, 20], [50, 50, 10, 10]]
    assert analysis.confusion_matrix(analysis.image_outcomes(ev, 0.8), ["A", "B"])["counts"] == [[1, 0, 2], [1, 0, 0],
                                                                                               [0, 0, 0]]
    # all detections kept: the 0.5 duplicate becomes a background false positive
    assert analysis.confusion_matrix(analysis.image_outcomes(ev, 0.0), ["A", "B"])["counts"] == [[2, 0, 1], [1, 0, 0],
                                                                                               [2, 0, 0]]


def test_write_analysis_files_decode_and_agree(case, tmp_path):
    ds, ev = case
    result = write_analysis(ev, ds, tmp_path / "plots")
    assert set(result["plots"]) == set(PLOT_FILES)
    for key in ("pr_curve", "threshold_curves", "confusion_matrix", "errors"):
        picture = cv2.imread(result["plots"][key])
        assert picture is not None and picture.shape[0] > 200 and picture.std() > 5, key
    assert result["best_f1"]["threshold"] == 0.7
    saved = json.loads((tmp_path / "plots" / "confusion_matrix.json").read_text())
    assert saved["counts"] == [[2, 0, 1], [1, 0, 0], [1, 0, 0]] and saved["threshold"] == 0.7
    curves = json.loads((tmp_path / "plots" / "curves.json").read_text())
    assert curves["best_f1"]["f1"] == 0.5 and len(curves["pr"]["recall"]) == 101
