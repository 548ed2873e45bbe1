"""Measured choices for the compiled time loops, kept per machine (FFTW's wisdom, cuDNN's
benchmark mode).

    choice(cell, B, H, dtype) = argmin over candidates c of  time(c's forward + backward loop
                                                              at (B, H, dtype), 32–256 steps)

``bptt tune`` runs the candidates that matter on the real loops at each shape class, over as
many steps as a training sequence has (about 5 ms each), and keeps the fastest in a
per-machine cache file. ``BPTT_TUNE`` says what the loops (under ``auto`` backend and loop
threads, see :mod:`bptt._kernels`) do with it:

- unset, ``cached`` or ``auto`` (the default): follow the choices in the cache, and the
  defaults for a shape class it does not hold; nothing is measured during a run;
- ``1`` (``true``, ``yes``, ``on``): also measure a shape class the first time it runs, and
  keep it in the cache;
- ``0`` (``false``, ``no``, ``off``): the defaults, whatever the cache holds.

Measuring during a run is not the default because a measurement is only as quiet as the
machine at that moment: timed in a training run's first step while the other core was busy,
the tuner kept one shard and the README's run took 46 s against 38 s (docs/benchmarks.md,
"Measured choices"); a choice in the cache is kept for every later run.
The candidates:

- ``path``: ``per_row`` (the Elman cell's per-row Numba loops, only offered at small B·H) or
  ``sharded`` (the batch-sharded GIL-free loops);
- ``shards``: 1 up to the cores this process may use (capped by B / MIN_SHARD_ROWS);
- ``layout``: the Elman sharded loops' step product in rows (h Wᵀ) or transposed (W hᵀ); the
  gated cells' loops always run transposed;
- ``provider``: whose CBLAS GEMM the sharded loops call, NumPy's own or MKL (the ``mkl``
  wheel, where installed; :func:`bptt._kernels.gemm_providers`).

The key of a shape class: cell, dtype, B (exact up to 8, then rounded up to a power of two:
the class is measured at that bucket's B), H and the cores available. The input width and
whether x holds ids do not enter: the choices concern only the recurrent loops, whose work is
B·H² per step whatever the input.

The defaults (what runs with an empty cache or ``BPTT_TUNE=0``, and what every non-``auto``
setting uses) are the
constants of :mod:`bptt._kernels` and :mod:`bptt.cells._elman_kernels`: ``SMALL_STEP``,
``SHARD_MIN_STEP``, ``TRANSPOSED_MIN_MACS``, ``TRANSPOSED_DTYPES``, NumPy's BLAS.

The cache: ``$BPTT_TUNE_CACHE`` (a folder) or the user's cache folder (platformdirs where
installed, else ``$XDG_CACHE_HOME`` or ``~/.cache``) / ``bptt`` / ``tuning-<machine>.json``, one
file per machine key (CPU model, BLAS libraries with their versions and kernels, NumPy, Numba
and bptt versions, the MKL found). A file that does not parse, holds another machine's key or
a choice that is not a valid candidate here is ignored (measured again, and the file
rewritten); the cache is never fatal: a folder that cannot be written leaves the choices in
memory. Files are written atomically (:mod:`bptt.atomic`) and never through a symbolic link.

Which choices change the arithmetic: docs/benchmarks.md ("Measured choices"); every choice
computes the same equation, so they agree to the dtype's rounding (``tests/test_tuning.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, _kernels

CELLS = ("elman", "gru", "lstm")
PATHS = ("per_row", "sharded")
LAYOUTS = ("rows", "transposed")
PER_ROW_MAX_STEP = 4 * _kernels.SMALL_STEP  # B·H above which the per-row loops are not tried
TARGET_SECONDS = 5e-3  # one timed forward + backward, about, at the loops' usual rate
MIN_STEPS = 32  # a timed run has at least this many steps (a thread hand-off is ~30 µs)
MAX_STEPS = 256
ROUNDS = 3  # timed runs per candidate (after one untimed warm-up), the minimum kept
LONG_RUN_SECONDS = 0.1  # a warm-up this long (a very large shape): one timed round only
MARGIN = 0.03  # another choice replaces the default only when faster by more than this
FORMAT = 2  # the cache file's layout; 2: timed over 32–256 steps (1 timed 2-step runs: ignored)


@dataclass(frozen=True)
class Choice:
    """How the time loops of one shape class run (see the module)."""

    path: str = "sharded"
    shards: int = 1
    layout: str = "rows"
    provider: str = "numpy"

    def describe(self) -> str:
        if self.path == "per_row":
            return "per-row loops"
        return f"{self.shards} shard(s), {self.layout}, {self.provider} GEMM"


@dataclass
class Tuned:
    """A measured choice: the winner, the default, and each candidate's best seconds."""

    choice: Choice
    default: Choice
    seconds: dict[str, float] = field(default_factory=dict)


