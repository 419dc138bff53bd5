"""Run an exported `.onnx` graph (from `cornernet export`) where a PyTorch CornerNet would run.

`OnnxNetwork` wraps an onnxruntime session behind the interface the test-time path uses: an `nn.Module` in
eval mode with `num_classes` and `config`, whose forward takes the normalised input batch [B, 3, H, W] and
returns the last stack's `CornerOutputs` (a one-item list, like CornerNet in eval mode). Letterboxing,
flip, decoding and soft-NMS stay the same Python code as for a checkpoint, so both paths give the same
boxes up to float rounding in the network.

The class names, category ids, model config and the checkpoint's `extra` (training settings) come from the
graph's metadata (written by `cornernet export`); a graph without them takes them from the checkpoint of
the same name next to it (model.onnx -> model.safetensors).

Input sizes: a dynamic export pools exactly up to its `max_size` pixels a side (larger inputs are refused;
`max_input_side` gives the letterbox cap that keeps inputs inside it). A static export takes exactly its
[1, 3, H, W]: smaller inputs are padded at the bottom / right with 0 (the mean colour) and the outputs
cropped back to ceil(h / s) x ceil(w / s) for the model's output stride s (4; 8 for squeeze), batches run one
image at a time, larger inputs are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cornernet_cli.config import DecodeConfig, ModelConfig
from cornernet_cli.data.letterbox import PAPER_PADDING, Padding
from cornernet_cli.decoder import Decoder
from cornernet_cli.engine import checkpoint as checkpoint_io
from cornernet_cli.errors import CornerNetError, SettingError
from cornernet_cli.hub import resolve_weights
from cornernet_cli.model.cornernet import CornerOutputs
from cornernet_cli.model.fold import fold_batchnorm

META_KEYS = ("cornernet_model_config", "cornernet_class_names", "cornernet_category_ids")


def is_onnx(path: str | Path) -> bool:
    """Whether `path` names an ONNX graph (by its suffix)."""
    return Path(path).suffix.lower() == ".onnx"


def _providers(device: torch.device, path: Path) -> list[str]:
    import onnxruntime as ort  # optional dependency (the onnx extra): imported only for an .onnx model

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise CornerNetError(f"{path}: onnxruntime here has no provider for device {device.type!r} "
                         f"(available: {', '.join(ort.get_available_providers())})")


def _meta_from_graph(props: dict[str, str], path: Path) -> dict[str, Any] | None:
    """The checkpoint-style meta from the graph's metadata; None when the graph carries none."""
    if not all(k in props for k in META_KEYS):
        return None
    try:
        config = ModelConfig.from_dict(json.loads(props["cornernet_model_config"]))
        names = [str(n) for n in json.loads(props["cornernet_class_names"])]
        ids = [int(c) for c in json.loads(props["cornernet_category_ids"])]
        extra = json.loads(props.get("cornernet_extra", "{}"))
    except (ValueError, TypeError) as e:
        raise CornerNetError(f"{path} has malformed cornernet metadata: {e}") from None
    if len(names) != config.num_classes or len(ids) != config.num_classes:
        raise CornerNetError(f"{path}: {len(names)} class names / {len(ids)} category ids for a model with "
                             f"{config.num_classes} classes")
    return {"format": "onnx", "model_config": config, "class_names": names, "category_ids": ids, "extra": extra}


