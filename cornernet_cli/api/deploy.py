"""`export` of the Python API: a model's network to a file for deployment (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

from cornernet_cli.api.detector import Detector, model_source
from cornernet_cli.errors import check_choice
from cornernet_cli.export import ExportSummary, export_onnx


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
) -> ExportSummary:
    """Export a model's network to a file: `cornernet export`, same defaults (see docs/deploy.md).

    format: onnx (standard operators; the graph outputs the raw heads, decode with cornernet_cli.decode).
    dynamic: free batch, height and width up to `max_size` pixels a side; otherwise exactly [1, 3, height,
    width]. Checks the graph against PyTorch with onnxruntime when installed (`max_abs_diff`). model: a
    checkpoint, original / mmdetection weights, a named model (offline: never download it) or a `Detector`.

    Example:
        >>> summary = export(checkpoint, "model.onnx", height=64, width=64)
        >>> summary.out.name, summary.max_abs_diff < 1e-3
        ('model.onnx', True)
    """
    check_choice("format", format, ("onnx",))
    return export_onnx(model_source(model), out, dynamic=dynamic, height=height, width=width, max_size=max_size,
                       opset=opset, offline=offline)
