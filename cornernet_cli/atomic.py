"""Atomic file writes: a result file is a complete old or a complete new file, never a half-written one.

Used for checkpoints, resume states and every results JSON (eval, detect, prepare-data, ablate), so a kill
(SIGTERM, SIGKILL, a power cut) or a full disk in the middle of a write leaves the previous file in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cornernet_cli.errors import CornerNetError

_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call write(tmp_path) for a hidden temporary file in path's folder, fsync it, then rename it to `path`.

    A failed write (a full disk: OSError, or safetensors' "I/O error") removes the temporary file, keeps the
    previous `path` as it was and raises CornerNetError naming `path`; an interruption (KeyboardInterrupt)
    also removes the temporary file and propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions of any new file
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) or (isinstance(e, Exception) and "I/O error" in str(e)):
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} written"
            raise CornerNetError(f"cannot write {path}: {reason} ({kept})") from None
        raise


def write_json(path: str | Path, obj: Any, *, indent: int | None = None) -> Path:
    """json.dumps(obj) to `path`, atomically (see `atomic_write`). Returns `path`."""
    text = json.dumps(obj, indent=indent)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return Path(path)
