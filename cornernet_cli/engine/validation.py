"""Validation during training: COCO AP of the model being trained (its weight average with --ema) on a
validation split, one row in metrics.jsonl per validation, and best.safetensors kept at the best AP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cornernet_cli.engine.build import TrainParts
from cornernet_cli.engine.evaluate import evaluate_model
from cornernet_cli.engine.finetune import keep_frozen_statistics
from cornernet_cli.engine.progress import TrainProgress
from cornernet_cli.engine.runlog import RunLog, val_row
from cornernet_cli.engine.state import Checkpointer, RunState


@dataclass(frozen=True)
class Validator:
    """Evaluates on `split` of the dataset folder `val_dir`, without flip, at test `scales` (fractions of the
    image size), on at most `max_images` images (None: all). `freeze`: the frozen part of the model, whose
    BatchNorm statistics stay fixed when training resumes."""

    val_dir: str | Path
    split: str
    device: torch.device
    class_names: list[str]
    category_ids: list[int]
    scales: tuple[float, ...]
    max_images: int | None
    amp: str
    freeze: str

    def evaluate(self, parts: TrainParts) -> dict[str, Any]:
        """The COCO metrics of `parts.eval_model` ("AP", "AP50", ... fractions in 0 ... 1); the model being
        trained is back in training mode afterwards."""
        parts.eval_model.eval()
        result = evaluate_model(parts.eval_model, self.val_dir, self.split, device=self.device,
                                class_names=self.class_names, category_ids=self.category_ids, flip=False,
                                scales=self.scales, max_images=self.max_images, amp=self.amp, progress=False)
        parts.model.train()
        keep_frozen_statistics(parts.model, self.freeze)
        return result


def validate_and_save(state: RunState, *, validator: Validator, parts: TrainParts, saver: Checkpointer, log: RunLog,
                      bar: TrainProgress) -> None:
    """Validate at `state.step`, record the row, raise `state.best_ap` when beaten and save (best.safetensors
    too when it is). A validation that fails saves first: it must not lose the training done so far."""
    try:
        result = validator.evaluate(parts)
    except BaseException:
        saver.save(state)
        raise
    ap = float(result.get("AP", -1.0))
    improved = state.best_ap is None or ap > state.best_ap
    if improved:
        state.best_ap = ap
    log.write(val_row(state, result))
    bar.note(f"step {state.step}: val AP {ap:.4f} AP50 {float(result.get('AP50', -1)):.4f}"
             + (" (best)" if improved else ""))
    saver.save(state, best=improved)


__all__ = ["Validator", "validate_and_save"]
