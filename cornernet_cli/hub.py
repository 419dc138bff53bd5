"""Pretrained weights by name: a plain dict of published COCO weights, a cache, and `resolve_weights`.

Everything that takes a checkpoint (detect, eval, visualize-heatmaps, export, fine-tuning) passes what
the user gave through `resolve_weights`, which returns a cornernet ``.safetensors`` checkpoint:

- an existing ``.safetensors`` file: itself;
- an existing original ``.pkl`` / mmdetection ``.pth`` file: imported once into the cache
  (`cornernet_cli.import_weights`, each known format tried in turn), then reused;
- a name in `WEIGHTS`: downloaded once into the cache (resuming a broken download from its ``.part``
  file with an HTTP Range request, hash checked, renamed into place only when complete), imported
  once, then reused.

Cache (``CORNERNET_HOME``, default ``$XDG_CACHE_HOME/cornernet`` or ``~/.cache/cornernet``)::

    downloads/<file>                 the publisher's file, as published (<file>.part while downloading)
    checkpoints/<name>.safetensors   its import, what the commands load
    checkpoints/files/<stem>-<key>.safetensors   imports of local .pkl / .pth files

Hashes: ``sha256`` is the full hex digest or, where the publisher only gives a prefix (mmdetection
names its files ``...-<first 8 hex digits of the sha256>.pth``), that prefix, checked as torch.hub
checks it. Where a publisher gives none it is None and the import (every tensor name and shape must
match the network) is the only check. Where a link needs a browser (Google Drive's large-file page),
``manual`` is True: the file is not fetched, the error says where to download it and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: downloads are not locked against a second process
    fcntl = None

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from cornernet_cli import __version__
from cornernet_cli.errors import CornerNetError
from cornernet_cli.import_weights import FORMATS, import_weights

# Where each URL and hash comes from: docs/deploy.md, "Named weights".
WEIGHTS: dict[str, dict] = {
    "cornernet-hg104-coco": {
        "url": "https://download.openmmlab.com/mmdetection/v2.0/cornernet/"
               "cornernet_hourglass104_mstest_10x5_210e_coco/"
               "cornernet_hourglass104_mstest_10x5_210e_coco_20200824_185720-5fefbf1c.pth",
        "file": "cornernet_hourglass104_mstest_10x5_210e_coco_20200824_185720-5fefbf1c.pth",
        "format": "mmdetection",
        "preset": "hourglass-104",
        "size": "~767 MiB",
        "source": "mmdetection, COCO AP 41.2",
        "licence": "Apache-2.0",
        "sha256": "5fefbf1c",
        "manual": False,
        "note": "",
    },
    "cornernet-hg104-coco-original": {
        "url": "https://drive.google.com/open?id=16bbMAyykdZr2_7afiMZrvvn4xkYa-LYk",
        "file": "CornerNet_500000.pkl",
        "format": "original",
        "preset": "hourglass-104",
        "size": "768 MiB",
        "source": "princeton-vl/CornerNet, the paper's",
        "licence": "BSD-3-Clause",
        "sha256": None,
        "manual": True,
        "note": "Google Drive page: needs a browser; no hash published; the first link died (CornerNet issue #9)",
    },
    "cornernet-squeeze-coco": {
        "url": "https://drive.google.com/file/d/1qM8BBYCLUBcZx_UmLT0qMXNTh-Yshp4X/view?usp=sharing",
        "file": "CornerNet_Squeeze_500000.pkl",
        "format": "squeeze",
        "preset": "squeeze",
        "size": "122 MiB",
        "source": "princeton-vl/CornerNet-Lite",
        "licence": "BSD-3-Clause",
        "sha256": None,
        "manual": True,
        "note": "Google Drive page: needs a browser; no hash published",
    },
}

_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """The cache root: ``$CORNERNET_HOME``, else ``$XDG_CACHE_HOME/cornernet``, else ``~/.cache/cornernet``."""
    home = os.environ.get("CORNERNET_HOME")
    if home:
        return Path(home).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "cornernet"


def download_path(name: str) -> Path:
    """Where the publisher's file of `name` is kept (and where to place it by hand)."""
    return cache_dir() / "downloads" / WEIGHTS[name]["file"]


