"""`eval`, `detect` and `visualize-heatmaps`: a trained model run on images."""

# The command modules import their implementations inside each command, not at the top: moving those imports
# to the top made `cornernet --help` take 3.7 s instead of 0.16 s (median of 5, 2026-12-01; it then imports
# torch and the whole package).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cornernet_cli.cli.common import _flag_errors, _parse_floats, _parse_names, console
from cornernet_cli.errors import CornerNetError


def eval_cmd(
    checkpoint: Optional[str] = typer.Option(None, "--model", "--checkpoint", help="Checkpoint (.safetensors), "
                                             "original / mmdetection weights, a name from `cornernet models`, or a "
                                             "graph from `cornernet export` (.onnx, run by onnxruntime); optional "
                                             "only with --oracle heatmaps+offsets."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (from prepare-data, or a standard COCO root)."),
    split: str = typer.Option("val", "--split", help="Split to evaluate: val, test, train."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip, about 2x the network "
                                        "time (default: the preset's: on for the paper's hourglass as in the paper, "
                                        "off for small, small-fast and squeeze)."),
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
    amp: str = typer.Option("auto", "--amp", help="Autocast the network: auto (bf16 on a CPU with native bf16 "
                            "such as AVX512-BF16/AMX, fp32 elsewhere), bf16, fp16 (CUDA) or off (fp32)."),
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

    with _flag_errors("amp", "device", "oracle", "oracle_embeddings", "scales"):
        result = evaluate(checkpoint, data, split=split, flip=flip,
                          scales=_parse_floats(scales, "--scales") if scales else None, batch_size=batch_size,
                          max_images=max_images, oracle=oracle, oracle_embeddings=oracle_embeddings,
                          centre_check=centre_check, device=device, amp=amp, out=out, offline=offline,
                          exist_ok=exist_ok)
    if result.metrics["rank"] != 0:  # under torchrun the other processes only ran their share of the images
        return
    for table in metrics_tables(result.metrics):
        console.print(table)
    console.print(f"wrote {result.results_file} ({result.metrics['detections']} detections) and "
                  f"{result.metrics_file}")


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
                                        "time (default: the preset's: on for the paper's hourglass as in the paper, "
                                        "off for small, small-fast and squeeze)."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Test scales, e.g. 0.5 or 0.5,1 (default: the "
                                         "scale the model was trained for, stored in its checkpoint)."),
    amp: str = typer.Option("auto", "--amp", help="Autocast the network: auto (bf16 on a CPU with native bf16 "
                            "such as AVX512-BF16/AMX, fp32 elsewhere), bf16, fp16 (CUDA) or off (fp32)."),
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
    names = _parse_names(classes)
    with _flag_errors("amp", "device"), console.status("detecting") as status:
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
    n = len(report.outputs)
    console.print(f"wrote {n} file{'' if n == 1 else 's'} to {out} and {report.json_path} "
                  f"({report.time_ms.get('total', 0.0):.0f} ms per image)")


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

    names = _parse_names(classes)
    with _flag_errors("device"):
        path = visualize_heatmaps(image, checkpoint=checkpoint, out=out, classes=names, gt=gt, device=device,
                                  scale=scale, offline=offline)
    console.print(f"wrote {path}")
