"""Reading image files: one robust helper used by the datasets, prepare-data, detect and the demo."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np

from cornernet_cli.errors import CornerNetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 [H, W, 3] (OpenCV's channel order).

    Works with any path (non-ASCII included: bytes are read with numpy, decoded with cv2.imdecode).
    Grayscale becomes 3 identical channels, 16-bit is scaled to 8-bit, an alpha channel is dropped and the
    EXIF orientation is applied (so H, W are those of the image as displayed).
    Raises CornerNetError naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device (/dev/zero) would hang or never end
            raise CornerNetError(f"cannot read image {path}: not a regular file")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CornerNetError(f"cannot read image {path}: {e.strerror or e}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise CornerNetError(f"cannot decode image {path} ({data.size} bytes): not a readable image file")
    return image


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write BGR uint8 [H, W, 3] to `path` (format from the suffix; JPEG at `quality`). Any path works."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise CornerNetError(f"cannot encode image for {path}")
    buf.tofile(path)