def checkpoint_path(name: str) -> Path:
    """Where the imported checkpoint of `name` is kept."""
    return cache_dir() / "checkpoints" / f"{name}.safetensors"


def known_names() -> str:
    """The names in `WEIGHTS`, comma-separated (for messages telling the user what to pass)."""
    return ", ".join(WEIGHTS)


# ---- download ------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 digest of the file at `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_hash(path: Path, sha256: str | None, *, what: str) -> None:
    """CornerNetError unless the sha256 of `path` starts with `sha256` (a full digest or a published prefix)."""
    if not sha256:
        return
    digest = sha256_file(path)
    if not digest.startswith(sha256.lower()):
        kind = "sha256" if len(sha256) == 64 else "sha256 prefix"
        raise CornerNetError(f"{what}: hash mismatch, sha256 {digest[:16]}... does not match the published "
                             f"{kind} {sha256}")


def _progress(total: int | None, done: int, label: str, enabled: bool):
    """A rich progress bar on stderr (or a stand-in that draws nothing) and its `advance(n)` function."""
    if not enabled:
        return contextlib.nullcontext(), lambda n: None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task(label, total=total, completed=done)
    return bar, lambda n: bar.advance(task, n)


def _lock(f, part: Path) -> None:
    """Refuse a second process writing the same .part file (where fcntl exists: Linux, macOS)."""
    if fcntl is None:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CornerNetError(f"another process is downloading into {part}; run again when it has finished") from None


