"""Shared fixtures: seeded RNGs, the shared datasets folder, single-threaded torch for stable timings.

Where the shared datasets are missing the tests that need them are skipped, or fail under CI
(tests/support.py)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        skip_or_fail(f"{SHARED_DATASETS} not present")
    return SHARED_DATASETS
