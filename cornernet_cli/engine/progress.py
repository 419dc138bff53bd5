"""What a user sees while training: a rich progress bar with the loss terms, lr, images/s and ETA.

When the output is not a terminal (CI, a log file), a plain line is printed every `plain_every` steps
instead of redrawing a bar.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, *, total: int | None, start: int = 0, enabled: bool = True, plain_every: int = 50,
                 console: Console | None = None):
        self.total, self.start, self.enabled, self.plain_every = total, start, enabled, plain_every
        self.console = console or Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> TrainProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, *, loss: float, terms: dict[str, float], lr: float, images_per_s: float,
               total: int | None = None) -> None:
        """`total` revises the expected step count (a time-budget run learns it as it goes)."""
        if not self.enabled:
            return
        if total is not None:
            self.total = total
        info = (f"loss {loss:.3f} (" + " ".join(f"{k} {v:.3f}" for k, v in terms.items())
                + f") lr {lr:.2e} {images_per_s:.1f} img/s")
        if self._progress is not None:
            self._progress.update(self._task, completed=step, total=self.total, info=info)
        elif step % self.plain_every == 0 or step == self.total:
            elapsed = time.perf_counter() - self._t0
            done = max(1, step - self.start)
            eta = f" eta {elapsed / done * (self.total - step) / 60:.1f} min" if self.total else ""
            self.console.print(f"step {step}/{self.total or '?'} {info}{eta}", highlight=False)

    def note(self, message: str) -> None:
        if self.enabled:
            (self._progress.console if self._progress else self.console).print(message, highlight=False)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        sys.stderr.flush()
