"""Compiled inner loops (Numba, the optional extra ``fast``) beside their NumPy fallbacks.

Each kernel computes exactly the equation of its NumPy twin, in the same dtype; only the
order of floating-point sums may differ, so the two agree to the dtype's rounding (tested in
``tests/test_perf_paths.py``, where both paths run).

    forward loop     E_t = hs[t] + h_{t-1} W^T,  h_t = f(E_t)           t = 1..T
    backward loop    δ_t = (dh_t + δ_{t+1} W) ⊙ f'(E_t)                  t = T..1
    scatter-add      out[idx[r]] += rows[r]                               (dL/dV for token ids)

Which path runs:

- ``BPTT_KERNELS=numpy`` in the environment (read at import) or ``set_backend("numpy")``
  forces the NumPy fallback; ``"numba"`` demands the per-row Numba loops for every step
  (ImportError naming the extra if Numba is missing); ``"sharded"`` forces the batch-sharded
  loops for every step (for tests); ``"auto"`` (the default) picks by size:
- B·H ≤ :data:`SMALL_STEP`: the per-row Numba loops (the latency-bound regime of one
  stream, Karpathy's min-char-rnn, where per-call overhead dominates);
- larger steps: the batch-sharded loops (:func:`shard_count`, :func:`sharded_forward`,
  :func:`sharded_backward`), each shard of batch rows on its own core running its whole
  loop GIL-free with single-threaded GEMMs from NumPy's own BLAS, the step's product in
  rows (h W^T) or, for large enough shards, transposed (W hᵀ; :data:`TRANSPOSED_MIN_MACS`);
- without Numba, threadpoolctl or a usable CBLAS: the NumPy loops.

The hoisted products outside the loops go through :func:`matmul` and :func:`matmul_tn`,
which split large products into row blocks on the same thread pool (never OpenBLAS's own
threads, see :func:`product_shards`). ``BPTT_LOOP_THREADS`` / :func:`set_loop_threads`
chooses the thread count; measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import _workspace
from ._numba_cache import cached_njit  # machine code cached in the user's cache dir

BACKENDS = ("auto", "numpy", "numba", "sharded")
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
    if name == "sharded" and _load_sharded() is None:
        raise ImportError(
            f"the sharded backend needs Numba, threadpoolctl and NumPy's CBLAS: "
            f"pip install 'bptt[fast]' ({_sharded_error})"
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
        import numba  # noqa: F401  (availability: the kernels compile through cached_njit)
    except ImportError as err:
        _numba_error = str(err)
        return None
    _compiled = {
        name: cached_njit(fn, nogil=True, boundscheck=False)
        for name, fn in (
            ("forward_loop", _forward_loop_py),
            ("backward_loop", _backward_loop_py),
            ("scatter_add", _scatter_add_py),
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
    if _backend == "sharded":
        return False
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
    """S[i] = Σ_{r: idx[r] = i} rows[r]; returns S (n_rows, H) in rows' dtype, from the
    workspace.

    Numba: one pass in row order. NumPy: a stable sort of the ids once, then one
    ``np.add.reduceat`` over the rows grouped by id (far faster than ``np.add.at``).
    """
    out = _workspace.zeros((n_rows, rows.shape[1]), rows.dtype)  # (N, H)
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
    """Threads of the time loops and hoisted products: ``"auto"`` (default), None or an int.

    With the sharded kernels an int N means N row shards (and row blocks) of single-threaded
    GEMMs; ``"auto"`` one per core (see :func:`shard_count`); None leaves BLAS alone and runs
    the NumPy loops with BLAS's own threads (the behaviour before the sharded kernels). In the
    NumPy loops (no Numba) the value is the BLAS thread count, as :func:`loop_blas_threads`.

    Raises:
        ValueError: anything else (0 is accepted only from the environment variable).
    """
    global LOOP_BLAS_THREADS
    if n == 0 and not isinstance(n, bool):
        raise ValueError("loop threads must be 'auto', None or a positive int, got 0")
    LOOP_BLAS_THREADS = _parse_loop_threads(n)


@contextmanager
def loop_blas_threads(step_macs: int) -> Iterator[None]:
    """BLAS threads inside the NumPy time loops, one (B, H) @ (H, H) product per step.

    (Used where the sharded kernels are not: no Numba, ``BPTT_KERNELS=numpy``.)
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
    with blas_threads(want if isinstance(want, int) else None):
        yield


