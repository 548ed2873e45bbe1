"""Reused arrays for a training step's temporaries, gradients and updates: no allocation per step.

A step allocates its (T, B, ·) arrays (the hidden states, a gated cell's gates and c, the
logits and dL/dz, dL/dh from the head, dA, the partial sums of the hoisted products) and
frees them at its end: about 12 MB at the charlm shape for the Elman cell, 40 MB for the
LSTM. glibc gives the top of its heap back to the system once more than its (dynamic) trim
threshold is free there, so the next step touches fresh pages again, each a page fault that
the kernel answers with a zeroed page: measured at the charlm shape (``getrusage``,
docs/benchmarks.md), ~2,950 minor faults and ~5 ms of kernel time per Elman step (13 ms at
T = 1000), ~3,700 faults and about 8 ms of a 46 ms LSTM step.

What comes from the pool (at or above :data:`MIN_ELEMENTS` elements), in every step:

- the (T, B, ·) temporaries above, the Wᵀ operand copies and the Vᵀ + b gather tables;
- the parameter-sized gradients the backward returns (dW, dU, dV: from
  :func:`bptt._kernels.matmul_tn`, or the ids' scatter-add and its transposed copy), and the
  float64 copy that a float32 gradient's norm is summed in
  (:meth:`bptt.params.Params.global_norm`, for ``clip_norm``);
- the new parameters and optimizer slots of the fused update
  (:func:`bptt._fused_optim.fused_compute`), written into arrays distinct from their inputs:
  the optimizer still holds its previous slots, so they are never handed out again while read.

  The NumPy path (``optimizer.compute``: RMSprop, AdamW, momentum, weight decay, no Numba)
  writes each term of its update into pooled arrays too, and the finiteness check's boolean
  arrays come from here.

Not from the pool: bias gradients, (B, ·) states and anything else under the threshold.
Measured with ``benchmarks/alloc_per_step.py`` (``--list`` names what a step still allocates).

:func:`empty` hands out an array of the asked shape and dtype that nobody else holds: the
pool keeps a reference to every array it made, and an array counts as free again when that
reference is its only one (``sys.getrefcount``: any view, cache or caller that still holds it,
or a view of it, adds one). So reuse never overwrites a live array (gradients or optimizer
state that a caller keeps stay as they were), and nothing has to be given back explicitly.
Requests under :data:`MIN_ELEMENTS` elements are plain ``np.empty`` (NumPy's small-block
cache serves them, and at min-char-rnn's size the pool's lookup would cost more than it
saves). At most :data:`PER_SHAPE` arrays per (shape, dtype) and
:data:`MAX_BYTES` in all are kept; beyond that ``empty`` returns a plain new array.
:func:`clear` drops the pool.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np

MIN_ELEMENTS = 1 << 14  # smaller requests bypass the pool (64 KiB in float32)
# h and c of every layer and direction share a shape, and so do the upper layers' V and W with
# their gradients, new values and two generations of each optimizer slot (16 ran out at 3 layers)
PER_SHAPE = 64
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
    if math.prod(shape) < MIN_ELEMENTS:
        return np.empty(shape, dtype)
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


def zeros(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """:func:`empty` filled with zeros (like ``np.zeros``)."""
    if math.prod(shape) < MIN_ELEMENTS:
        return np.zeros(shape, dtype)
    out = empty(shape, dtype)
    out.fill(0)
    return out


_local = threading.local()  # .held: ids of the arrays whose copies are reused; .copies


def contiguous(a: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(a)`` whose copy, when one is needed, comes from the pool.

    Inside :func:`reuse_copies`, a copy of a view of one of its arrays (Wᵀ, say) is made
    once and handed out again for the same view.
    """
    if a.size < MIN_ELEMENTS or a.flags.c_contiguous:
        return np.ascontiguousarray(a)
    held = getattr(_local, "held", None)
    if held is not None and id(a.base) in held:
        key = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
        copy = _local.copies.get(key)
        if copy is None:
            copy = _local.copies[key] = empty(a.shape, a.dtype)
            np.copyto(copy, a)
        return copy
    out = empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


@contextmanager
def reuse_copies(arrays: Iterable[np.ndarray]) -> Iterator[None]:
    """Within, :func:`contiguous` copies each view of these arrays (the parameters) once.

    For a caller that runs many short sweeps over parameters that do not change meanwhile
    (a memory-budget schedule: hundreds of blocks, each transposing W for its GEMMs). The
    caller promises not to write to the arrays inside; the copies are dropped on exit. Per
    thread, and not nested (an inner call keeps the outer one's copies).
    """
    if getattr(_local, "held", None) is not None:
        yield
        return
    bases = {}
    for array in arrays:
        bases[id(array)] = array
        if array.base is not None:
            bases[id(array.base)] = array.base
    _local.held, _local.copies, _local.bases = set(bases), {}, bases  # bases: keep ids valid
    try:
        yield
    finally:
        _local.held = _local.copies = _local.bases = None


def clear() -> None:
    """Forget every pooled array (the memory goes once no one else holds them)."""
    global _bytes
    with _lock:
        _pool.clear()
        _bytes = 0
