"""`evaluate` of the Python API: COCO AP of a model on a dataset split, as `cornernet eval` computes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cornernet_cli.api.detector import Detector, model_source
from cornernet_cli.config import DecodeConfig
from cornernet_cli.engine import evaluate as evaluation


@dataclass(frozen=True)
class Evaluation:
    """COCO metrics of a model on a dataset split (what `cornernet eval` prints and writes).

    ap, ap50, ap75: COCO box AP at IoU .50:.95, .50 and .75, fractions in 0..1 (-1 where the split has no
    ground truth). per_class: {class name: AP}. metrics: everything metrics.json holds (the 12 COCO summary
    metrics, per-class AP and AP50, time per image in ms per stage, the settings). results_file: the COCO
    results JSON; metrics_file: metrics.json beside it. str(): one line, AP / AP50 / AP75 in percent.
    """

    ap: float
    ap50: float
    ap75: float
    per_class: dict[str, float]
    metrics: dict[str, Any]
    results_file: Path
    metrics_file: Path

    def __str__(self) -> str:
        return evaluation.summary_line(self.metrics)


def evaluate(
    model: str | Path | Detector | None,
    data: str | Path,
    *,
    split: str = "val",
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    batch_size: int = 1,
    max_images: int | None = None,
    oracle: str | None = None,
    oracle_embeddings: str = "gt",
    centre_check: bool = True,
    device: str = "cpu",
    amp: str = "auto",
    out: str | Path = "results.json",
    offline: bool = False,
    exist_ok: bool = False,
    progress: bool = True,
) -> Evaluation:
    """COCO AP (pycocotools) of a model on a split of a dataset folder: `cornernet eval`, same defaults.

    model: a checkpoint file, original / mmdetection weights, a named model (offline: never download it) or
    a `Detector` (None only with oracle="heatmaps+offsets"). scales: test scales; None: the one the model was
    trained for. flip: the paper's test-time flip; None: the preset's test procedure (on for the
    paper's hourglass; off for small, small-fast and squeeze).
    oracle: heatmaps or heatmaps+offsets replace the network's outputs by ground truth (the paper's error
    analysis), with oracle_embeddings gt or trained. Writes the COCO results JSON to `out` and metrics.json
    beside it (results of another evaluation there are refused unless exist_ok).

    Example:
        >>> metrics = evaluate(checkpoint, data, split="val", out="eval/results.json", progress=False)
        >>> sorted(metrics.per_class), metrics.metrics["images"]
        (['ellipse', 'rectangle'], 4)
    """
    m = evaluation.evaluate(checkpoint=None if model is None else model_source(model), data_dir=data, split=split,
                            device=device, flip=flip, scales=tuple(scales) if scales else None, batch_size=batch_size,
                            max_images=max_images, oracle=oracle, oracle_embeddings=oracle_embeddings, out=out,
                            params=DecodeConfig(centre_check=centre_check), progress=progress, amp=amp,
                            offline=offline, exist_ok=exist_ok)
    return Evaluation(ap=m["AP"], ap50=m["AP50"], ap75=m["AP75"], per_class=dict(m["per_class"]), metrics=m,
                      results_file=Path(m["results"]), metrics_file=Path(m["metrics_file"]))