class OnnxNetwork(nn.Module):
    """An onnxruntime session in CornerNet's place: forward(images [B, 3, H, W] float32, normalised BGR)
    -> [CornerOutputs] of the last stack (with ct_heat / ct_off for a graph with centre heads), on the input's
    device.

    path: the .onnx file; config: its ModelConfig; max_size: the largest input side the graph pools exactly
    (a dynamic export's --max-size); static_size: (H, W) of a static export, else None; threads: onnxruntime's
    intra-op threads (None: torch's thread count, so both back ends get the same cores).
    """

    def __init__(self, path: str | Path, *, config: ModelConfig, max_size: int, static_size: tuple[int, int] | None,
                 device: torch.device | str = "cpu", threads: int | None = None):
        super().__init__()
        import onnxruntime as ort  # optional dependency (the onnx extra)

        self.path = Path(path)
        self.config = config
        self.num_classes = config.num_classes
        self.output_stride = config.output_stride  # the test-time path pads inputs and maps boxes back with it
        self.max_size = max_size
        self.static_size = static_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=_providers(torch.device(device),
                                                                                           self.path))
        self.eval()

    def max_input_side(self, padding: Padding = PAPER_PADDING) -> int:
        """The longest letterbox input side this graph takes: the largest side that `padding` pads to at most
        max_size (e.g. 1023 for max_size 1023 and the paper's padding, 992 with a multiple of 32)."""
        side = self.max_size
        while side > 1 and padding.size(side) > self.max_size:
            side -= 1
        return side

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": x})

    def forward(self, images: torch.Tensor) -> list[CornerOutputs]:
        b, _, h, w = images.shape
        x = images.detach().float().cpu().contiguous().numpy()
        if self.static_size is None:
            if max(h, w) > self.max_size:
                raise CornerNetError(f"{self.path} pools inputs up to {self.max_size} pixels a side, got {h}x{w}: "
                                     f"export again with a larger max_size, or lower max_side")
            heads = self._run(x)
        else:
            sh, sw = self.static_size
            if h > sh or w > sw:
                raise CornerNetError(f"{self.path} is a static export for {sh}x{sw} inputs, got {h}x{w}: export "
                                     f"with dynamic=True (or height={h}, width={w})")
            padded = np.pad(x, ((0, 0), (0, 0), (0, sh - h), (0, sw - w)))
            rows = [self._run(padded[i : i + 1]) for i in range(b)]
            oh, ow = math.ceil(h / self.output_stride), math.ceil(w / self.output_stride)
            heads = [np.concatenate([r[j] for r in rows])[:, :, :oh, :ow] for j in range(len(rows[0]))]
        outputs = CornerOutputs.from_heads(torch.from_numpy(np.ascontiguousarray(t)).to(images.device) for t in heads)
        return [outputs]


def _open_graph(path: Path) -> Any:
    """The onnx ModelProto of `path` (weights not loaded); one-line CornerNetError when missing or unreadable."""
    if not path.is_file():
        raise CornerNetError(f"ONNX model not found: {path}")
    try:
        import onnx
        import onnxruntime  # noqa: F401  (checked here so that a missing package is one clear line)
    except ImportError:
        raise CornerNetError(f"running {path} needs onnxruntime: pip install onnxruntime (or the onnx extra, "
                             f"e.g. pip install -e '.[onnx]' in a checkout)") from None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for a truncated or foreign file
        raise CornerNetError(f"{path} is not a readable ONNX model: {str(e).splitlines()[0] if str(e) else e}") \
            from None


