"""The Python API: a detector object and three functions, with the command line's settings and defaults.

A session from a notebook (`data` is a dataset folder from `cornernet prepare-data`; here the test suite's
synthetic shapes):

>>> from cornernet_cli import Detector, evaluate, export, train
>>> run = train(data, preset="tiny", iters=2, input_size=64, out="runs/tiny", progress=False)
>>> run.status
'finished'
>>> detector = Detector(run.checkpoint)
>>> found = detector.predict(f"{data}/images/val/000000.jpg", threshold=0.0)
>>> found.boxes.shape[1], found.plot().shape
(4, (128, 128, 3))
>>> metrics = evaluate(run.checkpoint, data, out="runs/tiny/eval/results.json", progress=False)
>>> 0.0 <= metrics.ap <= 1.0
True

Images are numpy arrays in OpenCV's BGR channel order unless a function says otherwise (`rgb=True`).
Boxes are x1, y1, x2, y2 in image pixels (continuous coordinates: a box covering pixel columns 0..9 spans
x 0.0 to 10.0). Errors about a bad argument are `SettingError`s naming the parameter; every other user
error is a one-line `CornerNetError` naming the file and value.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union, overload

import cv2
import numpy as np
from rich.console import Console
from rich.markup import escape

from cornernet_cli.config import DecodeConfig, preset_test_settings
from cornernet_cli.data.image_io import read_image, write_image
from cornernet_cli.detect import draw_detections, image_entry
from cornernet_cli.engine import evaluate as evaluation
from cornernet_cli.engine import train as training
from cornernet_cli.engine.checkpoint import test_scales
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.inference import detect_images
from cornernet_cli.engine.onnx_runner import check_amp, fit_max_side, load_network, resolve_network
from cornernet_cli.engine.precision import AMP_CHOICES
from cornernet_cli.engine.settings import TrainSettings, train_settings
from cornernet_cli.errors import SettingError
from cornernet_cli.export import ExportSummary, export_onnx
from cornernet_cli.postprocess import to_coco_results
from cornernet_cli.quantize import calibration_files, quantize_onnx

#: What `Detector.predict` takes: an image file, an image array ([H, W, 3] or [H, W] uint8), a PIL image.
ImageInput = Union[str, Path, np.ndarray, Any]


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise SettingError(f"{name} must be {listed}, got {value!r}")


# ---- detection --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Detections:
    """The objects found in one image, strongest first.

    Attributes:
        boxes: float32 [N, 4]: x1, y1, x2, y2 in image pixels (clipped to the image).
        scores: float32 [N] in 0..1, descending.
        class_ids: int64 [N]: index into `classes`.
        classes: the model's class names, in the order of its heads.
        category_ids: the dataset category id of each class (what COCO results use).
        image: BGR uint8 [H, W, 3], the image the boxes are in.
        path: the image file, or None for an array.

    Example:
        >>> found = Detector(checkpoint).predict(f"{data}/images/val/000001.jpg", threshold=0.0)
        >>> len(found) == len(found.scores) == len(found.names)
        True
        >>> found.to_coco(image_id=7)[0]["image_id"]
        7
        >>> json.loads(found.to_json())["width"]
        128
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    classes: tuple[str, ...]
    category_ids: tuple[int, ...]
    image: np.ndarray = field(repr=False)
    path: Path | None = None

    @classmethod
    def from_array(cls, dets: np.ndarray, *, image: np.ndarray, classes: Sequence[str],
                   category_ids: Sequence[int], path: Path | None = None) -> Detections:
        """From the [N, 6] rows (x1, y1, x2, y2 pixels, score, class index) that the inference code returns."""
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
        return cls(boxes=dets[:, :4].astype(np.float32), scores=dets[:, 4].astype(np.float32),
                   class_ids=dets[:, 5].astype(np.int64), classes=tuple(classes),
                   category_ids=tuple(int(c) for c in category_ids), image=image, path=path)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.names[:5], self.scores[:5]))
        more = f", ... {len(self) - 5} more" if len(self) > 5 else ""
        return f"Detections({len(self)} in {self.path or 'array'} {self.image.shape[1]}x{self.image.shape[0]}: " \
               f"{shown}{more})"

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.classes[int(c)] for c in self.class_ids]

    def array(self) -> np.ndarray:
        """float64 [N, 6]: x1, y1, x2, y2 (pixels), score, class index (the inference code's rows)."""
        return np.concatenate([self.boxes, self.scores[:, None], self.class_ids[:, None]], axis=1).astype(np.float64)

    def plot(self, *, rgb: bool = False) -> np.ndarray:
        """A copy of the image with each box, class name and score drawn: uint8 [H, W, 3], BGR (for
        cv2.imwrite), or RGB with rgb=True (for matplotlib's imshow)."""
        drawn = draw_detections(self.image, self.array(), self.classes)
        return cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB) if rgb else drawn

    def save(self, path: str | Path) -> Path:
        """Write `plot()` to an image file (format from the suffix). Returns the path."""
        write_image(path, self.plot())
        return Path(path)

    def to_coco(self, image_id: int = 0) -> list[dict]:
        """COCO results entries: {image_id, category_id, bbox [x, y, width, height] pixels, score}."""
        return to_coco_results(self.array(), image_id, self.category_ids)

    def to_json(self, **dumps_args: Any) -> str:
        """This image's entry of `cornernet detect`'s detections.json: {file, width, height, detections:
        [{bbox [x1, y1, x2, y2] pixels, score, class, category_id}]}. Keyword arguments go to json.dumps."""
        entry = image_entry(self.path or "", self.image, self.array(), self.classes, self.category_ids)
        return json.dumps(entry, **dumps_args)


