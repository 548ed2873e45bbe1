"""Scratch arrays reused from one training step to the next.

A full BPTT step at the charlm shape builds about 12 MB of (T, B, ·) temporaries: the hidden
states, the logits and dL/dz, dL/dh from the head, the partial sums of the hoisted products.
Freed at the end of the step and asked for again at the start of the next, they go back to
the operating system and return as fresh zeroed pages: ~3,000 page faults per step, 5 ms of
kernel time at charlm and 13 ms at T = 1000 (measured with ``getrusage``), a third of the
step. An :class:`Arena` keeps them instead.

Inside ``with using(arena):`` the i-th call of :func:`empty` returns the arena's i-th array,
allocated at the first step and reused by every later step whose i-th request has the same
shape and dtype (a different one replaces that slot). The order of requests within one
step is fixed by the code, so distinct requests never share memory. The contract for callers:
an array from :func:`empty` lives until the next ``using`` of the same arena, so nothing
taken from it may be returned to the user (returned gradients and final states are fresh
arrays or copies). Outside ``using``, :func:`empty` is ``np.empty``.

Requests under :data:`MIN_ELEMENTS` elements are plain ``np.empty`` (NumPy's small-block
cache serves them; at min-char-rnn's size the arena's bookkeeping would cost more than it
saves).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

MIN_ELEMENTS = 1 << 14
"""Smallest request (in elements, 64 KiB in float32) served from an arena."""


class Arena:
    """An ordered list of reusable arrays: request i of every step gets slot i."""

    def __init__(self) -> None:
        self._slots: list[np.ndarray] = []
        self._next = 0

    @property
    def nbytes(self) -> int:
        """Bytes held between steps."""
        return sum(a.nbytes for a in self._slots)

    def restart(self) -> None:
        """Start a new step: request 0 gets slot 0 again (earlier arrays become scratch)."""
        self._next = 0

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised array of ``shape``/``dtype``: this step's next slot."""
        i = self._next
        self._next = i + 1
        dtype = np.dtype(dtype)
        if i < len(self._slots):
            slot = self._slots[i]
            if slot.shape == shape and slot.dtype == dtype:
                return slot
            self._slots[i] = slot = np.empty(shape, dtype)
            return slot
        slot = np.empty(shape, dtype)
        self._slots.append(slot)
        return slot

    def clear(self) -> None:
        """Release every array (the next step allocates afresh)."""
        self._slots.clear()
        self._next = 0


_active: ContextVar[Arena | None] = ContextVar("bptt_scratch_arena", default=None)


def empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)``, from the active arena when one is in use and it is large."""
    arena = _active.get()
    if arena is None or math.prod(shape) < MIN_ELEMENTS:
        return np.empty(shape, dtype)
    return arena.empty(shape, dtype)


@contextmanager
def using(arena: Arena) -> Iterator[Arena]:
    """Serve :func:`empty` from ``arena`` for one step (its slots restart from 0)."""
    arena.restart()
    token = _active.set(arena)
    try:
        yield arena
    finally:
        _active.reset(token)


_per_thread = threading.local()


def arena_for(owner: object) -> Arena:
    """The calling thread's arena for ``owner`` (a model): kept while the owner lives.

    Per thread, so two threads stepping the same model never share scratch; weakly keyed,
    so a model that is garbage-collected takes its arrays with it.
    """
    table: weakref.WeakKeyDictionary[object, Arena] | None = getattr(_per_thread, "table", None)
    if table is None:
        table = _per_thread.table = weakref.WeakKeyDictionary()
    arena = table.get(owner)
    if arena is None:
        arena = table[owner] = Arena()
    return arena
