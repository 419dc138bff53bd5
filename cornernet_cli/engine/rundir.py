"""Output folders: a new job never replaces an earlier job's results, and one process at a time writes one.

The rule (docs/reliability.md, "Run folders and locks"):

- train: a folder that holds a run (state.safetensors, last.safetensors or summary.json: finished or
  interrupted) is refused unless `resume` (continue it) or `exist_ok` (start afresh: the earlier run's files
  are deleted first, so no old best.safetensors survives next to the new run's files).
- eval, detect, prepare-data, ablate: an output that holds the results of a different job (another
  checkpoint, dataset, source or setting, as recorded in the output itself) is refused unless `exist_ok`; the
  same job run again writes the same results again, so scripts that repeat a command keep working.

The lock: a file `.cornernet.lock` holding the owner's pid, host, process start time and command. Exclusion
is the kernel's `flock` on that file, which ends with the process however it ends (SIGKILL included), so a
lock left by a dead process is stale by construction and is taken over. Where the file system has no flock
(or on Windows), the recorded pid decides: a lock of a process that no longer runs on this host (pid gone, or
reused by a process started later) is stale; a lock from another host is never taken over.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cornernet_cli.errors import CornerNetError

try:
    import fcntl
except ImportError:  # Windows: the recorded pid alone decides
    fcntl = None

LOCK_NAME = ".cornernet.lock"
# What marks a folder as holding a run, and every file a run writes (deleted by exist_ok).
RUN_MARKERS = ("state.safetensors", "last.safetensors", "summary.json")
RUN_FILES = (*RUN_MARKERS, "best.safetensors", "config.json", "metrics.jsonl", "curves.png")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def _owner_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
            "command": " ".join(sys.argv), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote `owner` still runs (True when that cannot be known: another host)."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        pid = int(owner["pid"])
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    start = _start_time(pid)
    return owner.get("start") is None or start is None or start == owner["start"]


def _describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('since', '?')} "
            f"({owner.get('command', '?')})")


class FolderLock:
    """Hold `folder`/`lock_name` while in the `with` block; CornerNetError naming the folder and the owner
    when another live process holds it. `taken_over` is the stale owner record replaced, if any. A command
    that writes one file of a shared folder (eval's results JSON) locks that file's own name."""

    def __init__(self, folder: str | Path, *, lock_name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.path = self.folder / lock_name
        self.taken_over: dict[str, Any] | None = None
        self._fd: int | None = None

    def _in_use(self, owner: dict[str, Any]) -> CornerNetError:
        return CornerNetError(f"{self.folder} is in use by {_describe(owner)}; wait for it to end or choose another "
                              f"output (if that process is gone for good, delete {self.path})")

    def __enter__(self) -> FolderLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                kernel_lock = self._flock(fd)
                owner = _read_record(fd)
                if not kernel_lock and owner and owner.get("pid") != os.getpid() and _alive(owner):
                    raise self._in_use(owner)
                with contextlib.suppress(FileNotFoundError):
                    if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                        break
                os.close(fd)  # the previous holder removed the file between our open and our lock: again
            except BaseException:
                os.close(fd)
                raise
        self.taken_over = owner or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner_record()).encode(), 0)
        self._fd = fd
        return self

    def _flock(self, fd: int) -> bool:
        """Take the kernel lock: True if taken, False where the file system has none; in use: CornerNetError."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use(_read_record(fd)) from None
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return False
            raise
        return True

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)  # before the kernel lock goes, so no one locks a file about to vanish
        os.close(fd)


