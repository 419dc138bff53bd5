"""The `cornernet` command line: one thin function per command (parse -> config -> library call -> summary)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cornernet_cli import __version__
from cornernet_cli.errors import CornerNetError, SettingError

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
    """List the model presets with their parameter counts and layout, then the named pretrained weights
    (for --model) with their size, source, licence and whether they are in the cache."""
    from rich.table import Table

    from cornernet_cli.config import PRESETS
    from cornernet_cli.hub import cache_dir, list_weights
    from cornernet_cli.model import build_model

    table = Table(title=f"CornerNet presets ({num_classes} classes)")
    for col in ("preset", "stacks", "channels", "blocks", "parameters"):
        table.add_column(col, justify="right" if col in ("stacks", "parameters") else "left")
    for name, cfg in PRESETS.items():
        n = sum(p.numel() for p in build_model(name, num_classes).parameters())
        table.add_row(name, str(cfg.num_stacks), ",".join(map(str, cfg.channels)),
                      ",".join(map(str, cfg.blocks)), f"{n:,}")
    console.print(table)
    weights = list_weights()
    named = Table(title=f"Named COCO weights for --model (cache: {cache_dir()})")
    for col in ("name", "preset", "size", "source", "licence", "cached"):
        named.add_column(col, no_wrap=col == "name")
    for w in weights:
        named.add_row(w.name, w.preset, w.size, w.source, w.licence, w.status)
    console.print(named)
    for w in weights:
        if w.note:
            console.print(f"{w.name}: {escape(w.note)}: {w.url}", highlight=False, soft_wrap=True)


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
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace a dataset that another prepare-data job "
                                  "(other source or settings) wrote to --out; the same job may always rewrite it."),
) -> None:
    """Convert VOC / YOLO / COCO (or generate synthetic shapes) into a validated dataset folder for --data."""
    from cornernet_cli.data.convert import prepare_data, synthetic_report
    from cornernet_cli.data.report import print_report

    if format == "synthetic":
        lo_hi = _parse_floats(sizes, "--sizes")
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise CornerNetError(f"--sizes takes LOW,HIGH with LOW <= HIGH, got {sizes!r}", 2)
        report = synthetic_report(out, num_train=num_train, num_val=num_val, image_size=image_size,
                                  num_classes=num_classes, seed=seed, sizes=lo_hi, max_iou=max_iou, exist_ok=exist_ok)
    else:
        if source is None:
            raise CornerNetError(f"--source is required for --format {format}", exit_code=2)
        report = prepare_data(format=format, source=source, out=out, val_fraction=val_fraction, seed=seed,
                              strict=strict, copy_images=copy_images, exist_ok=exist_ok)
    print_report(report, console)


@app.command("inspect-data")
def inspect_data_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder (from prepare-data, or a standard COCO root)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the pictures (default: "
                                       "runs/inspect-<data name>)."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Split to draw (repeatable; default: all)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model preset whose training crops to show (as "
                                         "`train --preset`; default: small-fast, with crops and scales chosen "
                                         "from the data's box sizes as `train` chooses them)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=32, help="Training crop size (as "
                                             "`train --input-size`)."),
    random_scales: Optional[str] = typer.Option(None, "--random-scales", help="Training crop scales (as `train "
                                                "--random-scales`; default: what `train` would choose)."),
    vflip: float = typer.Option(0.0, "--vflip", min=0.0, max=1.0, help="Training top-bottom mirror probability "
                                "(as `train --vflip`)."),
    transpose: float = typer.Option(0.0, "--transpose", min=0.0, max=1.0, help="Training x-y swap probability "
                                    "(as `train --transpose`)."),
    images: int = typer.Option(16, "--images", min=1, help="Images per mosaic (a seeded sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the augmentation."),
) -> None:
    """Look at a dataset before training: ground-truth boxes per split, augmented training crops with their
    corner targets, and label statistics (instances per class, box sizes at input scale with the encoder's
    radius, box centres)."""
    from cornernet_cli.data.look import inspect_data
    from cornernet_cli.engine.settings import train_settings

    if not data.is_dir():
        raise CornerNetError(f"--data {data} is not a folder", 2)
    given = dict(input_size=input_size, vflip=vflip, transpose=transpose,
                 random_scales=_parse_floats(random_scales, "--random-scales") if random_scales else None)
    try:  # the crops `cornernet train` would cut with the same options (the scale rule included)
        s = train_settings(data_dir=data, preset=preset, overrides={k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise CornerNetError(_as_flags(str(e), ["preset", *given]), 2) from None
    dcfg = s.data
    out = out or Path("runs") / f"inspect-{data.resolve().name}"
    report = inspect_data(data, out, splits=split, data_cfg=dcfg, stride=s.model.output_stride, num_images=images,
                          seed=seed)
    b = report.stats["boxes_at_input_scale"]
    console.print(f"{sum(report.stats['images'].values())} images, "
                  + ", ".join(f"{s} {n}" for s, n in report.stats["images"].items())
                  + f"; {b['count']} training boxes, median {b['median_width'] or 0:.0f} x "
                  f"{b['median_height'] or 0:.0f} input pixels at --input-size {dcfg.input_size}")
    if b["under_one_cell"] > 0.05:
        console.print(f"[yellow]note[/]: {100 * b['under_one_cell']:.0f}% of training boxes are under one output "
                      f"cell ({s.model.output_stride} px) at input scale: a larger --input-size or smaller "
                      f"--random-scales would keep them")
    if b["over_input"] > 0.05:
        console.print(f"[yellow]note[/]: {100 * b['over_input']:.0f}% of training boxes are larger than the "
                      f"{dcfg.input_size} px input: crops cut them; larger --random-scales would fit them")
    console.print(f"wrote {', '.join(p.name for p in report.files)} to {out}")


def _parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CornerNetError(f"{option} takes comma-separated integers, got {text!r}", 2) from None


# Parameters of the API whose flag is not --<name with dashes>.
_RENAMED = {"time_budget": "--time"}


def _as_flags(message: str, names: Sequence[str]) -> str:
    """A library message with the parameter `names` replaced by the command-line flags that set them; quoted
    values ('...') are left as they are."""
    flags = {n: _RENAMED.get(n, "--" + n.replace("_", "-")) for n in names}
    pattern = re.compile(rf"(?<![\w/.-])({'|'.join(map(re.escape, flags))})(?![\w/.-])")
    parts = re.split(r"('[^']*')", message)
    return "".join(p if i % 2 else pattern.sub(lambda m: flags[m.group(1)], p) for i, p in enumerate(parts))


@contextlib.contextmanager
def _flag_errors(*names: str) -> Iterator[None]:
    """Report the API's SettingErrors about `names` with the flags' names."""
    try:
        yield
    except SettingError as e:
        raise CornerNetError(_as_flags(str(e), names), e.exit_code) from None


@app.command("train")
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
                                       "presets 1e-3; half of it with --weights)."),
    lr_steps: Optional[str] = typer.Option(None, "--lr-steps", help="Comma-separated steps where lr is "
                                           "divided by 10 (default: 90% of the steps)."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="step: lr / 10 at each of --lr-steps "
                                              "(the paper); cosine: decay from --lr to 0 at the end (CPU presets)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="Linear warm-up steps."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", min=0.0, help="Max gradient norm (0: off)."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision: bf16 (CUDA, or a CPU with native bf16 such as "
                            "AVX512-BF16/AMX), fp16 (CUDA, with a GradScaler) or off (fp32)."),
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
                      "lr_steps", "amp", "lr_schedule", "radius"):
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


@app.command("import-weights")
def import_weights_cmd(
    src: Path = typer.Argument(..., help="Source weights: the original CornerNet's .pkl, mmdetection's .pth, or "
                               "CornerNet-Lite's CornerNet_Squeeze_500000.pkl."),
    format: str = typer.Option(..., "--format", help="Source: original (princeton-vl/CornerNet) | mmdetection | "
                               "squeeze (princeton-vl/CornerNet-Lite's CornerNet-Squeeze, gives the squeeze "
                               "preset)."),
    out: Path = typer.Option(..., "-o", "--out", help="Checkpoint to write (.safetensors)."),
    classes: str = typer.Option("coco", "--classes", help="coco (the 80 COCO classes and ids), or a file: .txt "
                                "one name a line, .json list of names or COCO 'categories'."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Network size (default: read from the tensors)."),
) -> None:
    """Convert COCO-trained CornerNet weights (original, mmdetection or CornerNet-Squeeze) into a cornernet
    checkpoint."""
    from cornernet_cli.import_weights import import_weights

    s = import_weights(src, fmt=format, out=out, classes=classes, preset=preset)
    console.print(f"[green]imported[/] {s.tensors} tensors ({s.parameters:,} parameters, preset "
                  f"{s.preset or 'custom'}, {s.config.num_classes} classes) -> {s.out}")


@app.command("export")
def export_cmd(
    checkpoint: str = typer.Option(..., "--model", "--checkpoint", help="Model to export: a checkpoint "
                                   "(.safetensors), original / mmdetection weights, or a name from `cornernet "
                                   "models`."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Path = typer.Option(..., "-o", "--out", help="File to write (model.onnx)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Free batch, height and width (up to --max-size)."),
    height: int = typer.Option(511, "--height", min=4, help="Example (static) input height in pixels."),
    width: int = typer.Option(511, "--width", min=4, help="Example (static) input width in pixels."),
    max_size: int = typer.Option(2048, "--max-size", min=4, help="--dynamic: largest input side pooled exactly."),
    opset: int = typer.Option(17, "--opset", min=13, help="ONNX opset version."),
    offline: bool = typer.Option(False, "--offline", help="Never download: a named model must already be in "
                                 "the cache (the error says which file to place where)."),
) -> None:
    """Export the network (raw head outputs; decoding is a separate step, see docs/deploy.md) to ONNX."""
    from cornernet_cli.api import export

    with _flag_errors("format"):
        s = export(checkpoint, out, format=format, dynamic=dynamic, height=height, width=width, max_size=max_size,
                   opset=opset, offline=offline)
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
    checkpoint: Optional[str] = typer.Option(None, "--model", "--checkpoint", help="Checkpoint (.safetensors), "
                                             "original / mmdetection weights, a name from `cornernet models`, or a "
                                             "graph from `cornernet export` (.onnx, run by onnxruntime); optional "
                                             "only with --oracle heatmaps+offsets."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (from prepare-data, or a standard COCO root)."),
    split: str = typer.Option("val", "--split", help="Split to evaluate: val, test, train."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip (default: on, the "
                                        "paper's; off for the squeeze preset, as its source tests)."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Test scales, e.g. 0.5,0.75,1,1.25,1.5 (the "
                                         "paper's multi-scale; default: the scale the model was trained for)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward pass."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Evaluate the first N images only."),
    oracle: Optional[str] = typer.Option(None, "--oracle", help="Replace outputs by ground truth: heatmaps | "
                                         "heatmaps+offsets (error analysis)."),
    oracle_embeddings: str = typer.Option("gt", "--oracle-embeddings", help="With --oracle: gt (one true value "
                                          "per object: exact grouping) or trained (the network's embeddings, as "
                                          "in the paper's error analysis)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (refused where CUDA is missing)."),
    amp: str = typer.Option("off", "--amp", help="Autocast the network: bf16 (CUDA, or a CPU with native bf16 "
                            "such as AVX512-BF16/AMX: about 2x faster there), fp16 (CUDA) or off (fp32)."),
    centre_check: bool = typer.Option(True, "--centre-check/--no-centre-check", help="For a model trained with "
                                      "--centre-head: keep only boxes with a centre keypoint in their middle third."),
    out: Path = typer.Option(Path("results.json"), "--out", help="COCO results JSON; metrics.json goes next to it."),
    offline: bool = typer.Option(False, "--offline", help="Never download: a named model must already be in "
                                 "the cache (the error says which file to place where)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace results at --out from another evaluation "
                                  "(other checkpoint, data or settings); the same evaluation may always rewrite them."),
) -> None:
    """Evaluate a checkpoint with COCO AP (pycocotools); writes COCO results JSON and metrics.json.

    Sharded over processes: launch the same command with torchrun, e.g.
    `torchrun --nproc_per_node 8 -m cornernet_cli.cli eval --device cuda ...`; rank 0 writes and prints."""
    from cornernet_cli.api import evaluate
    from cornernet_cli.engine.evaluate import metrics_tables

    result = evaluate(checkpoint, data, split=split, flip=flip, scales=_parse_floats(scales, "--scales") if scales
                      else None, batch_size=batch_size, max_images=max_images, oracle=oracle,
                      oracle_embeddings=oracle_embeddings, centre_check=centre_check, device=device, amp=amp, out=out,
                      offline=offline, exist_ok=exist_ok)
    if result.metrics["rank"] != 0:  # under torchrun the other processes only ran their share of the images
        return
    for table in metrics_tables(result.metrics):
        console.print(table)
    console.print(f"wrote {result.results_file} ({result.metrics['detections']} detections) and "
                  f"{result.metrics_file}")


@app.command("detect")
def detect_cmd(
    inputs: list[str] = typer.Argument(..., help="Images, folders, glob patterns, video files, webcam indices "
                                       "(0) or video stream URLs (rtsp://, http(s)://)."),
    checkpoint: Optional[str] = typer.Option(None, "--model", "--checkpoint", help="Checkpoint (.safetensors), "
                                             "original / mmdetection weights, a name from `cornernet models` "
                                             "such as cornernet-hg104-coco (downloaded on first use), or a graph "
                                             "from `cornernet export` (.onnx, run by onnxruntime); default: "
                                             "the newest runs/*/best.safetensors."),
    threshold: float = typer.Option(0.3, "--threshold", min=0.0, max=1.0, help="Minimum score to draw and keep."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (refused where CUDA is missing)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip, about 2x the network "
                                        "time (default: on; off for the squeeze preset, as its source tests)."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Test scales, e.g. 0.5 or 0.5,1 (default: the "
                                         "scale the model was trained for, stored in its checkpoint)."),
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
    offline: bool = typer.Option(False, "--offline", help="Never download: a named model must already be in "
                                 "the cache (the error says which file to place where)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into an --out holding another detect job's "
                                  "results (other checkpoint, inputs or settings); the same job may rewrite it."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names to keep "
                                          "(default: all the checkpoint's classes)."),
    save_txt: bool = typer.Option(False, "--save-txt", help="Also write YOLO label files: OUT/labels/<name>.txt, "
                                  "one line 'class cx cy w h' a box (class index, centre and size as fractions "
                                  "of the image), and OUT/labels/classes.txt with the class names."),
    save_conf: bool = typer.Option(False, "--save-conf", help="With --save-txt: append each box's score to its "
                                   "line."),
    save_crop: bool = typer.Option(False, "--save-crop", help="Also save each box's pixels as "
                                   "OUT/crops/<class>/<name>_<i>.jpg."),
) -> None:
    """Detect objects in images, folders, globs, videos, webcams and streams; draws boxes, writes detections.json."""
    from cornernet_cli.config import DecodeConfig
    from cornernet_cli.detect import Extras, detect, report_table

    if save_conf and not save_txt:
        raise CornerNetError("--save-conf needs --save-txt", 2)
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    with console.status("detecting") as status:
        report = detect(inputs, checkpoint=checkpoint, out=out, threshold=threshold, device=device, flip=flip,
                        scales=_parse_floats(scales, "--scales") if scales else None,
                        params=DecodeConfig(max_side=max_side, centre_check=centre_check), amp=amp, offline=offline,
                        exist_ok=exist_ok, classes=names,
                        extras=Extras(save_txt=save_txt, save_conf=save_conf, save_crop=save_crop),
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
    checkpoint: Optional[str] = typer.Option(None, "--model", "--checkpoint", help="Checkpoint (.safetensors), "
                                             "original / mmdetection weights, or a name from `cornernet models`; "
                                             "default: the newest runs/*/best.safetensors."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names to show "
                                          "(default: the strongest)."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="COCO JSON or dataset folder with this image: also "
                                      "show the training targets."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (refused where CUDA is missing)."),
    scale: Optional[float] = typer.Option(None, "--scale", min=0.01, help="Test scale (default: the one the "
                                          "model was trained for)."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: <image>_heatmaps.png)."),
    offline: bool = typer.Option(False, "--offline", help="Never download: a named model must already be in "
                                 "the cache (the error says which file to place where)."),
) -> None:
    """Draw one PNG: heatmaps, embeddings, offsets and decoded boxes (and, with --gt, the targets)."""
    from cornernet_cli.visualize import visualize_heatmaps

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    path = visualize_heatmaps(image, checkpoint=checkpoint, out=out, classes=names, gt=gt, device=device,
                              scale=scale, offline=offline)
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
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an ablation with other settings in --out "
                                  "(its variants are trained and evaluated afresh); the same settings resume."),
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
                          console=Console(stderr=True), exist_ok=exist_ok)
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
    console.print(f"  curves:      {result.checkpoint.parent / 'curves.png'}")
    console.print(f"  evaluation:  {out / 'eval'} (results.json, metrics.json, pr_curve.png, threshold_curves.png, "
                  f"confusion_matrix.png, errors.jpg)")
    best = result.metrics.get("best_f1") or {}
    shown = f", score >= {best['threshold']:.2f} (the best F1)" if best.get("threshold") is not None else ""
    console.print(f"  detections:  {out / 'detections'} ({len(result.detections)} files{shown})")
    console.print(f"next: cornernet detect YOUR_IMAGE.jpg --checkpoint {result.checkpoint}")


@app.command("bench")
def bench_cmd(
    preset: str = typer.Option("small", "--preset", help="Model preset: hourglass-104, hourglass-52, squeeze, "
                               "small, small-fast, tiny."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (refused where CUDA is missing)."),
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
