"""What every compiled loop of the package shares: the backend switch, BLAS threads, row-blocked
GEMMs, NumPy's CBLAS GEMM, the shard runner, tanh per dtype and the disk-cached ``njit``.

The cells' own loops live with their cells (:mod:`bptt.cells._elman_kernels`,
:mod:`bptt.cells._gated_kernels`); the optimizers' fused updates (:mod:`bptt._fused_optim`)
and the online algorithms' loops (:mod:`bptt.online._kernels`) use the same switch. Every
compiled kernel computes exactly the equation of its NumPy twin, in the same dtype; only the
order of floating-point sums may differ (tests run both paths).

Interface (public to the package; the underscored names are this module's own):

    backend      BACKENDS, set_backend(name), get_backend(), backend(name) (a context),
                 numba_available(), numba_wanted() (available and not ``numpy``),
                 BACKEND_FROM_ENV: BPTT_KERNELS=auto|numpy|numba|sharded (read at import)
    compiling    cached_njit(fn, **options): numba.njit(cache=True), compiled once per machine
    sharding     sharding_gemms(): NumPy's CBLAS (sgemm, dgemm) for the GIL-free loops, checked,
                 or None (then sharding_error() says why); it also makes tanh_any compile
                 find_cblas_gemms(), gemm_check(gemms): the lookup and the check behind it
                 tanh_any(x): tanh in compiled code, vectorisable, float32 or float64 by x
                 SMALL_STEP, SHARD_MIN_STEP, MIN_SHARD_ROWS, shard_count(B, H, dtype, cell),
                 default_shard_count(B, H), available_cores(): row shards;
                 tuning_module(): bptt.tuning, the measured choices (imported lazily)
                 run_shards(kernel, B, shards, *args, code): kernel(*args, b0, b1, code) per shard
    providers    GEMM_PROVIDERS, gemm_providers(): the checked CBLAS GEMMs the loops may call
                 ("numpy": NumPy's own BLAS; "mkl": the ``mkl`` wheel's libmkl_rt, where
                 installed), loop_gemm(provider, dtype), find_mkl_gemms(), mkl_error()
    threads      LOOP_BLAS_THREADS (a LoopThreads), set_loop_threads(n), loop_blas_threads(macs),
                 blas_threads(n) (contexts), blas_controllers(), LARGE_STEP_MACS
    products     matmul(a, b, out), matmul_tn(a, b): row blocks on the shard pool when large
                 (PRODUCT_SHARD_MACS, PRODUCT_MIN_MACS, product_shards(macs));
                 column_sums(rows): pairwise Σ_r rows[r]; scatter_add_rows(n, idx, rows):
                 S[i] = Σ_{r: idx[r] = i} rows[r] (dL/dV for token ids)

Which path runs:

- ``BPTT_KERNELS=numpy`` in the environment (read at import) or ``set_backend("numpy")``
  forces the NumPy fallback; ``"numba"`` demands the per-row Numba loops for every step
  (ImportError naming the extra if Numba is missing); ``"sharded"`` forces the batch-sharded
  loops for every step (for tests); ``"auto"`` (the default) picks by size:
- B·H ≤ :data:`SMALL_STEP`: the per-row Numba loops (the latency-bound regime of one
  stream, Karpathy's min-char-rnn, where per-call overhead dominates);
- larger steps: the batch-sharded loops (:func:`shard_count`, :func:`run_shards`), each shard
  of batch rows on its own core running its whole loop GIL-free with single-threaded GEMMs
  from NumPy's own BLAS (:func:`sharding_gemms`);
- without Numba, threadpoolctl or a usable CBLAS: the NumPy loops.

With ``BPTT_TUNE=1`` and under ``auto`` (backend and loop threads both), the per-row-or-
sharded choice, the shard count, the Elman loops' product layout and the GEMM provider are
measured per shape class the first time it runs (:mod:`bptt.tuning`); otherwise, the default,
they come from the constants here.

The hoisted products outside the loops go through :func:`matmul` and :func:`matmul_tn`,
which split large products into row blocks on the same thread pool (never OpenBLAS's own
threads, see :func:`product_shards`). ``BPTT_LOOP_THREADS`` / :func:`set_loop_threads`
chooses the thread count; measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import _workspace
from ._numba_cache import cached_njit  # machine code cached in the user's cache dir

BACKENDS = ("auto", "numpy", "numba", "sharded")
SMALL_STEP = 256  # B·H at or below which the compiled time loops win (measured, see docs)

_backend = "auto"
_numba_checked = False
_numba_error: str | None = None


def set_backend(name: str) -> None:
    """Choose the kernel backend: ``auto``, ``numpy``, ``numba`` or ``sharded``.

    Raises:
        ValueError: an unknown name.
        ImportError: ``numba`` was asked for and Numba is not installed, or ``sharded`` and
            Numba, threadpoolctl or NumPy's CBLAS is missing.
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "numba" and not numba_available():
        raise ImportError(
            f"the numba backend needs Numba: pip install 'bptt[fast]' ({_numba_error})"
        )
    if name == "sharded" and sharding_gemms() is None:
        raise ImportError(
            f"the sharded backend needs Numba, threadpoolctl and NumPy's CBLAS: "
            f"pip install 'bptt[fast]' ({_sharding_error})"
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


def numba_wanted() -> bool:
    """Whether compiled loops may run: Numba is installed and the backend is not ``numpy``."""
    return _backend != "numpy" and numba_available()


def numba_available() -> bool:
    """Whether Numba imports (checked once; the kernels compile through :func:`cached_njit`)."""
    global _numba_checked, _numba_error
    if not _numba_checked:
        try:
            import numba  # noqa: F401
        except ImportError as err:
            _numba_error = str(err)
        _numba_checked = True
    return _numba_error is None


# -- scatter-add (the input layer's dL/dV for token ids, every cell) -------------------------

_scatter_add: Callable[..., Any] | None = None


def _scatter_add_py(out: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:  # pragma: no cover
    """out[idx[r]] += rows[r] for r in order; out (N, H), idx (R,), rows (R, H)."""
    R, H = rows.shape
    for r in range(R):
        dst = out[idx[r]]
        src = rows[r]
        for j in range(H):
            dst[j] += src[j]


def _scatter_add_kernel() -> Callable[..., Any]:
    global _scatter_add
    if _scatter_add is None:
        _scatter_add = cached_njit(_scatter_add_py, nogil=True, boundscheck=False)
    return _scatter_add


def scatter_add_rows(n_rows: int, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """S[i] = Σ_{r: idx[r] = i} rows[r]; returns S (n_rows, H) in rows' dtype, from the
    workspace.

    Numba: one pass in row order. NumPy: a stable sort of the ids once, then one
    ``np.add.reduceat`` over the rows grouped by id (far faster than ``np.add.at``).
    """
    out = _workspace.zeros((n_rows, rows.shape[1]), rows.dtype)  # (N, H)
    if rows.shape[0] == 0:
        return out
    if numba_wanted():
        _scatter_add_kernel()(out, idx, rows)
        return out
    order = np.argsort(idx, kind="stable")  # (R,)
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])  # first of each id
    out[sorted_idx[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


_COLUMN_BLOCK = 32  # rows added one after another before the pairwise merges
_column_sums: Callable[..., Any] | None = None


def _column_sums_py(rows: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out ← Σ_r rows[r]: blocks of :data:`_COLUMN_BLOCK` rows summed in order, the block sums
    merged pairwise as a binary counter (level k holds the sum of 2^k blocks), so the error is
    O(ε (block + log R)) with O(C log R) scratch instead of an (R/2, C) buffer."""
    R, C = rows.shape
    levels = np.zeros((64, C), dtype=out.dtype)  # (64, C): 2^64 blocks is more than enough
    filled = np.zeros(64, dtype=np.bool_)
    acc = np.empty(C, dtype=out.dtype)
    for start in range(0, R, _COLUMN_BLOCK):
        acc[:] = rows[start]
        for r in range(start + 1, min(start + _COLUMN_BLOCK, R)):
            row = rows[r]
            for j in range(C):
                acc[j] += row[j]
        level = 0
        while filled[level]:  # carry: two sums of 2^k blocks make one of 2^(k+1)
            for j in range(C):
                acc[j] += levels[level, j]
            filled[level] = False
            level += 1
        levels[level] = acc
        filled[level] = True
    out[:] = 0
    for level in range(64):
        if filled[level]:
            for j in range(C):
                out[j] += levels[level, j]


def column_sums(rows: np.ndarray) -> np.ndarray:
    """Σ_r rows[r] for rows (R, C), summed pairwise: error O(ε log R), not O(ε R).

    NumPy's ``sum(axis=0)`` on a C-ordered array adds the rows one after another, so a float32
    bias gradient over T·B = 320,000 rows drifts by ~1e-5 relative. With Numba, blocks of 32
    rows are summed in order and the block sums merged pairwise (:func:`_column_sums_py`:
    O(C log R) scratch, so a memory budget's blocks hold nothing per step for it); without,
    halving the rows in place (one (R/2, C) buffer) keeps it at ~1e-7 and is no slower than
    NumPy's sum.
    """
    R = rows.shape[0]
    if R <= 64:
        return rows.sum(axis=0)
    if numba_wanted() and rows.dtype.kind == "f":
        global _column_sums
        if _column_sums is None:
            _column_sums = cached_njit(_column_sums_py, nogil=True, boundscheck=False)
        out = np.empty(rows.shape[1], dtype=rows.dtype)
        _column_sums(np.ascontiguousarray(rows), out)
        return out
    n = R // 2
    buf = np.add(rows[:n], rows[n : 2 * n], out=_workspace.empty((n, rows.shape[1]), rows.dtype))
    if R % 2:
        buf[0] += rows[-1]
    while n > 64:
        half = n // 2
        buf[:half] += buf[half : 2 * half]
        if n % 2:
            buf[0] += buf[n - 1]
        n = half
    return buf[:n].sum(axis=0)


# -- BLAS threads in the time loops -----------------------------------------------------------

_blas_controllers: list[Any] | None = None


def blas_controllers() -> list[Any]:
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
    if out is None:
        out = np.empty((M, N), dtype)
    total = out
    # the first block's partial sum is written into the result; the others beside it
    partials = _workspace.empty((blocks - 1, M, N), dtype)  # (blocks − 1, M, N)
    bounds = [R * k // blocks for k in range(blocks + 1)]

    def block(lo: int, hi: int) -> None:
        k = bounds.index(lo)
        np.matmul(a[lo:hi].T, b[lo:hi], out=total if k == 0 else partials[k - 1])

    with blas_threads(1):
        _in_blocks(block, R, blocks)
    for partial in partials:  # Σ in block order, as np.sum over the blocks' axis adds them
        total += partial
    return total


@contextmanager
def blas_threads(want: int | None) -> Iterator[None]:
    """BLAS runs with at most ``want`` threads inside the block (None: leave it alone).

    Never raises BLAS above the thread count it had on entry (the user's own limit, e.g.
    ``OPENBLAS_NUM_THREADS``), and restores that count on exit. No-op without threadpoolctl.
    """
    controllers = blas_controllers() if want else []
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


# -- batch-sharded time loops: what every cell's loops share ------------------------------------
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

_gemms: tuple[Any, Any] | None = None
_sharding_error: str | None = None
_pool: Any = None
MIN_SHARD_ROWS = 4  # rows per shard at least: smaller blocks lose more to BLAS call overhead
SHARD_MIN_STEP = 2048
"""B·H below which one thread runs the loops (the hand-off costs more than the split saves):
the quiet ``bench_threads`` run had the sine step (B 32, H 32: B·H = 1024) at 0.31 ms on one
thread against 0.49 ms in two shards, the long step (B 16, H 128: 2048) at 19.4 against 12.0."""


def find_cblas_gemms() -> tuple[Any, Any] | None:
    """``(sgemm, dgemm)``: ctypes handles on the CBLAS GEMMs of the BLAS NumPy uses, or None."""
    import ctypes

    libs = [getattr(lib, "filepath", "") for lib in blas_controllers()]
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


def sharding_gemms() -> tuple[Any, Any] | None:
    """``(sgemm, dgemm)``, NumPy's CBLAS GEMMs for the sharded loops (found and checked once),
    or None without Numba, threadpoolctl or a CBLAS GEMM that agrees with NumPy (see
    :func:`sharding_error`). Once it returns them, :func:`tanh_any` compiles.

    The loops take the GEMM as an argument (a ctypes function), not a baked-in pointer, so
    they are cached on disk (:func:`cached_njit`).
    """
    global _gemms, _sharding_error
    if _gemms is not None or _sharding_error is not None:
        return _gemms
    if not numba_available():
        _sharding_error = _numba_error
        return None
    gemms = find_cblas_gemms()
    if gemms is None:
        _sharding_error = "no CBLAS GEMM found in NumPy's BLAS (threadpoolctl needed)"
        return None
    _register_tanh()
    problem = gemm_check(gemms)
    if problem:  # e.g. a CBLAS with another integer width under the same symbol name
        _sharding_error = problem
        return None
    _gemms = gemms
    return _gemms


def sharding_error() -> str | None:
    """Why :func:`sharding_gemms` returned None (None before it was asked, or when it worked)."""
    return _sharding_error


# -- GEMM providers: which CBLAS the loops' per-step products call ---------------------------

GEMM_PROVIDERS = ("numpy", "mkl")
"""``numpy``: NumPy's own BLAS (:func:`sharding_gemms`), always first; ``mkl``: the ``mkl``
wheel's ``libmkl_rt`` (``pip install 'bptt[mkl]'``), where it loads, runs sequentially and
agrees with NumPy (:func:`find_mkl_gemms`). The tuner (:mod:`bptt.tuning`) measures each on the
loops' real step and keeps the faster; untuned runs use ``numpy``."""

_mkl: tuple[Any, Any] | None = None
_mkl_error: str | None = None


def gemm_providers() -> dict[str, tuple[Any, Any]]:
    """``{name: (sgemm, dgemm)}`` of the providers usable here, ``numpy`` first; empty where
    the sharded loops cannot run at all (:func:`sharding_gemms` is None)."""
    numpy_gemms = sharding_gemms()
    if numpy_gemms is None:
        return {}
    out = {"numpy": numpy_gemms}
    mkl = find_mkl_gemms()
    if mkl is not None:
        out["mkl"] = mkl
    return out


def loop_gemm(provider: str, dtype: np.dtype | type) -> Any:
    """The ctypes CBLAS GEMM of ``provider`` for ``dtype`` (float32: sgemm, float64: dgemm).

    Raises:
        ValueError: a provider that is not available here (see :func:`gemm_providers`).
    """
    providers = gemm_providers()
    if provider not in providers:
        raise ValueError(
            f"GEMM provider must be one of {tuple(providers)} here, got {provider!r}"
            + (f" ({_mkl_error})" if provider == "mkl" and _mkl_error else "")
        )
    return providers[provider][0 if np.dtype(dtype) == np.float32 else 1]


def _mkl_candidates() -> list[str]:
    """Where libmkl_rt may be: ``BPTT_MKL_RT`` (a path), the environment's lib folder (where the
    ``mkl`` wheel puts it), then the loader's search path."""
    import ctypes.util
    import sys

    paths = [os.environ["BPTT_MKL_RT"]] if os.environ.get("BPTT_MKL_RT") else []
    names = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.dylib")
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for sub in ("lib", os.path.join("Library", "bin")):
            paths += [os.path.join(prefix, sub, name) for name in names]
            if os.path.isdir(os.path.join(prefix, sub)) and os.name == "nt":
                folder = os.path.join(prefix, sub)
                paths += [os.path.join(folder, f) for f in os.listdir(folder) if "mkl_rt" in f]
    found = ctypes.util.find_library("mkl_rt")
    if found:
        paths.append(found)
    return [p for p in paths if os.path.sep not in p or os.path.exists(p)]


def find_mkl_gemms() -> tuple[Any, Any] | None:
    """``(sgemm, dgemm)`` from the ``mkl`` wheel's ``libmkl_rt``, sequential and LP64, checked
    against NumPy (:func:`gemm_check`); None where it is absent, is NumPy's own BLAS already,
    or fails (then :func:`mkl_error` says why). Looked up once.

    MKL is switched to its sequential threading layer before its first call (the loops run
    one single-threaded GEMM per shard; MKL's own threads would compete with the shards);
    where another library already set a different layer the provider is not offered.
    """
    global _mkl, _mkl_error
    if _mkl is not None or _mkl_error is not None:
        return _mkl
    import ctypes

    if any(getattr(c, "internal_api", "") == "mkl" for c in blas_controllers()):
        _mkl_error = "NumPy's BLAS is MKL already (the numpy provider)"
        return None
    dll = None
    for path in _mkl_candidates():
        try:
            dll = ctypes.CDLL(path)
            break
        except OSError:
            continue
    if dll is None:
        _mkl_error = "libmkl_rt not found (pip install 'bptt[mkl]')"
        return None
    try:
        dll.MKL_Set_Interface_Layer.restype = ctypes.c_int
        dll.MKL_Set_Threading_Layer.restype = ctypes.c_int
        interface = dll.MKL_Set_Interface_Layer(ctypes.c_int(0))  # MKL_INTERFACE_LP64
        threading = dll.MKL_Set_Threading_Layer(ctypes.c_int(1))  # MKL_THREADING_SEQUENTIAL
    except AttributeError as err:
        _mkl_error = f"not a usable libmkl_rt: {err}"
        return None
    if interface != 0 or threading != 1:
        _mkl_error = (
            f"libmkl_rt was set up by another library "
            f"(interface layer {interface}, threading layer {threading})"
        )
        return None
    out = []
    for letter, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
        fn = getattr(dll, f"cblas_{letter}gemm")
        fn.restype = None
        int_t = ctypes.c_int32
        fn.argtypes = [ctypes.c_int] * 3 + [int_t] * 3 + [real, ctypes.c_void_p]
        fn.argtypes += [int_t, ctypes.c_void_p, int_t, real, ctypes.c_void_p, int_t]
        out.append(fn)
    gemms = (out[0], out[1])
    problem = gemm_check(gemms)
    if problem:
        _mkl_error = problem.replace("NumPy's CBLAS", "MKL's CBLAS")
        return None
    _mkl = gemms
    return _mkl


def mkl_error() -> str | None:
    """Why :func:`find_mkl_gemms` returned None (None before it was asked, or when it worked)."""
    return _mkl_error


def gemm_check(gemms: tuple[Any, Any]) -> str:
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


def tanh_any(x: float) -> float:  # pragma: no cover - compiled (an overload, per dtype)
    """tanh in compiled code: :func:`_tanh32_py` for float32 x, :func:`_tanh64_py` otherwise
    (registered by :func:`sharding_gemms`)."""
    raise NotImplementedError("compiled only")


_tanh_registered = False


def _register_tanh() -> None:
    """Make :func:`tanh_any` callable from compiled code (per dtype, inlined), once."""
    global _tanh_registered
    if _tanh_registered:
        return
    import numba
    from numba import types
    from numba.extending import overload

    inline = numba.njit(inline="always", error_model="numpy")
    tanh32, tanh64 = inline(_tanh32_py), inline(_tanh64_py)

    @overload(tanh_any)  # a thin wrapper; the tanh itself is inlined into it
    def _tanh_overload(x: float) -> Callable[[float], float]:  # x: its Numba type
        def tanh_f32(x: float) -> float:  # pragma: no cover - compiled
            return tanh32(x)

        def tanh_f64(x: float) -> float:  # pragma: no cover - compiled
            return tanh64(x)

        return tanh_f32 if x == types.float32 else tanh_f64

    _tanh_registered = True


def shard_count(
    batch: int, hidden: int, dtype: np.dtype | type | None = None, cell: str = "elman"
) -> int:
    """How many row shards the time loops use for a (B, H) step; 0 means "not sharded".

    ``"auto"`` (backend and loop threads): with ``dtype`` given and tuning on
    (:func:`bptt.tuning.active`), the count the tuner measured fastest for this shape class
    (0 where it chose the per-row loops); otherwise :func:`default_shard_count`. An int from
    :func:`set_loop_threads` forces that many; None (leave BLAS alone) turns sharding off. The
    ``sharded`` backend shards every step into min(B, 2) or more, for the tests.
    """
    want = LOOP_BLAS_THREADS
    if _backend == "numpy" or want is None:
        return 0
    if dtype is not None and _backend == "auto" and want == "auto":
        tuning = tuning_module()
        if tuning.active():
            choice = tuning.choice(cell, batch, hidden, dtype)
            return 0 if choice.path == "per_row" else choice.shards
    if _backend != "sharded" and (_backend == "numba" or batch * hidden <= SMALL_STEP):
        return 0  # the per-row loops (above) win on tiny steps; nothing to compile for them
    if sharding_gemms() is None:
        return 0
    if _backend == "sharded":
        n = want if isinstance(want, int) else 2
        return max(1, min(batch, n))
    if isinstance(want, int):
        return max(1, min(batch, want))
    return default_shard_count(batch, hidden)


_tuning: Any = None


def tuning_module() -> Any:
    """:mod:`bptt.tuning`, imported at first use (it imports this module; the loops ask it
    at every step, where an import statement would cost a microsecond)."""
    global _tuning
    if _tuning is None:
        from . import tuning

        _tuning = tuning
    return _tuning


def default_shard_count(batch: int, hidden: int) -> int:
    """The untuned count for a sharded (B, H) step: as many shards as the cores this process
    may run on (``os.sched_getaffinity``), capped by BLAS's own thread setting (so
    ``OPENBLAS_NUM_THREADS=1`` keeps everything on one core) and by B / :data:`MIN_SHARD_ROWS`;
    one shard (the loop on the calling thread, no hand-off) below :data:`SHARD_MIN_STEP`."""
    if batch * hidden < SHARD_MIN_STEP:
        return 1
    return max(1, min(available_cores(), batch // MIN_SHARD_ROWS))


def available_cores() -> int:
    """Cores this process may use, capped by BLAS's thread setting as first found."""
    return _core_cap()


_user_threads: list[int] | None = None


def _user_blas_threads() -> list[int]:
    """BLAS's thread counts as found at first use (the user's setting, before we touch it)."""
    global _user_threads
    if _user_threads is None:
        _user_threads = [c.num_threads for c in blas_controllers()]
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


def run_shards(kernel: Callable[..., None], batch: int, shards: int, *args: Any) -> None:
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


BACKEND_FROM_ENV = os.environ.get("BPTT_KERNELS", "auto")
if BACKEND_FROM_ENV not in BACKENDS:
    raise ValueError(f"BPTT_KERNELS must be one of {BACKENDS}, got {BACKEND_FROM_ENV!r}")
_backend = BACKEND_FROM_ENV
