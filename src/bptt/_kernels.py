"""Compiled inner loops (Numba, the optional extra ``fast``) beside their NumPy fallbacks.

Each kernel computes exactly the equation of its NumPy twin, in the same dtype; only the
order of floating-point sums may differ, so the two agree to the dtype's rounding (tested in
``tests/test_perf_paths.py``, where both paths run).

    forward loop     E_t = hs[t] + h_{t-1} W^T,  h_t = f(E_t)           t = 1..T
    backward loop    δ_t = (dh_t + δ_{t+1} W) ⊙ f'(E_t)                  t = T..1
    scatter-add      out[idx[r]] += rows[r]                               (dL/dV for token ids)

Which path runs:

- ``BPTT_KERNELS=numpy`` in the environment (read at import) or ``set_backend("numpy")``
  forces the NumPy fallback; ``"numba"`` demands Numba (ImportError naming the extra if it is
  missing); ``"auto"`` (the default) uses Numba where it is installed and measured to win.
- The time-loop kernels are used only for small per-step work (B·H ≤ :data:`SMALL_STEP`), the
  latency-bound regime (one stream, Karpathy's min-char-rnn) where NumPy's per-call overhead
  dominates; larger steps call BLAS from NumPy, which the hand loops cannot beat.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

BACKENDS = ("auto", "numpy", "numba")
ACTIVATION_CODES = {"identity": 0, "tanh": 1, "relu": 2, "sigmoid": 3}
SMALL_STEP = 256  # B·H at or below which the compiled time loops win (measured, see docs)

_backend = "auto"
_compiled: dict[str, Callable[..., Any]] | None = None
_numba_error: str | None = None


def set_backend(name: str) -> None:
    """Choose the kernel backend: ``auto``, ``numpy`` or ``numba``.

    Raises:
        ValueError: an unknown name.
        ImportError: ``numba`` was asked for and Numba is not installed.
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "numba" and _load() is None:
        raise ImportError(
            f"the numba backend needs Numba: pip install 'bptt[fast]' ({_numba_error})"
        )
    _backend = name


def get_backend() -> str:
    return _backend


@contextmanager
def backend(name: str) -> Iterator[None]:
    """Temporarily use another backend (for tests and benchmarks)."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _numba_wanted() -> bool:
    return _backend != "numpy" and _load() is not None


def _load() -> dict[str, Callable[..., Any]] | None:
    """Compile (lazily, once) the Numba kernels; None when Numba is unavailable."""
    global _compiled, _numba_error
    if _compiled is not None or _numba_error is not None:
        return _compiled
    try:
        import numba
    except ImportError as err:
        _numba_error = str(err)
        return None
    jit = numba.njit(cache=False, nogil=True, boundscheck=False)
    _compiled = {
        "forward_loop": jit(_forward_loop_py),
        "backward_loop": jit(_backward_loop_py),
        "scatter_add": jit(_scatter_add_py),
    }
    return _compiled


# -- pure-Python bodies compiled by Numba (never run uncompiled: far too slow) ------------


def _forward_loop_py(hs: np.ndarray, W_T: np.ndarray, code: int) -> None:  # pragma: no cover
    """hs[t] ← f(hs[t] + hs[t−1] W^T) for t = 1..T, in place; hs (T+1, B, H)."""
    T1, B, H = hs.shape
    for t in range(1, T1):
        for b in range(B):
            prev = hs[t - 1, b]  # (H,)
            cur = hs[t, b]  # (H,) holds V x_t + b_h on entry
            for k in range(H):
                hk = prev[k]
                row = W_T[k]
                for j in range(H):
                    cur[j] += hk * row[j]
            for j in range(H):
                if code == 1:
                    cur[j] = math.tanh(cur[j])
                elif code == 2:
                    if cur[j] < 0.0:
                        cur[j] = 0.0
                elif code == 3:
                    cur[j] = 0.5 * (1.0 + math.tanh(0.5 * cur[j]))


def _backward_loop_py(
    delta: np.ndarray, fprime: np.ndarray, W: np.ndarray, carry: np.ndarray
) -> None:  # pragma: no cover
    """δ_t = (δ_t + carry) ⊙ f'_t, carry ← δ_t W for t = T−1..0, in place.

    On entry delta holds dh_t ⊙ f'_t and carry the gradient on h_T; on exit carry = dL/dh_0.
    """
    T, B, H = delta.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            d = delta[t, b]  # (H,)
            c = carry[b]  # (H,)
            fp = fprime[t, b]
            for j in range(H):
                d[j] += c[j] * fp[j]
            for j in range(H):
                c[j] = 0.0
            for k in range(H):
                dk = d[k]
                row = W[k]
                for j in range(H):
                    c[j] += dk * row[j]


def _scatter_add_py(out: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:  # pragma: no cover
    """out[idx[r]] += rows[r] for r in order; out (N, H), idx (R,), rows (R, H)."""
    R, H = rows.shape
    for r in range(R):
        dst = out[idx[r]]
        src = rows[r]
        for j in range(H):
            dst[j] += src[j]


# -- dispatch -----------------------------------------------------------------------------


def use_time_loop_kernel(batch: int, hidden: int) -> bool:
    """Whether the compiled time loops run for a step of B·H units."""
    if _backend == "numba":
        return _load() is not None
    return _numba_wanted() and batch * hidden <= SMALL_STEP


def forward_loop(hs: np.ndarray, W_T: np.ndarray, activation: str) -> None:
    """Compiled forward recurrence over hs (T+1, B, H) in place; W_T (H, H) contiguous."""
    kernels = _load()
    assert kernels is not None
    kernels["forward_loop"](hs, W_T, ACTIVATION_CODES[activation])


def backward_loop(delta: np.ndarray, fprime: np.ndarray, W: np.ndarray, carry: np.ndarray) -> None:
    """Compiled backward recursion; see :func:`_backward_loop_py`."""
    kernels = _load()
    assert kernels is not None
    kernels["backward_loop"](delta, fprime, W, carry)


def scatter_add_rows(n_rows: int, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """S[i] = Σ_{r: idx[r] = i} rows[r]; returns S (n_rows, H) in rows' dtype.

    Numba: one pass in row order. NumPy: a stable sort of the ids once, then one
    ``np.add.reduceat`` over the rows grouped by id (far faster than ``np.add.at``).
    """
    out = np.zeros((n_rows, rows.shape[1]), dtype=rows.dtype)  # (N, H)
    if rows.shape[0] == 0:
        return out
    if _numba_wanted():
        kernels = _load()
        assert kernels is not None
        kernels["scatter_add"](out, idx, rows)
        return out
    order = np.argsort(idx, kind="stable")  # (R,)
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])  # first of each id
    out[sorted_idx[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


# -- BLAS threads in the time loops -----------------------------------------------------------

_blas_controllers: list[Any] | None = None


def _blas() -> list[Any]:
    """threadpoolctl's handles on the loaded BLAS libraries (empty without threadpoolctl)."""
    global _blas_controllers
    if _blas_controllers is None:
        try:
            from threadpoolctl import ThreadpoolController

            found = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas_controllers = [c for c in found if hasattr(c, "set_num_threads")]
        except Exception:  # threadpoolctl absent, or it cannot drive this BLAS
            _blas_controllers = []
    return _blas_controllers


