"""The data decide the scale: box sizes of the training split -> test scale, training crop scales, crop size.

A CornerNet sees an object best when its side at the network input is a set fraction of the preset's
nominal input (`OBJECT_FRACTION`: about 51 px at the CPU presets' 256 px, 102 px at the paper's 511, where
the paper's COCO objects sit near test scale 1). So the typical (median) object side s, in image pixels,
sets the test scale t = fraction * nominal_input / s (rounded to a multiple of 0.05, kept in [0.25, 1]: images
are shrunk for large objects, never enlarged, since enlarging adds compute but no detail).

Training then shows images at that same resolution: each crop covers input_size / t image pixels, jittered
by the paper's relative range (JITTER, 0.7 ... 1.3 around 1 / t), so the network learns the objects at the
size it will meet them at test time. The crop itself need not be larger than the rescaled image: the crop
size is the typical image side at the test scale, rounded up to a multiple of 32, capped at the nominal
input. Smaller crops cost less per step, so a fixed budget buys more steps.

Worked example (BCCD, 640 x 480 images, cells ~102 px): t = 0.2 * 256 / 102 = 0.50; crops cover
2 x (0.7 ... 1.3) of 256 px; the rescaled image side sqrt(320 x 240) = 277 px -> crop 256 (capped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OBJECT_FRACTION = 0.2
JITTER = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
SCALE_RANGE = (0.25, 1.0)


@dataclass(frozen=True)
class ScaleChoice:
    test_scale: float  # image pixels -> network pixels at test time
    random_scales: tuple[float, ...]  # training: a crop covers input_size * s image pixels
    input_size: int  # training crop side in network pixels
    median_box: float  # median sqrt(w * h) of the training boxes, image pixels
    median_image: float  # median sqrt(W * H) of the training images, image pixels

    def describe(self) -> str:
        lo, hi = (self.input_size * s for s in (min(self.random_scales), max(self.random_scales)))
        return (f"median box {self.median_box:.0f} px in {self.median_image:.0f} px images -> test scale "
                f"{self.test_scale:g}; training crops of {self.input_size} px cut from {lo:.0f}-{hi:.0f} px of "
                f"the image")


def choose_scales(*, box_sides: np.ndarray, image_sides: np.ndarray, nominal_input: int,
                  fraction: float = OBJECT_FRACTION) -> ScaleChoice:
    """Pick the test scale, crop scales and crop size from the training split's statistics.

    box_sides:   [N] sqrt(w * h) of every training box, image pixels (N >= 1)
    image_sides: [M] sqrt(W * H) of every training image, image pixels (M >= 1)
    nominal_input: the preset's training input side (256 for the CPU presets, 511 for the paper's network)
    """
    box_sides = np.asarray(box_sides, dtype=np.float64)
    image_sides = np.asarray(image_sides, dtype=np.float64)
    if box_sides.size == 0 or not np.all(box_sides > 0):
        raise ValueError("box_sides must hold at least one positive box side")
    if image_sides.size == 0 or not np.all(image_sides > 0):
        raise ValueError("image_sides must hold at least one positive image side")
    median_box, median_image = float(np.median(box_sides)), float(np.median(image_sides))
    raw = fraction * nominal_input / median_box
    test_scale = min(max(round(raw * 20) / 20, SCALE_RANGE[0]), SCALE_RANGE[1])
    input_size = min(nominal_input, max(64, 32 * math.ceil(median_image * test_scale / 32)))
    random_scales = tuple(round(j / test_scale, 3) for j in JITTER)
    return ScaleChoice(test_scale=test_scale, random_scales=random_scales, input_size=input_size,
                       median_box=median_box, median_image=median_image)
