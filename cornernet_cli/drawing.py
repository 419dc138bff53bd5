"""Boxes, labels and mosaics drawn on BGR uint8 images with OpenCV (detect's outputs and every gallery).

Boxes are x1, y1, x2, y2 in the pixels of the image they are drawn on. Line width and text size follow the
image's shorter side, so a label stays a small part of a small image and readable on a large one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
# Error colours (BGR): what a detection user reads without a legend.
HIT, FALSE_POSITIVE, MISS = (60, 180, 60), (40, 40, 230), (0, 150, 255)


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct BGR colour per class (golden-ratio hues)."""
    hue = int((label * 0.618033988749895 % 1.0) * 180)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


@dataclass(frozen=True)
class Style:
    """Line width (pixels) and font scale for an image: text about 2% of the shorter side tall, 7 pixels at
    the least (cv2's font is 22 pixels tall at scale 1)."""

    thickness: int
    font_scale: float

    @classmethod
    def for_image(cls, shape: Sequence[int]) -> Style:
        side = min(shape[:2])
        return cls(thickness=max(1, round(side / 400)), font_scale=max(0.3, side / 1100))


def draw_box(image: np.ndarray, box: Sequence[float], colour: tuple[int, int, int], text: str | None,
             style: Style) -> None:
    """In place: a rectangle and, when `text` is given, a filled label above its top-left corner (inside the
    box when there is no room above)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, style.thickness, cv2.LINE_AA)
    if not text:
        return
    (tw, th), base = cv2.getTextSize(text, FONT, style.font_scale, 1)
    ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
    cv2.rectangle(image, (x1, ty - th - base), (x1 + tw + 2, ty + 1), colour, -1)
    cv2.putText(image, text, (x1 + 1, ty - base + 1), FONT, style.font_scale, (0, 0, 0), 1, cv2.LINE_AA)


def upscale(image: np.ndarray, min_side: int) -> tuple[np.ndarray, float]:
    """`image` enlarged (nearest neighbour: pixels stay visible as blocks) so that its shorter side is at least
    `min_side`, by an integer factor; (image, factor). Images already that large come back as they are."""
    factor = max(1, int(np.ceil(min_side / max(1, min(image.shape[:2])))))
    if factor == 1:
        return image, 1.0
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST), float(factor)


def fit(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """`image` scaled to fit a size x size square (longer side = size), on a grey square canvas at the top
    left; (canvas, scale)."""
    scale = size / max(image.shape[:2])
    h, w = (max(1, round(v * scale)) for v in image.shape[:2])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[:h, :w] = cv2.resize(image, (w, h), interpolation=interp)
    return canvas, scale


def mosaic(tiles: Sequence[np.ndarray], titles: Sequence[str], *, columns: int | None = None,
           heading: str | None = None) -> np.ndarray:
    """Equal-size BGR tiles in a grid (columns: about the square root of the count), each under a one-line
    title, with an optional heading line on top. Empty cells are grey."""
    if not tiles:
        raise ValueError("mosaic needs at least one tile")
    th, tw = tiles[0].shape[:2]
    cols = columns or int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    style = Style.for_image((max(th, 300), max(tw, 300)))
    bar = cv2.getTextSize("Ag", FONT, style.font_scale, 1)[0][1] + 10
    top = bar + 6 if heading else 0
    out = np.full((top + rows * (th + bar), cols * tw, 3), 255, np.uint8)
    if heading:
        cv2.putText(out, heading, (6, bar), FONT, style.font_scale * 1.1, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (tile, title) in enumerate(zip(tiles, titles)):
        r, c = divmod(i, cols)
        y, x = top + r * (th + bar), c * tw
        cv2.putText(out, title, (x + 4, y + bar - 6), FONT, style.font_scale, (0, 0, 0), 1, cv2.LINE_AA)
        out[y + bar : y + bar + th, x : x + tw] = tile
    return out


__all__ = ["FALSE_POSITIVE", "HIT", "MISS", "Style", "class_colour", "draw_box", "fit", "mosaic", "upscale"]
