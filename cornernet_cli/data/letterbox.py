"""Test-time geometry: scale an image, pad it to the network's size, and map boxes back.

The paper keeps test images at their resolution (times a test scale s) and pads them to
h, w with (h + 1) % 128 == 0, i.e. h = round(H * s) | 127 (`Padding`; the CPU presets pad only to the next
multiple of what their network needs, see `cornernet_cli.config.DecodeConfig`). The resized image sits at
the centre of the padded canvas. The network's output map has ceil(h / s) x ceil(w / s) cells for its output stride s
(4; 8 for CornerNet-Squeeze, whose test code sizes it (h + 1) / 8, the same number), and coordinates map
between input and output by the ratio output / input (128 / 511 at 511 and stride 4), as in training targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed in the network input.

    image_size:  (height, width) of the original image in pixels.
    scale:       (x, y) resize factors applied to the image (the test scale s, up to rounding).
    input_size:  (height, width) of the padded network input.
    offset:      (x, y) of the resized image's top-left corner inside the padded input.
    output_size: (height, width) of the network's output map, ceil(input / output stride).
    """

    image_size: tuple[int, int]
    scale: tuple[float, float]
    input_size: tuple[int, int]
    offset: tuple[int, int]
    output_size: tuple[int, int]

    def output_to_image(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4+] boxes x1, y1, x2, y2 in output-map coordinates -> image pixels (float, not clipped).

        Extra columns after the first four are returned unchanged.
        """
        out = np.array(boxes, dtype=np.float64, copy=True)
        (in_h, in_w), (out_h, out_w) = self.input_size, self.output_size
        out[:, [0, 2]] = (out[:, [0, 2]] * in_w / out_w - self.offset[0]) / self.scale[0]
        out[:, [1, 3]] = (out[:, [1, 3]] * in_h / out_h - self.offset[1]) / self.scale[1]
        return out

    def image_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] boxes in image pixels -> padded-input pixels."""
        out = np.array(boxes, dtype=np.float64, copy=True)
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale[0] + self.offset[0]
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale[1] + self.offset[1]
        return out


@dataclass(frozen=True)
class Padding:
    """The padded side h of a test input of side `size`: the smallest h >= size with (h + 1) % multiple == 0
    when `paper` (the original's rule, with multiple 128), else with h % multiple == 0."""

    multiple: int = 128
    paper: bool = True

    def size(self, size: int) -> int:
        if self.paper:
            return -(-(size + 1) // self.multiple) * self.multiple - 1
        return -(-size // self.multiple) * self.multiple


PAPER_PADDING = Padding()


def output_size(input_size: tuple[int, int], stride: int = 4) -> tuple[int, int]:
    """The output map (h, w) of a network with output stride `stride` for an input (H, W): ceil(H / stride)."""
    return -(-input_size[0] // stride), -(-input_size[1] // stride)


def letterbox(image: np.ndarray, scale: float = 1.0, padding: Padding = PAPER_PADDING,
              fill: tuple[float, ...] | float = 0.0, stride: int = 4) -> tuple[np.ndarray, Letterbox]:
    """Resize `image` ([H, W, C] uint8 or float) by `scale` and centre it on a canvas padded by `padding`.

    stride: the network's output stride (sets Letterbox.output_size).
    Returns the canvas [h, w, C] (same dtype, padding = `fill`) and the Letterbox to undo it.
    """
    height, width = image.shape[:2]
    new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    resized = image if (new_h, new_w) == (height, width) else cv2.resize(image, (new_w, new_h))
    if resized.ndim == 2:
        resized = resized[:, :, None]
    in_h, in_w = padding.size(new_h), padding.size(new_w)
    canvas = np.empty((in_h, in_w, resized.shape[2]), dtype=resized.dtype)
    canvas[...] = fill
    x0, y0 = (in_w - new_w) // 2, (in_h - new_h) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    info = Letterbox(
        image_size=(height, width),
        scale=(new_w / width, new_h / height),
        input_size=(in_h, in_w),
        offset=(x0, y0),
        output_size=output_size((in_h, in_w), stride),
    )
    return canvas, info
