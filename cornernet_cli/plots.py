"""Plots: training curves and the pictures written after an evaluation.

Each function draws numbers computed elsewhere (metrics.jsonl, cornernet_cli.engine.analysis) into one PNG
and returns its path. Figures are matplotlib `Figure` objects rendered by the Agg canvas, without pyplot, so
drawing never touches a notebook's or GUI's backend and needs no display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cornernet_cli.data.image_io import write_image
from cornernet_cli.drawing import FALSE_POSITIVE, HIT, MISS, Style, draw_box, fit, mosaic

LOSS_TERMS = ("loss", "focal", "pull", "push", "offset")


def _save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def training_curves(metrics_path: str | Path, out: str | Path) -> Path | None:
    """curves PNG from a run's metrics.jsonl: one panel per loss term, the learning rate, and validation AP /
    AP50 when the run validated. None when the file has no training row (nothing to draw)."""
    rows = []
    for line in Path(metrics_path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val" in r]
    if not train_rows:
        return None
    keys = [k for k in (*LOSS_TERMS, "lr") if k in train_rows[0]]
    panels = len(keys) + (1 if val_rows else 0)
    fig = Figure(figsize=(3.2 * panels, 3))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    steps = [r["step"] for r in train_rows]
    for ax, k in zip(axes, keys):
        ax.plot(steps, [r[k] for r in train_rows])
        ax.set_title("learning rate" if k == "lr" else k)
        ax.set_xlabel("step")
        if k in ("loss", "focal") and all(r[k] > 0 for r in train_rows):
            ax.set_yscale("log")
    if val_rows:
        ax = axes[-1]
        for k in ("AP", "AP50"):
            ax.plot([r["step"] for r in val_rows], [r["val"].get(k, math.nan) for r in val_rows], marker="o", label=k)
        ax.set_title("validation")
        ax.set_xlabel("step")
        ax.legend()
    return _save(fig, Path(out), dpi=90)


def pr_curve(curves: dict[str, Any], out: str | Path) -> Path:
    """Precision against recall (`engine.analysis.pr_curves`): one line per class at IoU 0.5 with its AP50
    in the legend (the 20 best when there are more), the class mean at 0.5 and at 0.5:0.95 in bold."""
    recall = np.asarray(curves["recall"])
    fig = Figure(figsize=(7, 5.5))
    ax = fig.subplots()
    per_class = sorted(curves["per_class"].items(), key=lambda kv: -float(np.mean(kv[1])))
    for name, p in per_class[:20]:
        ax.plot(recall, p, lw=1, alpha=0.8, label=f"{name} {np.mean(p):.3f}")
    ax.plot(recall, curves["mean_50"], lw=3, color="black", label=f"all classes, IoU 0.5: AP50 "
            f"{np.mean(curves['mean_50']):.3f}")
    ax.plot(recall, curves["mean_50_95"], lw=3, color="black", ls="--", label=f"all classes, IoU 0.5:0.95: AP "
            f"{np.mean(curves['mean_50_95']):.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="precision-recall (COCO interpolated precision)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, Path(out))


def threshold_curves(curves: dict[str, Any], best: dict[str, Any], out: str | Path) -> Path:
    """Precision, recall and F1 against the score threshold (`engine.analysis.threshold_curves`), per class
    and for all classes pooled, with the best pooled-F1 threshold marked in each panel."""
    t = np.asarray(curves["thresholds"], dtype=np.float64)
    as_array = lambda v: np.array([math.nan if x is None else x for x in v], dtype=np.float64)  # noqa: E731
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    for ax, key in zip(axes, ("precision", "recall", "f1")):
        for name, c in list(curves["per_class"].items())[:20]:
            ax.plot(t, as_array(c[key]), lw=1, alpha=0.7, label=name)
        ax.plot(t, as_array(curves["all"][key]), lw=3, color="black", label="all classes")
        if best.get("threshold") is not None:
            ax.axvline(best["threshold"], color="red", ls="--", lw=1)
            ax.plot([best["threshold"]], [best[key]], "o", color="red",
                    label=f"best F1 {best['f1']:.3f} at {best['threshold']:.3f}")
        ax.set(xlabel="score threshold (keep score >= threshold)", ylabel=key, xlim=(0, 1), ylim=(0, 1.02),
               title=f"{'F1' if key == 'f1' else key} against the score threshold, IoU 0.5")
        ax.grid(alpha=0.3)
    axes[2].legend(loc="lower left", fontsize=8)
    return _save(fig, Path(out))


def confusion_matrix(confusion: dict[str, Any], out: str | Path, *, threshold: float | None) -> Path:
    """The confusion matrix (`engine.analysis.confusion_matrix`) as counts and row-normalised, side by side."""
    labels = confusion["labels"]
    counts = np.asarray(confusion["counts"], dtype=np.float64)
    norm = np.array([[math.nan] * len(labels) if row is None else row for row in confusion["normalised"]])
    n = len(labels)
    side = max(5.0, 0.45 * n + 2.5)
    fig = Figure(figsize=(2 * side + 1, side))
    axes = fig.subplots(1, 2)
    where = "" if threshold is None else f", detections with score >= {threshold:.3f}"
    fig.suptitle(f"confusion matrix at IoU 0.5{where}")
    for ax, values, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], norm, "normalised by true "
                                                                          "class (rows)", "{:.2f}")):
        im = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title=title)
        if n <= 30:
            top = np.nanmax(values) if np.isfinite(values).any() else 1.0
            for i in range(n):
                for j in range(n):
                    if np.isfinite(values[i, j]) and values[i, j] > 0:
                        ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if values[i, j] > 0.6 * top else "black")
    return _save(fig, Path(out))


def error_gallery(images: Sequence[tuple[np.ndarray, Any, str]], out: str | Path, *, threshold: float | None,
                  tile: int = 384) -> Path:
    """A JPEG mosaic of (BGR image, ImageOutcome, title) tiles: hits green, false positives red, misses
    orange, each labelled with its class (and score)."""
    tiles, titles = [], []
    for image, outcome, title in images:
        canvas, s = fit(image, tile)
        style = Style.for_image(canvas.shape)
        xyxy = lambda b, s=s: [b[0] * s, b[1] * s, (b[0] + b[2]) * s, (b[1] + b[3]) * s]  # noqa: E731
        for box, name in outcome.misses:
            draw_box(canvas, xyxy(box), MISS, name, style)
        for box, name, score in outcome.false_positives:
            draw_box(canvas, xyxy(box), FALSE_POSITIVE, f"{name} {score:.2f}", style)
        for box, name, score in outcome.hits:
            draw_box(canvas, xyxy(box), HIT, f"{name} {score:.2f}", style)
        tiles.append(canvas)
        titles.append(title)
    where = "" if threshold is None else f" at score >= {threshold:.3f}"
    picture = mosaic(tiles, titles, heading=f"most errors{where}: green hit, red false positive, orange miss")
    out = Path(out)
    write_image(out, picture, quality=85)
    return out


__all__ = ["confusion_matrix", "error_gallery", "pr_curve", "threshold_curves", "training_curves"]
