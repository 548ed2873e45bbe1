"""Online credit assignment: RTRL and its approximations behind one interface.

    alg = bptt.online.make(name, model, batch=B, seed=0, **options)
    alg.reset(h0=None)                                 # (B, H) like the model, zeros if None
    loss_t, grads_t = alg.step(x_t, y_t, mask_t=None)  # one step of every stream
    losses, total = alg.run(xs, ys, masks=None)        # T steps at once: = T calls of step

``grads_t`` estimates dL_t/dθ under the model's parameter names (the head's U, b_y exactly);
with the weights held fixed, Σ_t grads_t estimates the whole stream's BPTT gradient.
``state_dict()`` / ``load_state_dict()`` save and restore everything (influence, traces, the
random generator), so a run resumes bit for bit.

    name       carries                          cost / step     exact?
    rtrl       M_t = J_t M_{t-1} + Ī_t           O(B H⁴)         yes
    snap-1     diag of M (k = r)                O(B H Q)        = RTRL when W is diagonal
    snap-n     M on P_n (n-step reach of W),    O(B·Q·reads)    = RTRL when the pattern is full
               stored only there (sparse W)
    uoro       rank one ã b̃ᵀ, random signs      O(B H Q)        unbiased
    kf-rtrl    u ⊗ A, random signs              O(B H³)         unbiased
    rflo       leaky diagonal trace, random B   O(B H Q)        biased
    tbptt      the last k steps, rerun          O(k B H²)       = BPTT when k ≥ T

See ``docs/online.md`` for the measurements against exact BPTT.

Each name of :data:`ALGORITHMS` is also an entry of the one registry of gradient algorithms,
:mod:`bptt.algorithms` (``bptt.algorithms.make(name, model, batch=B)`` wraps the object
:func:`make` builds behind the interface every algorithm shares, ``gradient(batch, restart)``),
which is what ``bptt train --algorithm`` reads; ``tbptt`` runs on the package's one TBPTT,
:class:`bptt.algorithms.truncated.TruncatedBPTT`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import RNN
from .base import OnlineAlgorithm, rng_from_array, rng_to_array
from .memory import carried_bytes
from .rflo import RFLO
from .rtrl import RTRL
from .snap import SPARSE_BELOW, STORAGES, DenseSnApN, SnAp1, SnApN, snap_pattern
from .stochastic import KFRTRL, UORO
from .tbptt import OnlineTBPTT

ALGORITHMS: tuple[str, ...] = ("rtrl", "uoro", "kf-rtrl", "snap-1", "snap-2", "rflo", "tbptt")
"""The names :func:`make` accepts (``snap-N`` for any N ≥ 1 as well)."""

_CLASSES: dict[str, type[OnlineAlgorithm]] = {
    "rtrl": RTRL,
    "uoro": UORO,
    "kf-rtrl": KFRTRL,
    "snap-1": SnAp1,
    "rflo": RFLO,
    "tbptt": OnlineTBPTT,
}


def _snap_n(name: object) -> int | None:
    """n of ``snap-n``, or None."""
    if isinstance(name, str) and name.startswith("snap-") and name[5:].isdigit():
        return int(name[5:])
    return None


def make(name: str, model: RNN, batch: int = 1, seed: int = 0, **options: Any) -> OnlineAlgorithm:
    """Build the online algorithm ``name`` for ``model`` over ``batch`` streams, then reset it.

    Options: ``uoro``/``kf-rtrl``: ``eps``; ``rflo``: ``alpha``, ``feedback``; ``tbptt``: ``k``,
    ``fast``; ``snap-n`` (n ≥ 2): ``storage`` = ``auto`` (sparse when P_n keeps at most half of the
    (k, r) pairs), ``sparse`` (:class:`SnApN`) or ``dense`` (:class:`DenseSnApN`).

    Raises:
        ValueError: an unknown name or storage, or a model the algorithm does not define
            (``rflo``: one Elman layer; ``kf-rtrl``: one Elman or LSTM layer; none runs a
            bidirectional model). ``fast=False`` builds the cell-protocol form on an Elman
            layer too.
        TypeError: an option the algorithm does not take.
    """
    n = _snap_n(name)
    if n is not None and n >= 2:
        storage = options.pop("storage", "auto")
        if storage not in STORAGES:
            raise ValueError(f"snap-n storage must be one of {list(STORAGES)}, got {storage!r}")
        if storage == "auto":
            w_nz = np.ones((1, 1), bool) if model.w_mask is None else np.asarray(model.w_mask)
            sparse = snap_pattern(w_nz, n).mean() <= SPARSE_BELOW
            storage = "sparse" if sparse else "dense"
        cls = SnApN if storage == "sparse" else DenseSnApN
        alg: OnlineAlgorithm = cls(model, batch, seed, n=n, **options)
        alg.reset()
        return alg
    if not isinstance(name, str) or name not in _CLASSES:
        raise ValueError(f"online algorithm must be one of {list(ALGORITHMS)}, got {name!r}")
    alg = _CLASSES[name](model, batch, seed, **options)
    alg.reset()
    return alg


__all__ = [
    "ALGORITHMS",
    "KFRTRL",
    "RFLO",
    "RTRL",
    "UORO",
    "DenseSnApN",
    "OnlineAlgorithm",
    "OnlineTBPTT",
    "SnAp1",
    "SnApN",
    "carried_bytes",
    "make",
    "rng_from_array",
    "rng_to_array",
    "snap_pattern",
]
