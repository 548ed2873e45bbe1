"""Memory a configuration needs, estimated before anything is allocated.

    P      = H·I + H² + O·H + H + O                        parameters
    bytes ≈ s·P·(3 + slots)                                 weights, gradients, clip copy, slots
          + s·T·B·(4H + 3O + I)                             one window: inputs, h, E, dh, z, dz
          + s·lags·(H² + H·I + H)·2                         inspect: per-lag gradient blocks
          + 24·sample                                       sampled ids, codes and the text

with s the item size of the dtype (8 for float64) and T·B·I counted only for dense inputs.
The estimate is a lower bound of the peak, within a small factor; :func:`check_memory`
refuses a configuration whose estimate exceeds the memory the process can still get, so a
huge option ends in a clear error naming the estimate instead of a ``MemoryError`` traceback
minutes later.
"""

from __future__ import annotations

import os
import resource
from typing import Any

__all__ = [
    "ResourceError",
    "available_memory",
    "check_config",
    "check_memory",
    "estimate_bytes",
    "format_bytes",
]


class ResourceError(ValueError):
    """A configuration needs more memory than this machine can give."""


def estimate_bytes(
    input_size: int,
    hidden: int,
    output_size: int,
    seq_len: int,
    batch: int,
    *,
    itemsize: int = 8,
    dense_input: bool = True,
    slots: int = 2,
    lags: int = 0,
    sample: int = 0,
    layers: int = 1,
) -> int:
    """The estimate in the module docstring, in bytes (Python ints: no overflow).

    ``layers`` counts layer-directions (L·D): each adds its weights and its per-step states
    (an upper-side estimate, as every layer is sized as the widest, H × max(I, D·H)).
    """
    I, H, O, T, B = (int(v) for v in (input_size, hidden, output_size, seq_len, batch))
    n = max(1, int(layers))
    params = (
        n * (H * max(I, 2 * H) + H * H + H) + O * 2 * H + O
        if n > 1
        else (H * I + H * H + O * H + H + O)
    )
    window = T * B * (4 * H * n + 3 * O + (I if dense_input else 1))
    per_lag = H * H + H * I + H
    return itemsize * (params * (3 + slots) + window + 2 * int(lags) * per_lag) + 24 * int(sample)


def available_memory() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable`` plus free swap (Linux), else
    the physical memory, capped by ``RLIMIT_AS`` / ``RLIMIT_DATA``; None when unknown."""
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if ":" in line}
        avail = info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            avail = soft if avail is None else min(avail, soft)
    return avail


def format_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(need: int, what: str, hint: str) -> None:
    """Raise :class:`ResourceError` when ``need`` bytes exceed :func:`available_memory`.

    Args:
        need: the estimate (:func:`estimate_bytes`).
        what: what needs it, e.g. ``"this configuration (H=1000000, T=50, B=32)"``.
        hint: the options to lower, e.g. ``"use a smaller --hidden, --seq-len or --batch"``.
    """
    avail = available_memory()
    if avail is not None and need > avail:
        raise ResourceError(
            f"{what} needs about {format_bytes(need)} of memory, more than the "
            f"{format_bytes(avail)} this machine has available; {hint}"
        )


#: upper bounds of counts that cost time rather than memory (a held-out evaluation's
#: sequences and windows): checked with every configuration, as a command-line value is
MAX_EVAL_SIZE = 1 << 20
MAX_LAYERS = 1024


def _task_shape(config: Any) -> tuple[int, int, int, bool]:
    """(I, O, T, dense input) a configuration's task implies, before any data is made or read
    (charlm: at most 2¹⁶ characters of vocabulary; csv, arrays: one column and their own T,
    whose files are checked as they are read)."""
    task, T = config.task, int(config.seq_len)
    if task == "charlm":
        return 1, 1, max(T, int(config.k2)), False
    if task == "copy":
        n = int(config.n_symbols)
        return n + 2, n + 1, int(config.delay) + 2 * int(config.copy_len), True
    if task in ("sine", "csv"):
        return 1, 1, T + int(config.horizon), True
    if task == "lagged":
        return 2, 2, max(T, int(config.lag1), int(config.lag2)) + 1, True
    if task == "order":
        return 8, 4, T, True
    return 2, 1, T, True


def check_config(config: Any) -> None:
    """Every size a :class:`~bptt.training.TrainConfig` sets, through the memory estimate
    before anything is built (the task's own length: copy's ``delay + 2·copy_len``, sine's
    ``seq_len + horizon``), and the counts that cost time bounded (``eval_size`` ≤ 2²⁰,
    ``layers`` ≤ 1024).

    Raises:
        ResourceError: naming the options to lower.
    """
    if config.eval_size > MAX_EVAL_SIZE:
        raise ResourceError(
            f"--eval-size must be <= {MAX_EVAL_SIZE} held-out sequences, got {config.eval_size}"
        )
    if config.layers > MAX_LAYERS:
        raise ResourceError(f"--layers must be <= {MAX_LAYERS}, got {config.layers}")
    n_in, n_out, T, dense = _task_shape(config)
    batch = max(int(config.batch), min(256, int(config.eval_size)))
    itemsize = 8 if config.dtype == "float64" else 4
    need = estimate_bytes(
        n_in,
        config.hidden,
        n_out,
        T,
        batch,
        itemsize=itemsize,
        dense_input=dense,
        layers=config.layers * (2 if config.bidirectional else 1),
        sample=config.sample_length if config.task == "charlm" and config.sample_every else 0,
    )
    check_memory(
        need,
        f"this configuration (--task {config.task}: I={n_in}, H={config.hidden}, O={n_out}, "
        f"T={T}, B={batch}, {config.layers} layer(s))",
        "use a smaller --hidden, --layers, --seq-len, --batch"
        + {
            "copy": ", --delay, --copy-len or --n-symbols",
            "sine": " or --horizon",
            "csv": " or --horizon",
            "lagged": ", --lag1 or --lag2",
            "charlm": ", --k2 or --sample-length",
        }.get(config.task, ""),
    )
