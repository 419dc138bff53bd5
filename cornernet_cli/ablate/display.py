"""The ablation's progress display: the variant running (i of n), its training steps, the ETA of the whole."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cornernet_cli.ablate.variants import VARIANTS


class Display:
    """One rich display: the variant running (i of n), its training steps, and the ETA of the whole ablation.

    The ETA is the seconds per step measured so far times the steps left, plus the mean evaluation time
    of the variants evaluated so far times the evaluations left. Training progress is read from the
    variant's metrics.jsonl (the training loop's own bar is off while this one shows).
    """

    def __init__(self, *, names: list[str], iters: int, folder: Path, console: Console, enabled: bool):
        self.names, self.iters, self._folder, self.console = names, iters, folder, console
        self.live = enabled and console.is_terminal
        self.enabled = enabled
        self.step_seconds: list[tuple[float, int]] = []  # (seconds, steps) of training measured this session
        self.eval_seconds: list[float] = []
        self.current: str | None = None
        self.steps_left: dict[str, int] = {n: (0 if VARIANTS[n].oracle else iters) for n in names}
        self.evals_left = len(names)
        self._start: tuple[float, int] | None = None
        self._last_info = ""
        self._stop = threading.Event()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 disable=not self.live)
        self.overall = self.progress.add_task("[bold]ablation", total=len(names), info="")
        self.train = self.progress.add_task("train", total=iters, info="", visible=False)

    def __enter__(self) -> Display:
        self.progress.__enter__()
        if self.live:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.progress.__exit__(*exc)

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)

    def eta(self) -> str:
        steps = sum(self.steps_left.values())
        done_s = sum(t for t, _ in self.step_seconds) + (time.perf_counter() - self._start[0] if self._start else 0)
        done_n = sum(n for _, n in self.step_seconds) + (self._live_steps() - self._start[1] if self._start else 0)
        if steps and done_n <= 0:
            return "ETA ?"
        per_eval = sum(self.eval_seconds) / len(self.eval_seconds) if self.eval_seconds else 0.0
        secs = (done_s / done_n * steps if steps else 0.0) + per_eval * self.evals_left
        return f"ETA {int(secs // 3600)}:{int(secs % 3600 // 60):02d}:{int(secs % 60):02d}"

    def begin(self, i: int, name: str, phase: str) -> None:
        self.current = name
        self.progress.update(self.overall, description=f"[bold][{i}/{len(self.names)}] {name}[/] {phase}",
                             info=self.eta())
        self.log(f"[{i}/{len(self.names)}] {name}: {phase} ({self.eta()} for the whole ablation)")

    def train_started(self, name: str) -> None:
        steps = self._read_step(name)
        self._start = (time.perf_counter(), steps)
        self.steps_left[name] = self.iters - steps
        self.progress.update(self.train, description=f"train {name}", completed=steps, visible=True, info="")

    def train_ended(self, name: str) -> None:
        if self._start is not None:
            self.step_seconds.append((time.perf_counter() - self._start[0], self._read_step(name) - self._start[1]))
            self._start = None
        self.steps_left[name] = 0
        self.progress.update(self.train, visible=False)

    def skipped_training(self, name: str) -> None:
        self.steps_left[name] = 0

    def evaluated(self, name: str, seconds: float | None, summary: str) -> None:
        if seconds is not None:
            self.eval_seconds.append(seconds)
        self.evals_left -= 1
        self.steps_left[name] = 0
        self.progress.advance(self.overall)
        self.progress.update(self.overall, info=self.eta())
        self.log(f"    {name}: {summary}")

    def _live_steps(self) -> int:
        return self._read_step(self.current) if self.current else 0

    def _read_step(self, name: str) -> int:
        """The last logged step in <out>/<name>/metrics.jsonl (0 when none)."""
        path = self._folder / name / "metrics.jsonl"
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - 4096))
                tail = f.read().decode(errors="replace").splitlines()
        except OSError:
            return 0
        for line in reversed(tail):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "step" in row and "loss" in row:
                self._last_info = f"loss {row['loss']:.3f} {row.get('images_per_s', 0):.1f} img/s"
                return int(row["step"])
        return 0

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            if self._start is not None and self.current:
                step = self._read_step(self.current)
                self.steps_left[self.current] = self.iters - step
                self.progress.update(self.train, completed=step, info=self._last_info)
                self.progress.update(self.overall, info=self.eta())
