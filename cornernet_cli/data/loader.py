"""Training samples, batches and a reproducible DataLoader.

A sample (TrainDataset[i]) is a dict of tensors:
    image           float32 [3, S, S]  normalised BGR (transforms.MEAN / STD), S = input size
    tl_heat, br_heat float32 [C, h, w] corner heatmaps with the paper's gaussian penalty reduction, h = ceil(S / s),
                                       s = the model's output stride (`output_stride`: 4, or 8 for squeeze)
    tl_index, br_index int64 [N]       corner cell y * w + x on the output map
    tl_off, br_off  float32 [N, 2]     sub-cell offsets (x, y)
`collate` stacks images and heatmaps and pads the per-object tensors to [B, M] (M = most objects in the
batch, at least 1) with `mask` [B, M] bool marking real objects.

Reproducibility: every sample's augmentation is drawn from its own seed - `seed_sample(seed)` just before
`dataset[i]` (what the training loop's sampler does), or (seed, epoch, index) in `build_train_loader` -, never
from a worker's global state, so the same seed gives the same batches whatever the worker count.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.data.letterbox import output_size
from cornernet_cli.data.transforms import MEAN, STD, train_transform
from cornernet_cli.errors import CornerNetError
from cornernet_cli.targets import encode_targets

BATCH_KEYS = ("image", "tl_heat", "br_heat", "tl_index", "br_index", "tl_off", "br_off", "mask")


def output_size_for(input_size: int | tuple[int, int], stride: int = 4) -> tuple[int, int]:
    """Output map (h, w) = ceil(input / stride): 511 -> 128 at the paper's stride 4, 64 at Squeeze's 8."""
    return output_size((input_size, input_size) if isinstance(input_size, int) else input_size, stride)


class TrainDataset(Dataset):
    """CocoDetection + the paper's augmentation + encode_targets. Keyword arguments as in `train_transform`
    and `cornernet_cli.targets.encode_targets`."""

    def __init__(self, base: CocoDetection, *, input_size: int = 511, output_stride: int = 4,
                 scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3), border: int = 128,
                 flip: float = 0.5, color: float = 0.4, light: float = 0.1, radius_mode: str = "object",
                 min_overlap: float = 0.3, mean: np.ndarray = MEAN, std: np.ndarray = STD, vflip: float = 0.0,
                 transpose: float = 0.0, centres: bool = False):
        self.base = base
        self.centres = centres
        self.input_size = (input_size, input_size)
        self.output_size = output_size_for(input_size, output_stride)
        self.aug = dict(scales=tuple(scales), border=border, flip=flip, color=color, light=light, mean=mean, std=std,
                        vflip=vflip, transpose=transpose)
        self.radius_mode, self.min_overlap = radius_mode, min_overlap
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self.base)

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    def seed_sample(self, seed: int) -> None:
        """Seed the augmentation of the next __getitem__ call (one call only)."""
        self._seed = int(seed)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed, self._seed = self._seed, None
        rng = np.random.default_rng(seed if seed is not None else np.random.randint(2**31))
        sample = self.base[index]
        image, boxes, labels = train_transform(sample.image, sample.boxes, sample.labels, rng,
                                               input_size=self.input_size, **self.aug)
        t = encode_targets(boxes, labels, self.num_classes, self.input_size, self.output_size,
                           radius_mode=self.radius_mode, min_overlap=self.min_overlap, centres=self.centres)
        out = {"image": image}
        kinds = ("tl", "br", "ct") if self.centres else ("tl", "br")
        for kind in kinds:
            for key, dtype in ((f"{kind}_heat", np.float32), (f"{kind}_off", np.float32), (f"{kind}_index", np.int64)):
                out[key] = torch.from_numpy(np.ascontiguousarray(t[key], dtype=dtype))
        return out


def build_train_dataset(base: CocoDetection, *, input_size: int, data_cfg=None, **overrides) -> TrainDataset:
    """TrainDataset from a DataConfig (the one place that turns it into keyword arguments) plus overrides."""
    kw = {}
    if data_cfg is not None:
        kw = dict(scales=tuple(data_cfg.random_scales), border=data_cfg.border,
                  flip=data_cfg.flip, color=data_cfg.color_jitter, light=data_cfg.lighting,
                  radius_mode=data_cfg.radius_mode, min_overlap=data_cfg.min_overlap, vflip=data_cfg.vflip,
                  transpose=data_cfg.transpose)
    kw.update(overrides)
    return TrainDataset(base, input_size=input_size, **kw)


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch with exactly BATCH_KEYS (plus ct_heat, ct_index, ct_off when the samples have
    centre targets): per-object tensors padded to [B, M(, 2)] with zeros, mask [B, M] bool (M = max objects,
    at least 1)."""
    b = len(samples)
    m = max([1] + [len(s["tl_index"]) for s in samples])
    kinds = ("tl", "br", "ct") if "ct_heat" in samples[0] else ("tl", "br")
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", *(f"{c}_heat" for c in kinds))}
    for c in kinds:
        batch[f"{c}_index"] = torch.zeros(b, m, dtype=torch.int64)
    for c in kinds:
        batch[f"{c}_off"] = torch.zeros(b, m, 2, dtype=torch.float32)
    batch["mask"] = torch.zeros(b, m, dtype=torch.bool)
    per_object = [f"{c}_{key}" for c in kinds for key in ("index", "off")]
    for i, s in enumerate(samples):
        n = len(s["tl_index"])
        for key in per_object:
            batch[key][i, :n] = s[key]
        batch["mask"][i, :n] = True
    return batch


