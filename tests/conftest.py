"""Shared fixtures: a seeded generator and floating-point errors that raise."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

# No test depends on timing: the loops use the default choices, not measured ones (the tuner's
# own tests, tests/test_tuning.py, switch it on with a fake timer). Set before bptt is imported,
# so the CLI subprocesses inherit it too.
os.environ.setdefault("BPTT_TUNE", "0")


@pytest.fixture(autouse=True)
def _seed_and_raise_on_fp_errors() -> Iterator[None]:
    """Seed NumPy's legacy global RNG; overflow, division by zero and invalid ops raise.

    Underflow stays silent: exp(−large) → 0 is the correct result in the stable softplus.
    """
    np.random.seed(12345)
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261128)
