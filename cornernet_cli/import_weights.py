"""Import COCO-trained CornerNet weights from the original code (princeton-vl/CornerNet), mmdetection, or
CornerNet-Squeeze (princeton-vl/CornerNet-Lite).

The sources build the same networks as ours (stacked hourglass, corner pooling modules, 3x3 + 1x1 heads; for
CornerNet-Squeeze our `squeeze` preset: fire modules, stride 8, 1x1 + 1x1 heads); only the parameter names
differ. The import is a pure renaming of tensors (plus, for mmdetection, a
reordering of the stem's input channels, see below), so the imported network computes the source
network's outputs up to float32 rounding.

Sources (read with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing else is
unpickled, so a file that would run code when unpickled is refused):

- ``original``: the ``torch.save`` file of the whole network's state dict, every key prefixed ``module.``
  (e.g. ``module.kps.0.up1.0.conv1.weight``, ``module.tl_cnvs.1.p1_conv1.conv.weight``).
  Its input is BGR, ``(pixel / 255 - mean) / std`` with the original's COCO mean and std.
- ``squeeze``: CornerNet-Lite's ``CornerNet_Squeeze_500000.pkl``, the same kind of file (keys prefixed
  ``module.``, e.g. ``module.hg.hgs.0.up1.0.conv_3x3.weight``, ``module.tl_modules.0.p1_conv1.conv.weight``,
  ``module.tl_heats.0.0.conv.weight``) with the same input convention.
- ``mmdetection``: a checkpoint dict whose ``state_dict`` holds ``backbone.*`` (HourglassNet) and
  ``bbox_head.*`` (CornerHead) tensors. mmdetection feeds RGB images normalised as ``(255 p - M) / S``
  (ImageNet statistics); our pipeline feeds BGR ``(p - mean) / std`` (the original's COCO statistics,
  `cornernet_cli.data.transforms`). The stem's first convolution is converted exactly for the channel
  order and the std: ours[:, c] = source[:, 2 - c] * 255 std[c] / S[2 - c]. The means differ by at most
  3.8 grey levels (of 255); that offset is not folded (zero padding would make it inexact at the borders).

Every source tensor must be used and every target tensor filled (``num_batches_tracked`` counters, which
do not change eval outputs and which PyTorch < 0.4.1 did not save, are set to 0 when absent), otherwise
a one-line CornerNetError names the keys.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cornernet_cli.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from cornernet_cli.config import PRESETS, ModelConfig, model_config
from cornernet_cli.data.transforms import STD
from cornernet_cli.engine.checkpoint import save_checkpoint
from cornernet_cli.errors import CornerNetError
from cornernet_cli.model.cornernet import CornerNet

FORMATS = ("original", "mmdetection", "squeeze")

# The source's input convention, stored in the checkpoint's `extra` for reference.
MMDET_MEAN_RGB = (123.675, 116.28, 103.53)
MMDET_STD_RGB = (58.395, 57.12, 57.375)
SOURCE_INPUT = {
    "original": {"channel_order": "bgr", "scale": 1 / 255,
                 "mean": [0.40789654, 0.44719302, 0.47026115], "std": [0.28863828, 0.27408164, 0.27809835]},
    "mmdetection": {"channel_order": "rgb (stem converted to take bgr with our std)", "scale": 1.0,
                    "mean": list(MMDET_MEAN_RGB), "std": list(MMDET_STD_RGB)},
}
SOURCE_INPUT["squeeze"] = SOURCE_INPUT["original"]

_STEM_CONV = "backbone.stem.0.0.weight"

# Corner pooling module: source sub-name -> ours (original's pool / mmdetection's BiCornerPool).
_POOL_ORIGINAL = {"p1_conv1.conv": "branch1.0", "p1_conv1.bn": "branch1.1", "p2_conv1.conv": "branch2.0",
                  "p2_conv1.bn": "branch2.1", "p_conv1": "p_conv", "p_bn1": "p_bn", "conv1": "skip_conv",
                  "bn1": "skip_bn", "conv2.conv": "out.0", "conv2.bn": "out.1"}
_POOL_MMDET = {"direction1_conv.conv": "branch1.0", "direction1_conv.bn": "branch1.1",
               "direction2_conv.conv": "branch2.0", "direction2_conv.bn": "branch2.1",
               "aftpool_conv.conv": "p_conv", "aftpool_conv.bn": "p_bn", "conv1.conv": "skip_conv",
               "conv1.bn": "skip_bn", "conv2.conv": "out.0", "conv2.bn": "out.1"}
_HEADS_ORIGINAL = {"heats": "heat", "tags": "emb", "regrs": "off"}
_HEADS_SQUEEZE = {"heats": "heat", "tags": "emb", "offs": "off"}
# Names that tell the two princeton-vl layouts apart (for a hint when --format is the other one).
_LAYOUT_MARK = {"original": "kps.", "squeeze": "hg.hgs."}
_LEAF = r"(?P<leaf>weight|bias|running_mean|running_var|num_batches_tracked)"


def _pool_rules(table: dict[str, str], source_prefix: str) -> list[tuple[str, str]]:
    return [(rf"{source_prefix}\.{re.escape(src)}\.{_LEAF}", rf"predictions.\g<n>.\g<c>_pool.{dst}.\g<leaf>")
            for src, dst in table.items()]


def _rules(fmt: str) -> list[tuple[re.Pattern, str]]:
    """Ordered (pattern, replacement) pairs; a key takes the first rule whose pattern matches it whole."""
    n = r"(?P<n>\d+)"
    if fmt in ("original", "squeeze"):
        # The two princeton-vl codebases name the same parts differently: CornerNet's backbone tensors sit at
        # the top level (hourglasses `kps`), CornerNet-Lite's under `hg.` (hourglasses `hg.hgs`); the
        # corner-pool modules are `tl_cnvs` / `tl_modules`, the offset heads `regrs` / `offs`. Squeeze's fire
        # modules, second stem residual (`pre.2`) and transposed convolutions (`up2`) carry our names already.
        hg, hourglasses, pools, heads = (("", "kps", "cnvs", _HEADS_ORIGINAL) if fmt == "original"
                                         else (r"hg\.", r"hg\.hgs", "modules", _HEADS_SQUEEZE))
        rules = [
            (rf"{hg}pre\.0\.conv\.(?P<r>.+)", r"backbone.stem.0.0.\g<r>"),
            (rf"{hg}pre\.0\.bn\.(?P<r>.+)", r"backbone.stem.0.1.\g<r>"),
            (rf"{hg}pre\.(?P<i>[12])\.(?P<r>.+)", r"backbone.stem.\g<i>.\g<r>"),
            (rf"{hourglasses}\.{n}\.(?P<r>.+)", r"backbone.hourglasses.\g<n>.\g<r>"),
            (rf"{hg}cnvs\.{n}\.conv\.(?P<r>.+)", r"backbone.cnvs.\g<n>.0.\g<r>"),
            (rf"{hg}cnvs\.{n}\.bn\.(?P<r>.+)", r"backbone.cnvs.\g<n>.1.\g<r>"),
            (rf"{hg}inters_\.{n}\.(?P<r>.+)", r"backbone.inters_.\g<n>.\g<r>"),
            (rf"{hg}cnvs_\.{n}\.(?P<r>.+)", r"backbone.cnvs_.\g<n>.\g<r>"),
            (rf"{hg}inters\.{n}\.(?P<r>.+)", r"backbone.inters.\g<n>.\g<r>"),
            *_pool_rules(_POOL_ORIGINAL, rf"(?P<c>tl|br)_{pools}\.{n}"),
        ]
        for src, dst in heads.items():
            rules += [(rf"(?P<c>tl|br)_{src}\.{n}\.0\.conv\.(?P<r>weight|bias)",
                       rf"predictions.\g<n>.\g<c>_{dst}.0.\g<r>"),
                      (rf"(?P<c>tl|br)_{src}\.{n}\.1\.(?P<r>weight|bias)",
                       rf"predictions.\g<n>.\g<c>_{dst}.2.\g<r>")]
    elif fmt == "mmdetection":
        rules = [
            (r"backbone\.stem\.0\.conv\.(?P<r>.+)", r"backbone.stem.0.0.\g<r>"),
            (r"backbone\.stem\.0\.bn\.(?P<r>.+)", r"backbone.stem.0.1.\g<r>"),
            (r"backbone\.stem\.1\.0\.(?P<r>.+)", r"backbone.stem.1.\g<r>"),
            (rf"backbone\.hourglass_modules\.{n}\.(?P<r>.+)", r"backbone.hourglasses.\g<n>.\g<r>"),
            (rf"backbone\.out_convs\.{n}\.conv\.(?P<r>.+)", r"backbone.cnvs.\g<n>.0.\g<r>"),
            (rf"backbone\.out_convs\.{n}\.bn\.(?P<r>.+)", r"backbone.cnvs.\g<n>.1.\g<r>"),
            (rf"backbone\.conv1x1s\.{n}\.conv\.(?P<r>.+)", r"backbone.inters_.\g<n>.0.\g<r>"),
            (rf"backbone\.conv1x1s\.{n}\.bn\.(?P<r>.+)", r"backbone.inters_.\g<n>.1.\g<r>"),
            (rf"backbone\.remap_convs\.{n}\.conv\.(?P<r>.+)", r"backbone.cnvs_.\g<n>.0.\g<r>"),
            (rf"backbone\.remap_convs\.{n}\.bn\.(?P<r>.+)", r"backbone.cnvs_.\g<n>.1.\g<r>"),
            (rf"backbone\.inters\.{n}\.(?P<r>.+)", r"backbone.inters.\g<n>.\g<r>"),
            *_pool_rules(_POOL_MMDET, rf"bbox_head\.(?P<c>tl|br)_pool\.{n}"),
            (rf"bbox_head\.(?P<c>tl|br)_(?P<h>heat|emb|off)\.{n}\.0\.conv\.(?P<r>weight|bias)",
             r"predictions.\g<n>.\g<c>_\g<h>.0.\g<r>"),
            (rf"bbox_head\.(?P<c>tl|br)_(?P<h>heat|emb|off)\.{n}\.1\.conv\.(?P<r>weight|bias)",
             r"predictions.\g<n>.\g<c>_\g<h>.2.\g<r>"),
        ]
    else:
        raise CornerNetError(f"unknown weights format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return [(re.compile(p), r) for p, r in rules]


def map_key(key: str, fmt: str) -> str | None:
    """Our parameter name for the source's `key` (without ``module.``), or None when no rule applies."""
    for pattern, replacement in _rules(fmt):
        m = pattern.fullmatch(key)
        if m:
            name = m.expand(replacement)
            # mmdetection's ResLayer calls a residual's 1x1 shortcut `downsample`; ours is `skip`.
            return name.replace(".downsample.", ".skip.") if fmt == "mmdetection" else name
    return None


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def rename_state_dict(source: dict[str, torch.Tensor], fmt: str, *, origin: str = "source"
                      ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a source state dict to our names (tensors unchanged except the mmdetection stem, see module doc).

    Returns (state with our names, our name -> source name). Raises CornerNetError naming the source keys
    no rule maps, and keys two sources map onto the same name.
    """
    out: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    unused, clashes = [], []
    for key, value in source.items():
        name = map_key(key, fmt)
        if name is None:
            unused.append(key)
        elif name in out:
            clashes.append(key)
        else:
            out[name] = value
            names[name] = key
    if unused or clashes:
        parts = [f"{len(unused)} unused source keys: {_short(unused)}"] if unused else []
        parts += [f"{len(clashes)} duplicate keys: {_short(clashes)}"] if clashes else []
        raise CornerNetError(f"{origin} does not look like a {fmt} CornerNet checkpoint: " + "; ".join(parts))
    if fmt == "mmdetection" and _STEM_CONV in out:
        out[_STEM_CONV] = mmdet_stem_to_ours(out[_STEM_CONV])
    return out, names


def mmdet_stem_to_ours(weight: torch.Tensor) -> torch.Tensor:
    """mmdetection's first conv [O, 3 (RGB), k, k] -> ours [O, 3 (BGR), k, k] for our input normalisation.

    With p the BGR pixel in 0..1, ours sees (p - mean) / std and mmdetection (255 p - M) / S per RGB channel;
    the factor 255 std / S maps one to the other (up to the means' difference, see the module docstring).
    """
    std_bgr = torch.as_tensor(STD, dtype=torch.float64)
    mm_std_bgr = torch.tensor(MMDET_STD_RGB, dtype=torch.float64).flip(0)
    factor = (255.0 * std_bgr / mm_std_bgr).to(device=weight.device, dtype=weight.dtype)
    return (weight.flip(1) * factor.view(1, 3, 1, 1)).contiguous()


def infer_config(state: dict[str, torch.Tensor], *, origin: str = "source") -> ModelConfig:
    """The ModelConfig whose network has the tensors of `state` (our names), read from their shapes."""
    def get(key: str) -> torch.Tensor:
        if key not in state:
            raise CornerNetError(f"cannot infer the network size from {origin}: no tensor for {key}")
        return state[key]

    # Both block kinds (residual, fire) end in a BatchNorm `bn2` of the block's output width.
    def count(prefix: str) -> int:
        return sum(1 for k in state if re.fullmatch(re.escape(prefix) + r"\d+\.bn2\.weight", k))

    num_stacks = len({k.split(".")[2] for k in state if k.startswith("backbone.hourglasses.")})
    channels, blocks = [], []
    p = "backbone.hourglasses.0."
    while True:
        channels.append(int(get(p + "up1.0.bn2.weight").shape[0]))
        blocks.append(count(p + "up1."))
        if p + "low2.up1.0.bn2.weight" not in state:
            channels.append(int(get(p + "low1.0.bn2.weight").shape[0]))
            blocks.append(count(p + "low2."))
            break
        p += "low2."
    heat = get("predictions.0.tl_heat.2.weight")
    return ModelConfig(
        num_stacks=num_stacks,
        stem_channels=int(get(_STEM_CONV).shape[0]),
        channels=tuple(channels),
        blocks=tuple(blocks),
        cnv_channels=int(get("backbone.cnvs.0.0.weight").shape[0]),
        pool_channels=int(get("predictions.0.tl_pool.branch1.0.weight").shape[0]),
        head_channels=int(get("predictions.0.tl_heat.0.weight").shape[0]),
        num_classes=int(heat.shape[0]),
        block="fire" if "backbone.hourglasses.0.up1.0.conv_3x3.weight" in state else "residual",
        output_stride=8 if "backbone.stem.2.conv1.weight" in state else 4,
        head_kernel=int(get("predictions.0.tl_heat.0.weight").shape[-1]),
    )


def preset_name(config: ModelConfig) -> str | None:
    """The preset `config` equals (class count aside), or None."""
    for name in PRESETS:
        if model_config(name, config.num_classes, config.corner_pool) == config:
            return name
    return None


def read_source(path: str | Path, fmt: str) -> dict[str, torch.Tensor]:
    """Load the source checkpoint's state dict with ``torch.load(weights_only=True)``; strip ``module.``."""
    path = Path(path)
    if fmt not in FORMATS:
        raise CornerNetError(f"unknown weights format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not path.is_file():
        raise CornerNetError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CornerNetError(f"{path}: refused to load, it holds more than tensors and plain containers "
                             f"(torch.load weights_only=True): {reason}") from None
    except Exception as e:  # truncated files, other formats
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CornerNetError(f"{path} is not a readable torch.save file: {reason}") from None
    return source_state(obj, fmt, origin=path)


def source_state(obj: object, fmt: str, *, origin: str | Path = "source") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded source file `obj` (mmdetection: its ``state_dict``), ``module.`` stripped.

    Tensors are taken as they are (any device, meta included: the key / shape manifests of the released files
    are checked this way without allocating them). `origin` names the file in errors."""
    if not isinstance(obj, dict):
        raise CornerNetError(f"{origin} holds a {type(obj).__name__}, expected a state dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        if fmt != "mmdetection":
            raise CornerNetError(f"{origin} looks like an mmdetection checkpoint (it has 'state_dict'); "
                                 "use fmt mmdetection", params=("fmt",))
        obj = obj["state_dict"]
    elif fmt == "mmdetection" and not any(str(k).startswith(("backbone.", "module.backbone.")) for k in obj):
        raise CornerNetError(f"{origin} has no 'state_dict' and no backbone.* tensors: not an mmdetection "
                             "checkpoint (use fmt original for the original CornerNet)", params=("fmt",))
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CornerNetError(f"{origin}: entry {key!r} is a {type(value).__name__}, not a tensor")
        key = str(key)
        state[key[len("module."):] if key.startswith("module.") else key] = value
    for other, mark in _LAYOUT_MARK.items():
        if fmt in _LAYOUT_MARK and other != fmt and any(k.startswith(mark) for k in state):
            kind = "CornerNet-Squeeze" if other == "squeeze" else "original CornerNet"
            raise CornerNetError(f"{origin} has {mark}* tensors, the {kind}'s layout; use fmt {other}",
                                 params=("fmt",))
    return state


def read_classes(classes: str, num_classes: int) -> tuple[list[str], list[int]]:
    """Class names and category ids: ``coco`` (the 80 COCO classes), a .txt (one name a line, ids 1..N),
    a .json list of names, or a COCO-format .json (its ``categories``, sorted by id)."""
    if classes == "coco":
        names, ids = list(COCO_CLASS_NAMES), list(COCO_CATEGORY_IDS)
        source = "the COCO class list"
    else:
        path = Path(classes)
        if not path.is_file():
            raise CornerNetError(f"classes: neither 'coco' nor an existing file: {classes}", params=("classes",))
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except RecursionError:
                raise CornerNetError(f"{path} is not valid JSON: nested too deeply") from None
            except ValueError as e:
                raise CornerNetError(f"{path} is not valid JSON: {e}") from None
            if isinstance(data, dict) and isinstance(data.get("categories"), list):
                try:
                    cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
                except (KeyError, TypeError, ValueError):
                    raise CornerNetError(f"{path}: every category needs an integer 'id' and a 'name'") from None
                ids, names = [c for c, _ in cats], [n for _, n in cats]
            elif isinstance(data, list) and all(isinstance(n, str) for n in data):
                names, ids = list(data), list(range(1, len(data) + 1))
            else:
                raise CornerNetError(f"{path}: expected a JSON list of names or a COCO file with 'categories'")
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
            ids = list(range(1, len(names) + 1))
        source = str(path)
    if len(names) != num_classes:
        raise CornerNetError(f"{source} has {len(names)} classes but the weights' heatmap heads have {num_classes}")
    return names, ids


@dataclass(frozen=True)
class ImportSummary:
    out: Path
    config: ModelConfig
    preset: str | None
    tensors: int
    parameters: int
    filled_counters: int


def fit_state(state: dict[str, torch.Tensor], config: ModelConfig, *, source_names: dict[str, str] | None = None,
              origin: str = "source", network: str = "the inferred network"
              ) -> tuple[torch.nn.Module, dict[str, torch.Tensor], int]:
    """Check that `state` (our names, from rename_state_dict) fills exactly the network of `config`.

    Returns (that network on the meta device, `state` with absent ``num_batches_tracked`` counters added as 0
    and dtypes matched to the network's, the number of counters added), ready for
    ``load_state_dict(state, assign=True)``. Raises CornerNetError naming unfilled target keys, unused source keys
    (by their source names when `source_names` maps ours to them) and shape mismatches.
    """
    with torch.device("meta"):
        model = CornerNet.from_config(config)
    target = model.state_dict()
    state, filled = dict(state), 0
    for key, value in target.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=value.dtype)
            filled += 1
    names = source_names or {}
    missing = [k for k in target if k not in state]
    unused = [names.get(k, k) for k in state if k not in target]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
             for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unused or wrong:
        parts = []
        for label, keys in (("unfilled target keys", missing), ("unused source keys", unused),
                            ("shape mismatches", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label}: {_short(keys)}")
        raise CornerNetError(f"{origin} does not fit {network}: " + "; ".join(parts))
    state = {k: v.to(target[k].dtype) if v.dtype != target[k].dtype else v for k, v in state.items()}
    return model, state, filled


def import_weights(src: str | Path, *, fmt: str, out: str | Path, classes: str = "coco",
                   preset: str | None = None) -> ImportSummary:
    """Convert the CornerNet weights at `src` (format ``original``, ``mmdetection`` or ``squeeze``) into our
    checkpoint `out`.

    The network size is read from the tensor shapes (or taken from `preset`, then checked). Every source
    tensor must land on one of ours and every one of ours must be filled; otherwise CornerNetError names
    the keys. The result loads with `cornernet_cli.engine.checkpoint.load_model`.
    """
    src = Path(src)
    state, source_names = rename_state_dict(read_source(src, fmt), fmt, origin=str(src))
    config = infer_config(state, origin=str(src))
    if preset is not None:
        try:
            config = model_config(preset, config.num_classes)
        except ValueError as e:
            raise CornerNetError(f"preset: {e}", params=("preset",)) from None
    names, ids = read_classes(classes, config.num_classes)

    model, state, filled = fit_state(state, config, source_names=source_names, origin=str(src),
                                     network=preset or "the inferred network")
    model.load_state_dict(state, strict=True, assign=True)
    extra = {"imported_from": fmt, "source": str(src), "source_input": SOURCE_INPUT[fmt]}
    save_checkpoint(out, model, class_names=names, category_ids=ids, extra=extra)
    n_params = sum(p.numel() for p in model.parameters())
    return ImportSummary(out=Path(out), config=config, preset=preset or preset_name(config), tensors=len(state),
                         parameters=n_params, filled_counters=filled)
