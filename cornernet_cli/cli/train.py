"""`train`, `ablate` and `demo`: the commands that train."""

# The command modules import their implementations inside each command, not at the top: moving those imports
# to the top made `cornernet --help` take 3.7 s instead of 0.16 s (median of 5, 2026-12-01; it then imports
# torch and the whole package).

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cornernet_cli.cli.common import _flag_errors, _parse_floats, _parse_ints, console


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder (from prepare-data, or a standard COCO root)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation dataset folder (default: --data when it "
                                       "has a val split)."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder: checkpoints, metrics, config."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model preset: small-fast (the default; CPU), "
                                         "small (CPU), hourglass-104 (the paper), hourglass-52, squeeze "
                                         "(CornerNet-Squeeze, output stride 8), tiny (tests). With --weights: the "
                                         "checkpoint's."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Fine-tune: start from a cornernet checkpoint, "
                                          "original / mmdetection weights or a name from `cornernet models` "
                                          "(e.g. cornernet-hg104-coco). Tensors whose name and shape match are "
                                          "loaded; the class heatmap layers start afresh when the class count "
                                          "differs."),
    offline: bool = typer.Option(False, "--offline", help="Never download: named --weights must already be in "
                                 "the cache."),
    freeze: str = typer.Option("none", "--freeze", help="With --weights: none (train everything) or backbone "
                               "(train only the prediction modules; a cheaper, gentler fine-tune)."),
    time: Optional[float] = typer.Option(None, "--time", min=0.01, help="Budget in minutes of training (CPU-"
                                         "minutes on the CPU, wall-clock on GPUs; see --time-clock). The learning "
                                         "rate follows the fraction used, so the run ends decayed. Default for the "
                                         "CPU presets: 25."),
    time_clock: str = typer.Option("auto", "--time-clock", help="What --time counts: auto, cpu (process CPU "
                                   "time, threads summed) or wall."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=32, help="Training crop size (paper: 511; "
                                             "CPU presets: chosen from the data, at most 256)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per step per process "
                                             "(paper: 49)."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Instead of --time: training steps "
                                        "(paper: 500k)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", min=0.01, help="Instead of --time: passes over the "
                                           "training split."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help="Adam learning rate (paper: 2.5e-4; CPU "
                                       "presets 1e-3; the same with --weights)."),
    lr_steps: Optional[str] = typer.Option(None, "--lr-steps", help="Comma-separated steps where lr is "
                                           "divided by 10 (default: 90% of the steps)."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="step: lr / 10 at each of --lr-steps "
                                              "(the paper); cosine: decay from --lr to 0 at the end (CPU presets)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="Linear warm-up steps."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", min=0.0, help="Max gradient norm (0: off)."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto (bf16 on a CPU with native bf16 "
                                      "such as AVX512-BF16/AMX, fp32 elsewhere; the CPU presets' default), bf16, "
                                      "fp16 (CUDA, with a GradScaler) or off (fp32; the paper presets' default)."),
    pull_weight: float = typer.Option(0.1, "--pull-weight", min=0.0, help="Weight of the embedding pull loss "
                                      "(paper: 0.1)."),
    push_weight: float = typer.Option(0.1, "--push-weight", min=0.0, help="Weight of the embedding push loss "
                                      "(paper: 0.1); larger values separate crowded objects of one class more."),
    ema: Optional[float] = typer.Option(None, "--ema", min=0.0, max=0.99999, help="Keep an exponential moving "
                                        "average of the weights with this decay (CPU presets: 0.999; 0: off); "
                                        "validation and the saved checkpoints use the averaged weights."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last",
                                       help="channels_last memory format (faster convolutions on CPU and GPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loading worker processes (CPU "
                                          "presets: 0, so that --time counts the loading too)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights, data order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Start afresh in an --out that holds an earlier run, "
                                  "deleting its checkpoints (without this or --resume such a folder is refused)."),
    radius: str = typer.Option("object", "--radius", help="Penalty reduction: object (paper), fixed, none."),
    no_corner_pool: bool = typer.Option(False, "--no-corner-pool", help="Ablation: corner pooling off."),
    centre_head: Optional[bool] = typer.Option(
        None, "--centre-head/--no-centre-head",
        help="Also learn object centres (CenterNet-style triplets, not in the paper; on by default for the CPU "
             "presets); eval and detect then drop boxes with no centre inside."),
    val_every: int = typer.Option(0, "--val-every", min=0, help="Validate every N steps (0: only at the end)."),
    save_every: int = typer.Option(500, "--save-every", min=1, help="Write last + resume state every N steps."),
    log_every: int = typer.Option(10, "--log-every", min=1, help="Write metrics.jsonl every N steps."),
    val_split: str = typer.Option("val", "--val-split", help="Split of the validation folder to validate on."),
    random_scales: Optional[str] = typer.Option(None, "--random-scales", help="Training augmentation: each crop "
                                                "covers (input size x s) image pixels, s drawn from these (paper: "
                                                "0.6,...,1.3; squeeze: 0.6,...,1.4 as its source; CPU presets: "
                                                "chosen from the data's box sizes)."),
    test_scale: Optional[float] = typer.Option(None, "--test-scale", min=0.01, help="The test scale the model is "
                                               "for, stored in its checkpoints: eval and detect use it by default "
                                               "(CPU presets: chosen from the data's box sizes)."),
    vflip: float = typer.Option(0.0, "--vflip", min=0.0, max=1.0, help="Training augmentation: probability of "
                                "a top-bottom mirror (not in the paper; for images with no up direction, such as "
                                "microscopy or aerial images)."),
    transpose: float = typer.Option(0.0, "--transpose", min=0.0, max=1.0, help="Training augmentation: "
                                    "probability of swapping x and y; with the flips, random 90-degree rotations "
                                    "(not in the paper)."),
    val_scales: Optional[str] = typer.Option(None, "--val-scales", help="Test scales of the periodic validation "
                                             "(default: the test scale)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0, help="Stop (and save) after "
                                                "this much wall-clock time; --resume continues."),
    max_cpu_minutes: Optional[float] = typer.Option(None, "--max-cpu-minutes", min=0.0, help="Stop (and save) "
                                                    "once training has used this much CPU time (threads summed; "
                                                    "use --workers 0 to count data loading too)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write the logged metrics (loss terms, "
                                     "learning rate, validation AP) as TensorBoard event files into "
                                     "OUT/tensorboard (needs `pip install tensorboard`); watch with "
                                     "`tensorboard --logdir OUT`."),
) -> None:
    """Train CornerNet on a COCO-format dataset; writes checkpoints, metrics.jsonl and curves.png to --out.

    `cornernet train --data DIR` alone runs the CPU recipe: small-fast with a centre head, crops and test
    scale chosen from the data's box sizes, 25 CPU-minutes with a cosine schedule that ends with the budget.
    Multi-GPU / multi-node: launch the same command with torchrun, e.g.
    `torchrun --nproc_per_node 8 -m cornernet_cli.cli train --preset hourglass-104 ...`.
    """
    from cornernet_cli.api import train

    with _flag_errors("data", "preset", "weights", "time_budget", "time_clock", "iters", "epochs", "freeze", "lr",
                      "lr_steps", "amp", "device", "lr_schedule", "radius"):
        result = train(data, out=out, preset=preset, weights=weights, offline=offline, freeze=freeze,
                       time_budget=time, time_clock=time_clock, iters=iters, epochs=epochs, val=val,
                       val_split=val_split, input_size=input_size, batch_size=batch_size, lr=lr,
                       lr_steps=_parse_ints(lr_steps, "--lr-steps"), lr_schedule=lr_schedule, warmup=warmup,
                       grad_clip=grad_clip, amp=amp, pull_weight=pull_weight,
                       push_weight=push_weight, ema=ema, channels_last=channels_last, workers=workers, seed=seed,
                       radius=radius, corner_pool=not no_corner_pool, centre_head=centre_head,
                       random_scales=_parse_floats(random_scales, "--random-scales") if random_scales else None,
                       test_scale=test_scale, vflip=vflip, transpose=transpose,
                       val_scales=_parse_floats(val_scales, "--val-scales") if val_scales else None, device=device,
                       resume=resume, exist_ok=exist_ok, val_every=val_every, save_every=save_every,
                       log_every=log_every, max_minutes=max_minutes, max_cpu_minutes=max_cpu_minutes,
                       tensorboard=tensorboard)
    if result.status == "interrupted":
        console.print(f"interrupted at step {result.step}; state saved. Continue with the same command "
                      f"and --resume.")
        raise typer.Exit(130)
    if result.status == "time limit":
        console.print(f"time limit reached at step {result.step}; state saved (--resume continues).")
    ap = f", best val AP {result.best_ap:.4f}" if result.best_ap is not None else ""
    console.print(f"[green]done[/]: {result.step} steps{ap}; {result.images_per_s:.1f} img/s; "
                  f"checkpoints in {result.out_dir}")