def _open(url: str, start: int):
    headers = {"User-Agent": f"cornernet/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)


def download(url: str, dest: str | Path, *, sha256: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming from ``dest.part`` if an earlier download broke off.

    Bytes go to ``<dest>.part``; only a complete file whose hash matches `sha256` (full hex digest or
    prefix; None: no check) is renamed to `dest`. A broken connection or short body keeps the ``.part``
    for the next call to resume; a hash mismatch deletes it. Errors are one-line CornerNetErrors naming
    the URL and the file.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    where = f"download of {url} to {dest}"
    try:
        response = _open(url, start)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not start:
            raise CornerNetError(f"{where} failed: HTTP {e.code} {e.reason}") from None
        # 416: nothing after `start`: the .part is complete if the server's size ("bytes */N") equals it
        size = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", ""))
        if size is None or int(size.group(1)) != start:
            part.unlink()
            raise CornerNetError(f"{where}: the partial file {part} does not fit the file on the server; it was "
                                 "deleted, run again to download it anew") from None
        response = None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise CornerNetError(f"cannot reach {url} ({reason}); without network, download it elsewhere and "
                             f"place it at {dest}") from None
    if response is not None:
        with response:
            if (response.headers.get_content_type() or "") == "text/html":
                raise CornerNetError(f"{url} answered with a web page, not the file: the link needs a browser; "
                                     f"download the file there and place it at {dest}")
            resumed = start > 0 and response.status == 206
            if not resumed:  # a fresh start, or a server that ignores Range: begin again
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None and length.isdigit() else None
            bar, advance = _progress(total, start, dest.name, progress)
            received = start
            with bar, open(part, "ab") as f:
                _lock(f, part)
                if not resumed:
                    f.truncate(0)
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:  # a reset or timed-out connection
                        raise CornerNetError(f"{where} broke off after {received} bytes ({e}); run again to "
                                             f"resume from {part}") from None
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:
                        raise CornerNetError(f"cannot write {part}: {e.strerror or e}") from None
                    received += len(chunk)
                    advance(len(chunk))
            if total is not None and received < total:
                raise CornerNetError(f"{where} stopped at {received} of {total} bytes; run again to resume "
                                     f"from {part}")
    try:
        check_hash(part, sha256, what=where)
    except CornerNetError as e:
        part.unlink()
        raise CornerNetError(f"{e}; the file was deleted (a corrupt or tampered download); run again to "
                             "download it anew") from None
    os.replace(part, dest)
    return dest


# ---- import --------------------------------------------------------------------------------------------


def _import(src: Path, out: Path, formats: list[str], *, preset: str | None = None) -> Path:
    """Import `src` into the checkpoint `out` with the first format of `formats` that fits its tensors."""
    tried = []
    for fmt in formats:
        try:
            import_weights(src, fmt=fmt, out=out, preset=preset)
            return out
        except CornerNetError as e:
            tried.append(f"{fmt}: {str(e).replace(str(src), 'the file')}")
    raise CornerNetError(f"{src} is not CornerNet weights in a format this version imports; tried "
                         + "; ".join(tried))


def _import_local(path: Path) -> Path:
    """The cached import of a local .pkl / .pth file, made on first use (keyed by path, size and mtime)."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "checkpoints" / "files" / f"{path.stem}-{key}.safetensors"
    if out.is_file():
        return out
    # mmdetection saves .pth files, the original .pkl: try the likelier format first
    formats = sorted(FORMATS, key=lambda f: f != ("mmdetection" if path.suffix == ".pth" else "original"))
    return _import(path, out, formats)


def _resolve_name(name: str, *, offline: bool, progress: bool) -> Path:
    entry = WEIGHTS[name]
    out = checkpoint_path(name)
    if out.is_file():
        return out
    if entry["format"] not in FORMATS:
        raise CornerNetError(f"{name} needs the {entry['format']!r} weights importer, which this version of "
                             f"cornernet lacks (it imports: {', '.join(FORMATS)})")
    src, url = download_path(name), entry["url"]
    fresh = False
    if not src.is_file():
        if entry["manual"]:
            raise CornerNetError(f"{name} cannot be downloaded here ({entry['note']}): open {url} in a browser, "
                                 f"save {entry['file']} and place it at {src}, then run again")
        if offline:
            raise CornerNetError(f"{name} is not cached and offline is set: download {url} and place it at "
                                 f"{src} (or run without offline)", params=("offline",))
        download(url, src, sha256=entry["sha256"], progress=progress)
        fresh = True
    else:  # placed by hand, or downloaded by an earlier run that stopped before importing
        check_hash(src, entry["sha256"], what=f"{name}: the file at {src}")
    try:
        return _import(src, out, [entry["format"]], preset=entry["preset"])
    except CornerNetError as e:
        if fresh and not entry["sha256"]:  # nothing vouches for the download: do not keep it under its name
            src.unlink()
            raise CornerNetError(f"{name}: {e}; the downloaded file was deleted") from None
        raise CornerNetError(f"{name}: {e}") from None


def resolve_weights(source: str | Path, *, offline: bool = False, progress: bool = True) -> Path:
    """The cornernet checkpoint (.safetensors path) for `source`: a checkpoint file, an original .pkl or
    mmdetection .pth file (imported once into the cache), or a name in `WEIGHTS` (downloaded and imported
    once). offline: never touch the network (a name not yet cached is an error saying where to put the
    file). progress: draw a download progress bar on stderr. Raises a one-line CornerNetError otherwise.
    """
    if isinstance(source, str) and source in WEIGHTS:
        return _resolve_name(source, offline=offline, progress=progress)
    path = Path(source)
    if path.is_file():
        return path if path.suffix == ".safetensors" else _import_local(path)
    if path.is_dir():
        raise CornerNetError(f"checkpoint {path} is a directory, expected a .safetensors file or a model name")
    raise CornerNetError(f"checkpoint not found: {source} is no file and no known model name ({known_names()})")


# ---- listing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsInfo:
    """One row of `cornernet models`' named-weights table."""

    name: str
    preset: str
    format: str
    size: str
    source: str
    licence: str
    url: str
    status: str  # imported | downloaded | partial (N MiB) | -
    note: str


def _status(name: str) -> str:
    if checkpoint_path(name).is_file():
        return "imported"
    src = download_path(name)
    if src.is_file():
        return "downloaded"
    part = src.with_name(src.name + ".part")
    return f"partial ({part.stat().st_size / 2**20:.0f} MiB)" if part.is_file() else "-"


def list_weights() -> list[WeightsInfo]:
    """Every named weights entry with its cache status, in `WEIGHTS` order."""
    fields = ("preset", "format", "size", "source", "licence", "url", "note")
    return [WeightsInfo(name=n, status=_status(n), **{k: e[k] for k in fields}) for n, e in WEIGHTS.items()]