class SeededInfiniteSampler(Sampler):
    """Endless stream of (index, sample seed) for one rank: epoch e is a permutation seeded by (seed, e),
    padded by wrapping to a multiple of world_size and split rank::world_size (DistributedSampler's rule).
    The sample seed is derived from (seed, epoch, index). `start` skips that many of this rank's samples
    (resume at step s: start = s * batch_size)."""

    def __init__(self, length: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 start: int = 0):
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.shuffle, self.start = shuffle, start

    def epoch_indices(self, epoch: int) -> np.ndarray:
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.length) if self.shuffle
                 else np.arange(self.length))
        total = math.ceil(self.length / self.world_size) * self.world_size
        order = np.resize(order, total)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_epoch = math.ceil(self.length / self.world_size)
        epoch, skip = divmod(self.start, per_epoch)
        while True:
            for index in self.epoch_indices(epoch)[skip:]:
                seed = int(np.random.SeedSequence([self.seed, epoch, int(index)]).generate_state(1)[0])
                yield int(index), seed
            epoch, skip = epoch + 1, 0

    def __len__(self) -> int:
        return 2**62


class _Seeded(Dataset):
    def __init__(self, dataset: TrainDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        self.dataset.seed_sample(seed)
        return self.dataset[index]


def _worker_init(worker_id: int) -> None:

    # Ctrl-C and a scheduler's SIGTERM reach the whole process group; the main process saves and stops the
    # run at the next step boundary, so workers must outlive that signal (a dead worker makes the loader
    # raise anywhere in the step). A worker leaves the group: the loader's own shutdown still terminates it
    # directly, and torch's watchdog ends it if the main process dies.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    cv2.setNumThreads(1)  # one core per worker; cv2's own threads would fight the other workers
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2**32)


def next_batch(batches: Iterator[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The next batch of a training loader; a CornerNetError from a sample (an unreadable image) is re-raised
    as its own one-line message, also when it happened in a worker process (where torch wraps it with the
    worker's traceback)."""
    try:
        return next(batches)
    except CornerNetError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        if len(lines) > 1:  # "Caught CornerNetError in DataLoader worker ..." + traceback + "...Error: message"
            raise CornerNetError(lines[-1].split(f"{CornerNetError.__name__}: ", 1)[-1], e.exit_code) from None
        raise


def build_train_loader(data_dir, split: str = "train", *, input_size: int = 511, batch_size: int = 1,
                       workers: int = 0, seed: int = 0, radius_mode: str = "object", rank: int = 0,
                       world_size: int = 1, start: int = 0, data_cfg=None, pin_memory: bool = False,
                       base: CocoDetection | None = None, **overrides) -> DataLoader:
    """An endless DataLoader of training batches (dicts with BATCH_KEYS) for `split` of the --data folder.

    Iterate it with `batches = iter(loader)` and `next(batches)` once per step; it never ends. Rank `rank` of
    `world_size` sees its shard of every epoch; `start` skips this rank's first `start` samples (resume).
    The batches depend only on `seed` (and start / rank / world_size), not on `workers`. `base`: the split
    already loaded as a CocoDetection (then `data_dir` / `split` are not read again).
    """
    if base is None:  # a caller that already loaded the split passes it, so the JSON is read once
        base = CocoDetection.from_folder(data_dir, split)
    dataset = build_train_dataset(base, input_size=input_size, data_cfg=data_cfg, radius_mode=radius_mode,
                                  **overrides)
    sampler = SeededInfiniteSampler(len(dataset), seed=seed, rank=rank, world_size=world_size, start=start)
    # Workers are spawned, not forked: a fork after torch / OpenCV thread pools have run in this process can
    # inherit a held lock and hang the worker forever (seen with the tests). Spawning costs a second or two
    # once per run (the workers persist).
    return DataLoader(_Seeded(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, worker_init_fn=_worker_init if workers > 0 else None,
                      pin_memory=pin_memory, drop_last=True, persistent_workers=workers > 0,
                      multiprocessing_context="spawn" if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))
