"""Checkpoints: safetensors files that rebuild the model on their own (never pickle).

A checkpoint holds the model's state dict as tensors and, in the safetensors metadata (str -> str):

    format        "cornernet-checkpoint"      what the file is
    version       "1"                         format version (FORMAT_VERSION)
    model_config  JSON of ModelConfig         rebuilds the network (preset values, classes, pooling)
    class_names   JSON list of str            contiguous class order of the heads
    category_ids  JSON list of int            dataset category id of each class (COCO ids round-trip)
    extra         JSON object                 free-form (step, metrics, dataset path, ...)

Writes are atomic (cornernet_cli.atomic): a temporary file in the same folder, fsync, then rename.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cornernet_cli.atomic import atomic_write
from cornernet_cli.config import ModelConfig
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.errors import CornerNetError
from cornernet_cli.model.cornernet import CornerNet

FORMAT = "cornernet-checkpoint"
FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    class_names: list[str],
    category_ids: list[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (its ModelConfig in `model.config`) with its class names to a safetensors file."""
    model = unwrap(model)
    config: ModelConfig | None = getattr(model, "config", None)
    if config is None:
        raise ValueError("model has no .config; build it with build_model() or CornerNet.from_config()")
    if len(class_names) != config.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {config.num_classes} classes")
    if category_ids is None:
        category_ids = list(range(1, config.num_classes + 1))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
        "model_config": json.dumps(config.to_dict()),
        "class_names": json.dumps(list(class_names)),
        "category_ids": json.dumps([int(c) for c in category_ids]),
        "extra": json.dumps(extra or {}),
    }
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return Path(path)