Timer = Callable[[Choice, Callable[[], None]], float]


def wall_timer(candidate: Choice, run: Callable[[], None]) -> float:
    """Seconds of one call of ``run`` (perf_counter); ``candidate`` is for fake timers."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


timer: Timer = wall_timer
"""What :func:`measure` times candidates with (tests put a fake one here)."""

_memory: dict[str, Tuned] = {}
_loaded_from: Path | None = None
_fast: dict[tuple[str, int, int, Any], Choice] = {}  # (cell, B, H, dtype) → choice, per process
_lock = threading.RLock()  # one measurement at a time (threads of one process)


MODES = ("off", "cached", "measure")
_MODE_WORDS = {
    **dict.fromkeys(("0", "false", "no", "off"), "off"),
    **dict.fromkeys(("", "cached", "auto"), "cached"),
    **dict.fromkeys(("1", "true", "yes", "on"), "measure"),
}


def _read_mode() -> str:
    """``BPTT_TUNE`` as one of :data:`MODES` (module doc).

    Raises:
        ValueError: a value that is none of the words above.
    """
    raw = os.environ.get("BPTT_TUNE", "")
    word = raw.strip().lower()
    if word not in _MODE_WORDS:
        raise ValueError(
            f"BPTT_TUNE must be 0 (the defaults), unset or 'cached' (follow `bptt tune`'s "
            f"cache) or 1 (also measure during runs), got {raw!r}"
        )
    return _MODE_WORDS[word]


def _reread_mode() -> None:
    """Read ``BPTT_TUNE`` into :data:`_mode`; a bad value is kept as ``invalid`` and reported
    where the loops first ask (a clean error), not at import."""
    global _mode, _mode_error
    try:
        _mode, _mode_error = _read_mode(), ""
    except ValueError as err:
        _mode, _mode_error = "invalid", str(err)


_mode, _mode_error = "cached", ""
_reread_mode()


def _checked_mode() -> str:
    if _mode == "invalid":
        raise ValueError(_mode_error)
    return _mode


# -- on or off --------------------------------------------------------------------------------


def enabled() -> bool:
    """The loops may follow measured choices: ``BPTT_TUNE`` is not ``0`` (read at import and
    again by :func:`forget`; the loops ask at every step, so it is not read from the
    environment there).

    Raises:
        ValueError: ``BPTT_TUNE`` holds none of the accepted words.
    """
    return _checked_mode() != "off"


def mode() -> str:
    """``off``, ``cached`` (the default: the cache's choices, nothing measured during a run)
    or ``measure`` (``BPTT_TUNE=1``); see the module doc.

    Raises:
        ValueError: ``BPTT_TUNE`` holds none of the accepted words.
    """
    return _checked_mode()


def active() -> bool:
    """Whether the loops follow measured choices now: tuning enabled, backend and loop threads
    both ``auto``, and the sharded loops available (Numba, threadpoolctl, a CBLAS GEMM)."""
    return (
        enabled()
        and _kernels.get_backend() == "auto"
        and _kernels.LOOP_BLAS_THREADS == "auto"
        and _kernels.sharding_gemms() is not None
    )


# -- keys -------------------------------------------------------------------------------------


def batch_bucket(batch: int) -> int:
    """B itself up to 8, else the next power of two (a ragged last batch shares its class)."""
    return batch if batch <= 8 else 1 << (batch - 1).bit_length()


def shape_key(cell: str, batch: int, hidden: int, dtype: np.dtype | type) -> str:
    """``cell|dtype|B<bucket>|H<hidden>|c<cores>``: one shape class."""
    name = np.dtype(dtype).name
    cores = _kernels.available_cores()
    return f"{cell}|{name}|B{batch_bucket(batch)}|H{hidden}|c{cores}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_machine: dict[str, Any] | None = None


def machine_key() -> dict[str, Any]:
    """What a cached choice is valid for: CPU, BLAS libraries (API, version, kernel), NumPy,
    Numba and bptt versions, and whether MKL is offered (looked up once per process)."""
    global _machine
    if _machine is None:
        _machine = _find_machine_key()
    return dict(_machine)


def _find_machine_key() -> dict[str, Any]:
    try:
        from threadpoolctl import threadpool_info

        blas = sorted(
            f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '-')}"
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        )
    except ImportError:
        blas = []
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "blas": blas,
        "numpy": np.__version__,
        "numba": numba_version,
        "bptt": __version__,
        "providers": sorted(_kernels.gemm_providers()),
    }


# -- the cache file ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$BPTT_TUNE_CACHE``, else the user's cache folder / ``bptt``."""
    if os.environ.get("BPTT_TUNE_CACHE"):
        return Path(os.environ["BPTT_TUNE_CACHE"])
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("bptt", appauthor=False))
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "bptt"


