"""What a training run records besides its checkpoints, in its run folder (rank 0 only).

    metrics.jsonl   one JSON object per logged step (loss terms, lr, images/s) and per validation ("val")
    tensorboard/    with tensorboard=True: the same rows as TensorBoard event files (engine/board.py)
    summary.json    how the run ended: status, step, best AP, images/s, per-rank weight checksums

Every row carries both clocks of the training steps, cumulative over resumes: train_min (wall-clock
minutes) and cpu_min (process CPU minutes, threads summed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from cornernet_cli.engine.board import Board
from cornernet_cli.engine.state import RunState


def open_metrics(path: Path, resumed_at: int | None) -> IO[str]:
    """metrics.jsonl for appending: a fresh run starts it empty; a resumed one keeps the rows up to the step
    it resumes from (rows logged after the last save are logged again by the replay)."""
    if resumed_at is None or not path.is_file():
        return path.open("w")
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= resumed_at:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    path.write_text("".join(f"{line}\n" for line in kept))
    return path.open("a")


class RunLog:
    """metrics.jsonl of the run in `out_dir`, and its TensorBoard events with `tensorboard`. `resumed_at`:
    the step a resumed run continues from (None for a fresh run). Writes nothing unless `enabled` (rank 0)."""

    def __init__(self, out_dir: Path, *, resumed_at: int | None, tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.board = Board(out_dir / "tensorboard", purge_step=resumed_at) if tensorboard and enabled else None
        self.file = open_metrics(out_dir / "metrics.jsonl", resumed_at) if enabled else None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (a dict with "step"), flushed, so that a kill loses nothing logged."""
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.board is not None:
            self.board.write(row)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()


class Throughput:
    """Training images per second (all ranks together) over the last `window` steps, by the wall clock,
    data loading included."""

    def __init__(self, window: int = 20):
        self.window = window
        self.images_per_s = 0.0
        self._steps: list[tuple[float, int]] = []  # (seconds, images) per step
        self._last = time.perf_counter()

    def update(self, images: int) -> float:
        """Count a step of `images` images that ended now; returns the images per second."""
        now = time.perf_counter()
        self._steps = [*self._steps, (now - self._last, images)][-self.window:]
        self._last = now
        self.images_per_s = sum(n for _, n in self._steps) / max(1e-9, sum(t for t, _ in self._steps))
        return self.images_per_s


def clocks(state: RunState) -> dict[str, float]:
    """The run's training time so far in minutes: train_min (wall-clock) and cpu_min (process CPU)."""
    return {"train_min": round(state.train_s / 60, 3), "cpu_min": round(state.cpu_s / 60, 3)}


def train_row(state: RunState, *, loss: float, terms: dict[str, float], lr: float, images_per_s: float
              ) -> dict[str, Any]:
    """The metrics.jsonl row of the step just done: the loss, its weighted terms, lr, images/s, the time."""
    return {"step": state.step, "loss": loss, **terms, "lr": lr, "images_per_s": round(images_per_s, 3),
            "time": time.time(), **clocks(state)}


def val_row(state: RunState, metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl row of a validation at the current step: the COCO metrics under "val"."""
    return {"step": state.step, **clocks(state), "val": metrics}


def write_summary(path: Path, *, status: str, state: RunState, iters: int, time_budget: float, time_clock: str,
                  images_per_s: float, world_size: int, checksums: list[float], last_metrics: dict[str, Any]
                  ) -> None:
    """summary.json: `status` (finished | interrupted | stopped | time limit), the step reached, the schedule
    (`iters` steps, or a `time_budget` in minutes on `time_clock`), the best AP and the last logged row."""
    budgeted = time_budget > 0
    summary = {"status": status, "step": state.step, "iters": None if budgeted else iters,
               "best_ap": state.best_ap, "time_budget": time_budget or None,
               "time_clock": time_clock if budgeted else None, "images_per_s": round(images_per_s, 3),
               "world_size": world_size, "param_checksums": checksums, "last_metrics": last_metrics,
               **clocks(state)}
    path.write_text(json.dumps(summary, indent=2))


__all__ = ["RunLog", "Throughput", "clocks", "open_metrics", "train_row", "val_row", "write_summary"]
