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

__all__ = ["ResourceError", "available_memory", "check_memory", "estimate_bytes", "format_bytes"]


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
