"""Reused scratch arrays for the gated cells' compiled path: no page faults on every step.

A step at the charlm shape allocates about 40 MB of (T, B, ·) arrays (the gates, h and c,
dA) and frees them at its end. glibc gives the top of its heap back to the system once more
than its (dynamic) trim threshold is free there, so the next step touches fresh pages again,
each a page fault that the kernel answers with a zeroed page: measured at the charlm shape
(docs/benchmarks.md), ~3,700 minor faults and about 8 ms of a 46 ms LSTM step.

:func:`empty` hands out an array of the asked shape and dtype that nobody else holds: the
pool keeps a reference to every array it made, and an array counts as free again when that
reference is its only one (``sys.getrefcount``: any view, cache or caller that still holds it,
or a view of it, adds one). So reuse never overwrites a live array, and nothing has to be
given back explicitly. At most :data:`PER_SHAPE` arrays per (shape, dtype) and
:data:`MAX_BYTES` in all are kept; beyond that ``empty`` returns a plain new array.
:func:`clear` drops the pool.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

PER_SHAPE = 16  # h and c of every layer and direction share a shape
MAX_BYTES = 256 << 20

_lock = threading.Lock()
_pool: dict[tuple[tuple[int, ...], np.dtype], list[np.ndarray]] = {}
_bytes = 0


def _references(arrays: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(arrays[i])


_UNUSED = _references([np.empty(0)], 0)  # the count of an array only the pool holds


def empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array (like ``np.empty``) that no one else references."""
    global _bytes
    key = (tuple(int(n) for n in shape), np.dtype(dtype))
    with _lock:
        arrays = _pool.setdefault(key, [])
        for i in range(len(arrays)):
            if _references(arrays, i) == _UNUSED:  # the pool's own reference only
                return arrays[i]
        out = np.empty(key[0], key[1])
        if len(arrays) < PER_SHAPE and _bytes + out.nbytes <= MAX_BYTES:
            arrays.append(out)
            _bytes += out.nbytes
        return out


def clear() -> None:
    """Forget every pooled array (the memory goes once no one else holds them)."""
    global _bytes
    with _lock:
        _pool.clear()
        _bytes = 0
