"""Frozen configuration dataclasses and the model presets.

This is the only module that knows about configuration objects: `build_model` (and the training,
evaluation and data entry points) turn them into plain keyword arguments for the modules.
The defaults are the paper's values (Law & Deng 2018, see ../shared/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """A stacked-hourglass CornerNet. Defaults are the paper's Hourglass-104.

    channels[i] / blocks[i] are the width and block count of hourglass level i
    (the last entry is the bottom level, whose block count is the number of blocks at the bottom).
    block: "residual" (the paper's blocks, nearest-neighbour upsampling) or "fire" (CornerNet-Squeeze's fire
    modules, transposed-convolution upsampling). output_stride: input pixels per output cell, 4 (one stride-2
    residual after the 7x7/2 stem conv) or 8 (two, CornerNet-Squeeze). head_kernel: the kernel of each head's
    first convolution (3 in the paper, 1 in CornerNet-Squeeze).
    """

    num_stacks: int = 2
    stem_channels: int = 128
    channels: tuple[int, ...] = (256, 256, 384, 384, 384, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2, 2, 4)
    cnv_channels: int = 256
    pool_channels: int = 128
    head_channels: int = 256
    num_classes: int = 80
    corner_pool: bool = True
    centre_head: bool = False  # also predict object centres (CenterNet-style triplets; not in the paper)
    block: str = "residual"
    output_stride: int = 4
    head_kernel: int = 3

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {self.output_stride}")
        if self.head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3, got {self.head_kernel}")

    @property
    def input_multiple(self) -> int:
        """Test inputs whose sides are multiples of this fit the network exactly: the output map (side / stride)
        must halve evenly at each of the hourglass's len(channels) - 1 down-samplings."""
        return self.output_stride * 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        """The fields as a dict, without the later fields (centre_head, block, output_stride, head_kernel) that
        hold their defaults, so that checkpoints of such models stay readable by versions that predate them."""
        d = dataclasses.asdict(self)
        for name in _LATER_FIELDS:
            if d[name] == _DEFAULTS[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        config = cls(**d)
        config.check()
        return config

    def check(self) -> None:
        """ValueError naming the field unless every size is a positive int, channels and blocks are equally
        long (at least 2 levels: the hourglass's top and bottom), block is one of BLOCKS, and the switches are
        booleans (configs read
        from files are untrusted)."""
        def positive(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            ok = (isinstance(v, bool) if f.name in ("corner_pool", "centre_head") else
                  v in BLOCKS if f.name == "block" else
                  isinstance(v, tuple) and len(v) > 0 and all(map(positive, v)) if f.name in ("channels", "blocks")
                  else positive(v))
            if not ok:
                raise ValueError(f"model config {f.name}={v!r} is not valid")
        if len(self.channels) != len(self.blocks) or len(self.channels) < 2:
            raise ValueError(f"model config has {len(self.channels)} channels and {len(self.blocks)} blocks; "
                             f"expected as many of each, at least 2")


BLOCKS = ("residual", "fire")
_LATER_FIELDS = ("centre_head", "block", "output_stride", "head_kernel")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}

# Named sizes, listing only what differs from the paper's network.
_SMALL = ModelConfig(
    num_stacks=1,
    stem_channels=32,
    channels=(64, 96, 128, 160),
    blocks=(1, 1, 1, 2),
    cnv_channels=96,
    pool_channels=64,
    head_channels=64,
)
PRESETS: dict[str, ModelConfig] = {
    # The paper's network: 201,035,212 parameters at 80 classes.
    "hourglass-104": ModelConfig(),
    # One stack of the same hourglass.
    "hourglass-52": ModelConfig(num_stacks=1),
    # CPU preset for the demo and CPU recipes (< 5M parameters).
    "small": _SMALL,
    # `small` with narrower prediction modules and heads: half the FLOPs, about 1.9x faster training on a CPU.
    "small-fast": dataclasses.replace(_SMALL, cnv_channels=64, pool_channels=32, head_channels=32),
    # CornerNet-Squeeze (Law et al. 2019, CornerNet-Lite): fire-module hourglass, one more stride-2 stem residual,
    # 1x1 head convolutions; 31,771,852 parameters at 80 classes (its released COCO network).
    "squeeze": ModelConfig(channels=(256, 256, 384, 384, 512), blocks=(2, 2, 2, 2, 4), block="fire",
                           output_stride=8, head_kernel=1),
    # For tests: a few thousand parameters, runs in milliseconds.
    "tiny": ModelConfig(
        num_stacks=2,
        stem_channels=8,
        channels=(16, 16, 24),
        blocks=(1, 1, 1),
        cnv_channels=16,
        pool_channels=8,
        head_channels=16,
    ),
}


def model_config(preset: str, num_classes: int = 80, corner_pool: bool = True,
                 centre_head: bool = False) -> ModelConfig:
    """The preset's config with the class count, the corner-pooling switch and the centre head applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return dataclasses.replace(PRESETS[preset], num_classes=num_classes, corner_pool=corner_pool,
                               centre_head=centre_head)


@dataclass(frozen=True)
class DataConfig:
    """Training-pipeline settings (paper: 511 input, crop scales 0.6..1.3, border 128). The output map's
    stride is the model's (ModelConfig.output_stride)."""

    input_size: int = 511
    random_scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    border: int = 128
    flip: float = 0.5
    vflip: float = 0.0  # top-bottom mirror (not in the paper; for microscopy / aerial images)
    transpose: float = 0.0  # swap x and y (with the flips: 90-degree rotations; not in the paper)
    color_jitter: float = 0.4
    lighting: float = 0.1
    radius_mode: str = "object"  # object | fixed | none
    min_overlap: float = 0.3
    test_scale: float = 1.0  # the test scale these crops imply (stored in checkpoints; eval / detect default to it)


# The test procedure where a preset's source differs from the paper's (flip on, top 100 corners per type,
# 1000 candidate boxes before soft-NMS). Scales, padding, soft-NMS and the 100 boxes kept are the same.
PADDINGS = ("paper", "tight")
PAPER_TEST = dict(flip=True, k=100, num_dets=1000, padding="paper")
# The CPU presets test as detectors are used by default elsewhere (Ultralytics, mmdetection, detectron2): no
# test-time flip (it doubles the network's time; docs/recipes.md gives the AP with and without it), inputs
# padded only as far as the network needs.
_CPU_TEST = dict(flip=False, padding="tight")
TEST_DEFAULTS: dict[str, dict] = {
    # CornerNet-Lite's CornerNet_Squeeze.json: test_flipped false, top_k 20, num_dets 100.
    "squeeze": dict(flip=False, k=20, num_dets=100),
    "small": _CPU_TEST,
    "small-fast": _CPU_TEST,
}


# Fields that do not shape the network's layers (a starting checkpoint must agree on all the others).
_LAYOUT_FREE = {"num_classes", "centre_head", "corner_pool"}


def preset_of(config: ModelConfig) -> str | None:
    """The preset whose layers `config` has (class count, centre head and pooling aside), or None."""
    for name, preset in PRESETS.items():
        if all(getattr(preset, f.name) == getattr(config, f.name)
               for f in dataclasses.fields(ModelConfig) if f.name not in _LAYOUT_FREE):
            return name
    return None


def preset_test_settings(config: ModelConfig | None) -> dict:
    """flip, k, num_dets and padding of the test procedure for a network of `config`: those of the preset it
    is (`preset_of`), else (or for None) the paper's."""
    preset = preset_of(config) if config is not None else None
    return {**PAPER_TEST, **TEST_DEFAULTS.get(preset, {})}


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding and post-processing settings (the paper's values). Test-time flip and scales are arguments
    of the inference functions, not part of this. k / num_dets / padding None: the model's preset's
    (`preset_test_settings`: 100 / 1000, the paper's; 20 / 100 for squeeze; padding "paper" but "tight" for the
    CPU presets). padding: "paper" pads a test input to h with (h + 1) % 128 == 0 (the original's rule);
    "tight" to the next multiple of the network's `ModelConfig.input_multiple` (32 for small-fast: a 320 x 240
    input stays 320 x 256 instead of 383 x 255, a quarter fewer pixels)."""

    k: int | None = None
    kernel: int = 3
    ae_threshold: float = 0.5
    num_dets: int | None = None
    max_per_image: int = 100
    nms: str = "gaussian"  # gaussian | linear | hard | none (postprocess.soft_nms)
    nms_sigma: float = 0.5
    nms_iou: float = 0.5
    score_threshold: float = 0.001
    centre_check: bool = True  # with a centre head: keep a box only if a centre keypoint lies in its central region
    centre_n: float = 3.0  # the central region is the middle 1/n of the box's width and height
    max_side: int = 2048  # a larger input (image side x test scale) is shrunk to this; boxes stay in image pixels
    padding: str | None = None  # paper | tight


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults are the paper's COCO schedule for hourglass-104."""

    batch_size: int = 49
    iters: int = 500_000
    lr: float = 2.5e-4
    lr_steps: tuple[int, ...] = (450_000,)
    lr_gamma: float = 0.1
    lr_schedule: str = "step"  # step (the paper: x lr_gamma at each of lr_steps) | cosine (to 0 at iters)
    warmup_iters: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    pull_weight: float = 0.1
    push_weight: float = 0.1
    offset_weight: float = 1.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off; e.g. 0.999)
    amp: str = "off"  # off | bf16 | fp16 | auto (engine.precision.resolve_amp)
    channels_last: bool = True  # 1.1-1.3x faster convolutions on the CPU (oneDNN) and on GPUs
    val_scales: tuple[float, ...] = (1.0,)  # test scales of the periodic validation (no flip)
    workers: int = 4
    seed: int = 0
    time_budget: float = 0.0  # minutes of training-step time; > 0: the schedule follows the budget, not `iters`
    time_clock: str = "cpu"  # cpu (process CPU time, threads summed) | wall
    weights: str = ""  # checkpoint the run starts from (fine-tuning); "" : random initialisation
    freeze: str = "none"  # none | backbone (train only the prediction modules)


# Per-preset defaults of a training run, listing only what differs from the DataConfig / TrainConfig defaults
# (the paper's COCO schedule and crops, which hourglass-104 / -52 keep; engine.settings.train_settings applies
# them and anything given explicitly wins). The CPU presets: the budget recipe of docs/recipes.md (time budget,
# cosine, weight averaging, centre head, crops and test scale chosen from the data's box sizes). tiny: tests.
_CPU_RECIPE = dict(input_size=256, batch_size=8, time_budget=25.0, lr=1e-3, lr_schedule="cosine", warmup_iters=50,
                   workers=0, grad_clip=10.0, ema=0.999, centre_head=True, auto_scale=True, amp="auto")
TRAIN_DEFAULTS: dict[str, dict] = {
    "hourglass-104": {},
    "hourglass-52": {},
    "small": _CPU_RECIPE,
    "small-fast": _CPU_RECIPE,
    # CornerNet-Lite's CornerNet_Squeeze.json: the paper's schedule with batch 55 and crop scales 0.6..1.4.
    "squeeze": dict(batch_size=55, random_scales=(0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)),
    "tiny": dict(input_size=128, batch_size=4, iters=200, lr=1e-3, lr_steps=(160,), warmup_iters=10,
                 workers=0, grad_clip=10.0),
}
DEFAULT_PRESET = "small-fast"
