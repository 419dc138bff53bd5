"""`run_ablation`: train and evaluate each variant in its own folder, skipping what is done, resuming what was
interrupted, and rewriting the report after each variant."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from cornernet_cli.ablate.display import Display
from cornernet_cli.ablate.report import METRIC_COLUMNS, machine_info, pct, read_json, write_report
from cornernet_cli.ablate.settings import Settings, evaluation_split, shared_overrides
from cornernet_cli.ablate.variants import VARIANTS, Variant, run_order
from cornernet_cli.atomic import write_json
from cornernet_cli.engine import checkpoint as checkpoint_io
from cornernet_cli.engine import train as engine_train
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.evaluate import evaluate_model
from cornernet_cli.engine.rundir import claim_output
from cornernet_cli.errors import CornerNetError


def _check_same_setup(folder: Path, want: dict[str, Any], *, exist_ok: bool) -> bool:
    """A variant folder from a different budget / preset must not be resumed or skipped silently: refused,
    or with `exist_ok` reported as stale (True: to be trained afresh)."""
    config = read_json(folder / "config.json")
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
                             f"replace it with exist_ok or use another output folder", params=("exist_ok",))
    return bool(diff)


def _train_variant(v: Variant, s: Settings, *, log: Any, progress: bool) -> tuple[str, dict[str, Any]]:
    """Train (or resume) one variant in out_dir/<name>. Returns (status, training facts)."""
    folder = s.out_dir / v.name
    run = s.variant(v)
    stale = _check_same_setup(folder, {"iters": s.iters, "batch_size": s.batch_size, "seed": s.seed,
                                       "input_size": s.input_size, "radius_mode": v.radius,
                                       "corner_pool": v.corner_pool, "channels": list(run.model.channels)},
                              exist_ok=s.exist_ok)
    book_path = folder / "ablate_time.json"
    if stale:  # replaced (exist_ok): its evaluation goes with it
        (folder / "results.json").unlink(missing_ok=True)
        (folder / "detections.json").unlink(missing_ok=True)
    book = (None if stale else read_json(book_path)) or {"train_seconds": 0.0}
    summary = (None if stale else read_json(folder / "summary.json")) or {}
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
            result = engine_train.train(
                data_dir=s.data_dir, out_dir=folder, model_cfg=run.model, data_cfg=run.data, train_cfg=run.train,
                val_dir=None, device=s.device, resume=resume, exist_ok=not resume,
                log_every=max(1, min(10, s.iters // 20)), save_every=max(1, min(500, s.iters // 4)),
                max_minutes=remaining, progress=progress)
            book["train_seconds"] += time.perf_counter() - t0
            book_path.write_text(json.dumps(book))
            if result.status in ("interrupted", "stopped"):
                return "interrupted", {}
            summary = read_json(folder / "summary.json") or {"status": result.status, "step": result.step}
    steps = int(summary.get("step", 0))
    secs = float(book["train_seconds"])
    return "done", {"status": summary.get("status"), "steps": steps, "train_seconds": round(secs, 1),
                    "images_per_s": round(steps * s.batch_size / secs, 2) if secs > 0 else None,
                    "checkpoint": str(folder / "last.safetensors")}


def _evaluate_variant(v: Variant, s: Settings, checkpoint: Path, detections: Path) -> dict[str, Any]:
    """The variant's metrics (METRIC_COLUMNS, AR100, per_class, images, detections, eval_seconds); its COCO
    detections go to `detections`."""
    model, meta = checkpoint_io.load_model(checkpoint, device=s.device)
    t0 = time.perf_counter()
    m = evaluate_model(model, s.data_dir, s.split, device=s.device, class_names=meta["class_names"], flip=s.flip,
                       max_images=s.max_images, oracle=v.oracle, oracle_gt_embeddings=False,
                       results_path=detections)
    keep = {k: m[k] for k in (*METRIC_COLUMNS, "AR100", "per_class", "images", "detections")}
    return {**keep, "eval_seconds": round(time.perf_counter() - t0, 1)}


def _train_shown(i: int, name: str, base: str, s: Settings, *, display: Display,
                 progress: bool) -> tuple[str, dict[str, Any]]:
    """`_train_variant` of `base` (the variant `name`, or the baseline an oracle variant evaluates) with the
    display following its steps; a finished run is not shown as training."""
    summary = read_json(s.out_dir / base / "summary.json") or {}
    finished = summary.get("status") == "finished" or (summary.get("status") == "time limit"
                                                       and s.minutes is not None)
    if not finished:
        display.begin(i, name, "training" + (" the baseline" if base != name else ""))
        display.train_started(base)
    try:
        status, facts = _train_variant(VARIANTS[base], s, log=display.log, progress=progress and not display.live)
    finally:
        if not finished:
            display.train_ended(base)
    if finished and status != "interrupted":
        display.skipped_training(base)
    return status, facts


def _evaluated_row(v: Variant, s: Settings, facts: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Evaluate variant `v` with its training `facts`; writes and returns its results.json row, and the
    evaluation's seconds."""
    metrics = _evaluate_variant(v, s, Path(facts["checkpoint"]), s.out_dir / v.name / "detections.json")
    eval_s = metrics.pop("eval_seconds")
    row = {"variant": v.name, "change": v.change, "corner_pool": v.corner_pool, "radius": v.radius,
           "oracle": v.oracle, "trained_steps": facts["steps"], "eval": s.eval_key(),
           "eval_seconds": eval_s, "metrics": metrics, "paper_ap": v.paper_ap,
           **({k: facts[k] for k in ("status", "steps", "train_seconds", "images_per_s")}
              if not v.oracle else {})}
    write_json(s.out_dir / v.name / "results.json", row, indent=2)
    return row, eval_s