def cache_path() -> Path:
    """This machine's cache file (:func:`cache_dir` / ``tuning-<hash of machine_key>.json``)."""
    digest = hashlib.sha256(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"tuning-{digest[:16]}.json"


def _valid(raw: Any) -> Choice | None:
    """A cached choice as a :class:`Choice`, or None when it is not a valid candidate here."""
    if not isinstance(raw, dict):
        return None
    try:
        choice = Choice(
            path=str(raw["path"]),
            shards=int(raw["shards"]),
            layout=str(raw["layout"]),
            provider=str(raw["provider"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    ok = (
        choice.path in PATHS
        and choice.layout in LAYOUTS
        and choice.provider in _kernels.gemm_providers()
        and 1 <= choice.shards <= max(1, _kernels.available_cores())
    )
    return choice if ok else None


def read_cache(path: Path | None = None) -> dict[str, Tuned]:
    """The valid entries of the cache file; {} for a missing, unreadable, corrupt or stale file
    (never raises). A symbolic link is not followed."""
    path = cache_path() if path is None else path
    try:
        if path.is_symlink():
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    if data.get("machine") != json.loads(json.dumps(machine_key())):
        return {}
    entries = data.get("choices")
    out: dict[str, Tuned] = {}
    for key, raw in entries.items() if isinstance(entries, dict) else ():
        choice = _valid(raw.get("choice") if isinstance(raw, dict) else None)
        default = _valid(raw.get("default")) if isinstance(raw, dict) else None
        if choice is None or default is None:
            continue
        seconds = raw.get("seconds")
        clean = {}
        if isinstance(seconds, dict):
            clean = {str(k): float(v) for k, v in seconds.items() if isinstance(v, (int, float))}
        out[str(key)] = Tuned(choice, default, clean)
    return out


def write_cache(entries: dict[str, Tuned], path: Path | None = None) -> bool:
    """Write ``entries`` to the cache file atomically; False (and nothing written) where the
    file or its folder is a symbolic link or cannot be written. Never raises."""
    from .atomic import atomic_write_text

    path = cache_path() if path is None else path
    data = {
        "format": FORMAT,
        "machine": machine_key(),
        "choices": {
            key: {
                "choice": asdict(t.choice),
                "default": asdict(t.default),
                "seconds": t.seconds,
            }
            for key, t in sorted(entries.items())
        },
    }
    try:
        if path.is_symlink() or path.parent.is_symlink():
            return False
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        return False
    return True


def forget() -> None:
    """Drop the choices held in memory and the machine key (the file stays), and read
    ``BPTT_TUNE`` again."""
    global _loaded_from, _machine
    with _lock:
        _memory.clear()
        _fast.clear()
        _loaded_from = None
        _machine = None
        _reread_mode()


# -- the candidates ---------------------------------------------------------------------------


def default_choice(cell: str, batch: int, hidden: int, dtype: np.dtype | type) -> Choice:
    """The untuned choice: the constants of :mod:`bptt._kernels` and the Elman loops."""
    from .cells import _elman_kernels

    if cell == "elman" and batch * hidden <= _kernels.SMALL_STEP:
        return Choice(path="per_row", shards=1, layout="rows", provider="numpy")
    shards = _kernels.default_shard_count(batch, hidden)
    if cell == "elman":
        transposed = _elman_kernels.transposed_product(batch, hidden, shards, np.dtype(dtype))
        layout = "transposed" if transposed else "rows"
    else:
        layout = "transposed"
    return Choice(path="sharded", shards=shards, layout=layout, provider="numpy")


def shard_candidates(batch: int) -> list[int]:
    """1 .. the cores available (powers of two and the cap beyond 4), at most B/MIN_SHARD_ROWS."""
    cap = max(1, min(_kernels.available_cores(), batch // _kernels.MIN_SHARD_ROWS))
    if cap <= 4:
        return list(range(1, cap + 1))
    counts = [1 << k for k in range(cap.bit_length()) if 1 << k < cap]
    return [*counts, cap]


def candidates(cell: str, batch: int, hidden: int, dtype: np.dtype | type) -> list[Choice]:
    """Every choice worth measuring for this shape class (the default among them)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    out = []
    if cell == "elman" and batch * hidden <= PER_ROW_MAX_STEP:
        out.append(Choice(path="per_row"))
    layouts = LAYOUTS if cell == "elman" else ("transposed",)
    for provider in _kernels.gemm_providers():
        for shards in shard_candidates(batch):
            out += [Choice("sharded", shards, layout, provider) for layout in layouts]
    default = default_choice(cell, batch, hidden, dtype)
    if default not in out:
        out.insert(0, default)
    return out


def _steps(cell: str, batch: int, hidden: int) -> int:
    """Time steps for one timed run: about :data:`TARGET_SECONDS` at 100 GFLOP/s, and
    :data:`MIN_STEPS` .. :data:`MAX_STEPS`.

    As many steps as a training sequence has: with 2 steps (what 2 ms at 10 GFLOP/s gave at
    B = 32, H = 256) the shards' hand-off outweighed the loop, one shard won, and whole steps
    then ran 30–35% slower than with two (docs/benchmarks.md, "Measured choices")."""
    gates = {"elman": 1, "gru": 3, "lstm": 4}[cell]
    flops_per_step = 2 * 2 * gates * batch * hidden * hidden  # forward + backward products
    steps = TARGET_SECONDS * 1e11 / max(flops_per_step, 1)
    return int(min(MAX_STEPS, max(MIN_STEPS, steps)))


def _runner(
    cell: str, batch: int, hidden: int, dtype: np.dtype | type
) -> Callable[[Choice], Callable[[], None]]:
    """For a choice, a function that runs the cell's real forward and backward loops once at
    (B, H, dtype) over a few steps, on fixed random data of that shape."""
    from .cells import _elman_kernels, _gated_kernels

    dtype = np.dtype(dtype)
    T = _steps(cell, batch, hidden)
    rng = np.random.default_rng(0)
    scale = 1.0 / np.sqrt(hidden)
    if cell == "elman":
        x = rng.standard_normal((T + 1, batch, hidden)).astype(dtype)  # (T+1, B, H)
        W = (rng.standard_normal((hidden, hidden)) * scale).astype(dtype)  # (H, H)
        W_T = np.ascontiguousarray(W.T)
        dh = rng.standard_normal((T, batch, hidden)).astype(dtype)  # (T, B, H)

        def elman(c: Choice) -> Callable[[], None]:
            def run() -> None:
                hs = x.copy()
                delta = dh.copy()
                carry = np.zeros((batch, hidden), dtype)
                if c.path == "per_row":
                    _elman_kernels.forward_loop(hs, W_T, "tanh")
                    fprime = 1 - hs[1:] * hs[1:]
                    delta *= fprime
                    _elman_kernels.backward_loop(delta, fprime, W, carry)
                    return
                _elman_kernels.sharded_forward(hs, W, W_T, "tanh", c.shards, c.layout, c.provider)
                _elman_kernels.sharded_backward(
                    delta, hs, W, carry, "tanh", c.shards, c.layout, c.provider
                )

            return run

        return elman
    k = 3 if cell == "gru" else 4
    G = rng.standard_normal((T, batch, k * hidden)).astype(dtype)  # (T, B, kH)
    W = (rng.standard_normal((k * hidden, hidden)) * scale).astype(dtype)  # (kH, H)
    dh = rng.standard_normal((T, batch, hidden)).astype(dtype)  # (T, B, H)
    b_hn = np.zeros(hidden, dtype)

    def gated(c: Choice) -> Callable[[], None]:
        def run() -> None:
            hs = np.zeros((T + 1, batch, hidden), dtype)
            carry = np.zeros((batch, hidden), dtype)
            if cell == "lstm":
                gates, cs = G.copy(), np.zeros((T + 1, batch, hidden), dtype)
                dc = np.zeros((batch, hidden), dtype)
                _gated_kernels.lstm_forward(gates, hs, cs, W, c.shards, c.provider)
                _gated_kernels.lstm_backward(dh, gates, cs, W, carry, dc, c.shards, c.provider)
            else:
                gates = _gated_kernels.gru_forward(G, hs, W, b_hn, c.shards, c.provider)
                _gated_kernels.gru_backward(dh, gates, hs, W, carry, c.shards, c.provider)

        return run

    return gated


def measure(cell: str, batch: int, hidden: int, dtype: np.dtype | type) -> Tuned:
    """Run every candidate once untimed (compiles), then :data:`ROUNDS` timed rounds (one
    where a run takes :data:`LONG_RUN_SECONDS` or more) over all of them in turn (so a burst
    of load hits them alike); the fastest minimum wins, but the default stays unless beaten
    by more than :data:`MARGIN` (noise should not flip the choice, and with it the last bits
    of the results). Measured at the bucket's B (:func:`batch_bucket`)."""
    batch = batch_bucket(batch)
    options = candidates(cell, batch, hidden, dtype)
    default = default_choice(cell, batch, hidden, dtype)
    make = _runner(cell, batch, hidden, dtype)
    runs = [make(c) for c in options]
    longest = 0.0
    for run in runs:  # compiles each variant; the slowest sets how many rounds are affordable
        start = time.perf_counter()
        run()
        longest = max(longest, time.perf_counter() - start)
    best = [float("inf")] * len(options)
    for _ in range(ROUNDS if longest < LONG_RUN_SECONDS else 1):
        for i, (c, run) in enumerate(zip(options, runs, strict=True)):
            best[i] = min(best[i], timer(c, run))
    fastest = min(range(len(options)), key=best.__getitem__)
    beaten = best[fastest] < (1 - MARGIN) * best[options.index(default)]
    winner = options[fastest] if beaten else default
    seconds = {c.describe(): s for c, s in zip(options, best, strict=True)}
    return Tuned(choice=winner, default=default, seconds=seconds)


# -- the entry point --------------------------------------------------------------------------


def _load_once() -> None:
    """Read the cache file into memory once per process (or after :func:`forget`)."""
    global _loaded_from
    path = cache_path()
    if _loaded_from != path:
        _memory.update(read_cache(path))
        _loaded_from = path


def cached(cell: str, batch: int, hidden: int, dtype: np.dtype | type) -> Tuned | None:
    """The shape class's choice from memory or the cache file, or None; measures nothing."""
    with _lock:
        _load_once()
        return _memory.get(shape_key(cell, batch, hidden, dtype))


def tuned(cell: str, batch: int, hidden: int, dtype: np.dtype | type, force: bool = False) -> Tuned:
    """The measured choice for a shape class: from memory, else the cache file, else measured
    now and written to the file (``force``: measured again in any case)."""
    key = shape_key(cell, batch, hidden, dtype)
    with _lock:
        found = None if force else cached(cell, batch, hidden, dtype)
        if found is not None:
            return found
        result = measure(cell, batch, hidden, dtype)
        _memory[key] = result
        _fast.clear()  # a forced measurement may change a choice already handed out
        on_disk = read_cache()  # what other processes wrote meanwhile, then ours on top
        on_disk[key] = result
        written = write_cache(on_disk)
    if not written:
        warnings.warn(
            f"bptt: cannot write the tuning cache {cache_path()}; the choice stays in memory",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def choice(cell: str, batch: int, hidden: int, dtype: np.dtype | type) -> Choice:
    """The choice the loops use for a (B, H) step of ``cell`` in ``dtype`` when
    :func:`active`: the cache's (measured now, by :func:`tuned`, only with
    ``BPTT_TUNE=1``), else :func:`default_choice`."""
    if not active():
        return default_choice(cell, batch, hidden, dtype)
    fast_key = (cell, batch, hidden, dtype)
    hit = _fast.get(fast_key)
    if hit is None:
        if _mode == "measure":
            hit = tuned(cell, batch, hidden, dtype).choice
        else:
            found = cached(cell, batch, hidden, dtype)
            hit = found.choice if found else default_choice(cell, batch, hidden, dtype)
        _fast[fast_key] = hit
    return hit


def sharded_choice(
    cell: str, batch: int, hidden: int, dtype: np.dtype | type, shards: int
) -> Choice:
    """The layout and provider for a sharded step that runs ``shards`` shards: the measured
    choice where it is the same sharded run, else the default layout and NumPy's GEMM."""
    if active():
        measured = choice(cell, batch, hidden, dtype)
        if measured.path == "sharded" and measured.shards == shards:
            return measured
    layout = "transposed"
    if cell == "elman":
        from .cells import _elman_kernels

        big = _elman_kernels.transposed_product(batch, hidden, shards, np.dtype(dtype))
        layout = "transposed" if big else "rows"
    return Choice(path="sharded", shards=shards, layout=layout, provider="numpy")


COMMON_SHAPES = (
    # (cell, B, H, dtype): the benchmark shapes (docs/benchmarks.md) and the README's run
    ("elman", 1, 100, "float32"),
    ("elman", 32, 256, "float32"),
    ("elman", 64, 512, "float32"),
    ("elman", 16, 128, "float32"),
    ("elman", 32, 32, "float64"),
    ("elman", 32, 256, "float64"),
    ("gru", 32, 256, "float32"),
    ("lstm", 32, 256, "float32"),
)
