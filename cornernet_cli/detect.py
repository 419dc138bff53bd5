"""`cornernet detect`: run a checkpoint on image files, folders, globs, videos, webcams and video streams.

Writes into --out: each image with its boxes, class names and scores drawn (<name>.jpg), each video as an
annotated video (<name>.mp4, mp4v codec; <name>.avi with MJPG where mp4v is unavailable), and
detections.json: one entry per image or video frame {"file", "frame" (videos only), "width", "height",
"detections": [{"bbox": [x1, y1, x2, y2] image pixels, "score", "class", "category_id"}]}.
Unreadable files are reported in "skipped" and the rest still run. On request (`Extras`) also YOLO label
files (labels/<name>.txt, labels/classes.txt) and the boxes' pixels (crops/<class>/<name>_<i>.jpg).
Webcams and streams (`cornernet_cli.data.live`) are read frame by frame and written like videos.
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.table import Table

from cornernet_cli.atomic import write_json
from cornernet_cli.config import DecodeConfig, preset_test_settings
from cornernet_cli.data.image_io import IMAGE_SUFFIXES, read_image, write_image
from cornernet_cli.data.live import FpsMeter, display_problem, read_frames, show_frame, source_name, stream_source
from cornernet_cli.decoder import Decoder
from cornernet_cli.drawing import Style, class_colour, draw_box, upscale
from cornernet_cli.engine.checkpoint import test_scales
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.inference import StageTimer, detect_images
from cornernet_cli.engine.onnx_runner import (
    check_amp,
    load_network,
    network_decoder,
    read_network_metadata,
    resolve_network,
)
from cornernet_cli.engine.precision import amp_dtype
from cornernet_cli.engine.rundir import claim_output
from cornernet_cli.errors import CornerNetError
from cornernet_cli.hub import known_names

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
    notes: list[str] = field(default_factory=list)  # one-line remarks (no window for show, stopped by Ctrl-C)


@dataclass(frozen=True)
class FrameLoop:
    """How detect runs through videos, webcams and streams: stop each after `max_frames` (None: at its end);
    `show` each drawn frame in a window; `on_frame(source, frame index, frames per second)` after each frame."""

    max_frames: int | None = None
    show: bool = False
    on_frame: Callable[[str, int, float], None] | None = None


def newest_checkpoint(runs_dir: str | Path = "runs") -> Path:
    """The most recently written runs/*/best.safetensors; CornerNetError saying how to get one if none."""
    found = sorted(Path(runs_dir).glob("*/best.safetensors"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CornerNetError(f"no model given and no {Path(runs_dir)}/*/best.safetensors found; name pretrained "
                             f"weights ({known_names()}) or a checkpoint file, or train one with `cornernet demo`")
    return found[-1]


def find_checkpoint(checkpoint: str | Path | None, *, offline: bool = False, runs_dir: str | Path = "runs"
                    ) -> Path:
    """The checkpoint file for `checkpoint`: a file, a named model (`cornernet_cli.hub.resolve_weights`) or an
    exported .onnx graph, or, when None, the newest runs/*/best.safetensors."""
    if checkpoint is None:
        return newest_checkpoint(runs_dir)
    return resolve_network(checkpoint, offline=offline)


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


def draw_detections(image: np.ndarray, dets: np.ndarray, class_names: Sequence[str], *,
                    min_side: int = 0) -> np.ndarray:
    """A copy of BGR uint8 `image` with [N, 6] detections (x1, y1, x2, y2 pixels, score, class) drawn:
    a box per detection and a filled label "name score", sized to the image (cornernet_cli.drawing.Style).
    With `min_side`, a smaller image is first enlarged by an integer factor (pixels as blocks) so that its
    shorter side is at least that: labels stay readable beside small objects."""
    out, factor = upscale(image, min_side)
    out = out.copy() if out is image else out
    style = Style.for_image(out.shape)
    for x1, y1, x2, y2, score, cls in dets[::-1]:  # strongest drawn last, on top
        draw_box(out, [x1 * factor, y1 * factor, x2 * factor, y2 * factor], class_colour(int(cls)),
                 f"{class_names[int(cls)]} {score:.2f}", style)
    return out


def yolo_lines(dets: np.ndarray, width: int, height: int, *, with_score: bool = False) -> list[str]:
    """YOLO label lines "class cx cy w h" (centre and size as fractions of the image, boxes clipped to it;
    class = the model's class index) for [N, 6] detections, with the score appended when `with_score`."""
    lines = []
    for x1, y1, x2, y2, score, cls in dets:
        x1, x2 = np.clip([x1, x2], 0, width)
        y1, y2 = np.clip([y1, y2], 0, height)
        line = (f"{int(cls)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                f"{(y2 - y1) / height:.6f}")
        lines.append(f"{line} {score:.4f}" if with_score else line)
    return lines


def crops(image: np.ndarray, dets: np.ndarray) -> list[np.ndarray]:
    """The pixels of each detection's box (rounded outwards, clipped to the image; at least one pixel)."""
    height, width = image.shape[:2]
    out = []
    for x1, y1, x2, y2 in dets[:, :4]:
        c0, r0 = min(width - 1, max(0, int(np.floor(x1)))), min(height - 1, max(0, int(np.floor(y1))))
        c1, r1 = max(c0 + 1, min(width, int(np.ceil(x2)))), max(r0 + 1, min(height, int(np.ceil(y2))))
        out.append(image[r0:r1, c0:c1])
    return out


def _folder_name(name: str) -> str:
    """A class name as one folder name (path separators replaced; "." and ".." not allowed)."""
    safe = name.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    return safe if safe.strip(".") else "_" + safe


@dataclass(frozen=True)
class Extras:
    """What detect writes beside the drawn images: YOLO label files, with scores, box crops."""

    save_txt: bool = False
    save_conf: bool = False
    save_crop: bool = False

    def write(self, out: Path, stem: str, image: np.ndarray, dets: np.ndarray, class_names: Sequence[str]) -> None:
        """out/labels/<stem>.txt (one line a detection, an empty file for none) and
        out/crops/<class>/<stem>_<i>.jpg."""
        if self.save_txt:
            (out / "labels").mkdir(exist_ok=True)
            lines = yolo_lines(dets, image.shape[1], image.shape[0], with_score=self.save_conf)
            (out / "labels" / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        if self.save_crop:
            for i, (crop, cls) in enumerate(zip(crops(image, dets), dets[:, 5])):
                folder = out / "crops" / _folder_name(class_names[int(cls)])
                folder.mkdir(parents=True, exist_ok=True)
                write_image(folder / f"{stem}_{i}.jpg", crop)


def image_entry(file: str | Path | int, image: np.ndarray, dets: np.ndarray, class_names: Sequence[str],
                category_ids: Sequence[int], frame: int | None = None) -> dict:
    """One image's (or video frame's) entry of detections.json for [N, 6] detections in `image`'s pixels; `file`
    is the path, or the webcam index / stream URL of a live frame."""
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
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    params: DecodeConfig = DecodeConfig(),
    runs_dir: str | Path = "runs",
    amp: str = "off",
    offline: bool = False,
    exist_ok: bool = False,
    classes: Sequence[str] | None = None,
    extras: Extras = Extras(),
    draw_min_side: int = 0,
    max_frames: int | None = None,
    show: bool = False,
    on_frame: Callable[[str, int, float], None] | None = None,
) -> DetectReport:
    """Detect objects in `sources` (image files, folders, globs, video files, webcam indices, stream URLs) with
    `checkpoint` (a checkpoint file, original / mmdetection weights, a named model, see `cornernet_cli.hub`, or
    an exported .onnx graph run by onnxruntime; default: the newest runs/*/best.safetensors) and write drawn
    images / videos and detections.json into `out`.

    Only detections with score >= threshold, and of `classes` (names; default all), are drawn and written.
    scales: test scales (None: the one the checkpoint was trained for). flip None: the checkpoint's preset's
    test procedure (`preset_test_settings`: on for the paper's hourglass; off for small, small-fast and
    squeeze). amp: the network's autocast (off | bf16 | fp16, see `cornernet_cli.engine.precision`).
    offline: never download a named model. extras: YOLO label
    files and crops (see `Extras`). draw_min_side: images are drawn enlarged to at least this shorter side
    (videos keep their size). Returns a DetectReport.

    Webcams and streams (`cornernet_cli.data.live`) are read frame by frame like video files. max_frames stops
    each video or stream after that many frames; Ctrl-C stops reading and keeps what was done. show: also draw
    each result in a window (where OpenCV has a GUI and a display; otherwise one line in DetectReport.notes says
    why not). on_frame(source, frame index, frames per second) is called after each video frame.

    detections.json records the job (checkpoint, inputs, settings): an `out` holding another job's results is
    refused unless `exist_ok`; the same job writes them again. `out` is locked while this runs, and
    detections.json is written atomically.
    """
    device = resolve_device(device)
    amp_dtype(amp, device)  # a bad amp fails before any work
    ckpt = find_checkpoint(checkpoint, offline=offline, runs_dir=runs_dir)
    network_meta = read_network_metadata(ckpt)
    names = network_meta["class_names"]
    if flip is None:  # resolved before the job is recorded: leaving it to the preset or naming it is one job
        flip = preset_test_settings(network_meta["model_config"])["flip"]
    scales = test_scales(network_meta, scales)
    unknown = [c for c in classes or [] if c not in names]
    if unknown:
        raise CornerNetError(f"classes {unknown} are not classes of {ckpt} ({', '.join(names)})")
    wanted = np.array([names.index(c) for c in classes]) if classes else np.arange(len(names))
    paths, skipped = collect_inputs(sources)
    if not paths:
        raise CornerNetError("no input files: " + "; ".join(f"{p['file']}: {p['error']}" for p in skipped))
    out = Path(out)
    job = {"command": "detect", "checkpoint": str(ckpt.resolve()), "inputs": [_job_input(p) for p in paths],
           "threshold": threshold, "flip": flip, "scales": [float(s) for s in scales] if scales else None,
           "amp": amp, "max_side": params.max_side, "centre_check": bool(params.centre_check),
           "classes": list(classes) if classes else None, "extras": asdict(extras),
           "draw_min_side": draw_min_side}
    with claim_output(out, job=job, record_file=out / "detections.json", exist_ok=exist_ok):
        model, meta = load_network(ckpt, device=device)
        check_amp(model, amp)
        decoder = network_decoder(model, output_settings(params, threshold))
        return _detect_into(out, paths, report=DetectReport(skipped=skipped, checkpoint=ckpt), model=model,
                            meta=meta, job=job, threshold=threshold, device=device, flip=flip,
                            scales=scales, decoder=decoder, amp=amp, wanted=wanted,
                            extras=extras, draw_min_side=draw_min_side,
                            loop=FrameLoop(max_frames=max_frames, show=show, on_frame=on_frame))


def output_settings(params: DecodeConfig, threshold: float) -> DecodeConfig:
    """`params` for a caller that keeps only detections scoring >= `threshold`: soft-NMS discards boxes that
    fall under it. The kept detections above it are the same: a score only falls during soft-NMS, and a
    class's boxes above it are all picked before any under it, so only work on boxes that would be dropped
    afterwards is saved."""
    return dataclasses.replace(params, score_threshold=max(params.score_threshold, threshold))


def _job_input(source: Path | int | str) -> str:
    """A source as detections.json's job records it: a file's absolute path, a webcam index or a URL as given."""
    return str(source.resolve()) if isinstance(source, Path) else str(source)


def _detect_into(out: Path, paths: list[Path | int | str], *, report: DetectReport, model: torch.nn.Module,
                 meta: dict, job: dict, threshold: float, device: torch.device, flip: bool, scales: Sequence[float],
                 decoder: Decoder, amp: str, wanted: np.ndarray, extras: Extras, draw_min_side: int,
                 loop: FrameLoop) -> DetectReport:
    """The work of `detect` once `out` is held: every input into `out`, then detections.json."""
    names, cat_ids, ckpt = meta["class_names"], meta["category_ids"], report.checkpoint
    timer, used = StageTimer(), set()
    if loop.show and display_problem() is not None:
        report.notes.append(display_problem())
        loop = dataclasses.replace(loop, show=False)

    def run(image: np.ndarray) -> np.ndarray:
        dets = detect_images(model, [image], decoder=decoder, device=device, scales=scales, flip=flip, amp=amp,
                             timer=timer)[0]
        return dets[(dets[:, 4] >= threshold) & np.isin(dets[:, 5].astype(np.int64), wanted)]

    try:
        for path in paths:
            try:
                if not isinstance(path, Path) or path.suffix.lower() in VIDEO_SUFFIXES:
                    _detect_video(path, out, run=run, report=report, names=names, cat_ids=cat_ids, used=used,
                                  extras=extras, loop=loop)
                else:
                    image = read_image(path)
                    dets = run(image)
                    report.entries.append(image_entry(path, image, dets, names, cat_ids))
                    target = out / _out_name(path, ".jpg", used)
                    write_image(target, draw_detections(image, dets, names, min_side=draw_min_side))
                    extras.write(out, target.stem, image, dets, names)
                    report.outputs.append(target)
            except CornerNetError as e:
                report.skipped.append({"file": str(path), "error": str(e)})
    except KeyboardInterrupt:  # a live stream has no end: Ctrl-C stops it, and what was found is still written
        report.notes.append("stopped by Ctrl-C")
    report.time_ms = timer.per_image_ms()
    report.json_path = out / "detections.json"
    if extras.save_txt:
        (out / "labels").mkdir(exist_ok=True)
        (out / "labels" / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    write_json(report.json_path, {"checkpoint": str(ckpt), "classes": names, "threshold": threshold,
                                  "images": report.entries, "skipped": report.skipped, "job": job}, indent=1)
    return report


def _detect_video(source: Path | int | str, out: Path, *, run: Callable[[np.ndarray], np.ndarray],
                  report: DetectReport, names: Sequence[str], cat_ids: Sequence[int], used: set[str], extras: Extras,
                  loop: FrameLoop) -> None:
    """One video file, webcam or stream, frame by frame: `run(frame)` -> [N, 6] kept detections, drawn into
    out/<name>.mp4 (or .avi) with an entry per frame in `report`. CornerNetError when no frame can be read."""
    writer, target, meter = None, None, FpsMeter()
    try:
        for i, (frame, fps) in enumerate(read_frames(source)):
            if loop.max_frames is not None and i >= loop.max_frames:
                break
            dets = run(frame)
            report.entries.append(image_entry(source, frame, dets, names, cat_ids, frame=i))
            if writer is None:
                writer, target = _video_writer(out / _out_name(Path(source_name(source)), ".mp4", used), fps,
                                               (frame.shape[1], frame.shape[0]))
                report.outputs.append(target)  # listed at once: Ctrl-C may end the loop
            drawn = draw_detections(frame, dets, names)
            writer.write(drawn)
            extras.write(out, f"{target.stem}_{i}", frame, dets, names)
            report.fps[str(source)] = rate = meter.tick()
            if loop.on_frame is not None:
                loop.on_frame(str(source), i, rate)
            if loop.show and not show_frame(f"cornernet: {source}", drawn):
                break
    finally:
        if writer is not None:
            writer.release()
    if target is None:
        raise CornerNetError(f"video {source} has no readable frames")


def report_table(report: DetectReport, max_rows: int = 50):
    """A rich table: one row per image / video (file, detections, the strongest three)."""
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