def _read_record(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        record = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def claim_folder(folder: str | Path, *, lock_name: str = LOCK_NAME) -> Iterator[FolderLock]:
    """Create `folder` if needed and hold its lock (see FolderLock); a folder created here and left empty is
    removed again, so a refused or failed start leaves nothing behind."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(folder, lock_name=lock_name) as lock:
            yield lock
    finally:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty


def earlier_run(out_dir: str | Path) -> str | None:
    """A description of the run in `out_dir` (status and step from summary.json, else the files found), or None."""
    out_dir = Path(out_dir)
    found = [name for name in RUN_MARKERS if (out_dir / name).is_file()]
    if not found:
        return None
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        summary = json.loads((out_dir / "summary.json").read_text())
        return f"a {summary['status']} run at step {summary['step']}"
    return "an unfinished run (" + ", ".join(found) + ")"


@contextlib.contextmanager
def claim_run_folder(out_dir: str | Path, *, resume: bool, exist_ok: bool) -> Iterator[FolderLock]:
    """Hold the lock of the training run folder `out_dir` and apply the train rule above (CornerNetError
    naming the folder, what it holds, `resume` and `exist_ok`). With `exist_ok` the earlier run's files
    (RUN_FILES) are deleted once the lock is held."""
    if resume and exist_ok:
        raise CornerNetError("resume continues the run in the folder and exist_ok replaces it: give one of them",
                             2, params=("resume", "exist_ok"))
    out_dir = Path(out_dir)
    with claim_folder(out_dir) as lock:
        earlier = earlier_run(out_dir)
        if earlier and not resume:
            if not exist_ok:
                raise CornerNetError(f"{out_dir} holds {earlier}; continue it with resume, replace it with "
                                     f"exist_ok, or choose another output folder", params=("resume", "exist_ok"))
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (out_dir / name).unlink()
        yield lock


def claims_run_folder(train_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator of the training loop: rank 0 (the only process that writes) holds the run folder `out_dir`
    for the whole call, under the rule above (arguments `out_dir`, `resume`, `exist_ok` of the call). The lock
    is released on every exit path: return, exception, Ctrl-C; the kernel releases it after SIGKILL. Under
    torchrun the other ranks write nothing; when rank 0 refuses, torchrun stops them."""
    signature = inspect.signature(train_fn)

    @functools.wraps(train_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if int(os.environ.get("RANK", "0")) != 0:
            return train_fn(*args, **kwargs)
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        a = call.arguments
        with claim_run_folder(a["out_dir"], resume=a["resume"], exist_ok=a["exist_ok"]):
            return train_fn(*args, **kwargs)

    return wrapper


def check_same_job(record_file: str | Path, job: dict[str, Any], *, exist_ok: bool, output: str | Path) -> bool:
    """Refuse to replace `output` when `record_file` (a JSON object an earlier job wrote next to its results,
    with that job under "job") describes a different job than `job`, unless `exist_ok`. Nothing there, or
    the same job: fine. A record without a job (written by an older version) counts as a different job.
    Returns True when `exist_ok` lets this job replace a different one."""
    record_file, job = Path(record_file), json.loads(json.dumps(job))  # compared as JSON: tuples == lists
    if not record_file.is_file():
        return False
    try:
        earlier = json.loads(record_file.read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier == job:
        return False
    if exist_ok:
        return True
    if isinstance(earlier, dict):
        diff = [f"{k} {earlier.get(k)!r} there vs {v!r} now" for k, v in job.items() if earlier.get(k) != v]
        what = "another job (" + "; ".join(diff[:3]) + ")"
    else:
        what = "results of an earlier job"
    raise CornerNetError(f"{output} holds {what}, recorded in {record_file}; replace it with exist_ok or choose "
                         f"another output folder", params=("exist_ok",))


@contextlib.contextmanager
def claim_output(folder: str | Path, *, job: dict[str, Any], record_file: str | Path, exist_ok: bool,
                 output: str | Path | None = None, lock_name: str = LOCK_NAME) -> Iterator[bool]:
    """`claim_folder(folder)` then `check_same_job(record_file, job)`: what eval, detect, prepare-data and
    ablate hold while they write. `output` (default `folder`) is what the refusal names. Yields whether a
    different earlier job is being replaced (exist_ok)."""
    with claim_folder(folder, lock_name=lock_name):
        yield check_same_job(record_file, job, exist_ok=exist_ok, output=output or folder)


__all__ = ["LOCK_NAME", "RUN_FILES", "RUN_MARKERS", "FolderLock", "check_same_job", "claim_folder", "claim_output",
           "claim_run_folder", "claims_run_folder", "earlier_run"]