def _read(path: str | Path, *, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, or {} without `tensors`; meta) of `path`, its metadata checked against its tensor headers
    first (`check_fits_header`)."""
    path = Path(path)
    if not path.exists():
        raise CornerNetError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CornerNetError(f"checkpoint {path} is a directory, expected a .safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
            meta = _parse_metadata(path, raw)
            check_fits_header(path, meta["model_config"], header)
            state = {k: f.get_tensor(k) for k in header} if tensors else {}
    except CornerNetError:
        raise
    except Exception as e:  # safetensors raises several types for bad headers and short files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CornerNetError(f"{path} is not a readable safetensors checkpoint (truncated or another format): "
                             f"{reason}") from None
    return state, meta


def _parse_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    """The decoded cornernet metadata of `path` (see `read_checkpoint`); one-line errors naming the file."""
    if raw.get("format") != FORMAT:
        raise CornerNetError(f"{path} is a safetensors file but not a cornernet checkpoint "
                             f"(metadata format={raw.get('format')!r})")
    try:
        version = int(raw.get("version", "0"))
    except ValueError:
        version = -1
    if version != FORMAT_VERSION:
        raise CornerNetError(f"{path} has checkpoint format version {raw.get('version')!r}; "
                             f"this cornernet reads version {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(json.loads(raw["model_config"]))
        class_names = json.loads(raw["class_names"])
        category_ids = [int(c) for c in json.loads(raw.get("category_ids", "[]"))]
        extra = json.loads(raw.get("extra", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise CornerNetError(f"{path} has malformed cornernet metadata: {e}") from None
    if len(class_names) != config.num_classes or len(category_ids) != config.num_classes:
        raise CornerNetError(f"{path}: {len(class_names)} class names / {len(category_ids)} category ids "
                             f"for a model with {config.num_classes} classes")
    return {"format": FORMAT, "version": version, "model_config": config, "class_names": class_names,
            "category_ids": category_ids, "extra": extra}


def least_size(config: ModelConfig) -> tuple[int, int]:
    """A lower bound on (parameter elements, weight tensors) of the network `config` describes, in
    O(levels): the stem's 7x7 conv, the hourglasses' skip blocks (residual: two 3x3 convs c -> c; fire: its
    1x1 squeeze conv c -> c // 2 and 1x1 expand conv c // 2 -> c // 2), the fire hourglasses' 4x4 transposed
    upsampling convs (c -> c, every level above the bottom) and the six heads of every stack (a k x k conv
    cnv -> head each, k the head kernel, and the heatmaps' 1x1 conv head -> classes). Linear in every size a
    config can ask for, so a config wanting more than a file holds is caught before anything is built."""
    c = config
    if c.block == "fire":
        levels = sum(b * (ch * (ch // 2) + (ch // 2) ** 2) for ch, b in zip(c.channels, c.blocks))
        levels += sum(16 * ch * ch for ch in c.channels[:-1])
    else:
        levels = sum(18 * b * ch * ch for ch, b in zip(c.channels, c.blocks))
    heads = 6 * c.head_kernel ** 2 * c.cnv_channels * c.head_channels
    per_stack = levels + heads + 2 * c.head_channels * c.num_classes
    tensors = c.num_stacks * (sum(2 * b for b in c.blocks) + 12) + 1
    return 147 * c.stem_channels + c.num_stacks * per_stack, tensors


def check_fits_header(path: str | Path, config: ModelConfig, header: dict[str, tuple[int, ...]]) -> None:
    """CornerNetError naming `path` unless the network `config` describes has exactly the tensors and shapes of
    the file's header, checked before any parameter is allocated: first against `least_size` (a config that
    asks for more elements or tensors than the file holds), then against the network built on the meta
    device (shapes only, no memory)."""
    elements, tensors = least_size(config)
    held = sum(math.prod(shape) for shape in header.values())
    if elements > held or tensors > len(header):
        raise CornerNetError(f"{path}: its model_config asks for at least {elements:,} parameters in {tensors:,} "
                             f"tensors but the file holds {held:,} in {len(header):,}; refused before allocating "
                             f"(a damaged or crafted checkpoint)")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CornerNet.from_config(config).state_dict().items()}
    mismatch = _mismatch(header, expected)
    if mismatch:
        raise CornerNetError(f"{path}: its tensors do not fit its model_config: {mismatch}")


def _mismatch(have: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str | None:
    """Tensor names missing from `have`, unexpected in it and of another shape than in `want` (the first
    three of each), or None when the two agree."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [f"{k} {have[k]} vs {want[k]}" for k in want if k in have and have[k] != want[k]]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            parts.append(f"{len(keys)} {label}: {shown}")
    return "; ".join(parts) or None


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read tensors and decoded metadata, with one-line errors naming the file and the problem.

    Returns (state_dict, meta) where meta has keys format, version, model_config (ModelConfig),
    class_names, category_ids, extra.
    """
    return _read(path, tensors=True)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint (as `read_checkpoint`'s meta) without reading its tensors."""
    return _read(path, tensors=False)[1]


def test_scales(meta: dict[str, Any], scales: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """`scales` when given, else the test scale the checkpoint's training chose (1 for older checkpoints)."""
    return tuple(scales) if scales else (float(meta["extra"].get("test_scale", 1.0)),)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` into `model`, strictly; mismatches become one line naming `source` and the keys."""
    mismatch = _mismatch({k: tuple(v.shape) for k, v in state.items()},
                         {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if mismatch:
        raise CornerNetError(f"{source} does not fit this architecture: {mismatch}")
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint alone. Returns (model in eval mode on `device`, meta).

    The weights are in channels_last memory format (faster convolutions on the CPU and on GPUs)."""
    device = resolve_device(device)
    state, meta = read_checkpoint(path)
    model = CornerNet.from_config(meta["model_config"])
    load_state(model, state, path)
    return model.to(device, memory_format=torch.channels_last).eval(), meta


# ---- resume state (optimiser, scheduler, scaler, step, RNG), also safetensors -------------------------


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by a reference string, collecting the tensors."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_split_tensors(k, f"{prefix}.k{i}", tensors), _split_tensors(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a resume state")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join_tensors(k, tensors): _join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save_train_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a nested dict of tensors and JSON values (optimiser/scheduler/scaler state dicts, step,
    RNG states) to a safetensors file: tensors as tensors, the structure as JSON metadata. No pickle."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _split_tensors(state, "s", tensors)
    metadata = {"format": "cornernet-train-state", "version": str(FORMAT_VERSION), "state": json.dumps(structure)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return Path(path)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read what `save_train_state` wrote, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CornerNetError(f"no resume state at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if raw.get("format") != "cornernet-train-state":
            raise ValueError(f"metadata format={raw.get('format')!r}")
        return _join_tensors(json.loads(raw["state"]), tensors)
    except CornerNetError:
        raise
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CornerNetError(f"{path} is not a readable cornernet resume state: {reason}") from None