LoopThreads = int | str | None
LARGE_STEP_MACS = 1 << 23  # B·H² at or above which "auto" lets the loops use every thread


def _parse_loop_threads(value: object) -> LoopThreads:
    if value is None or value == "auto":
        return value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"loop threads must be 'auto', None (leave BLAS alone) or a positive int, got {value!r}"
        )
    return value or None  # 0 from the environment means "leave BLAS alone"


LOOP_BLAS_THREADS: LoopThreads = _parse_loop_threads(os.environ.get("BPTT_LOOP_THREADS", "auto"))


def set_loop_threads(n: LoopThreads) -> None:
    """BLAS threads inside the sequential time loops: ``"auto"`` (default), None or an int.

    Raises:
        ValueError: anything else (0 is accepted only from the environment variable).
    """
    global LOOP_BLAS_THREADS
    if n == 0 and not isinstance(n, bool):
        raise ValueError("loop threads must be 'auto', None or a positive int, got 0")
    LOOP_BLAS_THREADS = _parse_loop_threads(n)


@contextmanager
def loop_blas_threads(step_macs: int) -> Iterator[None]:
    """BLAS threads inside the sequential time loops, one (B, H) @ (H, H) product per step.

    ``"auto"`` (the default): one thread when the product is small (B·H² below
    :data:`LARGE_STEP_MACS`), BLAS's own setting otherwise. Measured on the 2-core benchmark
    machine: idle, two threads beat one by 0–15% on small steps and ~35% on large ones; shared
    with other busy processes, two threads on small steps were 10–100× slower than one (a
    worker waits for a core at every step), so small steps stay on one thread. None leaves
    BLAS alone; an int forces that many threads. ``BPTT_LOOP_THREADS`` (``auto``, ``0`` for
    None, or an int; read at import) or :func:`set_loop_threads` choose. The hoisted
    products outside the loops are not affected. Needs threadpoolctl (in the ``fast`` extra);
    without it nothing changes. Measurements: docs/benchmarks.md.
    """
    want = LOOP_BLAS_THREADS
    if want == "auto":
        want = 1 if step_macs < LARGE_STEP_MACS else None
    controllers = _blas() if want else []
    saved = [c.num_threads for c in controllers]
    for c, n in zip(controllers, saved, strict=True):
        if n != want:
            c.set_num_threads(want)
    try:
        yield
    finally:
        for c, n in zip(controllers, saved, strict=True):
            if n != want:
                c.set_num_threads(n)


BACKEND_FROM_ENV = os.environ.get("BPTT_KERNELS", "auto")
if BACKEND_FROM_ENV not in BACKENDS:
    raise ValueError(f"BPTT_KERNELS must be one of {BACKENDS}, got {BACKEND_FROM_ENV!r}")
_backend = BACKEND_FROM_ENV
