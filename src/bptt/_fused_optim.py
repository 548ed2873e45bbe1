"""One-pass (Numba) twins of the optimizers' updates, for :func:`bptt.optim.guarded_step`.

    Adagrad   s' = s + g²                     θ' = θ − η g / (√s' + ε)
    Adam      m' = β₁m + (1−β₁)g   v' = β₂v + (1−β₂)g·g
              θ' = θ − (η/(1−β₁ᵗ)) m' / (√v' / √(1−β₂ᵗ) + ε)
    SGD       θ' = θ − η g                    (no momentum)

Each kernel computes, element by element, exactly the expression of the NumPy ``_update`` it
replaces, in the same order and the same dtype (every Python scalar rounded to the array's
dtype first, as NumPy does with a Python float beside a float32 array), so the results are
bitwise equal (``tests/test_optim.py`` runs both). It writes into new arrays (from
:mod:`bptt._workspace`: the optimizer's previous slots are still held, so they are never handed
out as outputs, and Numba sees distinct arrays) and reports whether every new value is finite,
in the same pass; the guard then commits or drops them.
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

from . import _workspace
from ._kernels import cached_njit, numba_available
from .params import Params

_compiled: dict[str, Callable[..., bool]] | None = None


def _adagrad_py(ps, gs, ss, p2s, s2s, lr, eps, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    ok = True
    for k in range(len(ps)):  # every parameter in one call: tuples of flat arrays
        p, g, s, p2, s2 = ps[k], gs[k], ss[k], p2s[k], s2s[k]
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


def _adam_py(ps, gs, ms, vs, p2s, m2s, v2s, b1, c1, b2, c2, sqrt_bc2, eps, step, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    ok = True
    for k in range(len(ps)):
        p, g, m, v, p2, m2, v2 = ps[k], gs[k], ms[k], vs[k], p2s[k], m2s[k], v2s[k]
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


def _sgd_py(ps, gs, p2s, lr, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    ok = True
    for k in range(len(ps)):
        p, g, p2 = ps[k], gs[k], p2s[k]
        for i in range(p.size):
            gi = g[i]
            if c > 0:
                gi = min(max(gi, -c), c)
                g[i] = gi
            pi = p[i] - lr * gi
            p2[i] = pi
            ok &= math.isfinite(pi)
    return ok


def _sum_squares_py(gs):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Σ_k Σ_i gs[k][i]² in float64; compiled with ``reassoc`` alone so the sum vectorises
    (NaN and ±inf still propagate: no finite-math assumption)."""
    total = 0.0
    for k in range(len(gs)):
        g = gs[k]
        acc = 0.0
        for i in range(g.size):
            x = np.float64(g[i])
            acc += x * x
        total += acc
    return total


def _kernels() -> dict[str, Callable[..., bool]] | None:
    global _compiled
    if _compiled is None and numba_available():
        options = dict(nogil=True, boundscheck=False, error_model="numpy")
        _compiled = {
            "adagrad": cached_njit(_adagrad_py, **options),
            "adam": cached_njit(_adam_py, **options),
            "sgd": cached_njit(_sgd_py, **options),
            "sum_squares": cached_njit(_sum_squares_py, fastmath={"reassoc"}, **options),
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
    dtype = None
    for name, p in params.items():
        g = grads[name]
        if g.dtype != p.dtype or not (p.flags.c_contiguous and g.flags.c_contiguous):
            return False
        if dtype is not None and p.dtype != dtype:  # one call takes one dtype
            return False
        dtype = p.dtype
    return dtype is not None


def grad_sum_squares(grads: Params) -> float:
    """Σ g² over every array in float64, in one compiled call (``Params.global_norm()``² up
    to the order of the additions); NumPy per array without Numba."""
    kernels = _kernels()
    arrays = grads.arrays()
    if kernels is None or len({a.dtype for a in arrays}) != 1:
        return grads.global_norm() ** 2
    return float(kernels["sum_squares"](tuple(a.reshape(-1) for a in arrays)))


def fused_compute(
    optimizer: Any,
    params: Params,
    grads: Params,
    lr: float | None,
    clip_value: float = 0.0,
    *,
    checked: bool = False,
) -> tuple[Params, dict[str, dict[str, np.ndarray]], bool] | None:
    """``optimizer.compute`` in one compiled pass over every parameter, plus "all finite".

    ``clip_value`` > 0 first clips every gradient entry to ±clip_value in place, in the same
    pass (``clip_grad_value``'s result, for finite gradients). ``checked``: the caller has
    just seen :func:`can_fuse` say yes.

    Returns:
        (new params, new slots, all finite), or None where no fused kernel applies (see
        :func:`can_fuse`); then nothing was touched.
    """
    if not (checked or can_fuse(optimizer, params, grads)):
        return None
    kind = _fusable(optimizer)
    kernels = _kernels()
    assert kernels is not None
    lr = optimizer.lr if lr is None else lr
    t = optimizer.t + 1
    names = list(params)
    ps = tuple(params[n].reshape(-1) for n in names)
    gs = tuple(grads[n].reshape(-1) for n in names)

    def outputs() -> tuple[np.ndarray, ...]:  # one new array per parameter, from the pool
        small = _workspace.MIN_ELEMENTS
        return tuple(
            np.empty_like(p) if p.size < small else _workspace.empty(p.shape, p.dtype) for p in ps
        )

    p2s = outputs()
    f = ps[0].dtype.type  # every scalar rounded to the arrays' dtype, as NumPy does
    c = f(clip_value)
    new_slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in optimizer.slot_names}

    def slot(s: str) -> tuple[np.ndarray, ...]:  # the old slot arrays (zeros at first use)
        old = optimizer.slots[s]
        return tuple(
            old[n].reshape(-1) if n in old else np.zeros_like(p)
            for n, p in zip(names, ps, strict=True)
        )

    def adopt(s: str, arrays: tuple[np.ndarray, ...]) -> None:
        new_slots[s] = {n: a.reshape(params[n].shape) for n, a in zip(names, arrays, strict=True)}

    if kind == "adagrad":
        s2s = outputs()
        ok = kernels["adagrad"](ps, gs, slot("sum"), p2s, s2s, f(lr), f(optimizer.eps), c)
        adopt("sum", s2s)
    elif kind == "adam":
        m2s, v2s = outputs(), outputs()
        b1, b2 = optimizer.beta1, optimizer.beta2
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        ok = kernels["adam"](
            ps, gs, slot("exp_avg"), slot("exp_avg_sq"), p2s, m2s, v2s,
            f(b1), f(1 - b1), f(b2), f(1 - b2), f(math.sqrt(bc2)), f(optimizer.eps),
            f(lr / bc1), c,
        )  # fmt: skip
        adopt("exp_avg", m2s)
        adopt("exp_avg_sq", v2s)
    else:
        ok = kernels["sgd"](ps, gs, p2s, f(lr), c)
    new_p = Params.adopt({n: a.reshape(params[n].shape) for n, a in zip(names, p2s, strict=True)})
    return new_p, new_slots, bool(ok)
