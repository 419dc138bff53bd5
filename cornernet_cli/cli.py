"""The `cornernet` command line: one thin function per command (parse -> config -> library call -> summary)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cornernet_cli import __version__
from cornernet_cli.errors import CornerNetError

app = typer.Typer(
    name="cornernet",
    help="CornerNet: detect objects as paired corner keypoints. Train, evaluate, detect and ablate on CPU or GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"cornernet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """CornerNet toolkit."""


# ---- commands (each: parse -> config -> one library call -> summary) ---------------------------------


@app.command("models")
def models_cmd(
    num_classes: int = typer.Option(80, "--num-classes", min=1, help="Class count used to size the heads."),
) -> None:
    """List the model presets with their parameter counts and layout."""
    from rich.table import Table

    from cornernet_cli.config import PRESETS
    from cornernet_cli.model import build_model

    table = Table(title=f"CornerNet presets ({num_classes} classes)")
    for col in ("preset", "stacks", "channels", "blocks", "parameters"):
        table.add_column(col, justify="right" if col in ("stacks", "parameters") else "left")
    for name, cfg in PRESETS.items():
        n = sum(p.numel() for p in build_model(name, num_classes).parameters())
        table.add_row(name, str(cfg.num_stacks), ",".join(map(str, cfg.channels)),
                      ",".join(map(str, cfg.blocks)), f"{n:,}")
    console.print(table)


@app.command("prepare-data")
def prepare_data_cmd(
    format: str = typer.Option(..., "--format", help="Source format: voc | yolo | coco | synthetic."),
    out: str = typer.Option(..., "--out", help="Dataset folder to write (annotations/{train,val,test}.json)."),
    source: Optional[str] = typer.Option(None, "--source", help="Source folder or COCO JSON (not for synthetic)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Val share when the source has no split."),
    seed: int = typer.Option(0, "--seed", help="Seed of the val split and of the synthetic generator."),
    strict: bool = typer.Option(False, "--strict", help="Any problem (except crowd boxes) is an error."),
    copy_images: bool = typer.Option(False, "--copy-images", help="Copy images into OUT/images/ (default: reference)."),
    num_train: int = typer.Option(200, "--num-train", min=0, help="Synthetic: training images."),
    num_val: int = typer.Option(50, "--num-val", min=0, help="Synthetic: validation images."),
    image_size: int = typer.Option(256, "--image-size", min=32, help="Synthetic: image side in pixels."),
    num_classes: int = typer.Option(4, "--num-classes", min=1, help="Synthetic: shape classes (1..6)."),
    sizes: str = typer.Option("20,120", "--sizes", help="Synthetic: range of an object's side sqrt(w*h) at "
                              "256 px, scaled with --image-size."),
    max_iou: float = typer.Option(0.4, "--max-iou", min=0.0, max=1.0, help="Synthetic: largest IoU between two "
                                  "objects (0: no overlaps; the demo's data)."),
) -> None:
    """Convert VOC / YOLO / COCO (or generate synthetic shapes) into a validated dataset folder for --data."""
    from cornernet_cli.data.convert import prepare_data, synthetic_report
    from cornernet_cli.data.report import print_report

    if format == "synthetic":
        lo_hi = _parse_floats(sizes, "--sizes")
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise CornerNetError(f"--sizes takes LOW,HIGH with LOW <= HIGH, got {sizes!r}", 2)
        report = synthetic_report(out, num_train=num_train, num_val=num_val, image_size=image_size,
                                  num_classes=num_classes, seed=seed, sizes=lo_hi, max_iou=max_iou)
    else:
        if source is None:
            raise CornerNetError(f"--source is required for --format {format}", exit_code=2)
        report = prepare_data(format=format, source=source, out=out, val_fraction=val_fraction, seed=seed,
                              strict=strict, copy_images=copy_images)
    print_report(report, console)


def _parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CornerNetError(f"{option} takes comma-separated integers, got {text!r}", 2) from None


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder (from prepare-data, or a standard COCO root)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation dataset folder (default: --data when it "
                                       "has a val split)."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder: checkpoints, metrics, config."),
    preset: str = typer.Option("small", "--preset", help="Model preset: hourglass-104 (the paper), "
                               "hourglass-52, small (CPU), small-fast (CPU, half the FLOPs), tiny (tests)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=32, help="Training crop size "
                                             "(paper: 511; small: 256)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per step per process "
                                             "(paper: 49)."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Training steps (paper: 500k)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", min=0.01, help="Instead of --iters: passes over the "
                                           "training split."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help="Adam learning rate (paper: 2.5e-4)."),
    lr_steps: Optional[str] = typer.Option(None, "--lr-steps", help="Comma-separated steps where lr is "
                                           "divided by 10 (default: 90% of the steps)."),
    lr_schedule: str = typer.Option("step", "--lr-schedule", help="step: lr / 10 at each of --lr-steps (the "
                                    "paper); cosine: cosine decay from --lr to 0 at the last step."),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="Linear warm-up steps."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", min=0.0, help="Max gradient norm (0: off)."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision: bf16 (CUDA, or a CPU with native bf16 such as "
                            "AVX512-BF16/AMX), fp16 (CUDA, with a GradScaler) or off (fp32)."),
    pull_weight: float = typer.Option(0.1, "--pull-weight", min=0.0, help="Weight of the embedding pull loss "
                                      "(paper: 0.1)."),
    push_weight: float = typer.Option(0.1, "--push-weight", min=0.0, help="Weight of the embedding push loss "
                                      "(paper: 0.1); larger values separate crowded objects of one class more."),
    ema: float = typer.Option(0.0, "--ema", min=0.0, max=0.99999, help="Keep an exponential moving average "
                              "of the weights with this decay (e.g. 0.999; 0: off); validation and the saved "
                              "checkpoints use the averaged weights."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last",
                                       help="channels_last memory format (faster convolutions on CPU and GPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loading worker processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights, data order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    radius: str = typer.Option("object", "--radius", help="Penalty reduction: object (paper), fixed, none."),
    no_corner_pool: bool = typer.Option(False, "--no-corner-pool", help="Ablation: corner pooling off."),
    centre_head: bool = typer.Option(
        False, "--centre-head",
        help="Also learn object centres (CenterNet-style triplets, not in the paper); eval and detect then drop "
             "boxes with no centre inside. Helps crowded scenes where corners of neighbours get paired."),
    val_every: int = typer.Option(0, "--val-every", min=0, help="Validate every N steps (0: only at the end)."),
    save_every: int = typer.Option(500, "--save-every", min=1, help="Write last + resume state every N steps."),
    log_every: int = typer.Option(10, "--log-every", min=1, help="Write metrics.jsonl every N steps."),
    val_split: str = typer.Option("val", "--val-split", help="Split of the validation folder to validate on."),
    random_scales: Optional[str] = typer.Option(None, "--random-scales", help="Training augmentation: each crop "
                                                "covers (input size x s) image pixels, s drawn from these, "
                                                "resized to the input (paper: 0.6,0.7,...,1.3). Values around "
                                                "2 train at half resolution."),
    vflip: float = typer.Option(0.0, "--vflip", min=0.0, max=1.0, help="Training augmentation: probability of "
                                "a top-bottom mirror (not in the paper; for images with no up direction, such as "
                                "microscopy or aerial images)."),
    transpose: float = typer.Option(0.0, "--transpose", min=0.0, max=1.0, help="Training augmentation: "
                                    "probability of swapping x and y; with the flips, random 90-degree rotations "
                                    "(not in the paper)."),
    val_scales: str = typer.Option("1", "--val-scales", help="Test scales of the periodic validation, e.g. 0.5 "
                                   "with --random-scales around 2."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0, help="Stop (and save) after "
                                                "this much wall-clock time; --resume continues."),
    max_cpu_minutes: Optional[float] = typer.Option(None, "--max-cpu-minutes", min=0.0, help="Stop (and save) "
                                                    "once training has used this much CPU time (threads summed; "
                                                    "use --workers 0 to count data loading too)."),
) -> None:
    """Train CornerNet on a COCO-format dataset; writes checkpoints, metrics.jsonl and curves.png to --out.

    Multi-GPU / multi-node: launch the same command with torchrun, e.g.
    `torchrun --nproc_per_node 8 -m cornernet_cli.cli train --preset hourglass-104 ...`.
    """
    import dataclasses

    from cornernet_cli.config import PRESETS, TRAIN_DEFAULTS, DataConfig, TrainConfig, model_config
    from cornernet_cli.data.coco import available_splits
    from cornernet_cli.engine.precision import AMP_DTYPES
    from cornernet_cli.engine.train import train

    if preset not in PRESETS:
        raise CornerNetError(f"unknown --preset {preset!r}; choose one of: {', '.join(PRESETS)}", 2)
    if amp not in AMP_DTYPES:  # the device (and so whether fp16 is allowed) is resolved later, in train()
        raise CornerNetError(f"--amp must be off, bf16 or fp16, got {amp!r}", 2)
    if lr_schedule not in ("step", "cosine"):
        raise CornerNetError(f"--lr-schedule must be step or cosine, got {lr_schedule!r}", 2)
    if radius not in ("object", "fixed", "none"):
        raise CornerNetError(f"--radius must be object, fixed or none, got {radius!r}", 2)
    if not data.is_dir():
        raise CornerNetError(f"--data {data} is not a folder", 2)
    d = TRAIN_DEFAULTS[preset]
    size = input_size or d["input_size"]
    bs = batch_size or d["batch_size"]
    if iters is None and epochs is not None:
        from cornernet_cli.data.coco import CocoDetection

        n = len(CocoDetection.from_folder(data, "train"))
        world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
        iters = max(1, int(round(epochs * n / (bs * world))))
    steps = iters or d["iters"]
    lr_steps_t = _parse_ints(lr_steps, "--lr-steps")
    if lr_steps_t is None:
        lr_steps_t = tuple(d["lr_steps"]) if iters is None else (int(steps * 0.9),)
    if val is None and val_split in available_splits(data):
        val = data
    tcfg = TrainConfig(
        batch_size=bs, iters=steps, lr=lr if lr is not None else d["lr"], lr_steps=lr_steps_t,
        warmup_iters=warmup if warmup is not None else d["warmup_iters"],
        grad_clip=grad_clip if grad_clip is not None else d.get("grad_clip", 0.0), amp=amp,
        channels_last=channels_last, workers=workers if workers is not None else d["workers"], seed=seed,
        val_scales=_parse_floats(val_scales, "--val-scales"), lr_schedule=lr_schedule, ema=ema,
        pull_weight=pull_weight, push_weight=push_weight,
    )
    dcfg = dataclasses.replace(DataConfig(), input_size=size, radius_mode=radius, vflip=vflip, transpose=transpose)
    if random_scales is not None:
        dcfg = dataclasses.replace(dcfg, random_scales=_parse_floats(random_scales, "--random-scales"))
    mcfg = model_config(preset, 1, corner_pool=not no_corner_pool, centre_head=centre_head)
    result = train(data_dir=data, out_dir=out, model_cfg=mcfg, data_cfg=dcfg, train_cfg=tcfg, val_dir=val,
                   device=device, resume=resume, log_every=log_every, val_every=val_every,
                   save_every=save_every, val_split=val_split, max_minutes=max_minutes,
                   max_cpu_minutes=max_cpu_minutes)
    if result.status == "interrupted":
        console.print(f"interrupted at step {result.step}; state saved. Continue with the same command "
                      f"and --resume.")
        raise typer.Exit(130)
    if result.status == "time limit":
        console.print(f"time limit reached at step {result.step}; state saved (--resume continues).")
    ap = f", best val AP {result.best_ap:.4f}" if result.best_ap is not None else ""
    console.print(f"[green]done[/]: {result.step} steps{ap}; {result.images_per_s:.1f} img/s; "
                  f"checkpoints in {result.out_dir}")


@app.command("import-weights")
def import_weights_cmd(
    src: Path = typer.Argument(..., help="Source weights: the original CornerNet's .pkl or mmdetection's .pth."),
    format: str = typer.Option(..., "--format", help="Source: original (princeton-vl/CornerNet) | mmdetection."),
    out: Path = typer.Option(..., "-o", "--out", help="Checkpoint to write (.safetensors)."),
    classes: str = typer.Option("coco", "--classes", help="coco (the 80 COCO classes and ids), or a file: .txt "
                                "one name a line, .json list of names or COCO 'categories'."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Network size (default: read from the tensors)."),
) -> None:
    """Convert COCO-trained CornerNet weights (original or mmdetection) into a cornernet checkpoint."""
    from cornernet_cli.import_weights import import_weights

    s = import_weights(src, fmt=format, out=out, classes=classes, preset=preset)
    console.print(f"[green]imported[/] {s.tensors} tensors ({s.parameters:,} parameters, preset "
                  f"{s.preset or 'custom'}, {s.config.num_classes} classes) -> {s.out}")


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint (.safetensors) to export."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Path = typer.Option(..., "-o", "--out", help="File to write (model.onnx)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Free batch, height and width (up to --max-size)."),
    height: int = typer.Option(511, "--height", min=4, help="Example (static) input height in pixels."),
    width: int = typer.Option(511, "--width", min=4, help="Example (static) input width in pixels."),
    max_size: int = typer.Option(2048, "--max-size", min=4, help="--dynamic: largest input side pooled exactly."),
    opset: int = typer.Option(17, "--opset", min=13, help="ONNX opset version."),
) -> None:
    """Export the network (raw head outputs; decoding is a separate step, see docs/deploy.md) to ONNX."""
    if format != "onnx":
        raise CornerNetError(f"--format {format!r} is not supported; use onnx", 2)
    from cornernet_cli.export import export_onnx

    s = export_onnx(checkpoint, out, dynamic=dynamic, height=height, width=width, max_size=max_size, opset=opset)
    size = f"dynamic up to {s.max_size} px a side" if s.dynamic else f"{height}x{width}"
    check = "" if s.max_abs_diff is None else f"; onnxruntime vs PyTorch max abs diff {s.max_abs_diff:.2e}"
    console.print(f"[green]exported[/] {s.out} (opset {s.opset}, {size}){check}")


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CornerNetError(f"{option} takes comma-separated numbers, got {text!r}", 2) from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise CornerNetError(f"{option} takes positive finite numbers, got {text!r}", 2)
    return values


@app.command("eval")
def eval_cmd(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint (.safetensors) or a graph "
                                              "from `cornernet export` (.onnx, run by onnxruntime); optional "
                                              "only with --oracle heatmaps+offsets."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (from prepare-data, or a standard COCO root)."),
    split: str = typer.Option("val", "--split", help="Split to evaluate: val, test, train."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Test-time flip (the paper: on)."),
    scales: str = typer.Option("1", "--scales", help="Test scales, e.g. 0.5,0.75,1,1.25,1.5 (the paper's "
                               "multi-scale)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward pass."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Evaluate the first N images only."),
    oracle: Optional[str] = typer.Option(None, "--oracle", help="Replace outputs by ground truth: heatmaps | "
                                         "heatmaps+offsets (error analysis)."),
    oracle_embeddings: str = typer.Option("gt", "--oracle-embeddings", help="With --oracle: gt (one true value "
                                          "per object: exact grouping) or trained (the network's embeddings, as "
                                          "in the paper's error analysis)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: str = typer.Option("off", "--amp", help="Autocast the network: bf16 (CUDA, or a CPU with native bf16 "
                            "such as AVX512-BF16/AMX: about 2x faster there), fp16 (CUDA) or off (fp32)."),
    centre_check: bool = typer.Option(True, "--centre-check/--no-centre-check", help="For a model trained with "
                                      "--centre-head: keep only boxes with a centre keypoint in their middle third."),
    out: Path = typer.Option(Path("results.json"), "--out", help="COCO results JSON; metrics.json goes next to it."),
) -> None:
    """Evaluate a checkpoint with COCO AP (pycocotools); writes COCO results JSON and metrics.json.

    Sharded over processes: launch the same command with torchrun, e.g.
    `torchrun --nproc_per_node 8 -m cornernet_cli.cli eval --device cuda ...`; rank 0 writes and prints."""
    from cornernet_cli.config import DecodeConfig
    from cornernet_cli.engine.evaluate import evaluate, metrics_tables

    m = evaluate(checkpoint=checkpoint, data_dir=data, split=split, device=device, flip=flip,
                 scales=_parse_floats(scales, "--scales"), batch_size=batch_size, max_images=max_images,
                 oracle=oracle, oracle_embeddings=oracle_embeddings, out=out, amp=amp,
                 params=DecodeConfig(centre_check=centre_check))
    if m["rank"] != 0:  # under torchrun the other processes only ran their share of the images
        return
    for table in metrics_tables(m):
        console.print(table)
    console.print(f"wrote {m['results']} ({m['detections']} detections) and {m['metrics_file']}")


@app.command("detect")
def detect_cmd(
    inputs: list[str] = typer.Argument(..., help="Images, folders, glob patterns, video files, webcam indices "
                                       "(0) or video stream URLs (rtsp://, http(s)://)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint (.safetensors) or a graph "
                                              "from `cornernet export` (.onnx, run by onnxruntime); default: the "
                                              "newest runs/*/best.safetensors."),
    threshold: float = typer.Option(0.3, "--threshold", min=0.0, max=1.0, help="Minimum score to draw and keep."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Test-time flip (about 2x the network time)."),
    amp: str = typer.Option("off", "--amp", help="Autocast the network: bf16 (CUDA, or a CPU with native bf16 "
                            "such as AVX512-BF16/AMX: about 2x faster there), fp16 (CUDA) or off (fp32)."),
    out: Path = typer.Option(Path("detections"), "--out", help="Folder for drawn images/videos and detections.json."),
    max_side: int = typer.Option(2048, "--max-side", min=32, help="Larger images are shrunk to this longer side "
                                 "for the network (boxes stay in image pixels)."),
    centre_check: bool = typer.Option(True, "--centre-check/--no-centre-check", help="For a model trained with "
                                      "--centre-head: keep only boxes with a centre keypoint in their middle third."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop each video, webcam or stream "
                                             "after N frames (default: until it ends or Ctrl-C)."),
    show: bool = typer.Option(False, "--show", help="Also show each result in a window (q or Esc: next source); "
                              "needs an OpenCV with a GUI and a display, else says why not and writes files only."),
) -> None:
    """Detect objects in images, folders, globs, videos, webcams and streams; draws boxes, writes detections.json."""
    from cornernet_cli.config import DecodeConfig
    from cornernet_cli.detect import detect, report_table

    with console.status("detecting") as status:
        report = detect(inputs, checkpoint=checkpoint, out=out, threshold=threshold, device=device, flip=flip,
                        params=DecodeConfig(max_side=max_side, centre_check=centre_check), amp=amp,
                        max_frames=max_frames, show=show,
                        on_frame=lambda src, i, fps: status.update(f"{escape(src)}: frame {i + 1}, {fps:.1f} fps"))
    console.print(report_table(report))
    for note in report.notes:
        console.print(escape(note), highlight=False)
    for src, fps in report.fps.items():
        console.print(f"{escape(src)}: {fps:.1f} frames per second", highlight=False)
    for s in report.skipped:
        Console(stderr=True).print(f"[yellow]skipped[/] {escape(s['file'])}: {escape(s['error'])}", highlight=False)
    console.print(f"wrote {len(report.outputs)} files to {out} and {report.json_path} "
                  f"({report.time_ms.get('total', 0.0):.0f} ms per image)")


@app.command("visualize-heatmaps")
def visualize_heatmaps_cmd(
    image: Path = typer.Argument(..., help="Image file."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint (default: the newest "
                                              "runs/*/best.safetensors)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names to show "
                                          "(default: the strongest)."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="COCO JSON or dataset folder with this image: also "
                                      "show the training targets."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: <image>_heatmaps.png)."),
) -> None:
    """Draw one PNG: heatmaps, embeddings, offsets and decoded boxes (and, with --gt, the targets)."""
    from cornernet_cli.visualize import visualize_heatmaps

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    path = visualize_heatmaps(image, checkpoint=checkpoint, out=out, classes=names, gt=gt, device=device)
    console.print(f"wrote {path}")


@app.command("ablate")
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
) -> None:
    """The paper's ablations (corner pooling, penalty reduction, error analysis) with one budget; writes
    ablation.md and ablation.json. No study flag runs them all; a rerun skips finished variants."""
    from cornernet_cli.ablate import run_ablation, select_variants

    radii = [r.strip() for r in radius.split(",") if r.strip()] if radius is not None else None
    variants = select_variants(corner_pool=no_corner_pool, radius=radii, error_analysis=error_analysis)
    out = out or Path("runs") / f"ablate-{data.resolve().name}"
    result = run_ablation(data_dir=data, out_dir=out, variants=variants, preset=preset, iters=iters,
                          minutes_per_variant=minutes_per_variant, batch_size=batch_size, input_size=input_size,
                          split=split, flip=flip, max_images=max_images, seed=seed, workers=workers, device=device,
                          console=Console(stderr=True))
    if result.status == "interrupted":
        console.print(f"interrupted; finished variants are in {out}/ablation.md. Run the same command again to "
                      f"resume.")
        raise typer.Exit(130)
    skipped = f" ({len(result.skipped)} skipped: done before)" if result.skipped else ""
    console.print(f"[green]done[/]: {len(result.report['variants'])} variants{skipped}; wrote {out}/ablation.md "
                  f"and {out}/ablation.json")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the data, run, evaluation and detections."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, weights and augmentation."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1, help="Training steps (default: the demo's "
                                        "budget, a few minutes on a laptop CPU)."),
) -> None:
    """The embedded default, no download: synthetic shapes -> train `small-fast` -> COCO eval -> detect."""
    import time

    from cornernet_cli.demo import run_demo
    from cornernet_cli.engine.evaluate import metrics_tables

    t0 = time.perf_counter()
    result = run_demo(out, seed=seed, device=device, iters=iters, console=console)
    for table in metrics_tables(result.metrics)[:1]:
        console.print(table)
    took = ", ".join(f"{k} {v:.1f}" for k, v in result.minutes.items())
    console.print(f"[green]demo done[/] in {(time.perf_counter() - t0) / 60:.1f} min ({took} min)")
    console.print(f"  data:        {result.data_dir}")
    console.print(f"  checkpoint:  {result.checkpoint}")
    console.print(f"  evaluation:  {out / 'eval'} (results.json, metrics.json)")
    console.print(f"  detections:  {out / 'detections'} ({len(result.detections)} files)")
    console.print(f"next: cornernet detect YOUR_IMAGE.jpg --checkpoint {result.checkpoint}")


@app.command("bench")
def bench_cmd(
    preset: str = typer.Option("small", "--preset", help="Model preset: hourglass-104, hourglass-52, small, "
                               "small-fast, tiny."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    input_size: int = typer.Option(511, "--input-size", min=8, help="Square network input in pixels."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward and per training step."),
    amp: str = typer.Option("off", "--amp", help="Autocast: bf16, fp16 (CUDA) or off."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="channels_last memory format (default: on)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model first."),
    image_size: str = typer.Option("640x480", "--image-size", help="WIDTHxHEIGHT of the detect-path image."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per figure (the median is reported)."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed runs before each figure."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads (default: torch's)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset folder for the data-pipeline figure "
                                       "(default: synthetic shapes)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every figure, settings and machine here."),
) -> None:
    """Measure forward (with and without flip), decode, soft-NMS, detect, training step, data pipeline, memory."""
    import json

    from cornernet_cli.bench import results_table, run_bench

    try:
        w, h = (int(v) for v in image_size.lower().split("x"))
    except ValueError:
        raise CornerNetError(f"--image-size must be WIDTHxHEIGHT, e.g. 640x480, got {image_size!r}", 2) from None
    result = run_bench(preset=preset, device=device, input_size=input_size, batch_size=batch_size, amp=amp,
                       channels_last=channels_last, compile=compile, image_size=(h, w), repeats=repeats,
                       warmup=warmup, threads=threads, data=data)
    if sys.argv[1:2] == ["bench"]:
        result["command"] = "cornernet " + " ".join(sys.argv[1:])
    console.print(results_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1))
        console.print(f"wrote {json_out}")


# glibc's malloc returns large tensor buffers to the kernel after every step; the page faults that follow
# cost about a third of CPU training time. These settings (read only at process start) keep them.
_MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "137438953472",
                  "MALLOC_TOP_PAD_": "1073741824"}
_HEAVY_COMMANDS = {"train", "demo", "ablate", "bench", "eval"}


def _maybe_reexec_with_malloc_tuning() -> None:
    """Re-run this process once with the malloc settings for heavy commands (Linux; opt out with
    CORNERNET_MALLOC_TUNING=0)."""
    if (sys.platform != "linux" or os.environ.get("CORNERNET_MALLOC_TUNING", "1") == "0"
            or all(k in os.environ for k in _MALLOC_TUNING)
            or not (set(sys.argv[1:2]) & _HEAVY_COMMANDS) or "--help" in sys.argv):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in _MALLOC_TUNING.items()}}
    with contextlib.suppress(OSError):  # on failure keep going untuned
        os.execve(sys.executable, [sys.executable, "-m", "cornernet_cli.cli", *sys.argv[1:]], env)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr, never a traceback."""
    _maybe_reexec_with_malloc_tuning()
    try:
        app(prog_name="cornernet")
    except CornerNetError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    except OSError as e:  # an unwritable --out, a full disk, a path through a file: one line naming the path
        where = ": ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "I/O"
        Console(stderr=True).print(f"[bold red]error:[/] {escape(f'{where}: {e.strerror or e}')}", highlight=False,
                                   soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
