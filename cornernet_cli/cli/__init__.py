"""The `cornernet` command line: one thin function per command (parse -> one library call -> print).

The commands live by theme in data.py, train.py, infer.py and deploy.py; this module holds the Typer `app`
(registering them in the order `--help` lists them) and `main`, the console script's entry point. Run as
`cornernet ...`, `python -m cornernet_cli.cli ...` or under torchrun with `-m cornernet_cli.cli`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cornernet_cli import __version__
from cornernet_cli.cli import data, deploy, infer, train
from cornernet_cli.cli.common import (
    _as_flags,
    _parse_floats,  # noqa: F401  (tests import it here)
    console,
)
from cornernet_cli.errors import CornerNetError

__all__ = ["app", "main"]

app = typer.Typer(
    name="cornernet",
    help="CornerNet: detect objects as paired corner keypoints. Train, evaluate, detect and ablate on CPU or GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"cornernet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """CornerNet toolkit."""


for _name, _command in (("models", deploy.models_cmd), ("prepare-data", data.prepare_data_cmd),
                        ("inspect-data", data.inspect_data_cmd), ("train", train.train_cmd),
                        ("import-weights", deploy.import_weights_cmd), ("export", deploy.export_cmd),
                        ("eval", infer.eval_cmd), ("detect", infer.detect_cmd),
                        ("visualize-heatmaps", infer.visualize_heatmaps_cmd), ("ablate", train.ablate_cmd),
                        ("demo", train.demo_cmd), ("bench", deploy.bench_cmd)):
    app.command(_name)(_command)


# glibc's malloc returns large tensor buffers to the kernel after every step; the page faults that follow
# cost about a third of CPU training time. These settings (read only at process start) keep them.
_MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "137438953472",
                  "MALLOC_TOP_PAD_": "1073741824"}
_HEAVY_COMMANDS = {"train", "demo", "ablate", "bench", "eval"}


def _maybe_reexec_with_malloc_tuning() -> None:
    """Re-run this process once with the malloc settings for heavy commands (Linux; opt out with
    CORNERNET_MALLOC_TUNING=0)."""
    if (sys.platform != "linux" or os.environ.get("CORNERNET_MALLOC_TUNING", "1") == "0"
            or all(k in os.environ for k in _MALLOC_TUNING)
            or not (set(sys.argv[1:2]) & _HEAVY_COMMANDS) or "--help" in sys.argv):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in _MALLOC_TUNING.items()}}
    with contextlib.suppress(OSError):  # on failure keep going untuned
        os.execve(sys.executable, [sys.executable, "-m", "cornernet_cli.cli", *sys.argv[1:]], env)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr, never a traceback."""
    _maybe_reexec_with_malloc_tuning()
    try:
        app(prog_name="cornernet")
    except CornerNetError as e:  # a command that does not name its parameters' flags gets them here
        Console(stderr=True).print(f"[bold red]error:[/] {escape(_as_flags(str(e), e.params))}", highlight=False,
                                   soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    except OSError as e:  # an unwritable --out, a full disk, a path through a file: one line naming the path
        where = ": ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "I/O"
        Console(stderr=True).print(f"[bold red]error:[/] {escape(f'{where}: {e.strerror or e}')}", highlight=False,
                                   soft_wrap=True)
        sys.exit(1)