def ablate_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder with a train split (from prepare-data)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/ablate-<data name>)."),
    preset: str = typer.Option("small", "--preset", help="Model preset shared by every variant."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Training steps per variant (default: "
                                        "the preset's)."),
    minutes_per_variant: Optional[float] = typer.Option(None, "--minutes-per-variant", min=0.01, help="Also stop "
                                                        "each variant's training after M minutes (steps recorded)."),
    no_corner_pool: bool = typer.Option(False, "--no-corner-pool", help="Study: with vs without corner pooling."),
    radius: Optional[str] = typer.Option(None, "--radius", help="Study: penalty reduction, any of none,fixed,object."),
    error_analysis: bool = typer.Option(False, "--error-analysis", help="Study: the baseline with ground-truth "
                                        "heatmaps, then heatmaps + offsets."),
    split: Optional[str] = typer.Option(None, "--split", help="Evaluation split (default: test if present, else val)."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Test-time flip (the paper: on)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Evaluate the first N images only."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per training step."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=32, help="Training crop size."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loading worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed shared by every variant."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an ablation with other settings in --out "
                                  "(its variants are trained and evaluated afresh); the same settings resume."),
) -> None:
    """The paper's ablations (corner pooling, penalty reduction, error analysis) with one budget; writes
    ablation.md and ablation.json. No study flag runs them all; a rerun skips finished variants."""
    from cornernet_cli.ablate import run_ablation, select_variants

    radii = [r.strip() for r in radius.split(",") if r.strip()] if radius is not None else None
    out = out or Path("runs") / f"ablate-{data.resolve().name}"
    with _flag_errors("radius", "preset", "data_dir", "split", "device"):
        variants = select_variants(corner_pool=no_corner_pool, radius=radii, error_analysis=error_analysis)
        result = run_ablation(data_dir=data, out_dir=out, variants=variants, preset=preset, iters=iters,
                              minutes_per_variant=minutes_per_variant, batch_size=batch_size, input_size=input_size,
                              split=split, flip=flip, max_images=max_images, seed=seed, workers=workers,
                              device=device, console=Console(stderr=True), exist_ok=exist_ok)
    if result.status == "interrupted":
        console.print(f"interrupted; finished variants are in {out}/ablation.md. Run the same command again to "
                      f"resume.")
        raise typer.Exit(130)
    skipped = f" ({len(result.skipped)} skipped: done before)" if result.skipped else ""
    console.print(f"[green]done[/]: {len(result.report['variants'])} variants{skipped}; wrote {out}/ablation.md "
                  f"and {out}/ablation.json")


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the data, run, evaluation and detections."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, weights and augmentation."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Training steps (default: the demo's "
                                        "budget, a few minutes on a laptop CPU)."),
) -> None:
    """The embedded default, no download: synthetic shapes -> train `small-fast` -> COCO eval -> detect."""

    from cornernet_cli.demo import run_demo
    from cornernet_cli.engine.evaluate import metrics_tables

    t0 = time.perf_counter()
    with _flag_errors("device"):
        result = run_demo(out, seed=seed, device=device, iters=iters, console=console)
    for table in metrics_tables(result.metrics)[:1]:
        console.print(table)
    took = ", ".join(f"{k} {v:.1f}" for k, v in result.minutes.items())
    console.print(f"[green]demo done[/] in {(time.perf_counter() - t0) / 60:.1f} min ({took} min)")
    console.print(f"  data:        {result.data_dir}")
    console.print(f"  checkpoint:  {result.checkpoint}")
    console.print(f"  curves:      {result.checkpoint.parent / 'curves.png'}")
    console.print(f"  evaluation:  {out / 'eval'} (results.json, metrics.json, pr_curve.png, threshold_curves.png, "
                  f"confusion_matrix.png, errors.jpg)")
    best = result.metrics.get("best_f1") or {}
    shown = f", score >= {best['threshold']:.2f} (the best F1)" if best.get("threshold") is not None else ""
    console.print(f"  detections:  {out / 'detections'} ({len(result.detections)} files{shown})")
    console.print(f"next: cornernet detect YOUR_IMAGE.jpg --checkpoint {result.checkpoint}")
