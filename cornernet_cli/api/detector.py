"""The detector object of the Python API: `Detector` (a trained network, loaded once) and the `Detections`
it returns for each image.

Images are numpy arrays in OpenCV's BGR channel order unless a function says otherwise (`rgb=True`). Boxes are
x1, y1, x2, y2 in image pixels (continuous coordinates).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, overload

import cv2
import numpy as np

from cornernet_cli.config import DecodeConfig, preset_test_settings
from cornernet_cli.data.image_io import read_image, write_image
from cornernet_cli.detect import draw_detections, image_entry, output_settings
from cornernet_cli.engine.checkpoint import test_scales
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.inference import detect_images
from cornernet_cli.engine.onnx_runner import check_amp, load_network, network_decoder, resolve_network
from cornernet_cli.engine.precision import AMP_CHOICES
from cornernet_cli.errors import SettingError, check_choice
from cornernet_cli.postprocess import to_coco_results

#: What `Detector.predict` takes: an image file, an image array ([H, W, 3] or [H, W] uint8), a PIL image.
ImageInput = Union[str, Path, np.ndarray, Any]


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
        procedure: on for the paper's hourglass, off for small, small-fast and squeeze). model: the torch
        module, in eval mode (its BatchNorms folded into the convolutions: for inference, not for training).

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
        flip: the paper's test-time flip (about twice the network time); None: `self.flip` (the preset's: on for
            the paper's hourglass, off for small, small-fast and squeeze).
        scales: test scales; None: the scale the model was trained for (`test_scales`).
        max_side: a larger network input (image side x scale) is shrunk to this many pixels; boxes stay in
            image pixels. centre_check: for a model with a centre head, keep only boxes with a centre keypoint
            in their middle third. amp: the network's autocast: auto (bf16 on a CPU with native bf16,
            else fp32), off, bf16 or fp16 (CUDA).

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
        check_choice("amp", amp, AMP_CHOICES)
        check_amp(self.model, amp)
        settings = output_settings(DecodeConfig(max_side=max_side, centre_check=centre_check), threshold)
        decoder = network_decoder(self.model, settings)
        scales = tuple(scales) if scales is not None else self.test_scales
        flip = self.flip if flip is None else flip
        many = isinstance(images, (list, tuple))
        found = []
        for i, item in enumerate(images if many else [images]):
            image, path = as_bgr(item, rgb=rgb, name=f"images[{i}]" if many else "images")
            dets = detect_images(self.model, [image], decoder=decoder, device=self.device, scales=scales, flip=flip,
                                 amp=amp)[0]
            found.append(Detections.from_array(dets[dets[:, 4] >= threshold], image=image, classes=self.classes,
                                               category_ids=self.category_ids, path=path))
        return found if many else found[0]


def model_source(model: str | Path | Detector) -> str | Path:
    """What a model argument names: the file a `Detector` was loaded from, or the path or name itself."""
    return model.checkpoint if isinstance(model, Detector) else model
