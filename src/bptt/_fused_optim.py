"""One-pass (Numba) twins of the optimizers' updates, for :func:`bptt.optim.guarded_step`.

    Adagrad   s' = s + g²                     θ' = θ − η g / (√s' + ε)
    Adam      m' = β₁m + (1−β₁)g   v' = β₂v + (1−β₂)g·g
              θ' = θ − (η/(1−β₁ᵗ)) m' / (√v' / √(1−β₂ᵗ) + ε)
    SGD       θ' = θ − η g                    (no momentum)

Each kernel computes, element by element, exactly the expression of the NumPy ``_update`` it
replaces, in the same order and the same dtype (every Python scalar rounded to the array's
dtype first, as NumPy does with a Python float beside a float32 array), so the results are
bitwise equal (``tests/test_optim.py`` runs both). It writes into new arrays and reports
whether every new value is finite, in the same pass; the guard then commits or drops them.
The NumPy path does the same work in about ten array passes and as many temporaries per
parameter, which at min-char-rnn's size costs as much as the forward and backward step.

Only the plain variants are fused (no weight decay, no momentum, not AdamW); anything else,
or no Numba, returns None and the NumPy path runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._kernels import _load, cached_njit
from .params import Params

_compiled: dict[str, Callable[..., bool]] | None = None


def _adagrad_py(p, g, s, p2, s2, lr, eps, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    ok = True
    for i in range(p.size):
        gi = g[i]
        if c > 0:  # clip_grad_value, written back to g as np.clip would
            gi = min(max(gi, -c), c)
            g[i] = gi
        si = s[i] + gi * gi
        pi = p[i] - lr * gi / (np.sqrt(si) + eps)
        s2[i] = si
        p2[i] = pi
        ok &= math.isfinite(si) & math.isfinite(pi)
    return ok


def _adam_py(p, g, m, v, p2, m2, v2, b1, c1, b2, c2, sqrt_bc2, eps, step, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    ok = True
    for i in range(p.size):
        gi = g[i]
        if c > 0:
            gi = min(max(gi, -c), c)
            g[i] = gi
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        pi = p[i] - step * mi / (np.sqrt(vi) / sqrt_bc2 + eps)
        m2[i] = mi
        v2[i] = vi
        p2[i] = pi
        ok &= math.isfinite(mi) & math.isfinite(vi) & math.isfinite(pi)
    return ok


def _sgd_py(p, g, p2, lr, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    ok = True
    for i in range(p.size):
        gi = g[i]
        if c > 0:
            gi = min(max(gi, -c), c)
            g[i] = gi
        pi = p[i] - lr * gi
        p2[i] = pi
        ok &= math.isfinite(pi)
    return ok


def _kernels() -> dict[str, Callable[..., bool]] | None:
    global _compiled
    if _compiled is None and _load() is not None:
        options = dict(nogil=True, boundscheck=False, error_model="numpy")
        _compiled = {
            "adagrad": cached_njit(_adagrad_py, **options),
            "adam": cached_njit(_adam_py, **options),
            "sgd": cached_njit(_sgd_py, **options),
        }
    return _compiled


def _fusable(optimizer: Any) -> str | None:
    """The kernel name for this optimizer's plain variant, or None."""
    name = getattr(optimizer, "name", "")
    if getattr(optimizer, "weight_decay", 1.0) != 0.0:
        return None
    if name == "adagrad":
        return name
    if name == "adam" and not getattr(optimizer, "decoupled", True):
        return name
    if name == "sgd" and getattr(optimizer, "momentum", 1.0) == 0.0:
        return name
    return None


def can_fuse(optimizer: Any, params: Params, grads: Params) -> bool:
    """Whether :func:`fused_compute` will run (not return None) for these arrays."""
    if _fusable(optimizer) is None or _kernels() is None:
        return False
    for name, p in params.items():
        g = grads[name]
        if g.dtype != p.dtype or not (p.flags.c_contiguous and g.flags.c_contiguous):
            return False
    return True


def fused_compute(
    optimizer: Any, params: Params, grads: Params, lr: float | None, clip_value: float = 0.0
) -> tuple[Params, dict[str, dict[str, np.ndarray]], bool] | None:
    """``optimizer.compute`` in one pass per parameter, plus "is everything finite".

    ``clip_value`` > 0 first clips every gradient entry to ±clip_value in place, in the same
    pass (``clip_grad_value``'s result, for finite gradients).

    Returns:
        (new params, new slots, all finite), or None where no fused kernel applies (see
        :func:`can_fuse`); then nothing was touched.
    """
    if not can_fuse(optimizer, params, grads):
        return None
    kind = _fusable(optimizer)
    kernels = _kernels()
    assert kernels is not None
    lr = optimizer.lr if lr is None else lr
    t = optimizer.t + 1
    new_p: dict[str, np.ndarray] = {}
    new_slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in optimizer.slot_names}
    ok = True
    for name, p in params.items():
        g = grads[name]
        f = p.dtype.type  # every scalar rounded to the array's dtype, as NumPy does
        c = f(clip_value)
        p2 = np.empty_like(p)
        if kind == "adagrad":
            s = optimizer.slots["sum"].get(name)
            s = np.zeros_like(p) if s is None else s
            s2 = np.empty_like(p)
            ok &= kernels["adagrad"](
                p.ravel(), g.ravel(), s.ravel(), p2.ravel(), s2.ravel(), f(lr), f(optimizer.eps), c
            )
            new_slots["sum"][name] = s2
        elif kind == "adam":
            m = optimizer.slots["exp_avg"].get(name)
            v = optimizer.slots["exp_avg_sq"].get(name)
            m = np.zeros_like(p) if m is None else m
            v = np.zeros_like(p) if v is None else v
            m2, v2 = np.empty_like(p), np.empty_like(p)
            b1, b2 = optimizer.beta1, optimizer.beta2
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            ok &= kernels["adam"](
                p.ravel(), g.ravel(), m.ravel(), v.ravel(), p2.ravel(), m2.ravel(), v2.ravel(),
                f(b1), f(1 - b1), f(b2), f(1 - b2), f(math.sqrt(bc2)), f(optimizer.eps),
                f(lr / bc1), c,
            )  # fmt: skip
            new_slots["exp_avg"][name] = m2
            new_slots["exp_avg_sq"][name] = v2
        else:
            ok &= kernels["sgd"](p.ravel(), g.ravel(), p2.ravel(), f(lr), c)
        new_p[name] = p2
    return Params(new_p), new_slots, bool(ok)
