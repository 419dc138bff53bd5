"""cornernet detect on live sources: a generated video served by a loopback HTTP server, webcam indices, frames
per second, --show without a GUI, --max-frames and Ctrl-C."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time

import cv2
import pytest
from typer.testing import CliRunner

from cornernet_cli.cli import app
from cornernet_cli.data.live import FpsMeter, display_problem, source_name, stream_source
from cornernet_cli.detect import collect_inputs, detect
from tests.test_evaluate import make_trained_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("live"))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained):
    """A 6-frame MJPG video of the validation images, served over HTTP on 127.0.0.1 (a free port) for the module."""
    data, _ = trained
    root = tmp_path_factory.mktemp("www")
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 128))
    assert writer.isOpened()
    for f in sorted((data / "images" / "val").glob("*.jpg")) * 2:
        writer.write(cv2.imread(str(f)))
    writer.release()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_stream_sources_are_recognised():
    assert stream_source("0") == 0 and stream_source("12") == 12
    assert stream_source("rtsp://cam.local:554/live") == "rtsp://cam.local:554/live"
    assert stream_source("HTTPS://x/y.mp4") == "HTTPS://x/y.mp4"
    assert stream_source("clip.mp4") is None and stream_source("ftp://x/y.mp4") is None
    assert source_name(0) == "camera0" and source_name("http://h:8/a/clip.mp4?t=1") == "clip"
    assert source_name("rtsp://cam.local:554/") == "cam.local_554"
    inputs, problems = collect_inputs(["1", "rtsp://h/s"])
    assert inputs == [1, "rtsp://h/s"] and problems == []


def test_fps_meter():
    meter = FpsMeter(window=3)
    assert meter.tick() == 0.0
    time.sleep(0.05)
    rate = meter.tick()
    assert 0 < rate <= 20.5


def test_detect_http_stream_frame_by_frame(trained, served, tmp_path):
    _, ckpt = trained
    url, _ = served
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["detect", f"{url}/clip.avi", "--checkpoint", str(ckpt), "--out", str(out),
                                 "--no-flip", "--threshold", "0.05", "--max-frames", "4"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "detections.json").read_text())
    assert [e["frame"] for e in doc["images"]] == [0, 1, 2, 3]
    assert all(e["file"] == f"{url}/clip.avi" and e["width"] == 128 for e in doc["images"])
    assert "frames per second" in r.output
    drawn = cv2.VideoCapture(str(next(out.glob("clip.*"))))
    count = 0
    while drawn.read()[0]:
        count += 1
    assert count == 4


def test_detect_stream_without_max_frames_reads_to_the_end(trained, served, tmp_path):
    _, ckpt = trained
    url, _ = served
    seen = []
    report = detect([f"{url}/clip.avi", f"{url}/missing.avi", "7"], checkpoint=ckpt, out=tmp_path, flip=False,
                    on_frame=lambda src, i, fps: seen.append((src, i, fps)))
    assert [i for _, i, _ in seen] == list(range(8))
    assert seen[-1][2] > 0 and report.fps[f"{url}/clip.avi"] == seen[-1][2]
    errors = {s["file"]: s["error"] for s in report.skipped}
    assert "cannot open video" in errors[f"{url}/missing.avi"] and "cannot open webcam 7" in errors["7"]


def test_ctrl_c_stops_and_keeps_what_was_found(trained, served, tmp_path):
    _, ckpt = trained
    url, _ = served

    def interrupt(src, i, fps):
        if i == 2:
            raise KeyboardInterrupt

    report = detect([f"{url}/clip.avi"], checkpoint=ckpt, out=tmp_path, flip=False, on_frame=interrupt)
    assert report.notes == ["stopped by Ctrl-C"]
    assert len(json.loads(report.json_path.read_text())["images"]) == 3 and report.outputs[0].exists()


def test_show_says_why_no_window(trained, served, tmp_path):
    _, ckpt = trained
    _, root = served
    reason = display_problem()
    if reason is None:
        pytest.skip("this OpenCV has a GUI and a display: --show would open a window")
    r = CliRunner().invoke(app, ["detect", str(root / "clip.avi"), "--checkpoint", str(ckpt), "--out",
                                 str(tmp_path), "--no-flip", "--max-frames", "2", "--show"])
    assert r.exit_code == 0, r.output
    assert "no window opened" in r.output and (tmp_path / "detections.json").exists()
