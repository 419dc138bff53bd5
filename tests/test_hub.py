"""Named weights (cornernet_cli.hub): download, resume, hash check, import and cache, served from loopback.

A `http.server` on 127.0.0.1 (a thread, stopped after each test) serves weight files generated from the
`tiny` preset in the original's and mmdetection's key layouts (the generators of test_import_weights), with
HTTP Range support; it records every request, can cut a body short, ignore Range, or answer with a web page.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cornernet_cli import hub
from cornernet_cli.cli import app
from cornernet_cli.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine.checkpoint import load_model
from cornernet_cli.errors import CornerNetError
from cornernet_cli.import_weights import import_weights
from tests.test_import_weights import MMDetNet, original_state, randomize, tiny


@cache
def weights_bytes(layout: str) -> bytes:
    """A torch.save file of random tiny-preset weights (80 classes) in the `layout`'s key names."""
    state = (original_state(tiny(80)) if layout == "original"
             else {"state_dict": randomize(MMDetNet(tiny(80))).state_dict(), "meta": {"epoch": 210}})
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


class Loopback:
    """Files served at http://127.0.0.1:<port>/<name>; `requests` lists (path, Range header) as received."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}  # path -> send only this many body bytes, once, then close
        self.ignore_range = False
        self.html: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng and not server.ignore_range else 0
                if start >= len(data) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                kind = "text/html" if self.path in server.html else "application/octet-stream"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                limit = server.cut.pop(self.path, None)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped reading
                    self.wfile.write(data[start:] if limit is None else data[start:start + limit])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Loopback()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CORNERNET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def register(monkeypatch, server: Loopback, name: str, layout: str, *, data: bytes | None = None,
             sha256: str | None = "full", manual: bool = False, fmt: str | None = None) -> bytes:
    """Serve `data` (default: generated weights in `layout`) and add a WEIGHTS entry `name` for it."""
    data = weights_bytes(layout) if data is None else data
    file = f"{name}.{'pkl' if layout == 'original' else 'pth'}"
    server.files[f"/{file}"] = data
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(hub.WEIGHTS, name, {
        "url": f"{server.base}/{file}", "file": file, "format": fmt or layout, "preset": "tiny", "size": "1 MiB",
        "source": "test", "licence": "test", "sha256": digest if sha256 == "full" else sha256, "manual": manual,
        "note": "needs a browser" if manual else ""})
    return data


def one_line_error(fn) -> str:
    with pytest.raises(CornerNetError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---- download, import, cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout,sha256", [("original", "full"), ("mmdetection", "prefix")])
def test_first_use_downloads_imports_and_reuses(monkeypatch, server, home, tmp_path, layout, sha256):
    data = register(monkeypatch, server, "t-net", layout, sha256=sha256)
    if sha256 == "prefix":  # a torch.hub-style published prefix, as in mmdetection's file names
        hub.WEIGHTS["t-net"]["sha256"] = hashlib.sha256(data).hexdigest()[:8]
    assert [w.status for w in hub.list_weights() if w.name == "t-net"] == ["-"]

    ckpt = hub.resolve_weights("t-net", progress=False)
    assert ckpt == home / "checkpoints" / "t-net.safetensors" == hub.checkpoint_path("t-net")
    assert hub.download_path("t-net").read_bytes() == data  # the publisher's file, byte for byte
    assert not list(home.rglob("*.part"))
    assert server.requests == [(f"/t-net.{'pkl' if layout == 'original' else 'pth'}", None)]
    # the cached checkpoint is exactly what a direct import of the file gives
    src = tmp_path / f"direct.{'pkl' if layout == 'original' else 'pth'}"
    src.write_bytes(data)
    import_weights(src, fmt=layout, out=tmp_path / "direct.safetensors")
    assert same_tensors(ckpt, tmp_path / "direct.safetensors")
    model, meta = load_model(ckpt)
    assert meta["extra"]["imported_from"] == layout and meta["model_config"] == tiny(80)

    # second use: no request, no re-import
    mtime = ckpt.stat().st_mtime_ns
    assert hub.resolve_weights("t-net", progress=False) == ckpt
    assert len(server.requests) == 1 and ckpt.stat().st_mtime_ns == mtime
    assert [w.status for w in hub.list_weights() if w.name == "t-net"] == ["imported"]

    # a deleted checkpoint is re-imported from the kept download, still without a request
    ckpt.unlink()
    assert hub.resolve_weights("t-net", progress=False) == ckpt and len(server.requests) == 1
    assert same_tensors(ckpt, tmp_path / "direct.safetensors")


def test_resume_of_a_partial_download(monkeypatch, server):
    data = register(monkeypatch, server, "t-net", "mmdetection")
    part = hub.download_path("t-net").with_name("t-net.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    assert [w.status for w in hub.list_weights() if w.name == "t-net"] == ["partial (0 MiB)"]
    hub.resolve_weights("t-net", progress=True)
    assert server.requests == [("/t-net.pth", "bytes=1000-")]  # only the rest was asked for
    assert hub.download_path("t-net").read_bytes() == data and not part.exists()


def test_a_second_process_does_not_write_into_the_same_part(monkeypatch, server):
    fcntl = pytest.importorskip("fcntl")
    data = register(monkeypatch, server, "t-net", "mmdetection")
    part = hub.download_path("t-net").with_name("t-net.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:300])
    with open(part, "ab") as other:  # what a running download holds
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        message = one_line_error(lambda: hub.resolve_weights("t-net", progress=False))
    assert "another process" in message and str(part) in message
    assert part.read_bytes() == data[:300]
    hub.resolve_weights("t-net", progress=False)  # once it is released, the download resumes
    assert hub.download_path("t-net").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(monkeypatch, server):
    data = register(monkeypatch, server, "t-net", "mmdetection")
    server.ignore_range = True
    part = hub.download_path("t-net").with_name("t-net.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)  # bytes that appending the full answer would leave in front
    hub.resolve_weights("t-net", progress=False)
    assert hub.download_path("t-net").read_bytes() == data


def test_complete_part_is_checked_not_downloaded_again(monkeypatch, server):
    data = register(monkeypatch, server, "t-net", "mmdetection")
    part = hub.download_path("t-net").with_name("t-net.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data)  # the server answers 416: nothing left to send
    hub.resolve_weights("t-net", progress=False)
    assert server.requests == [("/t-net.pth", f"bytes={len(data)}-")]
    assert hub.download_path("t-net").read_bytes() == data


def test_short_download_keeps_the_part_and_the_next_run_resumes(monkeypatch, server, home):
    data = register(monkeypatch, server, "t-net", "original")
    server.cut["/t-net.pkl"] = 5000
    message = one_line_error(lambda: hub.resolve_weights("t-net", progress=False))
    assert f"stopped at 5000 of {len(data)} bytes" in message and "resume" in message
    assert server.base in message
    final = hub.download_path("t-net")
    assert not final.exists() and not hub.checkpoint_path("t-net").exists()
    assert final.with_name("t-net.pkl.part").stat().st_size == 5000

    hub.resolve_weights("t-net", progress=False)
    assert server.requests[-1] == ("/t-net.pkl", "bytes=5000-")
    assert final.read_bytes() == data and hub.checkpoint_path("t-net").is_file()


@pytest.mark.parametrize("published", ["deadbeef", "full-of-another-file"])
def test_bad_hash_leaves_no_file(monkeypatch, server, home, published):
    register(monkeypatch, server, "t-net", "mmdetection")
    if published == "full-of-another-file":
        published = hashlib.sha256(weights_bytes("original")).hexdigest()
    hub.WEIGHTS["t-net"]["sha256"] = published
    message = one_line_error(lambda: hub.resolve_weights("t-net", progress=False))
    assert "hash mismatch" in message and published in message and "deleted" in message
    assert not hub.download_path("t-net").exists()
    assert not list(home.rglob("*.part")) and not list(home.rglob("*.safetensors"))


def test_truncated_file_without_hash_is_refused_and_removed(monkeypatch, server, home):
    """No published hash: the import is the check, and a file that fails it is not kept under its name."""
    data = weights_bytes("original")
    register(monkeypatch, server, "t-net", "original", data=data[: len(data) // 2], sha256=None)
    message = one_line_error(lambda: hub.resolve_weights("t-net", progress=False))
    assert "t-net" in message and "deleted" in message and "original" in message
    assert not hub.download_path("t-net").exists() and not list(home.rglob("*.safetensors"))


def test_file_placed_by_hand_with_a_wrong_hash_is_named(monkeypatch, server):
    register(monkeypatch, server, "t-net", "mmdetection")
    src = hub.download_path("t-net")
    src.parent.mkdir(parents=True)
    src.write_bytes(weights_bytes("original"))
    message = one_line_error(lambda: hub.resolve_weights("t-net", offline=True))
    assert "hash mismatch" in message and str(src) in message
    assert src.exists() and server.requests == []  # the user's file is left for them to look at


def test_web_page_instead_of_the_file(monkeypatch, server):
    register(monkeypatch, server, "t-net", "mmdetection")
    server.html.add("/t-net.pth")
    message = one_line_error(lambda: hub.resolve_weights("t-net", progress=False))
    assert "needs a browser" in message and str(hub.download_path("t-net")) in message
    assert not hub.download_path("t-net").exists()


# ---- offline, no network, manual links, unknown names --------------------------------------------------


def test_offline_names_url_and_path_and_sends_nothing(monkeypatch, server):
    register(monkeypatch, server, "t-net", "mmdetection")
    message = one_line_error(lambda: hub.resolve_weights("t-net", offline=True))
    assert hub.WEIGHTS["t-net"]["url"] in message and str(hub.download_path("t-net")) in message
    assert "offline" in message and server.requests == []


def test_no_network_names_url_and_path(monkeypatch, server):
    register(monkeypatch, server, "t-net", "mmdetection")
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub.WEIGHTS["t-net"]["url"] = f"http://127.0.0.1:{port}/t-net.pth"
    message = one_line_error(lambda: hub.resolve_weights("t-net", progress=False))
    assert "cannot reach" in message and f"127.0.0.1:{port}" in message
    assert str(hub.download_path("t-net")) in message


def test_manual_link_says_so_and_accepts_the_file_placed_by_hand(monkeypatch, server):
    data = register(monkeypatch, server, "t-manual", "original", sha256=None, manual=True)
    message = one_line_error(lambda: hub.resolve_weights("t-manual"))
    assert "needs a browser" in message and hub.WEIGHTS["t-manual"]["url"] in message
    assert str(hub.download_path("t-manual")) in message
    hub.download_path("t-manual").parent.mkdir(parents=True)
    hub.download_path("t-manual").write_bytes(data)
    ckpt = hub.resolve_weights("t-manual", offline=True)
    assert load_model(ckpt)[1]["model_config"] == tiny(80) and server.requests == []


def test_format_this_version_cannot_import(monkeypatch, server):
    register(monkeypatch, server, "t-lite", "original", fmt="no-such-format")
    message = one_line_error(lambda: hub.resolve_weights("t-lite"))
    assert "'no-such-format'" in message and "original, mmdetection" in message and server.requests == []


def test_registered_entries_are_complete():
    for name, e in hub.WEIGHTS.items():
        assert e["url"].startswith("https://") and e["file"] and e["licence"] and e["size"], name
        assert e["sha256"] is None or re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", e["sha256"]), name
        assert e["manual"] == bool(e["note"]) or not e["manual"], name
        if e["sha256"] and len(e["sha256"]) == 8:  # a torch.hub-style prefix is the one in the file name
            assert e["file"].endswith(f"-{e['sha256']}.pth"), name
    assert hub.WEIGHTS["cornernet-hg104-coco"]["manual"] is False  # the example must download by itself


def test_unknown_name_lists_the_known_ones():
    message = one_line_error(lambda: hub.resolve_weights("cornernet-hg999"))
    assert "cornernet-hg999" in message and "cornernet-hg104-coco" in message


# ---- local files ---------------------------------------------------------------------------------------


def test_local_files_are_imported_once(tmp_path, home):
    pkl, pth = tmp_path / "CornerNet_500000.pkl", tmp_path / "mm.pth"
    pkl.write_bytes(weights_bytes("original"))
    pth.write_bytes(weights_bytes("mmdetection"))
    for src, fmt in ((pkl, "original"), (pth, "mmdetection")):
        ckpt = hub.resolve_weights(src)
        assert ckpt.parent == home / "checkpoints" / "files" and ckpt.name.startswith(src.stem)
        assert load_model(ckpt)[1]["extra"]["imported_from"] == fmt
        mtime = ckpt.stat().st_mtime_ns
        assert hub.resolve_weights(str(src)) == ckpt and ckpt.stat().st_mtime_ns == mtime
    # an mmdetection file under a .pkl name is still found (the other format is tried)
    odd = tmp_path / "renamed.pkl"
    odd.write_bytes(weights_bytes("mmdetection"))
    assert load_model(hub.resolve_weights(odd))[1]["extra"]["imported_from"] == "mmdetection"
    # a checkpoint is itself
    assert hub.resolve_weights(hub.resolve_weights(pkl)) == hub.resolve_weights(pkl)


def test_bad_local_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    message = one_line_error(lambda: hub.resolve_weights(junk))
    assert str(junk) in message and "mmdetection:" in message and "original:" in message
    assert "directory" in one_line_error(lambda: hub.resolve_weights(tmp_path))
    assert "known" in one_line_error(lambda: hub.resolve_weights(tmp_path / "nope.safetensors"))


# ---- through the commands ------------------------------------------------------------------------------


def test_cli_commands_take_a_model_name(monkeypatch, server, home, tmp_path):
    register(monkeypatch, server, "t-net", "mmdetection")
    image = tmp_path / "img.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    runner = CliRunner()

    r = runner.invoke(app, ["detect", str(image), "--model", "t-net", "--offline", "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, CornerNetError) and "offline" in str(r.exception) and server.requests == []

    r = runner.invoke(app, ["detect", str(image), "--model", "t-net", "--out", str(tmp_path / "det"), "--no-flip"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "det" / "detections.json").read_text())
    assert doc["checkpoint"] == str(hub.checkpoint_path("t-net")) and len(doc["classes"]) == 80
    assert len(server.requests) == 1

    # --checkpoint still works, and every other command takes the name from the cache (no new request)
    r = runner.invoke(app, ["detect", str(image), "--checkpoint", "t-net", "--offline", "--out", str(tmp_path / "d2")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", "--model", "t-net", "--offline", "-o", str(tmp_path / "m.onnx"),
                            "--height", "64", "--width", "64"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.onnx").is_file()
    r = runner.invoke(app, ["visualize-heatmaps", str(image), "--model", "t-net", "--offline",
                            "--out", str(tmp_path / "h.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h.png").is_file() and len(server.requests) == 1

    # eval: a synthetic dataset whose categories are COCO's 80 (its two shapes become person and bicycle)
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_train=1, num_val=2, image_size=64, num_classes=2, seed=0)
    ann = json.loads((data / "annotations" / "val.json").read_text())
    ann["categories"] = [{"id": i, "name": n} for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]
    (data / "annotations" / "val.json").write_text(json.dumps(ann))
    r = runner.invoke(app, ["eval", "--model", "t-net", "--offline", "--data", str(data), "--no-flip",
                            "--out", str(tmp_path / "ev" / "r.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["checkpoint"] == "t-net"
    assert len(server.requests) == 1

    r = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and re.search(r"t-net .*imported", r.output)


def test_console_script_offline_mission_example_is_one_line(tmp_path, home):
    """`cornernet detect photo.jpg --model cornernet-hg104-coco --offline` on an empty cache: exit 1, one line."""
    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    proc = subprocess.run([sys.executable, "-c", "from cornernet_cli.cli import main; main()", "detect", str(image),
                           "--model", "cornernet-hg104-coco", "--offline", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CORNERNET_HOME": str(home), "COLUMNS": "1000"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert hub.WEIGHTS["cornernet-hg104-coco"]["url"] in lines[0]
    assert str(home / "downloads" / hub.WEIGHTS["cornernet-hg104-coco"]["file"]) in lines[0]


def test_detect_without_model_or_runs_lists_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "img.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    r = CliRunner().invoke(app, ["detect", str(image)])
    assert isinstance(r.exception, CornerNetError)
    message = str(r.exception)
    assert "runs/*/best.safetensors" in message and "\n" not in message
    assert all(name in message for name in hub.WEIGHTS)
