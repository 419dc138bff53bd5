"""What the command modules share: the console, the parsers of comma-separated option values, and the
mapping of the library's parameter names to flags in its error messages."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence

from rich.console import Console

from cornernet_cli.errors import CornerNetError, SettingError

console = Console()


def _parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CornerNetError(f"{option} takes comma-separated integers, got {text!r}", 2) from None


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CornerNetError(f"{option} takes comma-separated numbers, got {text!r}", 2) from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise CornerNetError(f"{option} takes positive finite numbers, got {text!r}", 2)
    return values


def _parse_names(text: str | None) -> list[str] | None:
    """Comma-separated names (class names) without blanks; None when the option is not given."""
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


# Parameters of the API whose flag is not --<name with dashes>.
_RENAMED = {"time_budget": "--time", "data_dir": "--data", "fmt": "--format"}


def _as_flags(message: str, names: Sequence[str]) -> str:
    """A library message with the parameter `names` replaced by the command-line flags that set them; quoted
    values ('...') are left as they are."""
    if not names:
        return message
    flags = {n: _RENAMED.get(n, "--" + n.replace("_", "-")) for n in names}
    pattern = re.compile(rf"(?<![\w/.-])({'|'.join(map(re.escape, flags))})(?![\w/.-])")
    parts = re.split(r"('[^']*')", message)
    return "".join(p if i % 2 else pattern.sub(lambda m: flags[m.group(1)], p) for i, p in enumerate(parts))


@contextlib.contextmanager
def _flag_errors(*names: str) -> Iterator[None]:
    """Report the API's SettingErrors about `names`, and the parameters any error names (`params`), with the
    flags' names."""
    try:
        yield
    except SettingError as e:
        raise CornerNetError(_as_flags(str(e), (*names, *e.params)), e.exit_code) from None
    except CornerNetError as e:
        if not e.params:
            raise
        raise CornerNetError(_as_flags(str(e), e.params), e.exit_code) from None