def as_bgr(image: ImageInput, *, rgb: bool = False, name: str = "image") -> tuple[np.ndarray, Path | None]:
    """An image input as BGR uint8 [H, W, 3] (contiguous) and the file it came from.

    image: a file path (read with `read_image`), a uint8 array [H, W, 3] (BGR; RGB with rgb=True), [H, W, 4]
    (the alpha channel is dropped) or [H, W] (grey), or a PIL image (anything with .convert("RGB")).
    name: how errors refer to the input. Raises SettingError for anything else.
    """
    if isinstance(image, (str, Path)):
        return read_image(image), Path(image)
    if hasattr(image, "convert") and not isinstance(image, np.ndarray):
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR), None
    if not isinstance(image, np.ndarray):
        raise SettingError(f"{name} must be an image file path, a numpy array or a PIL image, "
                           f"got {type(image).__name__}")
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) \
            or 0 in image.shape:
        raise SettingError(f"{name} must be a uint8 array [H, W, 3], [H, W, 4] or [H, W], got {image.dtype} "
                           f"{list(image.shape)}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), None
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR), None
    return np.ascontiguousarray(image[:, :, ::-1] if rgb else image), None


class Detector:
    """A trained CornerNet, loaded once, that finds objects in images.

    Args:
        source: a cornernet checkpoint (.safetensors), e.g. runs/train/best.safetensors; original /
            mmdetection weights (.pkl / .pth, imported once into the cache); or a name from `cornernet models`
            such as "cornernet-hg104-coco" (downloaded on first use into CORNERNET_HOME; see
            `cornernet_cli.hub.resolve_weights`); or a graph from `export` (.onnx, run by onnxruntime, float32;
            see `cornernet_cli.engine.onnx_runner`).
        device: cpu, cuda (this process's GPU), cuda:N or auto.
        offline: never download a named model (one not yet in the cache is an error saying where to put it).

    Attributes:
        checkpoint: the .safetensors (or .onnx) file loaded. classes: class names in head order (class id i is
        classes[i]). category_ids: the dataset category id of each class. test_scales: the test scale(s) the
        model was trained for, predict's default. flip: predict's default test-time flip (the preset's test
        procedure: on; off for squeeze). model: the torch module, in eval mode.

    Example:
        >>> detector = Detector(checkpoint)
        >>> detector.classes
        ('rectangle', 'ellipse')
    """

    def __init__(self, source: str | Path, *, device: str = "cpu", offline: bool = False):
        self.checkpoint = resolve_network(source, offline=offline)
        self.device = resolve_device(device)
        self.model, meta = load_network(self.checkpoint, device=self.device)
        self.classes: tuple[str, ...] = tuple(meta["class_names"])
        self.category_ids: tuple[int, ...] = tuple(meta["category_ids"])
        self.test_scales: tuple[float, ...] = test_scales(meta)
        self.flip: bool = bool(preset_test_settings(meta["model_config"])["flip"])

    def __repr__(self) -> str:
        return f"Detector({str(self.checkpoint)!r}, device={str(self.device)!r}, {len(self.classes)} classes)"

    @overload
    def predict(self, images: list | tuple, **settings: Any) -> list[Detections]: ...

    @overload
    def predict(self, images: ImageInput, **settings: Any) -> Detections: ...

    def predict(
        self,
        images: ImageInput | list | tuple,
        *,
        threshold: float = 0.3,
        flip: bool | None = None,
        scales: Sequence[float] | None = None,
        rgb: bool = False,
        max_side: int = 2048,
        centre_check: bool = True,
        amp: str = "auto",
    ) -> Detections | list[Detections]:
        """Detect objects in one image, or in each image of a list (then a list of results, in order).

        images: a file path, a uint8 array ([H, W, 3] BGR, or RGB with rgb=True; [H, W] grey), a PIL image,
            or a list / tuple of them. Each image runs on its own (as `cornernet detect` runs them).
        threshold: keep detections scoring at least this (0..1; `cornernet detect`'s default 0.3).
        flip: the paper's test-time flip (about twice the network time); None: `self.flip` (on; off for the
            squeeze preset, as its source tests).
        scales: test scales; None: the scale the model was trained for (`test_scales`).
        max_side: a larger network input (image side x scale) is shrunk to this many pixels; boxes stay in
            image pixels. centre_check: for a model with a centre head, keep only boxes with a centre keypoint
            in their middle third. amp: the network's autocast: off, bf16 or fp16 (CUDA).

        Example:
            >>> detector = Detector(checkpoint)
            >>> image = cv2.imread(f"{data}/images/val/000002.jpg")        # BGR
            >>> found = detector.predict(image, threshold=0.0)
            >>> same = detector.predict(image[:, :, ::-1], rgb=True, threshold=0.0)
            >>> bool(np.array_equal(found.boxes, same.boxes))
            True
            >>> len(detector.predict([image, image]))
            2
        """
        if not 0.0 <= threshold <= 1.0:
            raise SettingError(f"threshold must be in 0..1, got {threshold}")
        if scales is not None and (len(scales) == 0 or any(not s > 0 for s in scales)):
            raise SettingError(f"scales must be positive numbers, got {list(scales)}")
        if max_side < 32:
            raise SettingError(f"max_side must be at least 32 pixels, got {max_side}")
        _choice("amp", amp, AMP_CHOICES)
        check_amp(self.model, amp)
        params = DecodeConfig(max_side=fit_max_side(self.model, max_side), centre_check=centre_check)
        scales = tuple(scales) if scales is not None else self.test_scales
        flip = self.flip if flip is None else flip
        many = isinstance(images, (list, tuple))
        found = []
        for i, item in enumerate(images if many else [images]):
            image, path = as_bgr(item, rgb=rgb, name=f"images[{i}]" if many else "images")
            dets = detect_images(self.model, [image], device=self.device, scales=scales, flip=flip, params=params,
                                 amp=amp)[0]
            found.append(Detections.from_array(dets[dets[:, 4] >= threshold], image=image, classes=self.classes,
                                               category_ids=self.category_ids, path=path))
        return found if many else found[0]