PRODUCT_SHARD_MACS = 1 << 22  # m·n·k at or above which a hoisted product is split over cores
PRODUCT_MIN_MACS = 1 << 18  # below: OpenBLAS stays on one thread by itself, nothing to set


def product_shards(macs: int) -> int:
    """Row blocks for one hoisted product of ``macs`` multiply-adds (m·n·k); 1 = one call.

    BLAS's own threads are never used for the hoisted products: a multi-threaded OpenBLAS
    GEMM ends in a spin-wait for all of its threads, which on a busy machine (another
    program on the cores) costs whole scheduler time slices; measured at charlm with two
    other processes busy, a step took 480–580 ms that way against 67–73 ms single-threaded.
    Instead products of at least :data:`PRODUCT_SHARD_MACS` (about 0.1 ms of one core's work,
    enough to pay a thread hand-off) are cut into row blocks, one single-threaded GEMM per
    pool thread (as the time loops' shards), which block rather than spin while they wait.
    Count: as :func:`shard_count` (cores, capped by BLAS's own setting); None from
    :func:`set_loop_threads` leaves every product to BLAS as it is configured.
    """
    if LOOP_BLAS_THREADS is None or macs < PRODUCT_SHARD_MACS:
        return 1
    if isinstance(LOOP_BLAS_THREADS, int):
        return LOOP_BLAS_THREADS
    return _core_cap()


def _core_cap() -> int:
    """Cores this process may use, capped by BLAS's thread setting as first found."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, *(_user_blas_threads() or [cores or 1])))


def _in_blocks(work: Callable[[int, int], None], rows: int, blocks: int) -> None:
    """work(lo, hi) over ``blocks`` row ranges: the first here, the rest on the pool."""
    bounds = [rows * k // blocks for k in range(blocks + 1)]
    pool = _shard_pool(blocks - 1)
    futures = [pool.submit(work, bounds[k], bounds[k + 1]) for k in range(1, blocks)]
    work(bounds[0], bounds[1])
    for f in futures:
        f.result()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a (R, K) @ b (K, N) → (R, N), row blocks of ``a`` on separate cores when large.

    Every block is a single-threaded GEMM (see :func:`product_shards`); ``out`` (R, N)
    C-contiguous, or None for a new array.
    """
    R, K = a.shape
    N = b.shape[1]
    if R * K * N < PRODUCT_MIN_MACS:  # first: the common small case pays nothing more
        return np.matmul(a, b, out=out)
    blocks = min(product_shards(R * K * N), max(R, 1))
    if blocks <= 1 or LOOP_BLAS_THREADS is None:
        with blas_threads(1 if LOOP_BLAS_THREADS is not None else None):
            return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((R, N), dtype=np.result_type(a, b))
    target = out

    def block(lo: int, hi: int) -> None:
        np.matmul(a[lo:hi], b, out=target[lo:hi])

    with blas_threads(1):
        _in_blocks(block, R, blocks)
    return out


