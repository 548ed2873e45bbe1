"""How many bytes an online algorithm holds for a model, before anything is allocated.

    carried_bytes(name, model, batch, k=1)

An upper bound on the peak of the algorithm's own arrays during a step (the carried state, the
copy a step writes beside it, and the step's Jacobians), for the trainer's memory check. The
tests compare it with what tracemalloc sees on every algorithm, cell and depth.

One Elman layer (the closed forms), per stream, with Q = I + H + 1:

    rtrl, snap-n (dense)   2·H·(H·Q + H) + H·Q + H²·Q + H², and RTRL's chunk block of A_s
    snap-n (sparse)        2·nnz(P_n)·(Q + 1) + H·Q
    snap-1                 3·H·Q + H          uoro  3·H·Q          kf-rtrl  3·H² + 2·Q
    rflo                   3·H·Q              tbptt k·(Q + H) + 2·H

Any other model (the cell-protocol forms of :mod:`bptt.online.cellwise`), per stream, with
layer l's state width S_l, input width I_l, parameters P_l and influence columns N_l:

    rtrl, snap-n (dense)   Σ_l 2·S_l·N_l + S_l·N_{l-1} + T_l   (M before and after, K·M^{l-1})
    snap-n (sparse)        Σ_l 3·nnz_l + H·N_l (below the top) + T_l
    uoro                   3·Σ S_l + 4·Σ P_l + max T_l      kf-rtrl   4·S·G + 2·Q + T
    tbptt                  k·(I + 8·Σ S_l) + 2·Σ S_l

where T_l = S_l² + S_l·H + 4·R_l·P_l + 2·S_l·(I_l + S_l) + 16·S_l·H bounds the step's
Jacobians (J and K, formed through S_l and I_l tangents, and Ī's R_l rows per parameter: 1 for
Elman and GRU, 2 for the LSTM). Once for all streams: 4·Σ P_l numbers (the step's gradients),
SnAp's patterns (PROBE_BATCH·max T_l numbers and 16·Σ S_l·N_l bytes while they are built) and
64 KiB of Python objects.
"""

from __future__ import annotations

import numpy as np

from ..model import RNN
from . import rtrl
from .base import is_elman_layer
from .cellwise import PROBE_BATCH, Columns, snap_patterns
from .snap import SPARSE_BELOW, snap_pattern

NAMES = ("rtrl", "uoro", "kf-rtrl", "snap-1", "rflo", "tbptt")
OVERHEAD = 64 << 10
"""Bytes of Python objects and small arrays a step allocates whatever the sizes."""


def snap_n(name: object) -> int | None:
    """n of ``snap-n``, or None."""
    if isinstance(name, str) and name.startswith("snap-") and name[5:].isdigit():
        return int(name[5:])
    return None


def _check_name(name: object) -> None:
    if not (name in NAMES or (snap_n(name) or 0) >= 1):
        raise ValueError(f"online algorithm must be one of {list(NAMES)} or snap-N, got {name!r}")


def carried_bytes(name: str, model: RNN, batch: int, k: int = 1) -> int:
    """The peak bytes algorithm ``name`` holds for ``model`` over ``batch`` streams (see the
    module); ``k`` is tbptt's window. SnAp-n's storage is the one ``make(..., storage="auto")``
    picks, sized from the model's W mask (``model.w_mask``).

    Raises:
        ValueError: an unknown algorithm name.
    """
    _check_name(name)
    itemsize = model.dtype.itemsize
    B = int(batch)
    if is_elman_layer(model):
        return _elman_bytes(name, B, model.input_size, model.hidden_size, itemsize, k, model)
    return _cell_bytes(name, model, B, int(k))