# ---- training -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRun:
    """What `train` did.

    out_dir: the run folder (config.json, metrics.jsonl, last / best / state .safetensors, summary.json).
    status: finished | interrupted | stopped | time limit (the last three leave a resume state).
    step: steps done. best_ap: the best validation AP (0..1), None without a validation split.
    checkpoint: best.safetensors (the final model without a validation split): what to load or evaluate.
    settings: the resolved model / data / training configs and a line per setting chosen for the user.
    images_per_s: training throughput over the last steps.
    """

    out_dir: Path
    status: str
    step: int
    best_ap: float | None
    checkpoint: Path
    settings: TrainSettings
    images_per_s: float


def train(
    data: str | Path,
    *,
    out: str | Path = "runs/train",
    preset: str | None = None,
    weights: str | Path | None = None,
    offline: bool = False,
    freeze: str = "none",
    time_budget: float | None = None,
    time_clock: str = "auto",
    iters: int | None = None,
    epochs: float | None = None,
    val: str | Path | None = None,
    val_split: str = "val",
    input_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    lr_steps: Sequence[int] | None = None,
    lr_schedule: str | None = None,
    warmup: int | None = None,
    grad_clip: float | None = None,
    amp: str | None = None,
    pull_weight: float = 0.1,
    push_weight: float = 0.1,
    ema: float | None = None,
    channels_last: bool = True,
    workers: int | None = None,
    seed: int = 0,
    radius: str = "object",
    corner_pool: bool = True,
    centre_head: bool | None = None,
    random_scales: Sequence[float] | None = None,
    test_scale: float | None = None,
    vflip: float = 0.0,
    transpose: float = 0.0,
    val_scales: Sequence[float] | None = None,
    device: str = "auto",
    resume: bool = False,
    exist_ok: bool = False,
    val_every: int = 0,
    save_every: int = 500,
    log_every: int = 10,
    max_minutes: float | None = None,
    max_cpu_minutes: float | None = None,
    tensorboard: bool = False,
    progress: bool = True,
) -> TrainRun:
    """Train CornerNet on a dataset folder: `cornernet train`, with the same settings and per-preset defaults.

    With only `data`, the CPU recipe (docs/recipes.md): preset small-fast with a centre head, crops and test
    scale chosen from the data's box sizes, 25 CPU-minutes with a cosine schedule ending with the budget.
    Settings left at None take the preset's value (config.TRAIN_DEFAULTS); the names are the command's flags
    (`time_budget` is --time, in minutes; `corner_pool=False` is --no-corner-pool). `iters` or `epochs`
    replace the time budget by a step count. weights: fine-tune from a checkpoint, original / mmdetection
    weights or a named model (offline: never download it). progress: draw the progress bar and print each
    setting chosen for you (stderr). Ctrl-C stops at the next step with the state saved; `resume=True`
    continues a run; a folder holding another run is refused unless `exist_ok=True` (replace it).

    Example:
        >>> run = train(data, preset="tiny", iters=2, batch_size=2, input_size=64, out="runs/example",
        ...             progress=False)
        >>> run.step, run.checkpoint.name, run.settings.train.lr_steps
        (2, 'best.safetensors', (1,))
    """
    if amp is not None:
        _choice("amp", amp, AMP_CHOICES)
    if lr_schedule is not None:
        _choice("lr_schedule", lr_schedule, ("step", "cosine"))
    _choice("radius", radius, ("object", "fixed", "none"))
    if not Path(data).is_dir():
        raise SettingError(f"data {str(data)!r} is not a folder (expected a dataset folder from prepare-data)")
    given = dict(input_size=input_size, batch_size=batch_size, lr=lr, lr_steps=lr_steps, lr_schedule=lr_schedule,
                 warmup_iters=warmup, grad_clip=grad_clip, ema=ema, workers=workers, centre_head=centre_head,
                 test_scale=test_scale, random_scales=random_scales, val_scales=val_scales, amp=amp)
    overrides = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in given.items() if v is not None}
    overrides.update(channels_last=channels_last, seed=seed, pull_weight=pull_weight,
                     push_weight=push_weight, radius_mode=radius, vflip=vflip, transpose=transpose, freeze=freeze,
                     corner_pool=corner_pool)
    try:
        s = train_settings(data_dir=data, preset=preset, weights=weights, offline=offline, time_budget=time_budget,
                           time_clock=time_clock, iters=iters, epochs=epochs,
                           device_type=resolve_device(device).type,
                           world_size=int(os.environ.get("WORLD_SIZE", "1")), val_dir=val, val_split=val_split,
                           overrides=overrides)
    except ValueError as e:
        raise SettingError(str(e)) from None
    if progress:
        for line in s.choices:
            Console(stderr=True).print(f"[dim]{escape(line)}[/]", highlight=False)
    result = training.train(data_dir=data, out_dir=out, model_cfg=s.model, data_cfg=s.data, train_cfg=s.train,
                            val_dir=s.val_dir, val_split=s.val_split, device=device, resume=resume,
                            exist_ok=exist_ok, log_every=log_every, val_every=val_every, save_every=save_every,
                            max_minutes=max_minutes, max_cpu_minutes=max_cpu_minutes, tensorboard=tensorboard,
                            progress=progress)
    best = result.out_dir / "best.safetensors"
    return TrainRun(out_dir=result.out_dir, status=result.status, step=result.step, best_ap=result.best_ap,
                    checkpoint=best if best.is_file() else result.out_dir / "last.safetensors", settings=s,
                    images_per_s=result.images_per_s)



