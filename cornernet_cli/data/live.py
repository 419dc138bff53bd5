"""Live and streamed video for `cornernet detect`: webcam indices, RTSP / HTTP(S) URLs, frames per second, a window.

A source is live when it is a webcam index ("0", "1", ...) or a URL whose scheme OpenCV's FFmpeg back end reads
(rtsp, rtsps, rtmp, http, https, udp, tcp). Frames come from `cv2.VideoCapture` one at a time; a stream that
stops sending ends like a file that ends. `--show` needs an OpenCV built with a GUI and a display:
opencv-python-headless (this package's dependency) has none, and `display_problem` says so in one line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from cornernet_cli.errors import CornerNetError

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")


def stream_source(text: str | Path) -> int | str | None:
    """A webcam index (int) or a stream URL (str) when `text` names one, else None (a file path)."""
    if isinstance(text, Path):
        return None
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    scheme, sep, _ = text.partition("://")
    return text if sep and scheme.lower() in STREAM_SCHEMES else None


def source_name(source: int | str | Path) -> str:
    """A file-name stem for a source's outputs: camera0, the URL's last path part (clip for .../clip.mp4), or
    the file's stem."""
    if isinstance(source, int):
        return f"camera{source}"
    if isinstance(source, Path):
        return source.stem
    host, _, path = source.split("://", 1)[-1].split("?", 1)[0].rstrip("/").partition("/")
    stem = Path(path).stem if path else host
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "stream"


def read_frames(source: int | str | Path) -> Iterator[tuple[np.ndarray, float]]:
    """Frames of a video file, webcam or stream: yields (BGR uint8 [H, W, 3], the source's frames per second, 25
    where it does not say). CornerNetError naming the source when it cannot be opened."""
    cap = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not cap.isOpened():
        what = f"webcam {source}" if isinstance(source, int) else f"video {source}"
        raise CornerNetError(f"cannot open {what}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and 0 < fps < 1000 else 25.0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame, fps
    finally:
        cap.release()


class FpsMeter:
    """Frames per second over the last `window` frames (wall clock between calls of `tick`)."""

    def __init__(self, window: int = 30):
        self.times: list[float] = []
        self.window = window

    def tick(self) -> float:
        """Record a finished frame; returns the current rate (0 until two frames are in)."""
        self.times = (self.times + [time.perf_counter()])[-(self.window + 1):]
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


def display_problem() -> str | None:
    """Why `show` (detect's window) cannot open a window here (one line), or None when it can."""
    info = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.strip().startswith("GUI:")), "")
    if gui.upper() in ("", "NONE", "NO"):
        return ("show: this OpenCV has no GUI (opencv-python-headless); no window opened. For one, replace it "
                "with opencv-python")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "show: no display (DISPLAY is not set); no window opened"
    return None


def show_frame(title: str, image: np.ndarray) -> bool:
    """Draw `image` in the window `title`; False when the user pressed q or Esc (stop this source)."""
    cv2.imshow(title, image)
    return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)


__all__ = ["FpsMeter", "STREAM_SCHEMES", "display_problem", "read_frames", "show_frame", "source_name",
           "stream_source"]
