"""The Elman recurrence's compiled loops (Numba, the optional extra ``fast``) beside the
NumPy loops of :mod:`bptt.cells.elman`.

Each kernel computes exactly the equation of its NumPy twin, in the same dtype; only the
order of floating-point sums may differ, so the two agree to the dtype's rounding (tested in
``tests/test_perf_paths.py``, where both paths run).

    forward loop     E_t = hs[t] + h_{t-1} W^T,  h_t = f(E_t)           t = 1..T
    backward loop    δ_t = (dh_t + δ_{t+1} W) ⊙ f'(E_t)                  t = T..1

Two forms, chosen by the shared switch in :mod:`bptt._kernels` (backend, threads, shards):

- the per-row loops (:func:`forward_loop`, :func:`backward_loop`) where
  :func:`use_time_loop_kernel` says so (B·H ≤ ``SMALL_STEP``, or the ``numba`` backend);
- the batch-sharded loops (:func:`sharded_forward`, :func:`sharded_backward`), each shard of
  batch rows on its own core (:func:`bptt._kernels.run_shards`) running its whole loop
  GIL-free with single-threaded GEMMs from NumPy's own BLAS (or MKL), the step's product in
  rows (h W^T) or, for large enough shards, transposed (W hᵀ; :data:`TRANSPOSED_MIN_MACS`).

With ``BPTT_TUNE=1`` (under ``auto``) the per-row-or-sharded choice, the shard count, the
layout and the GEMM provider are measured per shape class (:mod:`bptt.tuning`); the constants
here are the defaults (what runs otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _kernels, _workspace
from .._kernels import cached_njit, tanh_any

ACTIVATION_CODES = {"identity": 0, "tanh": 1, "relu": 2, "sigmoid": 3}

_compiled: dict[str, Callable[..., Any]] | None = None


def _load() -> dict[str, Callable[..., Any]] | None:
    """The per-row loops (each compiles at its first call); None without Numba."""
    global _compiled
    if _compiled is None and _kernels.numba_available():
        _compiled = {
            name: cached_njit(fn, nogil=True, boundscheck=False)
            for name, fn in (
                ("forward_loop", _forward_loop_py),
                ("backward_loop", _backward_loop_py),
            )
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


# -- dispatch -----------------------------------------------------------------------------


def use_time_loop_kernel(batch: int, hidden: int, dtype: np.dtype | type | None = None) -> bool:
    """Whether the per-row compiled time loops run for a step of B·H units: B·H ≤
    ``SMALL_STEP``, or, with ``dtype`` given and tuning on, where the tuner measured them
    fastest (:mod:`bptt.tuning`)."""
    backend = _kernels.get_backend()
    if backend == "numba":
        return _kernels.numba_available()
    if backend == "sharded" or not _kernels.numba_wanted():
        return False
    if dtype is not None and _kernels.LOOP_BLAS_THREADS == "auto":
        tuning = _kernels.tuning_module()
        if tuning.active():
            return tuning.choice("elman", batch, hidden, dtype).path == "per_row"
    return batch * hidden <= _kernels.SMALL_STEP


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


# -- batch-sharded time loops (the scheme: bptt._kernels) -------------------------------------

_sharded: dict[str, Callable[..., Any]] | None = None
TRANSPOSED_MIN_MACS = 1 << 20
"""From this many multiply-adds per shard and step (rows·H²), the loops compute the step's
product transposed, S = W h_{t−1}ᵀ (H, rows) and carryᵀ = Wᵀ δ_tᵀ, and read S back across
its rows in cache: OpenBLAS's single-threaded SGEMM runs (H, H) @ (H, rows)ᵀ up to 1.35×
faster than (rows, H) @ (H, H) at rows = 16–32, H ≥ 256 (the dense and charlm shapes), and
slower at H = 128 or rows ≤ 8 (docs/benchmarks.md, "How the step uses the cores")."""
TRANSPOSED_DTYPES = ("float32",)
"""The dtypes that use the transposed product: in float64 at the dense shape it was ~15%
slower than the row layout (DGEMM's kernels differ), so float64 keeps rows."""


def _load_sharded() -> dict[str, Callable[..., Any]] | None:
    """The sharded loop kernels (each compiles at its first call); None without Numba or a
    working CBLAS GEMM (:func:`bptt._kernels.sharding_gemms`)."""
    global _sharded
    if _sharded is not None:
        return _sharded
    gemms = _kernels.sharding_gemms()
    if gemms is None:
        return None
    _register_compiled_helpers()
    # cached on disk: the GEMM is an argument (a ctypes function), not a baked-in pointer
    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    _sharded = {
        "forward": cached_njit(_forward_shard_py, **options),
        "backward": cached_njit(_backward_shard_py, **options),
        "forwardT": cached_njit(_forward_shard_t_py, **options),
        "backwardT": cached_njit(_backward_shard_t_py, **options),
    }
    return _sharded


def _activation_py(e: float, code: int) -> float:  # pragma: no cover - compiled
    """f(E) by ACTIVATION_CODES: identity, tanh, relu, sigmoid = ½(1 + tanh(E/2))."""
    if code == 1:
        return tanh_any(e)
    if code == 2:
        return e if e > 0 else e * 0
    if code == 3:
        return 0.5 * (1 + tanh_any(0.5 * e))
    return e


def _activation_grad_py(h: float, code: int) -> float:  # pragma: no cover - compiled
    """f'(E) from h = f(E): 1 − h², [h > 0], h(1 − h), 1."""
    if code == 1:
        return 1 - h * h
    if code == 2:
        return h * 0 + 1 if h > 0 else h * 0
    if code == 3:
        return h * (1 - h)
    return h * 0 + 1


_helpers_registered = False


def _activate_block_py(e: np.ndarray, code: int) -> None:  # pragma: no cover - compiled
    """e ← f(e) in place over a contiguous 1-D view (a view from 0: no index wrap, so each
    activation's loop vectorises; one loop per activation for the same reason)."""
    if code == 1:
        for i in range(e.size):
            e[i] = _activation(e[i], 1)
    elif code == 2:
        for i in range(e.size):
            e[i] = _activation(e[i], 2)
    elif code == 3:
        for i in range(e.size):
            e[i] = _activation(e[i], 3)


def _gemm_times_rows_t_py(
    gemm: Any, m_ptr: Any, x_ptr: Any, s_ptr: Any, H: int, rows: int, one: Any
) -> None:  # pragma: no cover - compiled
    """S (H, rows) ← M (H, H) @ Xᵀ for a row-major (rows, H) block X, all C order: the
    transposed loops' step product (CblasRowMajor = 101, NoTrans = 111, Trans = 112)."""
    gemm(101, 111, 112, H, rows, H, one, m_ptr, H, x_ptr, H, one * 0, s_ptr, rows)


# compiled, inlined helpers once Numba is loaded (_register_compiled_helpers)
_activation: Callable[[float, int], float] = _activation_py
_activation_grad: Callable[[float, int], float] = _activation_grad_py
_activate_block: Callable[[np.ndarray, int], None] = _activate_block_py
_gemm_times_rows_t: Callable[..., None] = _gemm_times_rows_t_py


def _register_compiled_helpers() -> None:
    """Make the scalar helpers callable (inlined) from the compiled loops, once."""
    global _helpers_registered
    if _helpers_registered:
        return
    import numba

    global _activation, _activation_grad, _activate_block, _gemm_times_rows_t
    inline = numba.njit(inline="always", error_model="numpy")
    _activation, _activation_grad = inline(_activation_py), inline(_activation_grad_py)
    _activate_block = inline(_activate_block_py)  # after _activation, which it calls
    _gemm_times_rows_t = inline(_gemm_times_rows_t_py)
    _helpers_registered = True


def _forward_shard_py(
    gemm: Any, hs: np.ndarray, W_T: np.ndarray, b0: int, b1: int, code: int
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1 of hs (T+1, B, H): E_t = hs[t] + h_{t−1} W^T (GEMM, β = 1), h_t = f(E_t).

    hs[t] holds V x_t + b_h on entry (t ≥ 1) and h_t on exit.
    """
    one = np.ones(1, dtype=hs.dtype)[0]  # 1 in the arrays' dtype (GEMM α, β)
    T1, B, H = hs.shape
    rows = b1 - b0
    flat = hs.reshape(-1)  # (T+1)·B·H, C order
    base = hs.ctypes.data
    size = hs.itemsize
    w = W_T.ctypes.data
    for t in range(1, T1):
        prev = ((t - 1) * B + b0) * H
        cur = (t * B + b0) * H
        # C (rows, H) ← 1·A (rows, H) @ W^T (H, H) + 1·C, all row-major (CblasRowMajor=101)
        a_ptr = base + np.uintp(prev * size)
        c_ptr = base + np.uintp(cur * size)
        gemm(101, 111, 111, rows, H, H, one, a_ptr, H, w, H, one, c_ptr, H)
        _activate_block(flat[cur : cur + rows * H], code)  # h_t = f(E_t)


def _backward_shard_py(
    gemm: Any,
    delta: np.ndarray,
    hs: np.ndarray,
    W: np.ndarray,
    carry: np.ndarray,
    b0: int,
    b1: int,
    code: int,
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1: δ_t = (dh_t + carry) ⊙ f'(E_t), carry ← δ_t W, for t = T−1..0.

    delta (T, B, H) holds ∂L/∂h_t on entry and δ_t on exit; f'(E_t) is computed from
    hs[t+1] in the same pass; carry (B, H) holds the gradient on h_T on entry and
    dL/dh_0 on exit.
    """
    one = np.ones(1, dtype=delta.dtype)[0]  # 1 in the arrays' dtype (GEMM α, β)
    T, B, H = delta.shape
    rows = b1 - b0
    d = delta.reshape(-1)
    h = hs.reshape(-1)
    c = carry.reshape(-1)
    dbase = delta.ctypes.data
    cptr = carry.ctypes.data + np.uintp(b0 * H * carry.itemsize)
    size = delta.itemsize
    w = W.ctypes.data
    n = rows * H
    ct = c[b0 * H : b0 * H + n]  # this shard's rows of the carry
    for t in range(T - 1, -1, -1):
        off = (t * B + b0) * H
        dt = d[off : off + n]  # views: see forward_shard
        ht = h[off + B * H : off + B * H + n]  # hs[t + 1] = h_t
        if code == 1:
            for i in range(dt.size):
                dt[i] = (dt[i] + ct[i]) * _activation_grad(ht[i], 1)
        elif code == 2:
            for i in range(dt.size):
                dt[i] = (dt[i] + ct[i]) * _activation_grad(ht[i], 2)
        elif code == 3:
            for i in range(dt.size):
                dt[i] = (dt[i] + ct[i]) * _activation_grad(ht[i], 3)
        else:
            for i in range(dt.size):
                dt[i] = dt[i] + ct[i]
        d_ptr = dbase + np.uintp(off * size)
        gemm(101, 111, 111, rows, H, H, one, d_ptr, H, w, H, one * 0, cptr, H)


def _forward_shard_t_py(
    gemm: Any, hs: np.ndarray, W: np.ndarray, b0: int, b1: int, code: int
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1 of hs (T+1, B, H): S = W h_{t−1}ᵀ (H, rows), E_t = hs[t] + Sᵀ,
    h_t = f(E_t); hs[t] holds V x_t + b_h on entry (t ≥ 1) and h_t on exit."""
    one = np.ones(1, dtype=hs.dtype)[0]  # 1 in the arrays' dtype (GEMM α, β)
    T1, B, H = hs.shape
    rows = b1 - b0
    flat = hs.reshape(-1)
    base = hs.ctypes.data
    size = hs.itemsize
    S = np.empty(H * rows, dtype=hs.dtype)  # (H, rows): W h_{t-1}ᵀ
    s_ptr = S.ctypes.data
    w = W.ctypes.data
    for t in range(1, T1):
        prev = ((t - 1) * B + b0) * H
        cur = (t * B + b0) * H
        # S (H, rows) ← W (H, H) @ h_{t−1}ᵀ: row-major, h's block read transposed
        _gemm_times_rows_t(gemm, w, base + np.uintp(prev * size), s_ptr, H, rows, one)
        for b in range(rows):  # E_t = hs[t] + Sᵀ: S read across its rows, in cache
            e = flat[cur + b * H : cur + b * H + H]
            for k in range(H):
                e[k] += S[k * rows + b]
        _activate_block(flat[cur : cur + rows * H], code)  # then f over the block


def _backward_shard_t_py(
    gemm: Any,
    delta: np.ndarray,
    hs: np.ndarray,
    W_T: np.ndarray,
    carry: np.ndarray,
    b0: int,
    b1: int,
    code: int,
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1: δ_t = (dh_t + carry) ⊙ f'(E_t), carryᵀ ← Wᵀ δ_tᵀ (H, rows)."""
    one = np.ones(1, dtype=delta.dtype)[0]  # 1 in the arrays' dtype (GEMM α, β)
    T, B, H = delta.shape
    rows = b1 - b0
    d = delta.reshape(-1)
    h = hs.reshape(-1)
    c = carry.reshape(-1)
    dbase = delta.ctypes.data
    size = delta.itemsize
    S = np.empty(H * rows, dtype=delta.dtype)  # (H, rows): carryᵀ
    for b in range(rows):
        for k in range(H):
            S[k * rows + b] = c[(b0 + b) * H + k]
    s_ptr = S.ctypes.data
    w = W_T.ctypes.data
    for t in range(T - 1, -1, -1):
        off = (t * B + b0) * H
        for b in range(rows):
            dt = d[off + b * H : off + b * H + H]
            ht = h[off + B * H + b * H : off + B * H + b * H + H]  # hs[t + 1] = h_t
            if code == 1:
                for k in range(H):
                    dt[k] = (dt[k] + S[k * rows + b]) * _activation_grad(ht[k], 1)
            elif code == 2:
                for k in range(H):
                    dt[k] = (dt[k] + S[k * rows + b]) * _activation_grad(ht[k], 2)
            elif code == 3:
                for k in range(H):
                    dt[k] = (dt[k] + S[k * rows + b]) * _activation_grad(ht[k], 3)
            else:
                for k in range(H):
                    dt[k] = dt[k] + S[k * rows + b]
        # S (H, rows) ← Wᵀ (H, H) @ δ_tᵀ
        _gemm_times_rows_t(gemm, w, dbase + np.uintp(off * size), s_ptr, H, rows, one)
    for b in range(rows):
        for k in range(H):
            c[(b0 + b) * H + k] = S[k * rows + b]


def transposed_product(batch: int, hidden: int, shards: int, dtype: np.dtype) -> bool:
    """Whether the sharded loops compute their step's product transposed (see
    :data:`TRANSPOSED_MIN_MACS` and :data:`TRANSPOSED_DTYPES`)."""
    big = (batch // shards) * hidden * hidden >= TRANSPOSED_MIN_MACS
    return big and np.dtype(dtype).name in TRANSPOSED_DTYPES


def _layout_and_gemm(
    B: int, H: int, dtype: np.dtype, shards: int, layout: str | None, provider: str | None
) -> tuple[bool, Any]:
    """(transposed?, the CBLAS GEMM): as given, else the tuner's choice or the defaults."""
    if layout is None or provider is None:
        chosen = _kernels.tuning_module().sharded_choice("elman", B, H, dtype, shards)
        layout = chosen.layout if layout is None else layout
        provider = chosen.provider if provider is None else provider
    if layout not in ("rows", "transposed"):
        raise ValueError(f"layout must be 'rows' or 'transposed', got {layout!r}")
    return layout == "transposed", _kernels.loop_gemm(provider, dtype)


def sharded_forward(
    hs: np.ndarray,
    W: np.ndarray,
    W_T: np.ndarray,
    activation: str,
    shards: int,
    layout: str | None = None,
    provider: str | None = None,
) -> None:
    """The forward recurrence over hs (T+1, B, H) in place, ``shards`` row blocks in parallel;
    W (H, H) and W_T = Wᵀ, both C-contiguous (one of them is the product's operand).
    ``layout`` (``rows``/``transposed``) and ``provider`` (``numpy``/``mkl``): None for the
    tuner's choice (:func:`bptt.tuning.sharded_choice`)."""
    kernels = _load_sharded()
    assert kernels is not None
    _, B, H = hs.shape
    transposed, gemm = _layout_and_gemm(B, H, hs.dtype, shards, layout, provider)
    if transposed:
        kernel, weight = kernels["forwardT"], W
    else:
        kernel, weight = kernels["forward"], W_T
    _kernels.run_shards(kernel, B, shards, gemm, hs, weight, ACTIVATION_CODES[activation])


def sharded_backward(
    delta: np.ndarray,
    hs: np.ndarray,
    W: np.ndarray,
    carry: np.ndarray,
    activation: str,
    shards: int,
    layout: str | None = None,
    provider: str | None = None,
) -> None:
    """The BPTT recursion in place, ``shards`` row blocks in parallel; see backward_shard.
    ``layout`` and ``provider`` as :func:`sharded_forward`."""
    kernels = _load_sharded()
    assert kernels is not None
    _, B, H = delta.shape
    transposed, gemm = _layout_and_gemm(B, H, delta.dtype, shards, layout, provider)
    if transposed:
        kernel, weight = kernels["backwardT"], _workspace.contiguous(W.T)
    else:
        kernel, weight = kernels["backward"], np.ascontiguousarray(W)
    _kernels.run_shards(
        kernel, B, shards, gemm, delta, hs, weight, carry, ACTIVATION_CODES[activation]
    )
