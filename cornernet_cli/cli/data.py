"""`prepare-data` and `inspect-data`: datasets in, checked and looked at."""

# The command modules import their implementations inside each command, not at the top: moving those imports
# to the top made `cornernet --help` take 3.7 s instead of 0.16 s (median of 5, 2026-12-01; it then imports
# torch and the whole package).

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cornernet_cli.cli.common import _as_flags, _flag_errors, _parse_floats, console
from cornernet_cli.errors import CornerNetError


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
        with _flag_errors("num_classes"):
            report = synthetic_report(out, num_train=num_train, num_val=num_val, image_size=image_size,
                                      num_classes=num_classes, seed=seed, sizes=lo_hi, max_iou=max_iou,
                                      exist_ok=exist_ok)
    else:
        if source is None:
            raise CornerNetError(f"--source is required for --format {format}", exit_code=2)
        with _flag_errors("format", "val_fraction"):
            report = prepare_data(format=format, source=source, out=out, val_fraction=val_fraction, seed=seed,
                                  strict=strict, copy_images=copy_images, exist_ok=exist_ok)
    print_report(report, console)


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
    from cornernet_cli.data.look import inspect_as_trained

    if not data.is_dir():
        raise CornerNetError(f"--data {data} is not a folder", 2)
    given = dict(input_size=input_size, vflip=vflip, transpose=transpose,
                 random_scales=_parse_floats(random_scales, "--random-scales") if random_scales else None)
    with _flag_errors("preset", *given):
        report, s = inspect_as_trained(data, out, preset=preset, splits=split, num_images=images, seed=seed,
                                       overrides={k: v for k, v in given.items() if v is not None})
    b = report.stats["boxes_at_input_scale"]
    console.print(f"{sum(report.stats['images'].values())} images, "
                  + ", ".join(f"{name} {n}" for name, n in report.stats["images"].items())
                  + f"; {b['count']} training boxes, median {b['median_width'] or 0:.0f} x "
                  f"{b['median_height'] or 0:.0f} input pixels at --input-size {s.data.input_size}")
    for note in report.notes:
        console.print(f"[yellow]note[/]: {_as_flags(note, ['input_size', 'random_scales'])}")
    console.print(f"wrote {', '.join(p.name for p in report.files)} to {report.out_dir}")
