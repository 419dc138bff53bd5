"""`cornernet inspect-data`: pictures and numbers of a dataset before training on it.

Into the output folder:
    <split>_boxes.jpg   a seeded sample of each split's images with their ground-truth boxes and classes
    train_crops.jpg     training samples as the network gets them (crop, scale, flip, colour), with the corner
                        targets the encoder makes: top-left heatmaps red, bottom-right blue, the box between
    labels.png          instances per class and split; box width and height at input scale; the gaussian
                        radius the encoder will use; where box centres lie in the image
    labels.json         the numbers behind labels.png (the fractions under one cell / over the input are of
                        (box, scale) pairs)

"At input scale": a training crop covers input_size x s image pixels for s drawn from the random scales and
is resized to the input, so a box of side L image pixels is L / s input pixels, each scale equally likely;
one output cell is `stride` input pixels. The radius is the encoder's (cornernet_cli.targets, object mode):
int(gaussian_radius(ceil(h / stride), ceil(w / stride))) output cells.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from cornernet_cli.config import DataConfig
from cornernet_cli.data.coco import CocoDetection, available_splits
from cornernet_cli.data.image_io import write_image
from cornernet_cli.data.loader import build_train_dataset
from cornernet_cli.data.transforms import MEAN, STD
from cornernet_cli.drawing import Style, class_colour, draw_box, fit, mosaic
from cornernet_cli.engine.settings import TrainSettings, train_settings
from cornernet_cli.errors import CornerNetError, SettingError
from cornernet_cli.targets import gaussian_radius


@dataclass
class LookReport:
    """What inspect-data wrote (paths) and the numbers of labels.json."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # advice on the settings; names parameters (input_size)


