"""The pictures of an evaluation (precision-recall and threshold curves, confusion matrix, error gallery),
drawn from an accumulated COCOeval (see cornernet_cli.engine.analysis and cornernet_cli.plots)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.engine import analysis

# Files `write_analysis` writes next to the results (plots_dir).
PLOT_FILES = {"pr_curve": "pr_curve.png", "threshold_curves": "threshold_curves.png",
              "confusion_matrix": "confusion_matrix.png", "confusion_json": "confusion_matrix.json",
              "errors": "errors.jpg", "curves_json": "curves.json"}


def write_analysis(ev, dataset: CocoDetection, out_dir: str | Path, *, gallery: int = 9) -> dict[str, Any]:
    """The pictures of an evaluation, from the accumulated COCOeval `ev` (see cornernet_cli.engine.analysis),
    written into `out_dir`: PLOT_FILES. The confusion matrix and the error gallery use the best pooled-F1
    score threshold; the gallery shows the `gallery` images with the most errors.

    Returns {"best_f1": {threshold, f1, precision, recall, tp, fp, fn}, "plots": {key: path}}.
    """
    # lazy: cornernet_cli.plots imports matplotlib (0.6 s, python -X importtime), paid only when plotting
    from cornernet_cli import plots
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {k: out_dir / v for k, v in PLOT_FILES.items()}
    matches = analysis.class_matches(ev)
    best = analysis.best_f1(analysis.pooled(matches))
    threshold = best["threshold"]
    curves = {"pr": analysis.pr_curves(ev), "threshold": analysis.threshold_curves(matches), "best_f1": best}
    files["curves_json"].write_text(json.dumps(curves))
    plots.pr_curve(curves["pr"], files["pr_curve"])
    plots.threshold_curves(curves["threshold"], best, files["threshold_curves"])
    outcomes = analysis.image_outcomes(ev, threshold if threshold is not None else math.inf)
    confusion = analysis.confusion_matrix(outcomes, [ev.cocoGt.cats[c]["name"] for c in ev.params.catIds])
    files["confusion_json"].write_text(json.dumps({**confusion, "threshold": threshold}, indent=1))
    plots.confusion_matrix(confusion, files["confusion_matrix"], threshold=threshold)
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    worst = sorted(outcomes.values(), key=lambda o: (-o.errors, o.image_id))[:gallery]
    tiles = [(dataset[index_of[o.image_id]].image, o,
              f"{dataset.image_path(index_of[o.image_id]).name}: {len(o.false_positives)} FP, {len(o.misses)} missed")
             for o in worst]
    if tiles:
        plots.error_gallery(tiles, files["errors"], threshold=threshold)
    else:
        del files["errors"]
    return {"best_f1": best, "plots": {k: str(v) for k, v in files.items()}}
