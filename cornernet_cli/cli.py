"""The `cornernet` command line: one thin function per command (parse -> config -> library call -> summary)."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.console import Console

from cornernet_cli import __version__
from cornernet_cli.errors import CornerNetError

app = typer.Typer(
    name="cornernet",
    help="CornerNet: detect objects as paired corner keypoints. Train, evaluate, detect and ablate on CPU or GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


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


# ---- commands (each: parse -> config -> one library call -> summary) ---------------------------------


@app.command("models")
def models_cmd(
    num_classes: int = typer.Option(80, "--num-classes", min=1, help="Class count used to size the heads."),
) -> None:
    """List the model presets with their parameter counts and layout."""
    from rich.table import Table

    from cornernet_cli.config import PRESETS
    from cornernet_cli.model import build_model

    table = Table(title=f"CornerNet presets ({num_classes} classes)")
    for col in ("preset", "stacks", "channels", "blocks", "parameters"):
        table.add_column(col, justify="right" if col in ("stacks", "parameters") else "left")
    for name, cfg in PRESETS.items():
        n = sum(p.numel() for p in build_model(name, num_classes).parameters())
        table.add_row(name, str(cfg.num_stacks), ",".join(map(str, cfg.channels)),
                      ",".join(map(str, cfg.blocks)), f"{n:,}")
    console.print(table)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr, never a traceback."""
    try:
        app()
    except CornerNetError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
