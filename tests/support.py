"""Helpers for tests: skip where something optional is missing, except under CI.

Where something a test needs is missing (the shared datasets, onnx), the test is skipped on a developer's
machine but fails in CI (the environment variable CI set to anything but "" / "0" / "false"), where it is
always installed: a CI run must not go green by skipping what it exists to check.
"""

from __future__ import annotations

import importlib
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_or_fail(reason: str):
    """Skip the test, or fail it under CI (see the module docstring)."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a skip here would hide an untested check)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str):
    """`import name`, or skip_or_fail when it cannot be imported (any error, not only ImportError)."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # a broken install raises more than ImportError (e.g. a missing shared library)
        skip_or_fail(f"cannot import {name}: {type(e).__name__}: {e}")
