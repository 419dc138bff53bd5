"""`cornernet detect`: run a checkpoint on image files, folders, globs, videos, webcams and video streams.

Writes into --out: each image with its boxes, class names and scores drawn (<name>.jpg), each video as an
annotated video (<name>.mp4, mp4v codec; <name>.avi with MJPG where mp4v is unavailable), and
detections.json: one entry per image or video frame {"file", "frame" (videos only), "width", "height",
"detections": [{"bbox": [x1, y1, x2, y2] image pixels, "score", "class", "category_id"}]}.
Unreadable files are reported in "skipped" and the rest still run.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from cornernet_cli.config import DecodeConfig
from cornernet_cli.data.image_io import IMAGE_SUFFIXES, read_image, write_image
from cornernet_cli.data.live import FpsMeter, display_problem, read_frames, show_frame, source_name, stream_source
from cornernet_cli.engine.inference import StageTimer, detect_images
from cornernet_cli.errors import CornerNetError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class DetectReport:
    """What detect did: per-image/frame entries (as in detections.json), skipped inputs, output paths."""

    entries: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    json_path: Path | None = None
    checkpoint: Path | None = None
    time_ms: dict[str, float] = field(default_factory=dict)
    fps: dict[str, float] = field(default_factory=dict)  # video / stream -> frames per second at its last frame
    notes: list[str] = field(default_factory=list)  # one-line remarks (no window for --show, stopped by Ctrl-C)


def newest_checkpoint(runs_dir: str | Path = "runs") -> Path:
    """The most recently written runs/*/best.safetensors; CornerNetError saying how to get one if none."""
    found = sorted(Path(runs_dir).glob("*/best.safetensors"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CornerNetError(f"no --checkpoint given and no {Path(runs_dir)}/*/best.safetensors found; "
                             "run `cornernet demo` (or `cornernet train`) to get one")
    return found[-1]


def collect_inputs(sources: Sequence[str | Path]) -> tuple[list[Path | int | str], list[dict]]:
    """Expand files, folders (their images and videos, sorted, not recursive) and glob patterns; webcam indices
    ("0") and stream URLs (rtsp://, http(s)://, see `cornernet_cli.data.live`) pass through as int / str.

    Returns (inputs in order, without duplicates; problems [{"file", "error"}] for sources matching nothing).
    """
    paths: list[Path | int | str] = []
    problems: list[dict] = []
    for src in sources:
        p = Path(src)
        live = stream_source(src) if not p.exists() else None
        if live is not None:
            paths.append(live)
        elif p.is_dir():
            media = IMAGE_SUFFIXES + VIDEO_SUFFIXES
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in media)
            if not found:
                problems.append({"file": str(p), "error": "folder holds no images or videos"})
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        elif any(ch in str(src) for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(str(src), recursive=True) if Path(q).is_file())
            if not found:
                problems.append({"file": str(src), "error": "pattern matches no files"})
            paths.extend(found)
        else:
            problems.append({"file": str(src), "error": "no such file or folder"})
    unique = list(dict.fromkeys(paths))
    return unique, problems


def _colour(label: int) -> tuple[int, int, int]:
    """A distinct BGR colour per class (golden-ratio hues)."""
    hue = int((label * 0.618033988749895 % 1.0) * 180)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_detections(image: np.ndarray, dets: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """A copy of BGR uint8 `image` with [N, 6] detections (x1, y1, x2, y2 pixels, score, class) drawn:
    a box per detection and a filled label "name score"."""
    out = image.copy()
    thick = max(1, round(min(out.shape[:2]) / 300))
    scale = max(0.4, min(out.shape[:2]) / 800)
    for x1, y1, x2, y2, score, cls in dets[::-1]:  # strongest drawn last, on top
        c = _colour(int(cls))
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, c, thick, cv2.LINE_AA)
        text = f"{class_names[int(cls)]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = p1[1] - 2 if p1[1] - th - base - 2 >= 0 else p1[1] + th + base + 2
        cv2.rectangle(out, (p1[0], ty - th - base), (p1[0] + tw + 2, ty + 1), c, -1)
        cv2.putText(out, text, (p1[0] + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _entry(file: Path, image: np.ndarray, dets: np.ndarray, class_names: Sequence[str], category_ids: Sequence[int],
           frame: int | None = None) -> dict:
    entry: dict = {"file": str(file)}
    if frame is not None:
        entry["frame"] = frame
    entry.update({"width": int(image.shape[1]), "height": int(image.shape[0]), "detections": [
        {"bbox": [round(float(v), 2) for v in d[:4]], "score": round(float(d[4]), 4),
         "class": class_names[int(d[5])], "category_id": int(category_ids[int(d[5])])} for d in dets]})
    return entry


def _out_name(path: Path, suffix: str, used: set[str]) -> str:
    name, i = path.stem + suffix, 1
    while name in used:
        name, i = f"{path.stem}_{i}{suffix}", i + 1
    used.add(name)
    return name


def _video_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    for suffix, codec in ((".mp4", "mp4v"), (".avi", "MJPG")):
        target = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            return writer, target
    raise CornerNetError(f"cannot write a video to {path} (no mp4v or MJPG encoder in this OpenCV)")


def detect(
    sources: Sequence[str | Path],
    *,
    checkpoint: str | Path | None = None,
    out: str | Path = "detections",
    threshold: float = 0.3,
    device: str = "cpu",
    flip: bool = True,
    scales: Sequence[float] = (1.0,),
    params: DecodeConfig = DecodeConfig(),
    runs_dir: str | Path = "runs",
    amp: str = "off",
    max_frames: int | None = None,
    show: bool = False,
    on_frame: Callable[[str, int, float], None] | None = None,
) -> DetectReport:
    """Detect objects in `sources` (image files, folders, globs, video files) with `checkpoint` (a .safetensors
    checkpoint or an exported .onnx graph, run by onnxruntime; default: the newest runs/*/best.safetensors) and
    write drawn images / videos and detections.json into `out`.

    Sources may also be webcam indices and stream URLs (`cornernet_cli.data.live`), read frame by frame like
    video files; max_frames stops each video or stream after that many frames, and Ctrl-C stops reading and keeps
    what was done. show: also draw each result in a window (where OpenCV has a GUI and a display; otherwise one
    line in DetectReport.notes says why not). on_frame(source, frame index, frames per second) is called after
    each video frame. Only detections with score >= threshold are drawn and written. amp: the network's autocast
    (off | bf16 | fp16, see `cornernet_cli.engine.precision`). Returns a DetectReport.
    """
    from cornernet_cli.engine.onnx_runner import check_amp, fit_max_side, load_network
    from cornernet_cli.engine.precision import amp_dtype

    amp_dtype(amp, device)  # a bad --amp fails before any work
    ckpt = Path(checkpoint) if checkpoint is not None else newest_checkpoint(runs_dir)
    model, meta = load_network(ckpt, device=device)
    check_amp(model, amp)
    params = dataclasses.replace(params, max_side=fit_max_side(model, params.max_side))
    names, cat_ids = meta["class_names"], meta["category_ids"]
    paths, skipped = collect_inputs(sources)
    if not paths:
        raise CornerNetError("no input files: " + "; ".join(f"{p['file']}: {p['error']}" for p in skipped))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = DetectReport(skipped=skipped, checkpoint=ckpt)
    timer, used = StageTimer(), set()
    dev = torch.device(device)
    if show and display_problem() is not None:
        report.notes.append(display_problem())
        show = False

    def run(image: np.ndarray) -> np.ndarray:
        dets = detect_images(model, [image], device=dev, scales=scales, flip=flip, params=params, timer=timer,
                               amp=amp)[0]
        return dets[dets[:, 4] >= threshold]

    def video(source: Path | int | str) -> None:
        writer, target, meter = None, None, FpsMeter()
        try:
            for i, (frame, fps) in enumerate(read_frames(source)):
                if max_frames is not None and i >= max_frames:
                    break
                dets = run(frame)
                report.entries.append(_entry(source, frame, dets, names, cat_ids, frame=i))
                if writer is None:
                    writer, target = _video_writer(out / _out_name(Path(source_name(source)), ".mp4", used), fps,
                                                   (frame.shape[1], frame.shape[0]))
                    report.outputs.append(target)
                drawn = draw_detections(frame, dets, names)
                writer.write(drawn)
                rate = meter.tick()
                report.fps[str(source)] = rate
                if on_frame is not None:
                    on_frame(str(source), i, rate)
                if show and not show_frame(f"cornernet: {source}", drawn):
                    break
        finally:
            if writer is not None:
                writer.release()
        if target is None:
            raise CornerNetError(f"video {source} has no readable frames")

    try:
        for path in paths:
            try:
                if not isinstance(path, Path) or path.suffix.lower() in VIDEO_SUFFIXES:
                    video(path)
                else:
                    image = read_image(path)
                    dets = run(image)
                    report.entries.append(_entry(path, image, dets, names, cat_ids))
                    target = out / _out_name(path, ".jpg", used)
                    write_image(target, draw_detections(image, dets, names))
                    report.outputs.append(target)
            except CornerNetError as e:
                report.skipped.append({"file": str(path), "error": str(e)})
    except KeyboardInterrupt:  # a live stream has no end: Ctrl-C stops it, and what was found is still written
        report.notes.append("stopped by Ctrl-C")
    report.time_ms = timer.per_image_ms()
    report.json_path = out / "detections.json"
    report.json_path.write_text(json.dumps({"checkpoint": str(ckpt), "classes": names, "threshold": threshold,
                                            "images": report.entries, "skipped": report.skipped}, indent=1))
    return report


def report_table(report: DetectReport, max_rows: int = 50):
    """A rich table: one row per image / video (file, detections, the strongest three)."""
    from rich.table import Table

    table = Table(title=f"detections ({report.checkpoint})")
    table.add_column("file")
    table.add_column("frames", justify="right")
    table.add_column("boxes", justify="right")
    table.add_column("strongest")
    rows: dict[str, list[dict]] = {}
    for e in report.entries:
        rows.setdefault(e["file"], []).append(e)
    for file, entries in list(rows.items())[:max_rows]:
        dets = sorted((d for e in entries for d in e["detections"]), key=lambda d: -d["score"])
        best = ", ".join(f"{d['class']} {d['score']:.2f}" for d in dets[:3])
        table.add_row(file, str(len(entries)) if "frame" in entries[0] else "", str(len(dets)), best)
    if len(rows) > max_rows:
        table.add_row(f"... {len(rows) - max_rows} more", "", "", "")
    return table
