"""Static int8 quantisation of an exported graph (onnxruntime.quantization, QDQ format).

Weights become int8 (per output channel by default), activations uint8 with ranges from min / max calibration
over a folder of images prepared exactly as `detect` prepares them: letterboxed at the test scale(s) the model
was trained for (the graph's metadata), shrunk to the longest side the graph takes, and with the mirrored copy
where the preset's test procedure flips. The quantised graph keeps the float graph's input and outputs (float32
``images`` [B, 3, H, W] in, raw heads out) and its metadata, so `detect`, `eval` and `Detector` run it like any
exported graph. Dynamic quantisation is not offered: onnxruntime's dynamic mode leaves convolutions in float.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cornernet_cli.config import preset_test_settings
from cornernet_cli.data.image_io import IMAGE_SUFFIXES, read_image
from cornernet_cli.data.transforms import flip_image, prepare_test_image
from cornernet_cli.engine.checkpoint import test_scales
from cornernet_cli.engine.onnx_runner import load_onnx, network_decoder
from cornernet_cli.errors import CornerNetError, SettingError


@dataclass(frozen=True)
class QuantizeSummary:
    out: Path
    calib_images: int  # images read for calibration (each also mirrored when the model's test procedure flips)
    per_channel: bool


def calibration_files(calib_data: str | Path, *, num_images: int) -> list[Path]:
    """Up to `num_images` image files of the folder `calib_data` (not its subfolders), evenly spaced in name
    order. Raises SettingError naming `calib_data` when it is not a folder or holds no image."""
    folder = Path(calib_data)
    if not folder.is_dir():
        raise SettingError(f"calib_data {folder} is not a folder (give a folder of calibration images)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SettingError(f"calib_data {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    step = max(1, len(files) // num_images)
    return files[::step][:num_images]


def calibration_inputs(graph: str | Path, files: list[Path]) -> Iterator[np.ndarray]:
    """The network inputs `detect` would feed `graph` (a float graph from `export_onnx`) for each image file:
    float32 [1, 3, H, W] per test scale, then the mirrored copy when the preset's test procedure flips; a static
    graph's inputs padded to its size, as `OnnxNetwork` pads them."""
    net, meta = load_onnx(graph, threads=1)
    flip = preset_test_settings(meta["model_config"])["flip"]
    decoder = network_decoder(net)
    max_side, padding = decoder.settings.max_side, decoder.padding
    for path in files:
        image = read_image(path)
        for scale in test_scales(meta):
            x, _ = prepare_test_image(image, scale, max_side=max_side, stride=net.output_stride, padding=padding)
            for view in (x[None], flip_image(x[None])) if flip else (x[None],):
                view = view.numpy()
                if net.static_size is not None:
                    (sh, sw), (h, w) = net.static_size, view.shape[2:]
                    if h > sh or w > sw:
                        raise CornerNetError(f"{path}: its network input {h}x{w} is larger than the static graph's "
                                             f"{sh}x{sw} (export with dynamic=True)")
                    view = np.pad(view, ((0, 0), (0, 0), (0, sh - h), (0, sw - w)))
                yield np.ascontiguousarray(view, dtype=np.float32)


def quantize_onnx(graph: str | Path, out: str | Path, *, calib_data: str | Path, num_images: int = 32,
                  per_channel: bool = True) -> QuantizeSummary:
    """Write `out`, an int8 (QDQ) copy of the float graph `graph` from `export_onnx`, calibrated on up to
    `num_images` images of the folder `calib_data` (see the module docstring); per_channel: one weight scale per
    output channel (else per tensor)."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise CornerNetError("int8 quantisation needs onnxruntime: pip install onnxruntime (or the onnx extra, "
                             "e.g. pip install -e '.[onnx]' in a checkout)") from None
    if num_images < 1:
        raise SettingError(f"num_images must be at least 1, got {num_images}")
    files = calibration_files(calib_data, num_images=num_images)
    inputs = calibration_inputs(graph, files)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(inputs, None)
            return None if x is None else {"images": x}

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # folded and shape-inferred, as onnxruntime advises before quantising
        quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return QuantizeSummary(out=out, calib_images=len(files), per_channel=per_channel)


__all__ = ["QuantizeSummary", "calibration_files", "calibration_inputs", "quantize_onnx"]
