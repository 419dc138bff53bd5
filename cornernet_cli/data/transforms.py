"""Augmentation and test-time input preparation (the paper's pipeline; see DESIGN.md).

Channel order: images are BGR (as cv2 reads them) from file to tensor, and MEAN / STD are the original
CornerNet's COCO statistics in BGR order, on the 0..1 scale. Boxes are x1, y1, x2, y2 in continuous pixel
coordinates (a pixel i spans [i, i + 1)), so a horizontal flip of an image `width` wide maps x -> width - x.

Training (`train_transform`): random crop of size input x s (s from the scales) around a random centre at
least `border` pixels inside the image (the border halves until it fits), resized to the input size and
optionally flipped - all one affine warp, padding with the mean colour -, then brightness / contrast /
saturation jitter in random order, PCA lighting and normalisation. Boxes go through the same affine map,
are clipped to the input and dropped when nothing is left.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from cornernet_cli.data.letterbox import PAPER_PADDING, Letterbox, Padding, letterbox

# The original CornerNet's COCO statistics (BGR, 0..1) and its PCA lighting basis.
MEAN = np.array([0.40789654, 0.44719302, 0.47026115], dtype=np.float32)
STD = np.array([0.28863828, 0.27408164, 0.27809835], dtype=np.float32)
EIG_VAL = np.array([0.2141788, 0.01817699, 0.00342571], dtype=np.float32)
EIG_VEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                    [-0.5832747, 0.00994535, -0.81221408],
                    [-0.56089297, 0.71832671, 0.41158938]], dtype=np.float32)


# ---- geometry -------------------------------------------------------------------------------------------


def fit_border(border: int, size: int) -> int:
    """The largest border // 2**k with 2 * border < size (0 for size <= 1): where crop centres may lie."""
    while border > 0 and 2 * border >= size:
        border //= 2
    return border


def crop_matrix(*, centre: tuple[float, float], crop_size: tuple[float, float], input_size: tuple[int, int],
                flip: bool, vflip: bool = False, transpose: bool = False) -> np.ndarray:
    """2x3 affine map from image pixels to input pixels (continuous coordinates) for a crop.

    The crop (height, width) = crop_size is centred on `centre` (x, y) and resized to input_size (h, w);
    then, in this order, with `transpose` x and y are swapped (square inputs only), with `flip` the result is
    mirrored left-right (x_in -> w - x_in) and with `vflip` top-bottom (y_in -> h - y_in). Transposition and
    the two flips generate all eight 90-degree rotations and mirrorings; boxes stay axis-aligned boxes.
    """
    (ch, cw), (ih, iw) = crop_size, input_size
    ax, ay = iw / cw, ih / ch
    x0, y0 = centre[0] - cw / 2, centre[1] - ch / 2
    m = np.array([[ax, 0.0, -ax * x0], [0.0, ay, -ay * y0], [0.0, 0.0, 1.0]], dtype=np.float64)
    if transpose:
        if ih != iw:
            raise ValueError(f"transpose needs a square input, got {input_size}")
        m = m[[1, 0, 2]]
    if flip:
        m = np.array([[-1.0, 0.0, iw], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    if vflip:
        m = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, ih], [0.0, 0.0, 1.0]]) @ m
    return m[:2] + 0.0  # + 0.0 turns -0.0 entries into 0.0