def _run_variants(order: list[str], s: Settings, *, display: Display, replacing: bool, progress: bool,
                  report: Callable[[dict[str, dict]], Any]) -> tuple[str, dict[str, dict], list[str]]:
    """Train (once per trained network) and evaluate each variant of `order`; `report(results)` after each.
    Returns (finished | interrupted, the rows by variant, the variants skipped as done before)."""
    results: dict[str, dict] = {}
    skipped: list[str] = []
    trained: dict[str, dict] = {}
    for i, name in enumerate(order, 1):
        v = VARIANTS[name]
        base = "baseline" if v.oracle else name
        prior = None if replacing else read_json(s.out_dir / name / "results.json")
        if base not in trained:
            status, trained[base] = _train_shown(i, name, base, s, display=display, progress=progress)
            if status == "interrupted":
                return "interrupted", results, skipped
        facts = trained[base]
        if (prior and prior.get("eval") == s.eval_key() and prior.get("trained_steps") == facts["steps"]
                and prior.get("metrics")):
            results[name] = prior
            skipped.append(name)
            display.evaluated(name, None, f"done before, skipped (AP {pct(prior['metrics']['AP'])})")
        else:
            display.begin(i, name, "evaluating" + (f" with oracle {v.oracle}" if v.oracle else ""))
            results[name], eval_s = _evaluated_row(v, s, facts)
            display.evaluated(name, eval_s, " ".join(f"{c} {pct(results[name]['metrics'][c])}"
                                                     for c in METRIC_COLUMNS[:3]))
        report(results)
    return "finished", results, skipped


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
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    unknown = [n for n in variants if n not in VARIANTS]
    if unknown or not variants:
        raise CornerNetError(f"unknown ablation variants {unknown}; choose from {', '.join(VARIANTS)}", 2)
    split = evaluation_split(data_dir, preset=preset, split=split)
    order = run_order(variants)
    s = Settings(data_dir=data_dir, out_dir=out_dir, preset=preset, split=split, minutes=minutes_per_variant,
                 device=str(resolve_device(device)), flip=flip, max_images=max_images, exist_ok=exist_ok,
                 overrides=shared_overrides(preset, iters=iters, batch_size=batch_size, input_size=input_size,
                                            workers=workers, seed=seed))
    with claim_output(out_dir, job=s.job(), record_file=out_dir / "ablation.json", exist_ok=exist_ok) as replacing:
        machine, date = machine_info(s.device), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        display = Display(names=order, iters=s.iters, folder=out_dir, console=console or Console(stderr=True),
                          enabled=progress)
        with display:
            status, results, skipped = _run_variants(
                order, s, display=display, replacing=replacing, progress=progress,
                report=lambda results: write_report(s, order, results, machine, date))
        report = write_report(s, order, results, machine, date)
    return AblationResult(out_dir, status, report, skipped)
