"""The paper's ablations (Law & Deng, the ablation study) on any COCO-format dataset.

Variants differ in one thing only; seed, data, schedule, budget and test-time settings are shared:

    baseline             corner pooling on, object-dependent radius (the paper's CornerNet)
    no-corner-pool       corner pooling off                               (paper, COCO val: 36.5 vs 38.4 AP)
    radius-fixed         penalty reduction with a fixed radius            (35.6)
    radius-none          no penalty reduction (one positive pixel)        (32.9)
    gt-heatmaps          the baseline, ground-truth heatmaps              (73.1)
    gt-heatmaps-offsets  the baseline, ground-truth heatmaps and offsets  (86.1)

Output folder `out_dir`:

    <variant>/           a `cornernet train` run folder (trained variants), results.json (every variant's row:
                         settings and metrics) and detections.json (its COCO detections)
    ablation.json        settings, budget, machine, date and every variant's results (rewritten after each)
    ablation.md          the same as Markdown tables in the paper's form, the paper's AP beside ours

A rerun with the same settings skips variants that are done (results.json with the same evaluation
settings and a finished run) and resumes an interrupted training run exactly (`train(resume=True)`).

The oracle variants use `evaluate_model(oracle=..., oracle_gt_embeddings=False)`: ground-truth heatmaps (and
offsets) with the baseline's trained embeddings, as in the paper's error analysis.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from cornernet_cli.atomic import atomic_write, write_json
from cornernet_cli.errors import CornerNetError, SettingError

METRIC_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The step schedule of presets whose training default is a time budget (the CPU presets): equal step counts
# make the variants comparable, and these are the values the published ablations ran with.
ABLATION_SCHEDULE = dict(iters=3000, lr_steps=(2400,), warmup_iters=100, workers=2)


@dataclass(frozen=True)
class Variant:
    name: str
    change: str  # what differs from the baseline, in words
    corner_pool: bool = True
    radius: str = "object"
    oracle: str | None = None  # evaluate the baseline with ground truth instead of training
    paper_ap: float | None = None  # the paper's COCO val AP (Hourglass-104, 250k iterations)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("baseline", "none (corner pooling, object radius)", paper_ap=38.4),
    Variant("no-corner-pool", "corner pooling off", corner_pool=False, paper_ap=36.5),
    Variant("radius-fixed", "penalty reduction: fixed radius 2.5", radius="fixed", paper_ap=35.6),
    Variant("radius-none", "penalty reduction: none", radius="none", paper_ap=32.9),
    Variant("gt-heatmaps", "ground-truth heatmaps", oracle="heatmaps", paper_ap=73.1),
    Variant("gt-heatmaps-offsets", "ground-truth heatmaps and offsets", oracle="heatmaps+offsets",
            paper_ap=86.1),
)}

# The paper's three studies and the variants each compares (table order).
STUDIES: dict[str, tuple[str, ...]] = {
    "Corner pooling": ("no-corner-pool", "baseline"),
    "Penalty reduction": ("radius-none", "radius-fixed", "baseline"),
    "Error analysis": ("baseline", "gt-heatmaps", "gt-heatmaps-offsets"),
}

RADIUS_VARIANT = {"none": "radius-none", "fixed": "radius-fixed", "object": "baseline"}


def select_variants(*, corner_pool: bool = False, radius: Sequence[str] | None = None,
                    error_analysis: bool = False) -> list[str]:
    """Variant names for the selection flags, in run order (trained variants first, the baseline first of
    all, then the oracles). No flag selects every variant. radius: any of "none", "fixed", "object"."""
    if not corner_pool and not radius and not error_analysis:
        return list(VARIANTS)
    chosen: set[str] = set()
    if corner_pool:
        chosen |= {"baseline", "no-corner-pool"}
    for r in radius or ():
        if r not in RADIUS_VARIANT:
            raise SettingError(f"radius takes none, fixed, object (comma-separated), got {r!r}")
        chosen.add(RADIUS_VARIANT[r])
    if error_analysis:
        chosen |= {"baseline", "gt-heatmaps", "gt-heatmaps-offsets"}
    return [name for name in VARIANTS if name in chosen]


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model (/proc/cpuinfo), core count, torch version and threads, and the GPU name on CUDA."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device, "python": platform.python_version()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---- one variant ----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _check_same_setup(folder: Path, want: dict[str, Any], *, exist_ok: bool) -> bool:
    """A variant folder from a different budget / preset must not be resumed or skipped silently: refused,
    or with `exist_ok` reported as stale (True: to be trained afresh)."""
    config = _read_json(folder / "config.json")
    if config is None:
        return False
    have = {"iters": config["train"]["iters"], "batch_size": config["train"]["batch_size"],
            "seed": config["train"]["seed"], "input_size": config["data"]["input_size"],
            "radius_mode": config["data"]["radius_mode"], "corner_pool": config["model"]["corner_pool"],
            "channels": list(config["model"]["channels"])}
    diff = {k: (have[k], want[k]) for k in want if have.get(k) != want[k]}
    if diff and not exist_ok:
        detail = ", ".join(f"{k} {a} there vs {b} asked" for k, (a, b) in diff.items())
        raise CornerNetError(f"{folder / 'config.json'} was trained with other settings ({detail}); "
                             f"replace it with --exist-ok (exist_ok=True) or use another --out")
    return bool(diff)


@dataclass
class Settings:
    """What every variant shares (see `run_ablation`)."""

    data_dir: Path
    out_dir: Path
    preset: str
    split: str
    iters: int
    minutes: float | None
    batch_size: int
    input_size: int
    seed: int
    workers: int
    device: str
    flip: bool
    max_images: int | None
    train_cfg: Any = None
    exist_ok: bool = False

    def job(self) -> dict[str, Any]:
        """What makes two ablations the same (recorded in ablation.json): the data and the training settings.
        Evaluation settings are not part of it: changing them re-evaluates the trained variants (documented
        in docs/ablations.md); nor is the device."""
        return {"command": "ablate", "data": str(self.data_dir.resolve()), "preset": self.preset,
                "iters": self.iters, "minutes": self.minutes, "batch_size": self.batch_size,
                "input_size": self.input_size, "seed": self.seed}

    def eval_key(self) -> dict[str, Any]:
        return {"split": self.split, "flip": self.flip, "max_images": self.max_images}


def _train_variant(v: Variant, s: Settings, *, log: Any, progress: bool) -> tuple[str, dict[str, Any]]:
    """Train (or resume) one variant in out_dir/<name>. Returns (status, training facts)."""
    from cornernet_cli.config import DataConfig, model_config
    from cornernet_cli.engine.train import train

    folder = s.out_dir / v.name
    mcfg = model_config(s.preset, 1, corner_pool=v.corner_pool)
    stale = _check_same_setup(folder, {"iters": s.iters, "batch_size": s.batch_size, "seed": s.seed,
                                       "input_size": s.input_size, "radius_mode": v.radius,
                                       "corner_pool": v.corner_pool, "channels": list(mcfg.channels)},
                              exist_ok=s.exist_ok)
    book_path = folder / "ablate_time.json"
    if stale:  # replaced (exist_ok): its evaluation goes with it
        (folder / "results.json").unlink(missing_ok=True)
        (folder / "detections.json").unlink(missing_ok=True)
    book = (None if stale else _read_json(book_path)) or {"train_seconds": 0.0}
    summary = (None if stale else _read_json(folder / "summary.json")) or {}
    done = summary.get("status") == "finished" or (summary.get("status") == "time limit" and s.minutes is not None)
    if not done:
        resume = not stale and (folder / "state.safetensors").is_file() and (folder / "last.safetensors").is_file()
        remaining = None if s.minutes is None else max(0.0, s.minutes - book["train_seconds"] / 60)
        if remaining is not None and remaining <= 0 and resume:
            summary = {**summary, "status": "time limit"}
        else:
            if resume:
                log(f"    {v.name}: resuming the interrupted run in {folder}")
            t0 = time.perf_counter()
            dcfg = dataclasses.replace(DataConfig(), input_size=s.input_size, radius_mode=v.radius)
            result = train(data_dir=s.data_dir, out_dir=folder, model_cfg=mcfg, data_cfg=dcfg, train_cfg=s.train_cfg,
                           val_dir=None, device=s.device, resume=resume, exist_ok=not resume,
                           log_every=max(1, min(10, s.iters // 20)),
                           save_every=max(1, min(500, s.iters // 4)), max_minutes=remaining, progress=progress)
            book["train_seconds"] += time.perf_counter() - t0
            book_path.write_text(json.dumps(book))
            if result.status in ("interrupted", "stopped"):
                return "interrupted", {}
            summary = _read_json(folder / "summary.json") or {"status": result.status, "step": result.step}
    steps = int(summary.get("step", 0))
    secs = float(book["train_seconds"])
    return "done", {"status": summary.get("status"), "steps": steps, "train_seconds": round(secs, 1),
                    "images_per_s": round(steps * s.batch_size / secs, 2) if secs > 0 else None,
                    "checkpoint": str(folder / "last.safetensors")}


def _evaluate_variant(v: Variant, s: Settings, checkpoint: Path, detections: Path) -> dict[str, Any]:
    """The variant's metrics (METRIC_COLUMNS, AR100, per_class, images, detections, eval_seconds); its COCO
    detections go to `detections`."""
    from cornernet_cli.engine.checkpoint import load_model
    from cornernet_cli.engine.evaluate import evaluate_model

    model, meta = load_model(checkpoint, device=s.device)
    t0 = time.perf_counter()
    m = evaluate_model(model, s.data_dir, s.split, device=s.device, class_names=meta["class_names"], flip=s.flip,
                       max_images=s.max_images, oracle=v.oracle, oracle_gt_embeddings=False,
                       results_path=detections)
    keep = {k: m[k] for k in (*METRIC_COLUMNS, "AR100", "per_class", "images", "detections")}
    return {**keep, "eval_seconds": round(time.perf_counter() - t0, 1)}


# ---- the tables -----------------------------------------------------------------------------------------


def _pct(x: Any) -> str:
    return "-" if x is None or x < 0 else f"{100 * x:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """ablation.md: the settings and one table per study (AP columns in percent, the paper's AP beside)."""
    st, mc = report["settings"], report["machine"]
    budget = f"{st['iters']} iterations" + (f" or {st['minutes_per_variant']} min" if st["minutes_per_variant"]
                                            else "")
    lines = [
        "# CornerNet ablations", "",
        f"- dataset: `{st['data']}`, evaluated on split `{st['split']}` "
        f"({'flip' if st['flip'] else 'no flip'}, single scale"
        + (f", first {st['max_images']} images" if st["max_images"] else "") + ")",
        f"- preset `{st['preset']}`, input {st['input_size']} px, batch {st['batch_size']}, seed {st['seed']}; "
        f"budget per variant: {budget}",
        f"- machine: {mc['cpu']}, {mc['cores']} cores, torch {mc['torch']} ({mc['threads']} threads), "
        f"device {mc['device']}" + (f" ({mc['gpu']})" if mc.get("gpu") else ""),
        f"- date: {report['date']}", "",
        "AP columns are COCO box AP in percent. \"paper AP\" is the paper's COCO val figure (Hourglass-104, 250k "
        "iterations of batch 49): it shows the direction and size of each effect, not a number to match on "
        "another dataset and budget.", "",
    ]
    rows = {r["variant"]: r for r in report["variants"]}
    for title, names in STUDIES.items():
        names = [n for n in names if n in report["selected"]]
        if len(names) < 2 and not any(VARIANTS[n].oracle for n in names):
            continue
        lines += [f"## {title}", "",
                  "| variant | change | steps | train min | CPU min | img/s | " + " | ".join(METRIC_COLUMNS)
                  + " | paper AP |",
                  "|---|---|--:|--:|--:|--:|" + "--:|" * len(METRIC_COLUMNS) + "--:|"]
        for n in names:
            v, r = VARIANTS[n], rows.get(n)
            if r is None:
                cells = ["pending"] * 4 + [""] * len(METRIC_COLUMNS)
            else:
                trained = rows.get(n if v.oracle is None else "baseline", {})
                cells = [str(trained.get("steps", "-")),
                         f"{trained['train_seconds'] / 60:.1f}" if trained.get("train_seconds") is not None else "-",
                         f"{trained['cpu_min']:.1f}" if trained.get("cpu_min") is not None else "-",
                         f"{trained['images_per_s']:.1f}" if trained.get("images_per_s") else "-",
                         *(_pct(r["metrics"].get(c)) for c in METRIC_COLUMNS)]
                if v.oracle:
                    cells[:4] = ["(baseline)"] * 4
            lines.append(f"| {n} | {v.change} | " + " | ".join(cells) + f" | {v.paper_ap} |")
        lines.append("")
    if any(VARIANTS[n].oracle for n in report["selected"]):
        lines += ["The ground-truth rows replace the heatmaps (and offsets) by ground truth and keep the baseline's "
                  "trained embeddings, as the paper's error analysis does.", ""]
    return "\n".join(lines)


def _write_report(s: Settings, selected: list[str], results: dict[str, dict], machine: dict, date: str) -> dict:
    for name, row in results.items():  # training CPU time (threads summed, validation excluded) from the run
        cpu_min = (_read_json(s.out_dir / name / "summary.json") or {}).get("cpu_min")
        if cpu_min is not None:
            row["cpu_min"] = cpu_min
    report = {
        "settings": {"data": str(s.data_dir), "split": s.split, "preset": s.preset, "iters": s.iters,
                     "minutes_per_variant": s.minutes, "batch_size": s.batch_size, "input_size": s.input_size,
                     "seed": s.seed, "flip": s.flip, "max_images": s.max_images, "device": s.device},
        "machine": machine, "date": date, "selected": selected, "job": s.job(),
        "variants": [results[n] for n in selected if n in results],
        "paper_ap": {n: VARIANTS[n].paper_ap for n in selected},
    }
    write_json(s.out_dir / "ablation.json", report, indent=2)
    atomic_write(s.out_dir / "ablation.md", lambda tmp: Path(tmp).write_text(render_markdown(report)))
    return report


# ---- progress display -----------------------------------------------------------------------------------


class _Display:
    """One rich display: the variant running (i of n), its training steps, and the ETA of the whole ablation.

    The ETA is the seconds per step measured so far times the steps left, plus the mean evaluation time
    of the variants evaluated so far times the evaluations left. Training progress is read from the
    variant's metrics.jsonl (the training loop's own bar is off while this one shows).
    """

    def __init__(self, *, names: list[str], iters: int, folder: Path, console: Console, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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

    def __enter__(self) -> _Display:
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


# ---- the command ----------------------------------------------------------------------------------------


@dataclass
class AblationResult:
    out_dir: Path
    status: str  # finished | interrupted
    report: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def run_ablation(
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    variants: Sequence[str],
    preset: str = "small",
    iters: int | None = None,
    minutes_per_variant: float | None = None,
    batch_size: int | None = None,
    input_size: int | None = None,
    split: str | None = None,
    flip: bool = True,
    max_images: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    console: Console | None = None,
    exist_ok: bool = False,
) -> AblationResult:
    """Train and evaluate `variants` (names from VARIANTS) with one shared budget; write out_dir/ablation.{md,json}.

    iters: training steps per variant (default: the preset's TRAIN_DEFAULTS, else ABLATION_SCHEDULE's);
    minutes_per_variant: also stop each variant after this much training time (then the step counts may
    differ; the table records them).
    The lr is divided by 10 at 90% of `iters`. split: evaluation split (default: test if the data has one,
    else val); flip: the paper's test-time flip; max_images: evaluate the first N images only.
    Oracle variants evaluate the baseline's final checkpoint (out_dir/baseline/last.safetensors).
    An out_dir holding an ablation with other settings (ablation.json's job) is refused unless `exist_ok`
    (then its variants are trained and evaluated afresh); out_dir is locked while this runs.
    """
    from cornernet_cli.config import PRESETS, TRAIN_DEFAULTS, TrainConfig
    from cornernet_cli.data.coco import available_splits
    from cornernet_cli.engine.device import resolve_device

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    unknown = [n for n in variants if n not in VARIANTS]
    if unknown or not variants:
        raise CornerNetError(f"unknown ablation variants {unknown}; choose from {', '.join(VARIANTS)}", 2)
    if preset not in PRESETS:
        raise SettingError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if not data_dir.is_dir():
        raise SettingError(f"data_dir {data_dir} is not a folder")
    splits = available_splits(data_dir)
    if "train" not in splits:
        raise CornerNetError(f"dataset {data_dir} has no train split (found: {', '.join(splits) or 'none'})", 2)
    split = split or ("test" if "test" in splits else "val")
    if split not in splits:
        raise SettingError(f"split {split!r} is not in {data_dir} (found: {', '.join(splits)})")
    order = [n for n in VARIANTS if n in variants]
    if any(VARIANTS[n].oracle for n in order) and "baseline" not in order:
        order.insert(0, "baseline")
    d = TRAIN_DEFAULTS[preset] if "iters" in TRAIN_DEFAULTS[preset] else {**TRAIN_DEFAULTS[preset],
                                                                           **ABLATION_SCHEDULE}
    steps = int(iters or d["iters"])
    s = Settings(data_dir=data_dir, out_dir=out_dir, preset=preset, split=split, iters=steps,
                 minutes=minutes_per_variant, batch_size=int(batch_size or d["batch_size"]),
                 input_size=int(input_size or d["input_size"]), seed=seed,
                 workers=int(d["workers"] if workers is None else workers), device=str(resolve_device(device)),
                 flip=flip, max_images=max_images, exist_ok=exist_ok)
    s.train_cfg = TrainConfig(batch_size=s.batch_size, iters=steps, lr=d["lr"],
                              lr_steps=tuple(d["lr_steps"]) if iters is None else (int(steps * 0.9),),
                              warmup_iters=min(d["warmup_iters"], steps // 10), grad_clip=d.get("grad_clip", 0.0),
                              workers=s.workers, seed=seed)
    from cornernet_cli.engine.rundir import claim_output

    with claim_output(out_dir, job=s.job(), record_file=out_dir / "ablation.json", exist_ok=exist_ok) as replacing:
        console = console or Console(stderr=True)
        machine, date = machine_info(s.device), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        results: dict[str, dict] = {}
        skipped: list[str] = []
        trained: dict[str, dict] = {}
        display = _Display(names=order, iters=steps, folder=out_dir, console=console, enabled=progress)
        with display:
            for i, name in enumerate(order, 1):
                v = VARIANTS[name]
                base = "baseline" if v.oracle else name
                prior = None if replacing else _read_json(out_dir / name / "results.json")
                if base not in trained:
                    summary = _read_json(out_dir / base / "summary.json") or {}
                    finished = summary.get("status") == "finished" or (summary.get("status") == "time limit"
                                                                       and minutes_per_variant is not None)
                    if not finished:
                        display.begin(i, name, "training" + (" the baseline" if base != name else ""))
                        display.train_started(base)
                    try:
                        status, facts = _train_variant(VARIANTS[base], s, log=display.log,
                                                       progress=progress and not display.live)
                    finally:
                        if not finished:
                            display.train_ended(base)
                    if status == "interrupted":
                        report = _write_report(s, order, results, machine, date)
                        return AblationResult(out_dir, "interrupted", report, skipped)
                    trained[base] = facts
                    if finished:
                        display.skipped_training(base)
                facts = trained[base]
                ckpt_step = facts["steps"]
                if (prior and prior.get("eval") == s.eval_key() and prior.get("trained_steps") == ckpt_step
                        and prior.get("metrics")):
                    results[name] = prior
                    skipped.append(name)
                    display.evaluated(name, None, f"done before, skipped (AP {_pct(prior['metrics']['AP'])})")
                else:
                    display.begin(i, name, "evaluating" + (f" with oracle {v.oracle}" if v.oracle else ""))
                    metrics = _evaluate_variant(v, s, Path(facts["checkpoint"]), out_dir / name / "detections.json")
                    eval_s = metrics.pop("eval_seconds")
                    row = {"variant": name, "change": v.change, "corner_pool": v.corner_pool, "radius": v.radius,
                           "oracle": v.oracle, "trained_steps": ckpt_step, "eval": s.eval_key(),
                           "eval_seconds": eval_s, "metrics": metrics, "paper_ap": v.paper_ap,
                           **({k: facts[k] for k in ("status", "steps", "train_seconds", "images_per_s")}
                              if not v.oracle else {})}
                    write_json(out_dir / name / "results.json", row, indent=2)
                    results[name] = row
                    display.evaluated(name, eval_s, " ".join(f"{c} {_pct(metrics[c])}" for c in METRIC_COLUMNS[:3]))
                _write_report(s, order, results, machine, date)
        report = _write_report(s, order, results, machine, date)
    return AblationResult(out_dir, "finished", report, skipped)


__all__ = ["METRIC_COLUMNS", "STUDIES", "VARIANTS", "AblationResult", "Variant", "machine_info", "render_markdown",
           "run_ablation", "select_variants"]