def box_statistics(boxes: np.ndarray, image_sizes: np.ndarray, *, input_size: int, scales: Sequence[float],
                   stride: int = 4, min_overlap: float = 0.3) -> dict[str, np.ndarray]:
    """Sizes of [N, 4] x1, y1, x2, y2 image-pixel boxes as the training input sees them.

    image_sizes: [N, 2] (height, width) of each box's image. Returns, for each box and each scale (flattened,
    N * len(scales) entries, box-major): "width", "height" (input pixels), "radius" (output cells, the
    encoder's), and per box: "centre" [N, 2] (x, y as fractions of the image). With no scales (whole images
    resized to the input) the scale is the image's longer side / input_size.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    s = (np.asarray(scales, dtype=np.float64)[None, :].repeat(len(boxes), 0) if len(scales)
         else (sizes.max(axis=1) / input_size)[:, None])
    w_in, h_in = (w[:, None] / s).reshape(-1), (h[:, None] / s).reshape(-1)
    radius = np.array([int(gaussian_radius(math.ceil(hh / stride), math.ceil(ww / stride), min_overlap))
                       for ww, hh in zip(w_in, h_in)], dtype=np.int64)
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / sizes[:, 1], (boxes[:, 1] + boxes[:, 3]) / 2 / sizes[:, 0]],
                      axis=1) if len(boxes) else np.zeros((0, 2))
    return {"width": w_in, "height": h_in, "radius": radius, "centre": centre}


def _sample(count: int, n: int, seed: int) -> list[int]:
    return sorted(np.random.default_rng(seed).choice(count, size=min(n, count), replace=False).tolist())


def _boxes_mosaic(ds: CocoDetection, split: str, indices: list[int], tile: int) -> np.ndarray:
    tiles, titles = [], []
    for i in indices:
        sample = ds[i]
        canvas, s = fit(sample.image, tile)
        style = Style.for_image(canvas.shape)
        for box, label in zip(sample.boxes, sample.labels):
            draw_box(canvas, box * s, class_colour(int(label)), ds.class_names[int(label)], style)
        tiles.append(canvas)
        titles.append(f"{sample.path.name}: {len(sample.boxes)} boxes")
    return mosaic(tiles, titles, heading=f"{split}: {len(indices)} of {len(ds)} images with their ground truth")


def training_view(sample: dict, class_names: Sequence[str], tile: int) -> np.ndarray:
    """One TrainDataset sample drawn: the de-normalised input, top-left heatmaps (max over classes) in red,
    bottom-right in blue, and each object's box rebuilt from its two corner targets (cell + offset), labelled
    with the class whose heatmap peaks at its top-left corner."""
    image = sample["image"].numpy().transpose(1, 2, 0) * STD + MEAN
    size = image.shape[:2]
    tl, br = sample["tl_heat"].numpy(), sample["br_heat"].numpy()
    h, w = tl.shape[1:]
    up = lambda m: cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    view = image * 0.7
    view[:, :, 2] += 0.6 * up(tl.max(axis=0))
    view[:, :, 0] += 0.6 * up(br.max(axis=0))
    view = (np.clip(view, 0, 1) * 255).astype(np.uint8)
    canvas, s = fit(view, tile)
    style = Style.for_image(canvas.shape)
    ratio = np.array([size[1] / w, size[0] / h]) * s
    for ti, bi, to, bo in zip(sample["tl_index"].numpy(), sample["br_index"].numpy(), sample["tl_off"].numpy(),
                              sample["br_off"].numpy()):
        p1 = (np.array([ti % w, ti // w]) + to) * ratio
        p2 = (np.array([bi % w, bi // w]) + bo) * ratio
        label = int(tl[:, ti // w, ti % w].argmax())
        draw_box(canvas, [*p1, *p2], class_colour(label), class_names[label], style)
    return canvas


def _crops_mosaic(ds: CocoDetection, data_cfg: DataConfig, indices: list[int], seed: int, tile: int) -> np.ndarray:
    train = build_train_dataset(ds, input_size=data_cfg.input_size, data_cfg=data_cfg)
    tiles, titles = [], []
    for n, i in enumerate(indices):
        train.seed_sample(seed * 100003 + n)
        sample = train[i]
        tiles.append(training_view(sample, ds.class_names, tile))
        titles.append(f"{ds.image_path(i).name}: {len(sample['tl_index'])} objects")
    scales = ",".join(f"{s:g}" for s in data_cfg.random_scales) or "whole image"
    return mosaic(tiles, titles, heading=f"training input {data_cfg.input_size} px, crop scales {scales}: "
                  "top-left targets red, bottom-right blue")


def _labels_figure(counts: dict[str, list[int]], class_names: list[str], stats: dict[str, np.ndarray],
                   input_size: int, stride: int, out: Path) -> Path:
    fig = Figure(figsize=(20, 4.6))
    ax_count, ax_size, ax_radius, ax_centre = fig.subplots(1, 4)
    x = np.arange(len(class_names))
    width = 0.8 / max(1, len(counts))
    for j, (split, c) in enumerate(counts.items()):
        ax_count.bar(x + j * width - 0.4 + width / 2, c, width, label=split)
    ax_count.set_xticks(x, class_names, rotation=90 if len(class_names) > 6 else 0, fontsize=8)
    ax_count.set(title="instances per class", ylabel="boxes")
    ax_count.legend(fontsize=8)
    if len(stats["width"]):
        sides = np.concatenate([stats["width"], stats["height"]])
        bins = np.geomspace(max(0.5, sides.min() * 0.9), max(sides.max() * 1.1, 2 * stride), 40)
        ax_size.hist(stats["width"], bins=bins, alpha=0.6, label="width")
        ax_size.hist(stats["height"], bins=bins, alpha=0.6, label="height")
        ax_size.set_xscale("log")
        ax_size.axvline(stride, color="red", ls="--", lw=1, label=f"one output cell ({stride} px)")
        ax_size.axvline(input_size, color="black", ls="--", lw=1, label=f"input size ({input_size} px)")
        ax_size.legend(fontsize=8)
        r = stats["radius"]
        ax_radius.hist(r, bins=np.arange(r.max() + 2) - 0.5, color="tab:purple")
        ax_centre.hist2d(stats["centre"][:, 0], stats["centre"][:, 1], bins=20, range=[[0, 1], [0, 1]], cmap="viridis")
    ax_size.set(title="box width / height at input scale (train split)", xlabel="input pixels", ylabel="boxes")
    ax_radius.set(title="gaussian radius the encoder uses (train split)", xlabel="output cells (0: one cell)",
                  ylabel="boxes")
    ax_centre.set(title="box centres (all splits)", xlabel="x / image width", ylabel="y / image height", xlim=(0, 1),
                  ylim=(1, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


def inspect_data(data_dir: str | Path, out_dir: str | Path, *, splits: Sequence[str] | None = None,
                 data_cfg: DataConfig = DataConfig(), stride: int = 4, num_images: int = 16, seed: int = 0,
                 tile: int = 320) -> LookReport:
    """Write the files of the module docstring for `splits` (default: every split found) of `data_dir`.

    data_cfg: the training settings the crops and input-scale statistics follow (input_size, random_scales,
    flips, colour, radius); stride: the model's output stride (input pixels per output cell); num_images:
    images per mosaic (a seeded sample); tile: mosaic tile side in pixels.
    The training crops come from the train split (the first split when there is none).
    """
    found = available_splits(data_dir)
    splits = list(splits) if splits else found
    missing = [s for s in splits if s not in found]
    if missing:
        raise CornerNetError(f"dataset {data_dir} has no split {missing[0]!r}; splits found: {', '.join(found)}")
    if not splits:
        raise CornerNetError(f"dataset {data_dir} has no splits (expected annotations/{{train,val}}.json)")
    if num_images < 1:
        raise CornerNetError(f"num_images must be at least 1, got {num_images}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = LookReport(out)
    datasets = {s: CocoDetection.from_folder(data_dir, s) for s in splits}
    names = datasets[splits[0]].class_names
    for s, ds in datasets.items():
        if ds.class_names != names:
            raise CornerNetError(f"{ds.ann_path} has classes {ds.class_names}, but {datasets[splits[0]].ann_path} "
                                 f"has {names}")
        if len(ds):
            path = out / f"{s}_boxes.jpg"
            write_image(path, _boxes_mosaic(ds, s, _sample(len(ds), num_images, seed), tile), quality=85)
            report.files.append(path)

    train_split = "train" if "train" in datasets else splits[0]
    train = datasets[train_split]
    if len(train):
        path = out / "train_crops.jpg"
        write_image(path, _crops_mosaic(train, data_cfg, _sample(len(train), num_images, seed), seed, tile),
                    quality=85)
        report.files.append(path)

    counts = {s: np.bincount(np.concatenate([ds.targets(i)[1] for i in range(len(ds))] or [np.zeros(0, int)]),
                             minlength=len(names)).tolist() for s, ds in datasets.items()}
    boxes, sizes = [], []
    for i in range(len(train)):
        b = train.targets(i)[0]
        boxes.append(b)
        sizes.append(np.repeat([train.image_size(i)], len(b), axis=0).reshape(-1, 2))
    stats = box_statistics(np.concatenate(boxes or [np.zeros((0, 4))]), np.concatenate(sizes or [np.zeros((0, 2))]),
                           input_size=data_cfg.input_size, scales=data_cfg.random_scales,
                           stride=stride, min_overlap=data_cfg.min_overlap)
    all_centres = []
    for ds in datasets.values():
        for i in range(len(ds)):
            b = ds.targets(i)[0]
            all_centres.append(box_statistics(b, np.repeat([ds.image_size(i)], len(b), axis=0).reshape(-1, 2),
                                              input_size=data_cfg.input_size, scales=(1.0,))["centre"])
    stats["centre"] = np.concatenate(all_centres or [np.zeros((0, 2))])
    report.files.append(_labels_figure(counts, names, stats, data_cfg.input_size, stride,
                                       out / "labels.png"))

    side = np.minimum(stats["width"], stats["height"])
    report.stats = {
        "data": str(data_dir), "classes": names, "images": {s: len(ds) for s, ds in datasets.items()},
        "instances": counts, "input_size": data_cfg.input_size, "random_scales": list(data_cfg.random_scales),
        "stride": stride, "train_split": train_split,
        "boxes_at_input_scale": {
            "count": sum(len(b) for b in boxes),
            "median_width": float(np.median(stats["width"])) if len(side) else None,
            "median_height": float(np.median(stats["height"])) if len(side) else None,
            "under_one_cell": float(np.mean(side < stride)) if len(side) else 0.0,
            "over_input": float(np.mean(np.maximum(stats["width"], stats["height"]) > data_cfg.input_size))
            if len(side) else 0.0,
            "radius_counts": np.bincount(stats["radius"]).tolist() if len(side) else [],
        },
    }
    path = out / "labels.json"
    path.write_text(json.dumps(report.stats, indent=1))
    report.files.append(path)
    report.notes = _size_notes(report.stats["boxes_at_input_scale"], input_size=data_cfg.input_size, stride=stride)
    return report


def _size_notes(b: dict[str, Any], *, input_size: int, stride: int) -> list[str]:
    """Advice when over 5 % of the training boxes (at input scale) are under one output cell or over the input."""
    notes = []
    if b["under_one_cell"] > 0.05:
        notes.append(f"{100 * b['under_one_cell']:.0f}% of training boxes are under one output cell ({stride} px) "
                     f"at input scale: a larger input_size or smaller random_scales would keep them")
    if b["over_input"] > 0.05:
        notes.append(f"{100 * b['over_input']:.0f}% of training boxes are larger than the {input_size} px input: "
                     f"crops cut them; larger random_scales would fit them")
    return notes


def inspect_as_trained(data: str | Path, out: str | Path | None = None, *, preset: str | None = None,
                       overrides: Mapping[str, Any] | None = None, splits: Sequence[str] | None = None,
                       num_images: int = 16, seed: int = 0) -> tuple[LookReport, TrainSettings]:
    """`inspect_data` with the crops `cornernet train` would cut: the settings come from `train_settings` for
    `preset` and the same `overrides` (input_size, random_scales, vflip, transpose; the crop-size and scale
    rule for the data included). out: default runs/inspect-<data folder name>. Returns the report and the
    settings; a bad value raises SettingError naming its parameter."""
    try:
        settings = train_settings(data_dir=data, preset=preset, overrides=dict(overrides or {}))
    except ValueError as e:
        raise SettingError(str(e)) from None
    out = Path(out) if out is not None else Path("runs") / f"inspect-{Path(data).resolve().name}"
    report = inspect_data(data, out, splits=splits, data_cfg=settings.data, stride=settings.model.output_stride,
                          num_images=num_images, seed=seed)
    return report, settings


__all__ = ["LookReport", "box_statistics", "inspect_as_trained", "inspect_data", "training_view"]
