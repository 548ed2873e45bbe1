"""The NumPy loops against the batch-sharded compiled loops on one problem (shared by tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bptt import _kernels


def numpy_and_sharded(
    model: Any, a: dict[str, Any], shards: int, shard_count: Callable[[int, int], int]
) -> tuple[Any, Any]:
    """``model.forward_backward`` on the problem ``a`` (x, y, h0, mask, dh_last) with the NumPy
    loops, then with ``shards`` compiled shards (``shard_count(7, 33)`` must report them)."""
    args = (a["x"], a["y"], a["h0"], a["mask"])
    with _kernels.backend("numpy"):
        ref = model.forward_backward(*args, dh_last=a["dh_last"])
    saved = _kernels.LOOP_BLAS_THREADS
    try:
        _kernels.set_loop_threads(shards)
        with _kernels.backend("sharded"):
            assert shard_count(7, 33) == shards
            got = model.forward_backward(*args, dh_last=a["dh_last"])
    finally:
        _kernels.set_loop_threads(saved)
    return ref, got
