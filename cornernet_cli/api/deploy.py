"""`export` of the Python API: a model's network to a file for deployment (docs/deploy.md)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from cornernet_cli.api.detector import Detector, model_source
from cornernet_cli.errors import SettingError, check_choice
from cornernet_cli.export import ExportSummary, export_onnx
from cornernet_cli.quantize import calibration_files, quantize_onnx


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
    check_choice("format", format, ("onnx",))
    source = model_source(model)
    if not int8:
        if calib_data is not None:
            raise SettingError("calib_data only applies with int8")
        return export_onnx(source, out, dynamic=dynamic, height=height, width=width, max_size=max_size,
                           opset=opset, offline=offline)
    if calib_data is None:
        raise SettingError("int8 needs calib_data: a folder of images like those the model will see")
    calibration_files(calib_data, num_images=calib_images)  # a bad folder fails before the export's work
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_onnx(source, Path(tmp) / "float.onnx", dynamic=dynamic, height=height, width=width,
                              max_size=max_size, opset=opset, offline=offline)
        done = quantize_onnx(summary.out, out, calib_data=calib_data, num_images=calib_images)
    return replace(summary, out=done.out, calib_images=done.calib_images)