def warp_image(image: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int],
               fill: tuple[float, ...]) -> np.ndarray:
    """Apply the continuous-coordinate affine `matrix` to `image` [H, W, C] -> [h, w, C] (bilinear).

    cv2 works with pixel centres at integers, so the map is conjugated by the half-pixel shift.
    """
    m = matrix.copy()
    m[:, 2] += m[:, :2].sum(axis=1) * 0.5 - 0.5
    h, w = input_size
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(float(f) for f in fill))


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray,
                    input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Map [N, 4] x1, y1, x2, y2 image-pixel boxes by a `matrix` that keeps boxes axis-aligned (scale, shift,
    flips, transposition: `crop_matrix`), clip them to the input (h, w) and drop empty ones.
    Returns (boxes [M, 4] float32, kept indices [M])."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners_x = boxes[:, [0, 2, 0, 2]]
    corners_y = boxes[:, [1, 1, 3, 3]]
    xs = corners_x * matrix[0, 0] + corners_y * matrix[0, 1] + matrix[0, 2]
    ys = corners_x * matrix[1, 0] + corners_y * matrix[1, 1] + matrix[1, 2]
    out = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    h, w = input_size
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    keep = np.nonzero((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1]))[0]
    return out[keep].astype(np.float32), keep


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Mirror [N, 4+] x1, y1, x2, y2 boxes in an image `width` wide: x1' = width - x2, x2' = width - x1.

    The same map works on output-map coordinates with the map's width (what decoding a flipped input needs).
    """
    out = np.array(boxes, copy=True)
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def flip_image(images: torch.Tensor) -> torch.Tensor:
    """Mirror [..., H, W] tensors (images or head outputs) left-right."""
    return torch.flip(images, dims=[-1])


# ---- colour ---------------------------------------------------------------------------------------------


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> None:
    """Brightness, contrast and saturation (random order, each factor 1 + U(-strength, strength)) in place
    on a float32 BGR [H, W, 3] image in 0..1."""
    if strength <= 0:
        return
    for op in rng.permutation(3):
        alpha = 1.0 + rng.uniform(-strength, strength)
        if op == 0:  # brightness
            image *= alpha
        elif op == 1:  # contrast: blend with the mean grey level
            grey = float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean())
            image *= alpha
            image += grey * (1.0 - alpha)
        else:  # saturation: blend with the grey image
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            image *= alpha
            image += (grey * (1.0 - alpha))[:, :, None]


def lighting(image: np.ndarray, rng: np.random.Generator, std: float) -> None:
    """AlexNet-style PCA lighting in place: add EIG_VEC @ (EIG_VAL * N(0, std)) to every pixel."""
    if std <= 0:
        return
    alpha = rng.normal(0.0, std, size=3).astype(np.float32)
    image += EIG_VEC @ (EIG_VAL * alpha)


def normalize(image: np.ndarray, mean: np.ndarray = MEAN, std: np.ndarray = STD) -> torch.Tensor:
    """float32 BGR [H, W, 3] in 0..1 -> normalised tensor [3, H, W]."""
    image = (image - mean) / std
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


# ---- pipelines ------------------------------------------------------------------------------------------


def train_transform(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *,
                    input_size: tuple[int, int], scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
                    border: int = 128, flip: float = 0.5, color: float = 0.4, light: float = 0.1,
                    mean: np.ndarray = MEAN, std: np.ndarray = STD, vflip: float = 0.0, transpose: float = 0.0
                    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One training sample: BGR uint8 [H, W, 3] + boxes [N, 4] (image pixels) + labels [N]
    -> (tensor [3, h, w] normalised, boxes [M, 4] float32 in input pixels, labels [M]); (h, w) = input_size.

    With scales=(1,) the crop is the input size (no resizing); with empty `scales` the whole image is
    resized to the input (no crop). `vflip` / `transpose`: probabilities of a top-bottom mirror and of swapping
    x and y (with `flip`: random 90-degree rotations), for images without an up direction (microscopy,
    aerial); 0 (the paper) draws nothing, so the other random draws are as before.
    """
    height, width = image.shape[:2]
    if scales:
        s = float(scales[rng.integers(len(scales))])
        crop = (input_size[0] * s, input_size[1] * s)
        bx, by = fit_border(border, width), fit_border(border, height)
        cx = rng.integers(bx, width - bx) if width - bx > bx else width // 2
        cy = rng.integers(by, height - by) if height - by > by else height // 2
        centre = (float(cx), float(cy))
    else:
        crop, centre = (float(height), float(width)), (width / 2, height / 2)
    flipped = bool(rng.random() < flip)
    vflipped = bool(rng.random() < vflip) if vflip > 0 else False
    transposed = bool(rng.random() < transpose) if transpose > 0 else False
    matrix = crop_matrix(centre=centre, crop_size=crop, input_size=input_size, flip=flipped, vflip=vflipped,
                         transpose=transposed)
    out = warp_image(image, matrix, input_size, fill=tuple(mean * 255)).astype(np.float32)
    out *= 1.0 / 255.0
    color_jitter(out, rng, color)
    lighting(out, rng, light)
    new_boxes, keep = transform_boxes(boxes, matrix, input_size)
    return normalize(out, mean, std), new_boxes, np.asarray(labels)[keep]


def prepare_test_image(image: np.ndarray, scale: float = 1.0, mean: np.ndarray = MEAN,
                       std: np.ndarray = STD, max_side: int | None = None,
                       stride: int = 4, padding: Padding = PAPER_PADDING) -> tuple[torch.Tensor, Letterbox]:
    """Test-time input: BGR uint8 [H, W, 3] scaled by `scale` and centred on a canvas padded by `padding`
    (cornernet_cli.data.letterbox; the paper's (h + 1) % 128 == 0 by default), padded with the mean colour so
    padding normalises to exactly 0.

    With `max_side`, an image whose longer side times `scale` exceeds it is shrunk (area interpolation, in
    uint8, so a 10000 x 10000 photo never becomes a float copy at full size) to a longer side of `max_side`.
    Returns (tensor [3, h, w] float32, Letterbox); `Letterbox.output_to_image` maps decoded boxes back to the
    original image's pixels in every case (`stride`: the network's output stride, for its output size). For
    the flipped pass use `flip_image(tensor)` and `flip_boxes(dets, output width)` on the decoded boxes.
    """
    height, width = image.shape[:2]
    if max_side is not None and max(height, width) * scale > max_side:
        s = max_side / max(height, width)
        new_h, new_w = max(1, int(round(height * s))), max(1, int(round(width * s)))
        small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        canvas, info = letterbox(small.astype(np.float32), 1.0, padding, fill=tuple(mean * 255), stride=stride)
        info = dataclasses.replace(info, image_size=(height, width), scale=(new_w / width, new_h / height))
        canvas *= 1.0 / 255.0
        return normalize(canvas, mean, std), info
    canvas, info = letterbox(image.astype(np.float32), scale, padding, fill=tuple(mean * 255), stride=stride)
    canvas *= 1.0 / 255.0
    return normalize(canvas, mean, std), info