def matmul_tn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """aᵀ b = Σ_r a[r]ᵀ b[r] for a (R, M), b (R, N) → (M, N): partial sums of row blocks.

    The reduction runs over the long axis R (T·B rows), so each core sums its own rows and
    the few (M, N) partials are added at the end. The result comes from :mod:`bptt._workspace`
    (a gradient: the caller's to keep, reused only once no one holds it).
    """
    R, M = a.shape
    N = b.shape[1]
    dtype = np.result_type(a, b)
    # the result from the pool; a small one from NumPy (out=None), without the pool's overhead
    out = None if M * N < _workspace.MIN_ELEMENTS else _workspace.empty((M, N), dtype)
    if R * M * N < PRODUCT_MIN_MACS:
        return np.matmul(a.T, b, out=out)
    blocks = min(product_shards(R * M * N), max(R, 1))
    if blocks <= 1 or LOOP_BLAS_THREADS is None:
        with blas_threads(1 if LOOP_BLAS_THREADS is not None else None):
            return np.matmul(a.T, b, out=out)
    partials = _workspace.empty((blocks, M, N), dtype)  # (blocks, M, N)
    bounds = [R * k // blocks for k in range(blocks + 1)]

    def block(lo: int, hi: int) -> None:
        k = bounds.index(lo)
        np.matmul(a[lo:hi].T, b[lo:hi], out=partials[k])

    with blas_threads(1):
        _in_blocks(block, R, blocks)
    return np.sum(partials, axis=0, out=out)


@contextmanager
def blas_threads(want: int | None) -> Iterator[None]:
    """BLAS runs with at most ``want`` threads inside the block (None: leave it alone).

    Never raises BLAS above the thread count it had on entry (the user's own limit, e.g.
    ``OPENBLAS_NUM_THREADS``), and restores that count on exit. No-op without threadpoolctl.
    """
    controllers = _blas() if want else []
    saved = [c.num_threads for c in controllers]
    changed = []
    for c, n in zip(controllers, saved, strict=True):
        if want is not None and want < n:
            c.set_num_threads(want)
            changed.append((c, n))
    try:
        yield
    finally:
        for c, n in changed:
            c.set_num_threads(n)


# -- batch-sharded time loops -----------------------------------------------------------------
#
# The rows of a batch never meet inside the time loops, so the batch is cut into shards of
# rows and each shard runs its whole forward (or backward) loop on its own thread: one
# single-threaded GEMM per step on its (B_s, H) block, the activation (or its derivative)
# fused into the same pass, no barrier between steps. The kernels are Numba functions compiled
# with ``nogil=True`` that call NumPy's own BLAS (``cblas_?gemm``, found through threadpoolctl)
# through a ctypes pointer, so neither the products nor the elementwise work hold the GIL.
#
# tanh: Numba's scalar ``math.tanh`` is a libm call per element (about 3× NumPy's vectorised
# one) and blocks vectorisation, so the kernels use branch-free rational/exp formulas that LLVM
# vectorises: float32 Eigen's [-7.9, 7.9] minimax rational (within 4e-7 of tanh), float64
# Cephes's rational for |x| < 0.625 and 1 − 2/(e^{2|x|}+1) above it with Cephes's exp (within
# 2 ulp of np.tanh). Both propagate NaN.

_sharded: dict[str, Callable[..., Any]] | None = None
_sharded_error: str | None = None
_pool: Any = None
MIN_SHARD_ROWS = 4  # rows per shard at least: smaller blocks lose more to BLAS call overhead
TRANSPOSED_MIN_MACS = 1 << 20
"""From this many multiply-adds per shard and step (rows·H²), the loops compute the step's
product transposed, S = W h_{t−1}ᵀ (H, rows) and carryᵀ = Wᵀ δ_tᵀ, and read S back across
its rows in cache: OpenBLAS's single-threaded SGEMM runs (H, H) @ (H, rows)ᵀ up to 1.35×
faster than (rows, H) @ (H, H) at rows = 16–32, H ≥ 256 (the dense and charlm shapes), and
slower at H = 128 or rows ≤ 8 (docs/benchmarks.md, "How the step uses the cores")."""
TRANSPOSED_DTYPES = ("float32",)
"""The dtypes that use the transposed product: in float64 at the dense shape it was ~15%
slower than the row layout (DGEMM's kernels differ), so float64 keeps rows."""
SHARD_MIN_STEP = 2048
"""B·H below which one thread runs the loops (the hand-off costs more than the split saves):
the quiet ``bench_threads`` run had the sine step (B 32, H 32: B·H = 1024) at 0.31 ms on one
thread against 0.49 ms in two shards, the long step (B 16, H 128: 2048) at 19.4 against 12.0."""


def _cblas_gemm() -> tuple[Any, Any] | None:
    """``(sgemm, dgemm)``: ctypes handles on the CBLAS GEMMs of the BLAS NumPy uses, or None."""
    import ctypes

    libs = [getattr(lib, "filepath", "") for lib in _blas()]
    # NumPy's own BLAS: the one inside numpy's wheel, else the only one loaded (conda, distros)
    paths = [p for p in libs if "numpy" in p] or (libs if len(libs) == 1 else [])
    for path in paths:
        dll = ctypes.CDLL(path)
        for prefix in ("scipy_", ""):
            for suffix, int_t in (("64_", ctypes.c_int64), ("", ctypes.c_int32)):
                if not hasattr(dll, f"{prefix}cblas_sgemm{suffix}"):
                    continue
                out = []
                for letter, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
                    fn = getattr(dll, f"{prefix}cblas_{letter}gemm{suffix}")
                    fn.restype = None
                    fn.argtypes = [ctypes.c_int] * 3 + [int_t] * 3 + [real, ctypes.c_void_p]
                    fn.argtypes += [int_t, ctypes.c_void_p, int_t, real, ctypes.c_void_p, int_t]
                    out.append(fn)
                return out[0], out[1]
    return None


def _load_sharded() -> dict[str, Callable[..., Any]] | None:
    """The sharded loop kernels (each compiles at its first call); None without Numba or a
    working CBLAS GEMM."""
    global _sharded, _sharded_error
    if _sharded is not None or _sharded_error is not None:
        return _sharded
    if _load() is None:
        _sharded_error = _numba_error
        return None
    gemms = _cblas_gemm()
    if gemms is None:
        _sharded_error = "no CBLAS GEMM found in NumPy's BLAS (threadpoolctl needed)"
        return None
    _register_compiled_helpers()
    # cached on disk: the GEMM is an argument (a ctypes function), not a baked-in pointer
    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    _sharded = {
        "gemm_float32": gemms[0],
        "gemm_float64": gemms[1],
        "forward": cached_njit(_forward_shard_py, **options),
        "backward": cached_njit(_backward_shard_py, **options),
        "forwardT": cached_njit(_forward_shard_t_py, **options),
        "backwardT": cached_njit(_backward_shard_t_py, **options),
    }
    problem = _gemm_check(gemms)
    if problem:  # e.g. a CBLAS with another integer width under the same symbol name
        _sharded, _sharded_error = None, problem
    return _sharded


def _gemm_check(gemms: tuple[Any, Any]) -> str:
    """One small product through each CBLAS GEMM, plain and with Bᵀ as the loops call them,
    against NumPy's; "" when they agree. Catches a CBLAS with another integer width under the
    same symbol name before any loop relies on it; the loops themselves compile lazily, each
    at its first use (tests/test_perf_paths.py checks every one against the NumPy loops)."""
    rng = np.random.default_rng(0)
    for dtype, gemm in zip((np.float32, np.float64), gemms, strict=True):
        a = rng.standard_normal((3, 5)).astype(dtype)  # (M, K)
        b = rng.standard_normal((5, 4)).astype(dtype)  # (K, N)
        b_t = np.ascontiguousarray(b.T)  # (N, K)
        for trans_b, operand in ((111, b), (112, b_t)):
            c = np.zeros((3, 4), dtype)
            ldb = 4 if trans_b == 111 else 5
            gemm(
                101,
                111,
                trans_b,
                3,
                4,
                5,
                1.0,
                a.ctypes.data,
                5,
                operand.ctypes.data,
                ldb,
                0.0,
                c.ctypes.data,
                4,
            )
            if not np.allclose(c, a @ b, rtol=1e-4, atol=1e-5):
                return f"NumPy's CBLAS {np.dtype(dtype).name} GEMM disagrees with NumPy's matmul"
    return ""


def _tanh32_py(x: float) -> float:  # pragma: no cover - compiled
    """tanh for float32: Eigen's minimax rational on [-7.905, 7.905] (max error 4e-7)."""
    c = np.float32(7.90531110763549805)
    if x > c:
        x = c
    if x < -c:
        x = -c
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


def _tanh64_py(x: float) -> float:  # pragma: no cover - compiled
    """tanh for float64, Cephes: x + x³P(x²)/Q(x²) for |x| < 0.625, else 1 − 2/(e^{2|x|}+1).

    e^y = 2^n e^r with n = round(y / ln 2), |r| ≤ ln2/2 and Cephes's rational for e^r; both
    branches are evaluated and one is selected, so the loop has no branch and vectorises.
    """
    a = -x if x < 0.0 else x
    if a > 20.0:  # tanh(20) rounds to 1; NaN fails the test and stays NaN
        a = 20.0
    z = a * a
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
    p = p - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
    q = q + 4.84406305325125486048e3
    small = a + a * z * (p / q)
    y = 2.0 * a
    n = int(y * 1.4426950408889634073599 + 0.5)
    fn = float(n)
    r = y - fn * 6.93145751953125e-1 - fn * 1.42860682030941723212e-6
    rr = r * r
    px = (1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
    px = r * (px + 9.99999999999999999910e-1)
    qx = (3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
    qx = (qx + 2.27265548208155028766e-1) * rr + 2.0
    e = (1.0 + 2.0 * (px / (qx - px))) * float(1 << n)
    big = 1.0 - 2.0 / (e + 1.0)
    t = small if a < 0.625 else big
    return -t if x < 0.0 else t


def _tanh_any(x: float) -> float:  # pragma: no cover - compiled (an overload, per dtype)
    """tanh in compiled code: :func:`_tanh32_py` for float32 x, :func:`_tanh64_py` otherwise
    (registered by :func:`_register_compiled_helpers`)."""
    raise NotImplementedError("compiled only")


def _activation_py(e: float, code: int) -> float:  # pragma: no cover - compiled
    """f(E) by ACTIVATION_CODES: identity, tanh, relu, sigmoid = ½(1 + tanh(E/2))."""
    if code == 1:
        return _tanh_any(e)
    if code == 2:
        return e if e > 0 else e * 0
    if code == 3:
        return 0.5 * (1 + _tanh_any(0.5 * e))
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
    from numba import types
    from numba.extending import overload

    global _activation, _activation_grad, _activate_block, _gemm_times_rows_t
    inline = numba.njit(inline="always", error_model="numpy")
    tanh32, tanh64 = inline(_tanh32_py), inline(_tanh64_py)

    @overload(_tanh_any)  # a thin wrapper; the tanh itself is inlined into it
    def _tanh_overload(x: float) -> Callable[[float], float]:  # x: its Numba type
        def tanh_f32(x: float) -> float:  # pragma: no cover - compiled
            return tanh32(x)

        def tanh_f64(x: float) -> float:  # pragma: no cover - compiled
            return tanh64(x)

        return tanh_f32 if x == types.float32 else tanh_f64

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


def shard_count(batch: int, hidden: int) -> int:
    """How many row shards the time loops use for a (B, H) step; 0 means "not sharded".

    ``"auto"``: as many as the cores this process may run on (``os.sched_getaffinity``), capped
    by BLAS's own thread setting (so ``OPENBLAS_NUM_THREADS=1`` keeps everything on one core)
    and by B / :data:`MIN_SHARD_ROWS`; one shard (the loop on the calling thread, no hand-off)
    for steps below :data:`SHARD_MIN_STEP`. An int from :func:`set_loop_threads` forces that
    many; None (leave BLAS alone) turns sharding off. The ``sharded`` backend shards every
    step into min(B, 2) or more, for the tests.
    """
    want = LOOP_BLAS_THREADS
    if _backend == "numpy" or want is None:
        return 0
    if _backend != "sharded" and (_backend == "numba" or batch * hidden <= SMALL_STEP):
        return 0  # the per-row loops (above) win on tiny steps; nothing to compile for them
    if _load_sharded() is None:
        return 0
    if _backend == "sharded":
        n = want if isinstance(want, int) else 2
        return max(1, min(batch, n))
    if isinstance(want, int):
        return max(1, min(batch, want))
    if batch * hidden < SHARD_MIN_STEP:
        return 1
    return max(1, min(_core_cap(), batch // MIN_SHARD_ROWS))


_user_threads: list[int] | None = None


def _user_blas_threads() -> list[int]:
    """BLAS's thread counts as found at first use (the user's setting, before we touch it)."""
    global _user_threads
    if _user_threads is None:
        _user_threads = [c.num_threads for c in _blas()]
    return _user_threads


def _forget_pool() -> None:  # a forked child has none of the parent's threads
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _shard_pool(workers: int) -> Any:
    global _pool
    if _pool is None or _pool._max_workers < workers:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bptt-shard")
    return _pool


def _run_shards(kernel: Callable[..., None], batch: int, shards: int, *args: Any) -> None:
    """kernel(*head, b0, b1, code) on each shard; shard 0 on this thread, the rest pooled."""
    *head, code = args
    bounds = [batch * s // shards for s in range(shards + 1)]
    with blas_threads(1):
        if shards == 1:
            kernel(*head, 0, batch, code)
            return
        pool = _shard_pool(shards - 1)
        futures = [
            pool.submit(kernel, *head, bounds[s], bounds[s + 1], code) for s in range(1, shards)
        ]
        kernel(*head, bounds[0], bounds[1], code)
        for f in futures:
            f.result()


def transposed_product(batch: int, hidden: int, shards: int, dtype: np.dtype) -> bool:
    """Whether the sharded loops compute their step's product transposed (see
    :data:`TRANSPOSED_MIN_MACS` and :data:`TRANSPOSED_DTYPES`)."""
    big = (batch // shards) * hidden * hidden >= TRANSPOSED_MIN_MACS
    return big and np.dtype(dtype).name in TRANSPOSED_DTYPES


def sharded_forward(
    hs: np.ndarray, W: np.ndarray, W_T: np.ndarray, activation: str, shards: int
) -> None:
    """The forward recurrence over hs (T+1, B, H) in place, ``shards`` row blocks in parallel;
    W (H, H) and W_T = Wᵀ, both C-contiguous (one of them is the product's operand)."""
    kernels = _load_sharded()
    assert kernels is not None
    _, B, H = hs.shape
    gemm = kernels[f"gemm_{hs.dtype.name}"]
    if transposed_product(B, H, shards, hs.dtype):
        kernel, weight = kernels["forwardT"], W
    else:
        kernel, weight = kernels["forward"], W_T
    _run_shards(kernel, B, shards, gemm, hs, weight, ACTIVATION_CODES[activation])


def sharded_backward(
    delta: np.ndarray,
    hs: np.ndarray,
    W: np.ndarray,
    carry: np.ndarray,
    activation: str,
    shards: int,
) -> None:
    """The BPTT recursion in place, ``shards`` row blocks in parallel; see backward_shard."""
    kernels = _load_sharded()
    assert kernels is not None
    _, B, H = delta.shape
    gemm = kernels[f"gemm_{delta.dtype.name}"]
    if transposed_product(B, H, shards, delta.dtype):
        kernel, weight = kernels["backwardT"], _workspace.contiguous(W.T)
    else:
        kernel, weight = kernels["backward"], np.ascontiguousarray(W)
    _run_shards(kernel, B, shards, gemm, delta, hs, weight, carry, ACTIVATION_CODES[activation])


BACKEND_FROM_ENV = os.environ.get("BPTT_KERNELS", "auto")
if BACKEND_FROM_ENV not in BACKENDS:
    raise ValueError(f"BPTT_KERNELS must be one of {BACKENDS}, got {BACKEND_FROM_ENV!r}")
_backend = BACKEND_FROM_ENV