def _graph_meta(graph: Any, path: Path) -> dict[str, Any]:
    """The checkpoint-style meta of an opened graph: from its metadata, else from the checkpoint beside it."""
    meta = _meta_from_graph({p.key: p.value for p in graph.metadata_props}, path)
    if meta is not None:
        return meta
    beside = path.with_suffix(".safetensors")
    if not beside.is_file():
        raise CornerNetError(f"{path} carries no cornernet metadata (class names, model config) and there is no "
                             f"checkpoint {beside} beside it: export it again with `cornernet export`")
    return checkpoint_io.read_metadata(beside)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The meta of an exported graph as `read_metadata` gives a checkpoint's (model_config, class_names,
    category_ids, extra), without starting an onnxruntime session."""
    path = Path(path)
    return _graph_meta(_open_graph(path), path)


def load_onnx(path: str | Path, device: torch.device | str = "cpu",
              threads: int | None = None) -> tuple[OnnxNetwork, dict[str, Any]]:
    """Open an exported graph. Returns (OnnxNetwork, meta) with meta as `load_model` gives it (model_config,
    class_names, category_ids, extra), read from the graph or from the checkpoint of the same name beside it."""
    path = Path(path)
    graph = _open_graph(path)
    meta = _graph_meta(graph, path)
    props = {p.key: p.value for p in graph.metadata_props}
    inputs = [i for i in graph.graph.input if i.name == "images"]
    if not inputs:
        raise CornerNetError(f"{path} has no input named 'images'; is it a `cornernet export` graph?")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    static = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None
    max_size = int(props.get("cornernet_max_size", max(static) if static else 2048))
    outputs = len(graph.graph.output)
    want = 8 if meta["model_config"].centre_head else 6
    if outputs != want:
        raise CornerNetError(f"{path} has {outputs} outputs; a model with this config has {want} heads")
    stride = int(props.get("cornernet_output_stride", meta["model_config"].output_stride))
    if stride != meta["model_config"].output_stride:
        raise CornerNetError(f"{path}: cornernet_output_stride {stride} disagrees with its model config's "
                             f"output_stride {meta['model_config'].output_stride}")
    del graph
    return OnnxNetwork(path, config=meta["model_config"], max_size=max_size, static_size=static, device=device,
                       threads=threads), meta


def resolve_network(source: str | Path, *, offline: bool = False, progress: bool = True) -> Path:
    """The file to load for `source`: an exported .onnx graph as it is, anything else (a checkpoint, original /
    mmdetection weights, a model name) through `cornernet_cli.hub.resolve_weights`."""
    if is_onnx(source):
        if not Path(source).is_file():
            raise CornerNetError(f"ONNX model not found: {source}")
        return Path(source)
    return resolve_weights(source, offline=offline, progress=progress)


def read_network_metadata(path: str | Path) -> dict[str, Any]:
    """The meta of a checkpoint (`read_metadata`) or of an exported graph (`read_onnx_metadata`)."""
    if is_onnx(path):
        return read_onnx_metadata(path)
    return checkpoint_io.read_metadata(path)


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint (.safetensors, `load_model`) or an exported graph (.onnx, `load_onnx`) -> (network, meta),
    for inference: a checkpoint's BatchNorms are folded into their convolutions (`fold_batchnorm`)."""
    if is_onnx(path):
        return load_onnx(path, device)
    model, meta = checkpoint_io.load_model(path, device=device)
    fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last), meta


def check_amp(model: nn.Module, amp: str) -> None:
    """Refuse `amp` other than "off" for an ONNX graph: autocast changes PyTorch's precision only, and a graph
    runs as exported (float32, or int8 inside a graph from `export --int8`)."""
    if isinstance(model, OnnxNetwork) and amp not in ("off", "auto"):
        raise SettingError(f"amp {amp!r} applies to PyTorch checkpoints; {model.path} is an ONNX graph and runs as "
                           f"exported (use amp 'off')")


def fit_max_side(model: nn.Module, max_side: int, padding: Padding = PAPER_PADDING) -> int:
    """`max_side` lowered to what an ONNX graph pools exactly once padded by `padding` (unchanged for a
    PyTorch model)."""
    if isinstance(model, OnnxNetwork) and model.static_size is None:
        return min(max_side, model.max_input_side(padding))
    return max_side


def network_decoder(model: nn.Module, params: DecodeConfig = DecodeConfig()) -> Decoder:
    """The Decoder of a loaded network (a CornerNet or an `OnnxNetwork`): `Decoder.for_network` with its config,
    and max_side lowered to what it takes once padded as the decoder pads (`fit_max_side`)."""
    decoder = Decoder.for_network(params, getattr(model, "config", None))
    max_side = fit_max_side(model, decoder.settings.max_side, decoder.padding)
    return dataclasses.replace(decoder, settings=dataclasses.replace(decoder.settings, max_side=max_side))


__all__ = ["OnnxNetwork", "check_amp", "fit_max_side", "is_onnx", "load_network", "load_onnx",
           "network_decoder", "read_network_metadata", "read_onnx_metadata", "resolve_network"]
