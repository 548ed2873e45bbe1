"""Online credit assignment: RTRL and its approximations behind one interface.

    alg = bptt.online.make(name, model, batch=B, seed=0, **options)
    alg.reset(h0=None)                                 # (B, H) like the model, zeros if None
    loss_t, grads_t = alg.step(x_t, y_t, mask_t=None)  # one step of every stream

``grads_t`` estimates dL_t/dθ under the model's parameter names (the head's U, b_y exactly);
with the weights held fixed, Σ_t grads_t estimates the whole stream's BPTT gradient.
``state_dict()`` / ``load_state_dict()`` save and restore everything (influence, traces, the
random generator), so a run resumes bit for bit.

    name       carries                          cost / step     exact?
    rtrl       M_t = J_t M_{t-1} + Ī_t           O(B H⁴)         yes
    snap-1     diag of M (k = r)                O(B H Q)        = RTRL when W is diagonal
    snap-2     M on the 2-step pattern of W     (as RTRL here)  = RTRL when the pattern is full
    uoro       rank one ã b̃ᵀ, random signs      O(B H Q)        unbiased
    kf-rtrl    u ⊗ A, random signs              O(B H³)         unbiased
    rflo       leaky diagonal trace, random B   O(B H Q)        biased
    tbptt      the last k steps, rerun          O(k B H²)       = BPTT when k ≥ T

See ``docs/online.md`` for the measurements against exact BPTT.
"""

from __future__ import annotations

from typing import Any

from ..model import RNN
from .base import OnlineAlgorithm, rng_from_array, rng_to_array
from .rflo import RFLO
from .rtrl import RTRL
from .snap import SnAp1, SnApN, snap_pattern
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


def carried_bytes(
    name: str, batch: int, input_size: int, hidden: int, itemsize: int, k: int
) -> int:
    """The peak bytes an algorithm's carried state takes (the table above; RTRL and SnAp-n keep
    two influences during a step), for a memory check before anything is allocated."""
    B, I, H = int(batch), int(input_size), int(hidden)
    Q = I + H + 1
    per_stream = {
        "rtrl": 2 * H * H * Q,
        "uoro": 3 * H * Q,
        "kf-rtrl": 3 * H * H + 2 * Q,
        "snap-1": 3 * H * Q,
        "rflo": 3 * H * Q,
        "tbptt": int(k) * (Q + H) + 2 * H,
    }.get(name, 2 * H * H * Q)  # snap-n (n >= 2) as RTRL
    return itemsize * B * per_stream


def make(name: str, model: RNN, batch: int = 1, seed: int = 0, **options: Any) -> OnlineAlgorithm:
    """Build the online algorithm ``name`` for ``model`` over ``batch`` streams, then reset it.

    Options: ``uoro``/``kf-rtrl``: ``eps``; ``rflo``: ``alpha``, ``feedback``; ``tbptt``: ``k``.

    Raises:
        ValueError: an unknown name, or a model the algorithm does not define (only ``tbptt``
            runs other cells and depths).
        TypeError: an option the algorithm does not take.
    """
    if isinstance(name, str) and name.startswith("snap-") and name[5:].isdigit():
        n = int(name[5:])
        if n >= 2:
            alg: OnlineAlgorithm = SnApN(model, batch, seed, n=n, **options)
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