def _elman_bytes(name: str, B: int, I: int, H: int, itemsize: int, k: int, model: RNN) -> int:
    """The one-layer Elman closed forms' count (see the module)."""
    Q = I + H + 1
    dense = 2 * H * (H * Q + H) + H * Q + H * H * Q + H * H  # [M | Z] twice, f' ⊗ ĥ, the chunk's
    per_stream = {
        "rtrl": dense,
        "uoro": 3 * H * Q,
        "kf-rtrl": 3 * H * H + 2 * Q,
        "snap-1": 3 * H * Q + H,
        "rflo": 3 * H * Q,
        "tbptt": int(k) * (Q + H) + 2 * H,
    }.get(name, dense)  # snap-n (n >= 2), dense storage: as RTRL
    n = snap_n(name)
    if n is not None and n >= 2 and model.w_mask is not None:
        nnz = int(snap_pattern(np.asarray(model.w_mask, dtype=bool), n).sum())
        if nnz <= SPARSE_BELOW * H * H:  # two (nnz, Q + 1) buffers and f' ⊗ ĥ
            return itemsize * B * (2 * nnz * (Q + 1) + H * Q)
    rtrl_chunk = name == "rtrl" or (n is not None and n >= 2)  # RTRL's run, A_s in blocks
    blocks = max(rtrl._BLOCK_BYTES, B * H * H * itemsize) if rtrl_chunk else 0
    return itemsize * B * per_stream + blocks


def _jacobian_numbers(model: RNN, cols: Columns) -> list[int]:
    """T_l per layer: a bound on one step's Jacobians and the cells' temporaries per stream."""
    H = model.hidden_size
    out = []
    for layer, S, P in zip(model.layers, cols.states, cols.sizes, strict=True):
        I_l = layer.cell.input_size
        R = 2 if S > H else 1
        out.append(S * S + S * H + 4 * R * P + 2 * S * (I_l + S) + 16 * S * H)
    return out


def _cell_bytes(name: str, model: RNN, B: int, k: int) -> int:
    """The cell-protocol forms' count (see the module)."""
    cols = Columns.of(model)
    H, L = model.hidden_size, len(model.layers)
    T = _jacobian_numbers(model, cols)
    fixed = 4 * sum(cols.sizes)  # the step's named gradients and their pieces (all streams)
    n = snap_n(name)
    if name == "rflo":
        return 0  # refused before anything is allocated
    if name == "tbptt":
        per_stream = k * (model.input_size + 8 * sum(cols.states)) + 2 * sum(cols.states)
    elif name == "uoro":
        per_stream = 3 * sum(cols.states) + 4 * sum(cols.sizes) + max(T)
    elif name == "kf-rtrl":
        cell = model.layers[0].cell
        G = next(iter(cell.param_shapes().values()))[0]
        Q = cell.input_size + H + 1
        per_stream = 4 * cell.state_size * G + 2 * Q + T[0]
    elif n is None or name == "rtrl" or (n >= 2 and not _sparse(model, n)):
        below = (0, *cols.width[:-1])  # K out(M^{l-1}) is formed beside M^l
        per_stream = sum(
            2 * S * N + S * w + t
            for S, N, w, t in zip(cols.states, cols.width, below, T, strict=True)
        )
    else:
        nnz = [int(p.sum()) for p in snap_patterns(model, n)]
        per_stream = sum(
            3 * z + (H * N if l < L - 1 else 0) + t
            for l, (z, N, t) in enumerate(zip(nnz, cols.width, T, strict=True))
        )
    if n is not None and name not in ("rtrl",):  # the patterns, built once (probes at a time)
        fixed += PROBE_BATCH * max(T)
        extra = sum(16 * S * N for S, N in zip(cols.states, cols.width, strict=True))
    else:
        extra = 0
    return model.dtype.itemsize * (B * per_stream + fixed) + extra + OVERHEAD


def _sparse(model: RNN, n: int) -> bool:
    """The storage ``make(..., storage="auto")`` picks for snap-n (n ≥ 2)."""
    w_nz = np.ones((1, 1), bool) if model.w_mask is None else np.asarray(model.w_mask)
    return bool(snap_pattern(w_nz, n).mean() <= SPARSE_BELOW)
