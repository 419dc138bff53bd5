"""`export`, `import-weights`, `models` and `bench`: weights in and out, what there is, how fast it runs."""

# The command modules import their implementations inside each command, not at the top: moving those imports
# to the top made `cornernet --help` take 3.7 s instead of 0.16 s (median of 5, 2026-12-01; it then imports
# torch and the whole package).

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from cornernet_cli.cli.common import _flag_errors, console
from cornernet_cli.errors import CornerNetError


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
    int8: bool = typer.Option(False, "--int8", help="Write a statically quantised int8 graph (weights int8 per "
                              "channel, activations uint8), calibrated on --calib-data (docs/deploy.md)."),
    calib_data: Optional[Path] = typer.Option(None, "--calib-data", help="--int8: a folder of calibration images "
                                              "like those the model will see (e.g. its training images)."),
    calib_images: int = typer.Option(32, "--calib-images", min=1, help="--int8: calibration images read from "
                                     "--calib-data (evenly spaced in name order)."),
) -> None:
    """Export the network (raw head outputs; decoding is a separate step, see docs/deploy.md) to ONNX."""
    from cornernet_cli.api import export

    with _flag_errors("format", "max_size", "int8", "calib_data"):
        s = export(checkpoint, out, format=format, dynamic=dynamic, height=height, width=width, max_size=max_size,
                   opset=opset, offline=offline, int8=int8, calib_data=calib_data, calib_images=calib_images)
    size = f"dynamic up to {s.max_size} px a side" if s.dynamic else f"{height}x{width}"
    check = "" if s.max_abs_diff is None else f"; onnxruntime vs PyTorch max abs diff {s.max_abs_diff:.2e}"
    if s.calib_images is not None:
        check += f" before quantising; int8, calibrated on {s.calib_images} images"
    console.print(f"[green]exported[/] {s.out} (opset {s.opset}, {size}){check}")


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

    from cornernet_cli.bench import results_table, run_bench

    try:
        w, h = (int(v) for v in image_size.lower().split("x"))
    except ValueError:
        raise CornerNetError(f"--image-size must be WIDTHxHEIGHT, e.g. 640x480, got {image_size!r}", 2) from None
    with _flag_errors("amp", "device"):
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
