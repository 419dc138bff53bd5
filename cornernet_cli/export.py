"""Export a checkpoint's network to ONNX (standard operators only; the decoder stays a separate step).

Corner pooling is exported with the doubling implementation (`corner_pool_doubling`: Slice, Max, Concat),
which gives the same values as the cumulative max. Its number of steps is fixed at export time: a static
export covers its own size; a dynamic export (batch, height and width free) covers inputs up to
`max_size` pixels per side (longer sides would pool over a window of only the first 2**steps positions).

Graph: input ``images`` float32 [B, 3, H, W] (BGR, normalised like the PyTorch pipeline); outputs the last
stack's raw heads ``tl_heat, br_heat`` [B, C, h, w] logits, ``tl_emb, br_emb`` [B, 1, h, w],
``tl_off, br_off`` [B, 2, h, w], with h = ceil(H/s), w = ceil(W/s) for the model's output stride s (4; 8 for
the squeeze preset, stored as ``cornernet_output_stride``); a model trained with a centre head
also outputs ``ct_heat`` [B, C, h, w] and ``ct_off`` [B, 2, h, w] (CENTRE_NAMES). The ONNX metadata holds the class
names, category ids, model config, the checkpoint's `extra` (training settings) and `max_size`, so that
`cornernet detect` / `eval` (cornernet_cli.engine.onnx_runner) run the graph on their own.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cornernet_cli.engine import checkpoint as checkpoint_io
from cornernet_cli.errors import CornerNetError, SettingError
from cornernet_cli.hub import resolve_weights
from cornernet_cli.model import set_export_mode
from cornernet_cli.model.cornernet import CENTRE_NAMES, OUTPUT_NAMES


class _LastStackHeads(nn.Module):
    """images [B, 3, H, W] -> the head tensors of the last stack, as a tuple in OUTPUT_NAMES (+ CENTRE_NAMES)
    order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(images)[-1].heads()


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    dynamic: bool
    input_size: tuple[int, int]
    max_size: int | None
    opset: int
    max_abs_diff: float | None  # onnxruntime vs PyTorch on the export-size input; None without onnxruntime
    calib_images: int | None = None  # an int8 graph: the calibration images read (None: a float graph)


def export_onnx(checkpoint: str | Path, out: str | Path, *, dynamic: bool = False, height: int = 511,
                width: int = 511, max_size: int = 2048, opset: int = 17, verify: bool = True,
                offline: bool = False) -> ExportSummary:
    """Export `checkpoint` to the ONNX file `out`.

    Args:
        checkpoint: a cornernet safetensors checkpoint, original / mmdetection weights or a named model
            (see `cornernet_cli.hub`).
        out: the .onnx file to write.
        dynamic: free batch, height and width (corner pooling sized for `max_size`); otherwise the graph
            takes exactly [1, 3, height, width].
        height, width: the example input's size in pixels (the static size).
        max_size: with `dynamic`, the largest input side in pixels the graph pools exactly.
        opset: ONNX opset version.
        verify: run the graph with onnxruntime (when installed) on a random input of the example size and
            report the max abs difference to PyTorch.
        offline: never download a named model.
    """
    try:
        import onnx
    except ImportError:
        raise CornerNetError("ONNX export needs the onnx package: pip install onnx onnxruntime (or the onnx "
                             "extra, e.g. pip install -e '.[onnx]' in a checkout)") from None
    if dynamic and max_size < max(height, width):
        raise SettingError(f"max_size {max_size} is smaller than the example input {height}x{width}")

    model, meta = checkpoint_io.load_model(resolve_weights(checkpoint, offline=offline))
    stride = model.output_stride
    if height < stride or width < stride:
        raise CornerNetError(f"input size {height}x{width} is too small (at least {stride} pixels a side)")
    set_export_mode(model, True, max_len=math.ceil(max_size / stride) if dynamic else None)
    wrapper = _LastStackHeads(model).eval()
    example = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    names = OUTPUT_NAMES + (CENTRE_NAMES if meta["model_config"].centre_head else ())
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 2: "out_height", 3: "out_width"} for name in names})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(wrapper, (example,), str(out), dynamo=False, input_names=["images"],
                          output_names=list(names), dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)

    graph = onnx.load(str(out))
    config = meta["model_config"]
    props = {"cornernet_model_config": json.dumps(config.to_dict()),
             "cornernet_class_names": json.dumps(meta["class_names"]),
             "cornernet_category_ids": json.dumps(meta["category_ids"]),
             "cornernet_extra": json.dumps(meta["extra"]),
             "cornernet_max_size": str(max_size if dynamic else max(height, width)),
             "cornernet_output_stride": str(stride)}
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))

    diff = None
    if verify:
        set_export_mode(model, False)  # compare with the default (cumulative max) pooling
        diff = max_abs_difference(out, model, example)
    return ExportSummary(out=out, dynamic=dynamic, input_size=(height, width),
                         max_size=max_size if dynamic else None, opset=opset, max_abs_diff=diff)


def max_abs_difference(onnx_path: str | Path, model: nn.Module, images: torch.Tensor) -> float | None:
    """Max abs difference over all outputs between onnxruntime (CPU) and `model`'s last stack.

    images: [B, 3, H, W] float32. Returns None when onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})
    model.eval()
    with torch.no_grad():
        want = model(images)[-1].heads()
    if len(got) != len(want):
        raise CornerNetError(f"{onnx_path}: the graph has {len(got)} outputs, the model {len(want)}")
    return max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))