# ---- evaluation and export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """COCO metrics of a model on a dataset split (what `cornernet eval` prints and writes).

    ap, ap50, ap75: COCO box AP at IoU .50:.95, .50 and .75, fractions in 0..1 (-1 where the split has no
    ground truth). per_class: {class name: AP}. metrics: everything metrics.json holds (the 12 COCO summary
    metrics, per-class AP and AP50, time per image in ms per stage, the settings). results_file: the COCO
    results JSON; metrics_file: metrics.json beside it. str(): one line, AP / AP50 / AP75 in percent.
    """

    ap: float
    ap50: float
    ap75: float
    per_class: dict[str, float]
    metrics: dict[str, Any]
    results_file: Path
    metrics_file: Path

    def __str__(self) -> str:
        return evaluation.summary_line(self.metrics)


def _source(model: str | Path | Detector) -> str | Path:
    return model.checkpoint if isinstance(model, Detector) else model


def evaluate(
    model: str | Path | Detector | None,
    data: str | Path,
    *,
    split: str = "val",
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    batch_size: int = 1,
    max_images: int | None = None,
    oracle: str | None = None,
    oracle_embeddings: str = "gt",
    centre_check: bool = True,
    device: str = "cpu",
    amp: str = "auto",
    out: str | Path = "results.json",
    offline: bool = False,
    exist_ok: bool = False,
    progress: bool = True,
) -> Evaluation:
    """COCO AP (pycocotools) of a model on a split of a dataset folder: `cornernet eval`, same defaults.

    model: a checkpoint file, original / mmdetection weights, a named model (offline: never download it) or
    a `Detector` (None only with oracle="heatmaps+offsets"). scales: test scales; None: the one the model was
    trained for. flip: the paper's test-time flip; None: the preset's test procedure (on; off for squeeze).
    oracle: heatmaps or heatmaps+offsets replace the network's outputs by ground truth (the paper's error
    analysis), with oracle_embeddings gt or trained. Writes the COCO results JSON to `out` and metrics.json
    beside it (results of another evaluation there are refused unless exist_ok).

    Example:
        >>> metrics = evaluate(checkpoint, data, split="val", out="eval/results.json", progress=False)
        >>> sorted(metrics.per_class), metrics.metrics["images"]
        (['ellipse', 'rectangle'], 4)
    """
    m = evaluation.evaluate(checkpoint=None if model is None else _source(model), data_dir=data, split=split,
                            device=device, flip=flip, scales=tuple(scales) if scales else None, batch_size=batch_size,
                            max_images=max_images, oracle=oracle, oracle_embeddings=oracle_embeddings, out=out,
                            params=DecodeConfig(centre_check=centre_check), progress=progress, amp=amp,
                            offline=offline, exist_ok=exist_ok)
    return Evaluation(ap=m["AP"], ap50=m["AP50"], ap75=m["AP75"], per_class=dict(m["per_class"]), metrics=m,
                      results_file=Path(m["results"]), metrics_file=Path(m["metrics_file"]))


def export(
    model: str | Path | Detector,
    out: str | Path,
    *,
    format: str = "onnx",
    dynamic: bool = False,
    height: int = 511,
    width: int = 511,
    max_size: int = 2048,
    opset: int = 17,
    offline: bool = False,
    int8: bool = False,
    calib_data: str | Path | None = None,
    calib_images: int = 32,
) -> ExportSummary:
    """Export a model's network to a file: `cornernet export`, same defaults (see docs/deploy.md).

    format: onnx (standard operators; the graph outputs the raw heads, decode with cornernet_cli.decode).
    dynamic: free batch, height and width up to `max_size` pixels a side; otherwise exactly [1, 3, height,
    width]. Checks the graph against PyTorch with onnxruntime when installed (`max_abs_diff`, of the float graph).
    model: a checkpoint, original / mmdetection weights, a named model (offline: never download it) or a
    `Detector`. int8: write a statically quantised graph instead (`cornernet_cli.quantize`), calibrated on up to
    `calib_images` images of the folder `calib_data` (images like those the model will see; its training images).

    Example:
        >>> summary = export(checkpoint, "model.onnx", height=64, width=64)
        >>> summary.out.name, summary.max_abs_diff < 1e-3
        ('model.onnx', True)
    """
    _choice("format", format, ("onnx",))
    if not int8:
        if calib_data is not None:
            raise SettingError("calib_data only applies with int8")
        return export_onnx(_source(model), out, dynamic=dynamic, height=height, width=width, max_size=max_size,
                           opset=opset, offline=offline)
    if calib_data is None:
        raise SettingError("int8 needs calib_data: a folder of images like those the model will see")
    calibration_files(calib_data, num_images=calib_images)  # a bad folder fails before the export's work
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_onnx(_source(model), Path(tmp) / "float.onnx", dynamic=dynamic, height=height, width=width,
                              max_size=max_size, opset=opset, offline=offline)
        done = quantize_onnx(summary.out, out, calib_data=calib_data, num_images=calib_images)
    return replace(summary, out=done.out, calib_images=done.calib_images)


# Importing the submodule cornernet_cli.export (above) set the package's attribute `export` to that module;
# the package's public `export` is this function (the module stays importable: from cornernet_cli.export
# import export_onnx).
sys.modules[__name__.rpartition(".")[0]].export = export
