"""The one exception type that the CLI turns into a one-line error (never a traceback)."""

from __future__ import annotations

from collections.abc import Sequence


class CornerNetError(Exception):
    """A problem with the user's input: the message names the bad file and value.

    The CLI prints ``error: <message>`` and exits with ``exit_code`` (1 by default,
    2 for a bad command-line value, as Typer does for usage errors). ``params``: the parameter names the
    message mentions (``resume``, ``exist_ok``), which the CLI prints as the flags that set them.
    """

    def __init__(self, message: str, exit_code: int = 1, *, params: Sequence[str] = ()):
        super().__init__(message)
        self.exit_code = exit_code
        self.params = tuple(params)


class SettingError(CornerNetError):
    """A bad argument value. The message names the parameter (`amp`, `lr_schedule`) and quotes the value;
    the CLI rewrites the parameter names as the flags that set them. Exit code 2 (a usage error)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """SettingError naming parameter `name` unless `value` is one of `choices`."""
    if value not in choices:
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise SettingError(f"{name} must be {listed}, got {value!r}")
