"""Gradient-flow diagnostics: the BPTT sum taken apart, lag by lag.

With δ^{(t)}_k = dL_t/dE_k, the gradient of the loss at step t with respect to the
pre-activation at step k ≤ t (d = t − k is the lag):

    δ^{(t)}_t = (U^T dL/dz_t) ⊙ f_h'(E_t)                      (no carry: lag 0)
    δ^{(t)}_k = (W^T δ^{(t)}_{k+1}) ⊙ f_h'(E_k)                 (one more step back: lag + 1)

    dL/dW = Σ_d C_W[d]      C_W[d]   = Σ_k δ^{(k+d)}_k h_{k-1}^T      (the lag-d part)
    dL/dV = Σ_d C_V[d]      C_V[d]   = Σ_k δ^{(k+d)}_k x_k^T
    dL/db_h = Σ_d C_b[d]    C_b[d]   = Σ_k δ^{(k+d)}_k

The seed formula (:mod:`bptt.algorithms.seed_formula`) forms each term (t, k) with an explicit
product of step Jacobians J_i = diag(f_h'(E_i)) W; grouping its terms by t − k gives exactly
C[d].

Also here: dL/dh_t for every step, norms of the Jacobian products Π_{i=k+1..t} J_i against the
lag with the singular values of W and the Pascanu et al. (2013) condition, the bias of the
truncated gradient for every truncation length, and :class:`GradientProfileRecorder`, which
keeps the per-lag profile during training. Everything is NumPy; figures are in
:mod:`bptt.diagnostics.plots`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..cells.elman import input_projection_backward
from ..model import RNN, ElmanRNN
from ..validation import check_inputs, check_max_lag
from .cells import lag_contributions as cell_lag_contributions

RECURRENT_NAMES: tuple[str, ...] = ("W", "V", "b_h")


# -- the forward quantities every diagnostic needs ---------------------------------------


@dataclass(frozen=True)
class _Forward:
    """One validated forward pass, seen from one Elman layer (in one direction).

    For a one-layer model the layer's input is x and its direct gradient is U^T dL/dz_t. For
    a deep or bidirectional model, layer k = l·D + d reads the states of the layer below and
    its direct gradient is what arrives from above at each step; a reverse direction is seen
    in its own time order (its step 1 is the sequence's last).

    Attributes:
        x: (T, B, I) dense inputs or (T, B) ids: the layer's input sequence.
        hs: (T+1, B, H) hidden states, ``hs[0] = h_0``.
        fprime: (T, B, H) f_h'(E_t) for t = 1..T.
        direct: (T, B, H) ∂L/∂h_t arriving from above at step t only (no carry), t = 1..T.
        loss: L, a float.
        W: (H, H) the layer's recurrent weights.
        n_in: I of the layer (the vocabulary size for ids).
    """

    x: np.ndarray
    hs: np.ndarray
    fprime: np.ndarray
    direct: np.ndarray
    loss: float
    W: np.ndarray
    n_in: int

    @property
    def T(self) -> int:
        return int(self.fprime.shape[0])


def _check_model(model: object) -> ElmanRNN:
    if not isinstance(model, ElmanRNN):
        raise TypeError(
            f"model must be a bptt.ElmanRNN, got {type(model).__name__} (for any cell: "
            "bptt.diagnostics.cells.lag_contributions and state_jacobian_norms)"
        )
    model.validated_params()
    return model


def _check_layer(model: ElmanRNN, layer: object) -> int:
    """The layer-direction index k = l·D + d (0 for a one-layer, one-direction model)."""
    n = len(model.layers)
    if layer is None:
        if n == 1:
            return 0
        raise ValueError(
            f"this model has {n} layer-directions; pass layer=k with k = l·D + d in 0..{n - 1} "
            "(layer l, direction d: 0 forward, 1 reverse), or use layer_lag_contributions"
        )
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in 0..{n - 1}, got {layer!r}")
    return int(layer)


def layer_name(model: ElmanRNN, k: int) -> str:
    """``l0``, ``l1_reverse``, …: the suffix of layer-direction k's parameters."""
    layer = model.layers[k]
    return f"l{layer.index}" + ("_reverse" if layer.reverse else "")


def _forward_states(
    model: ElmanRNN, x: object, h0: object, layer: object = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated layer inputs, hidden states (T+1, B, H) and W of layer-direction ``layer``."""
    model = _check_model(model)
    k = _check_layer(model, layer)
    x_arr = check_inputs(x, model.input_size, model.dtype)
    sweep = model.forward_layers(model.params, x_arr, model.split_state(h0, x_arr.shape[1]))
    cache = sweep.caches[k]  # the Elman cell's cache: the inputs it read and its states
    return cache.x, cache.hs, model.layers[k].take(model.params)["W"]


def _forwards(model: ElmanRNN, x: object, y: object, h0: object, mask: object) -> list[_Forward]:
    """Forward pass, loss and the direct gradients ∂L/∂h_t (no carry) of every layer."""
    model = _check_model(model)
    x_arr = check_inputs(x, model.input_size, model.dtype)
    T, B = x_arr.shape[:2]
    y_arr = model.head.check_targets(y, (T, B), model.output_size, model.dtype)
    weight = model.loss_weights(mask, (T, B))  # (T, B): w_tb = mask_tb / B
    params = model.params
    sweep = model.forward_layers(params, x_arr, model.split_state(h0, B))
    loss, dz = model.head.loss_and_dz(model.head_logits(params, sweep.top), y_arr, weight)
    direct: dict[int, np.ndarray] = {}
    model.backward_layers(params, sweep, dz, [None] * len(model.layers), capture=direct)
    views = []
    for k, layer in enumerate(model.layers):
        cache = sweep.caches[k]  # the Elman cell's cache: the inputs it read and its states
        views.append(
            _Forward(
                x=cache.x,
                hs=cache.hs,
                fprime=model.activation.grad_from_output(cache.hs[1:]),  # (T, B, H)
                direct=direct[k],
                loss=loss,
                W=layer.take(params)["W"],
                n_in=layer.cell.input_size,
            )
        )
    return views


def _forward(
    model: ElmanRNN, x: object, y: object, h0: object, mask: object, layer: object = None
) -> _Forward:
    """:func:`_forwards` of one layer-direction (checked first, before any work)."""
    k = _check_layer(_check_model(model), layer)
    return _forwards(model, x, y, h0, mask)[k]


# -- per-lag contributions ---------------------------------------------------------------


def _lag_blocks(fwd: _Forward, W: np.ndarray, n_lags: int) -> Iterator[np.ndarray]:
    """Yield S_d for d = 0..n_lags−1, where S_d[k−1] = δ^{(k+d)}_k = dL_{k+d}/dE_k.

    S_0 = direct ⊙ f'         S_d[k] = (S_{d−1}[k+1] W) ⊙ f'_k   (row-vector form of W^T δ)

    Each S_d is (T−d, B, H): all origins t = k + d move back one step together, so one lag
    costs a single ((T−d)·B, H) × (H, H) product.
    """
    T, B, H = fwd.fprime.shape
    block = fwd.direct * fwd.fprime  # (T, B, H): S_0, dL_t/dE_t
    yield block
    for d in range(1, min(n_lags, T)):
        n = T - d
        nxt = (block[1:].reshape(n * B, H) @ W).reshape(n, B, H)  # (T−d, B, H)
        nxt *= fwd.fprime[:n]
        block = nxt
        yield block


def _remainder_block(fwd: _Forward, W: np.ndarray, last: np.ndarray) -> np.ndarray:
    """R[k−1] = Σ_{d > m} dL_{k+d}/dE_k for k = 1..T−m−1, from S_m = ``last`` (T−m, B, H).

    R_k = ((R_{k+1} + S_m[k+1]) W) ⊙ f'_k with R_{T−m} = 0: one sequential sweep, O(T·B·H²).
    """
    n = last.shape[0] - 1  # T − m − 1 weight uses receive lags ≥ m + 1
    B, H = last.shape[1:]
    rem = np.empty((n, B, H), dtype=last.dtype)  # (T−m−1, B, H)
    carry = np.zeros((B, H), dtype=last.dtype)  # (B, H): R_{k+1} + S_m[k+1]
    for k in range(n - 1, -1, -1):
        carry += last[k + 1]
        np.matmul(carry, W, out=rem[k])
        rem[k] *= fwd.fprime[k]
        carry = rem[k].copy()
    return rem


def _block_grads(
    block: np.ndarray, fwd: _Forward, n_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Σ_k s_k h_{k−1}^T, Σ_k s_k x_k^T, Σ_k s_k for a block s (n, B, H) of weight uses 1..n."""
    n, B, H = block.shape
    dW = block.reshape(n * B, H).T @ fwd.hs[:n].reshape(n * B, H)  # (H, H)
    dV, db = input_projection_backward(block, fwd.x[:n], n_in)  # (H, I), (H,)
    return dW, dV, db


def _frobenius(a: np.ndarray) -> np.ndarray:
    """‖a[l]‖_F for each leading index, accumulated in float64; returns (L,)."""
    flat = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    return np.sqrt(np.einsum("lp,lp->l", flat, flat))


@dataclass(frozen=True)
class LagContributions:
    """The lag-by-lag parts of dL/dW, dL/dV and dL/db_h.

    ``W[d]`` is Σ over (t, k) with t − k = d of the seed's term: the part of dL/dW that the
    loss at step t sends back to the use of W at step k. Summed over the first axis, each
    array is the full gradient.

    When ``max_lag`` is an int m, the arrays have L = m + 2 entries: ``[0..m]`` are the exact
    lag-d parts (exactly zero for lags d ≥ T, which have no terms) and ``[m + 1]`` is the
    *remainder*, the sum of every lag ≥ m + 1. With ``max_lag=None`` there is no remainder
    and L = T (lags 0..T−1).

    Attributes:
        W: (L, H, H). V: (L, H, I). b_h: (L, H).
        max_lag: m, or None.
        seq_len: T of the batch.
        loss: L on the batch.
    """

    W: np.ndarray
    V: np.ndarray
    b_h: np.ndarray
    max_lag: int | None
    seq_len: int
    loss: float

    @property
    def has_remainder(self) -> bool:
        return self.max_lag is not None

    @property
    def n_exact(self) -> int:
        """How many leading entries are single lags (all of them without a remainder)."""
        return self.W.shape[0] - int(self.has_remainder)

    @property
    def labels(self) -> list[str]:
        """``"0", "1", …`` and ``"≥m+1"`` for the remainder."""
        labels = [str(d) for d in range(self.n_exact)]
        if self.has_remainder:
            labels.append(f"≥{self.n_exact}")
        return labels

    def norms(self) -> dict[str, np.ndarray]:
        """Frobenius norm of each entry: ``{"W", "V", "b_h", "total"}`` → (L,) float64.

        ``total`` is the norm of the three parts stacked: √(‖W[d]‖² + ‖V[d]‖² + ‖b_h[d]‖²).
        """
        out = {name: _frobenius(getattr(self, name)) for name in RECURRENT_NAMES}
        out["total"] = np.sqrt(sum(out[name] ** 2 for name in RECURRENT_NAMES))
        return out


def lag_contributions(
    model: ElmanRNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    max_lag: int | None = None,
    layer: int | None = None,
) -> LagContributions:
    """C[d] = Σ_k δ^{(k+d)}_k (h_{k−1}, x_k, 1)^T: the lag-d parts of dL/dW, dL/dV, dL/db_h.

    Computed along the lag "diagonals": the (T, B, H) block of every origin's signal
    dL_t/dE_t is moved back one step at a time (S_d[k] = (S_{d−1}[k+1] W) ⊙ f'_k), so lag d
    costs one ((T−d)·B, H) × (H, H) product plus the (H, H) and (H, I) reductions.

    Cost: Σ_{d<L} (T−d)·B·(2H² + H·I) multiply-adds, i.e. O(L·T·B·H²) for L lags (about
    T²·B·H² for all lags — the same flops as one backward sweep per origin t, but as L large
    matrix products rather than T² small ones). With ``max_lag=m`` it is m + 1 lag products
    plus one ordinary O(T·B·H²) sweep for the remainder, so a short profile costs a few
    backward passes. Memory: two (T, B, H) blocks and the (L, H, H + I + 1) result.
    Measured (``benchmarks/bench_lag_contributions.py``, one BLAS thread, float64): all lags
    cost 10–55 ordinary sweeps for T = 100–200; 2.2× faster than the per-origin loop at H = 32,
    1.3× at H = 64, equal at H = 128 where both are bound by the same flops.

    Args:
        model: the RNN (its current parameters).
        x: (T, B, I) dense inputs or (T, B) ids; y: targets; h0: (B, H) or None;
            mask: (T, B) 0/1 or None — all as :meth:`ElmanRNN.loss_and_grads`.
        max_lag: None for every lag 0..T−1; an int m ≥ 0 for lags 0..m plus a final entry
            holding the sum of all lags ≥ m + 1 (see :class:`LagContributions`).
        layer: for a deep or bidirectional model, the layer-direction k = l·D + d whose
            recurrence is taken apart (lags within that layer, the gradient arriving from
            above at each step as the origin); None for a one-layer model.

    Returns:
        :class:`LagContributions`; ``.W.sum(0)`` equals ``model.loss_and_grads(...)[1].W``
        (likewise V, b_h) up to rounding, with or without ``max_lag``.

    Raises:
        ValueError, TypeError: bad inputs (as :meth:`ElmanRNN.loss_and_grads`) or max_lag.
    """
    m = check_max_lag(max_lag)
    return _lag_parts(_forward(model, x, y, h0, mask, layer), m)


def layer_lag_contributions(
    model: ElmanRNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    max_lag: int | None = None,
) -> dict[str, LagContributions]:
    """:func:`lag_contributions` of every layer-direction from one forward and backward.

    Returns:
        ``{"l0": …, "l0_reverse": …, "l1": …}`` (:func:`layer_name`), bottom layer first; for
        a one-layer, one-direction model the single entry ``"l0"``. Each entry's sums over
        lags are that layer's parameter gradients (``V_l1``, ``W_l1``, ``b_h_l1``, …).
    """
    m = check_max_lag(max_lag)
    views = _forwards(model, x, y, h0, mask)
    return {layer_name(model, k): _lag_parts(fwd, m) for k, fwd in enumerate(views)}


def _lag_parts(fwd: _Forward, m: int | None) -> LagContributions:
    """The lag-by-lag parts of one layer's dL/dW, dL/dV, dL/db_h (see lag_contributions)."""
    T = fwd.T
    H, I = fwd.W.shape[0], fwd.n_in
    n_exact = T if m is None else m + 1
    L = n_exact + (0 if m is None else 1)
    dtype = fwd.W.dtype
    out_W = np.zeros((L, H, H), dtype=dtype)  # (L, H, H)
    out_V = np.zeros((L, H, I), dtype=dtype)  # (L, H, I)
    out_b = np.zeros((L, H), dtype=dtype)  # (L, H)
    W = fwd.W
    last = None
    for d, block in enumerate(_lag_blocks(fwd, W, n_exact)):
        out_W[d], out_V[d], out_b[d] = _block_grads(block, fwd, I)
        last = block
    if m is not None and last is not None and T > m + 1:
        rem = _remainder_block(fwd, W, last)  # (T−m−1, B, H)
        out_W[-1], out_V[-1], out_b[-1] = _block_grads(rem, fwd, I)
    return LagContributions(W=out_W, V=out_V, b_h=out_b, max_lag=m, seq_len=T, loss=fwd.loss)


# -- hidden-state gradients --------------------------------------------------------------


@dataclass(frozen=True)
class HiddenStateGradients:
    """dL/dh_t for t = 0..T and dL/dE_t for t = 1..T.

    L is the batch loss (summed over time, averaged over the batch), so each sequence's
    gradient carries the factor 1/B.

    Attributes:
        dh: (T+1, B, H), ``dh[t]`` = dL/dh_t (``dh[0]`` = dL/dh_0, the ``grads.h0`` of the model).
        delta: (T, B, H), ``delta[t−1]`` = dL/dE_t.
    """

    dh: np.ndarray
    delta: np.ndarray

    def norms(self, reduce: str | None = "mean") -> np.ndarray:
        """‖dL/dh_t‖₂ per sequence, then ``"mean"`` or ``"max"`` over the batch, or None.

        Returns:
            (T+1,) or, for ``reduce=None``, (T+1, B); float64.
        """
        per_seq = np.sqrt(np.einsum("tbh,tbh->tb", self.dh, self.dh, dtype=np.float64))
        if reduce is None:
            return per_seq
        if reduce == "mean":
            return per_seq.mean(axis=1)
        if reduce == "max":
            return per_seq.max(axis=1)
        raise ValueError(f"reduce must be 'mean', 'max' or None, got {reduce!r}")


def _hidden_backward(fwd: _Forward, W: np.ndarray) -> HiddenStateGradients:
    """dL/dh_t = ∂L_t/∂h_t + W^T δ_{t+1},  δ_t = dL/dh_t ⊙ f'(E_t), from t = T down to 0."""
    T, B, H = fwd.direct.shape
    dh = np.empty((T + 1, B, H), dtype=fwd.direct.dtype)  # (T+1, B, H)
    delta = np.empty_like(fwd.direct)  # (T, B, H)
    carry = np.zeros((B, H), dtype=fwd.direct.dtype)  # (B, H): W^T δ_{t+1}
    for t in range(T, 0, -1):
        np.add(fwd.direct[t - 1], carry, out=dh[t])
        np.multiply(dh[t], fwd.fprime[t - 1], out=delta[t - 1])
        np.matmul(delta[t - 1], W, out=carry)
    dh[0] = carry
    return HiddenStateGradients(dh=dh, delta=delta)


def hidden_state_gradients(
    model: ElmanRNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    layer: int | None = None,
) -> HiddenStateGradients:
    """dL/dh_t = U^T dL/dz_t + W^T δ_{t+1} for t = 0..T (no output term at t = 0).

    One backward sweep, O(T·B·H²). Arguments as :meth:`ElmanRNN.loss_and_grads`; ``layer``
    as for :func:`lag_contributions` (the direct term is then what arrives from above).
    """
    fwd = _forward(model, x, y, h0, mask, layer)
    return _hidden_backward(fwd, fwd.W)


# -- Jacobian products and the spectrum of W ---------------------------------------------


@dataclass(frozen=True)
class JacobianReport:
    """‖Π_{i=t−d+1..t} J_i‖₂ against the lag d, with the spectrum of W.

    J_i = ∂h_i/∂h_{i−1} = diag(f_h'(E_i)) W. The product for lag d carries a gradient from
    h_t back to h_{t−d}; lag 0 is the identity (norm 1).

    Attributes:
        origin: t, the step the products start from (T by default).
        log10_norms: (L, B) log₁₀ of the spectral norm per lag and sequence (−inf for an
            exactly zero product, e.g. all ReLU units off).
        singular_values: (H,) of W, descending, float64.
        spectral_radius: max |λ(W)|.
        gamma: γ = sup |f_h'| of the hidden activation.
        activation: its name.
    """

    origin: int
    log10_norms: np.ndarray
    singular_values: np.ndarray
    spectral_radius: float
    gamma: float
    activation: str

    @property
    def lags(self) -> np.ndarray:
        return np.arange(self.log10_norms.shape[0])

    def _norms(self) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return np.power(10.0, self.log10_norms)  # (L, B); inf beyond float64 range

    @property
    def norm_mean(self) -> np.ndarray:
        """(L,) the arithmetic mean over the batch of the per-sequence spectral norms."""
        return self._norms().mean(axis=1)

    @property
    def norm_max(self) -> np.ndarray:
        """(L,) the largest per-sequence spectral norm."""
        return self._norms().max(axis=1)

    @property
    def sigma_max(self) -> float:
        return float(self.singular_values[0])

    @property
    def step_bound(self) -> float:
        """γ·σ_max(W) ≥ ‖J_i‖₂ for every step: ‖Π‖ over d steps is at most (γ·σ_max)^d."""
        return self.gamma * self.sigma_max

    @property
    def at_boundary(self) -> bool:
        """γ·σ_max(W) = 1 to a relative 1e−9 (e.g. an orthogonal or identity W with tanh/relu)."""
        return abs(self.step_bound - 1.0) <= 1e-9

    @property
    def vanishing_guaranteed(self) -> bool:
        """The Pascanu et al. (2013) sufficient condition for vanishing: σ_max(W) < 1/γ.

        A σ_max within 1e−9 (relative) of 1/γ counts as the boundary, not as below it, so that
        rounding in the SVD of an orthogonal W does not claim vanishing.
        """
        return self.step_bound < 1.0 and not self.at_boundary

    def rate(self) -> float:
        """The observed per-step factor: 10^slope of a least-squares line through
        log₁₀ of the batch-mean norm against lag (lags with a zero mean norm left out)."""
        with np.errstate(divide="ignore"):
            y = np.log10(self.norm_mean)
        keep = np.isfinite(y)
        if keep.sum() < 2:
            return float("nan")
        slope = np.polyfit(self.lags[keep].astype(np.float64), y[keep], 1)[0]
        return float(10.0**slope)

    def statement(self) -> str:
        """The Pascanu et al. (2013) condition, in words, for this model."""
        s, g = self.sigma_max, self.gamma
        head = (
            f"largest singular value of W σ_max = {s:.4g}, γ = sup|f'| = {g:g} "
            f"({self.activation}), 1/γ = {1.0 / g:g}, spectral radius ρ(W) = "
            f"{self.spectral_radius:.4g}. "
        )
        if self.vanishing_guaranteed:
            return head + (
                f"σ_max < 1/γ: the Pascanu et al. (2013) sufficient condition for vanishing "
                f"gradients holds. Every step Jacobian has ‖J‖₂ ≤ γ·σ_max = {self.step_bound:.4g}"
                f" < 1, so a gradient sent back d steps shrinks at least as fast as "
                f"{self.step_bound:.4g}^d, whatever the inputs."
            )
        if self.at_boundary:
            return head + (
                "σ_max = 1/γ: on the boundary of the Pascanu et al. (2013) sufficient condition "
                "for vanishing. Every step Jacobian has ‖J‖₂ ≤ γ·σ_max = 1, so the products "
                "cannot grow, but they need not shrink either: that depends on the activations "
                "f'(E_t) along the sequence."
            )
        return head + (
            f"σ_max > 1/γ: the sufficient condition for vanishing does not hold, so "
            f"vanishing is not guaranteed by W alone; whether the products shrink depends on "
            f"the activations f'(E_t) along the sequence (the measured norms say). σ_max > 1/γ "
            f"is also the necessary condition for exploding gradients: products can grow by "
            f"at most γ·σ_max = {self.step_bound:.4g} per step."
        )


def jacobian_report(
    model: ElmanRNN,
    x: object,
    h0: object = None,
    *,
    origin: int | None = None,
    max_lag: int | None = None,
    layer: int | None = None,
) -> JacobianReport:
    """‖J_t J_{t−1} ⋯ J_{t−d+1}‖₂ for d = 0..min(t, max_lag), J_i = diag(f_h'(E_i)) W.

    The product is grown one factor at a time for all sequences at once, P_d = P_{d−1} J_{t−d+1}
    (a column scaling and a (B, H, H) × (H, H) product), and renormalised after each step with
    its log-norm kept aside, so neither vanishing nor exploding products under- or overflow.
    Computed in float64. Cost O(L·B·H³) (one SVD-based 2-norm per lag and sequence).

    Args:
        model: the RNN; x: (T, B, I) or ids (T, B); h0: (B, H) or None.
        origin: t in 1..T, the step whose gradient is carried back (default T, the last).
        max_lag: the largest lag (default t, i.e. back to h_0).
        layer: the layer-direction k = l·D + d of a deep or bidirectional model.

    Raises:
        ValueError, TypeError: bad inputs, origin or max_lag.
    """
    _, hs, W_layer = _forward_states(model, x, h0, layer)
    T = hs.shape[0] - 1
    t = T if origin is None else origin
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= T:
        raise ValueError(f"origin must be an int step in 1..T={T}, got {origin!r}")
    m = check_max_lag(max_lag)
    n_lags = t + 1 if m is None else min(t, m) + 1
    fprime = model.activation.grad_from_output(hs[1:]).astype(np.float64)  # (T, B, H)
    W = W_layer.astype(np.float64)
    B, H = fprime.shape[1:]
    log10 = np.empty((n_lags, B))  # (L, B)
    log10[0] = 0.0
    product = np.broadcast_to(np.eye(H), (B, H, H)).copy()  # (B, H, H): P_0 = I
    scale = np.zeros(B)  # (B,): log₁₀ of the factor taken out of the product
    for d in range(1, n_lags):
        i = t - d + 1  # the step whose Jacobian is appended: P_d = P_{d−1} diag(f'_i) W
        product *= fprime[i - 1][:, None, :]
        product = product @ W  # (B, H, H)
        norm = np.linalg.norm(product, ord=2, axis=(1, 2))  # (B,)
        alive = norm > 0
        with np.errstate(divide="ignore"):
            log10[d] = np.where(alive, scale + np.log10(np.where(alive, norm, 1.0)), -np.inf)
        product /= np.where(alive, norm, 1.0)[:, None, None]
        scale = np.where(alive, scale + np.log10(np.where(alive, norm, 1.0)), scale)
    singular_values = np.linalg.svd(W, compute_uv=False)  # (H,) descending
    radius = float(np.max(np.abs(np.linalg.eigvals(W))))
    return JacobianReport(
        origin=int(t),
        log10_norms=log10,
        singular_values=singular_values,
        spectral_radius=radius,
        gamma=float(model.activation.bound),
        activation=model.activation.name,
    )


# -- truncation bias ---------------------------------------------------------------------


@dataclass(frozen=True)
class TruncationBias:
    """How far the k2-truncated gradient is from the full one, for k2 = 1..T.

    The truncated gradient keeps, for every loss L_t, only the paths of lag t − k < k2:
    g(k2) = Σ_{d<k2} C[d] (Williams & Peng's BPTT(h=k2) applied to each step's loss). For a
    sequence of length T, g(T) is the full gradient. Compared over W, V, b_h and all three
    stacked (``"all"``); dL/dU and dL/db_y do not depend on k2.

    Attributes:
        k2: (T,) 1..T.
        cosine: name → (T,) cos∠(g(k2), g); NaN where either is zero.
        rel_error: name → (T,) ‖g(k2) − g‖ / ‖g‖; NaN where g is zero.
    """

    k2: np.ndarray
    cosine: dict[str, np.ndarray]
    rel_error: dict[str, np.ndarray]


def truncation_bias(
    model: ElmanRNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    layer: int | None = None,
) -> TruncationBias:
    """cos∠(g(k2), g) and ‖g(k2) − g‖/‖g‖ with g(k2) = Σ_{d<k2} C[d], for k2 = 1..T.

    The full gradient g comes from one ordinary backward sweep; the partial sums are built
    lag by lag as in :func:`lag_contributions` without storing them (O(T²·B·H²) time,
    O(T·B·H + H² + H·I) memory). Arguments as :meth:`ElmanRNN.loss_and_grads`.
    """
    fwd = _forward(model, x, y, h0, mask, layer)
    T = fwd.T
    I = fwd.n_in
    W = fwd.W
    full_delta = _hidden_backward(fwd, W).delta  # (T, B, H)
    full = dict(zip(RECURRENT_NAMES, _block_grads(full_delta, fwd, I), strict=True))
    partial = {name: np.zeros_like(full[name]) for name in RECURRENT_NAMES}
    names = (*RECURRENT_NAMES, "all")
    dots = {name: np.zeros(T) for name in names}  # ⟨g(k2), g⟩
    sq_partial = {name: np.zeros(T) for name in names}  # ‖g(k2)‖²
    sq_diff = {name: np.zeros(T) for name in names}  # ‖g(k2) − g‖²

    def f64(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float64, copy=False).ravel()

    for d, block in enumerate(_lag_blocks(fwd, W, T)):
        for name, part in zip(RECURRENT_NAMES, _block_grads(block, fwd, I), strict=True):
            partial[name] += part
            p, g = f64(partial[name]), f64(full[name])
            dots[name][d] = p @ g
            sq_partial[name][d] = p @ p
            sq_diff[name][d] = (p - g) @ (p - g)
        for acc in (dots, sq_partial, sq_diff):
            acc["all"][d] = sum(acc[name][d] for name in RECURRENT_NAMES)
    sq_full = {name: float(f64(full[name]) @ f64(full[name])) for name in RECURRENT_NAMES}
    sq_full["all"] = sum(sq_full[name] for name in RECURRENT_NAMES)
    cosine, rel_error = {}, {}
    for name in names:
        denom = np.sqrt(sq_partial[name] * sq_full[name])
        cosine[name] = np.divide(dots[name], denom, out=np.full(T, np.nan), where=denom > 0).clip(
            -1.0, 1.0
        )
        rel_error[name] = (
            np.sqrt(sq_diff[name] / sq_full[name]) if sq_full[name] > 0 else np.full(T, np.nan)
        )
    return TruncationBias(k2=np.arange(1, T + 1), cosine=cosine, rel_error=rel_error)


# -- recording the profile during training -----------------------------------------------


def _to_json_list(a: np.ndarray) -> list[float | None]:
    """Floats for JSON; NaN and ±inf become null (strict JSON has no such numbers)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


def _from_json_list(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


class GradientProfileRecorder:
    """Keeps the per-lag gradient norms every ``every`` training steps.

    At each recorded step, :func:`lag_contributions` is run on the given batch and its
    :meth:`LagContributions.norms` are kept, so a user sees vanishing or exploding gradients
    develop over training. Each record costs O(L·T·B·H²) (see :func:`lag_contributions`); pass
    ``max_lag`` to bound it, the lags beyond it then appear as one remainder entry.

    Args:
        every: record when ``step % every == 0``.
        max_lag: passed to :func:`lag_contributions` (None: all lags).

    Attributes:
        steps: the recorded steps.
        losses: the batch loss at each recorded step.
        history: ``{"W", "V", "b_h", "total"}`` → one (L,) float64 array per record.
        labels: the lag labels of each record (``"0"``, …, ``"≥m+1"``).
    """

    FORMAT = "bptt-gradient-profile"
    VERSION = 1

    def __init__(self, every: int, max_lag: int | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = int(every)
        self.max_lag = check_max_lag(max_lag)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.labels: list[list[str]] = []
        self.history: dict[str, list[np.ndarray]] = {
            name: [] for name in (*RECURRENT_NAMES, "total")
        }

    def __len__(self) -> int:
        return len(self.steps)

    def maybe_record(
        self,
        step: int,
        model: RNN,
        x: object,
        y: object,
        h0: object = None,
        mask: object = None,
    ) -> bool:
        """Record the per-lag norms on this batch if ``step % every == 0``; say whether it did.

        Any one-layer, one-direction model: the Elman cell through :func:`lag_contributions`,
        others through :func:`bptt.diagnostics.cells.lag_contributions`.
        """
        if step % self.every != 0:
            return False
        if isinstance(model, ElmanRNN) and model.simple:
            contrib: Any = lag_contributions(model, x, y, h0, mask, max_lag=self.max_lag)
            norms = contrib.norms()
        else:  # another cell: its V, W, and all its biases under "b_h" (b, b_hn for the GRU)
            contrib = cell_lag_contributions(model, x, y, h0, mask, max_lag=self.max_lag)
            by_name = contrib.norms()
            biases = [by_name[k] ** 2 for k in contrib.parts if k.startswith("b")]
            norms = {"W": by_name["W"], "V": by_name["V"], "b_h": np.sqrt(sum(biases))}
            norms["total"] = by_name["total"]
        for name, values in norms.items():
            self.history[name].append(values)
        self.steps.append(int(step))
        self.losses.append(contrib.loss)
        self.labels.append(contrib.labels)
        return True

    def matrix(self, name: str = "total") -> np.ndarray:
        """(n_records, L_max) norms of ``name``, NaN-padded where a record has fewer lags."""
        if name not in self.history:
            raise ValueError(f"name must be one of {sorted(self.history)}, got {name!r}")
        rows = self.history[name]
        width = max((len(r) for r in rows), default=0)
        out = np.full((len(rows), width), np.nan)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "every": self.every,
            "max_lag": self.max_lag,
            "steps": list(self.steps),
            "losses": _to_json_list(np.array(self.losses)),
            "labels": [list(row) for row in self.labels],
            "norms": {
                name: [_to_json_list(row) for row in rows] for name, rows in self.history.items()
            },
        }

    def to_json(self) -> str:
        """The record as strict JSON (NaN and inf written as null)."""
        return json.dumps(self.to_dict(), allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradientProfileRecorder:
        """Rebuild a recorder from :meth:`to_dict` output.

        Raises:
            ValueError: not a gradient profile, or its lists disagree in length.
        """
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise ValueError(f"not a {cls.FORMAT} record (missing or wrong 'format' field)")
        if data.get("version") != cls.VERSION:
            raise ValueError(
                f"gradient profile version {data.get('version')!r} is not supported "
                f"(expected {cls.VERSION})"
            )
        rec = cls(every=int(data["every"]), max_lag=data["max_lag"])
        rec.steps = [int(s) for s in data["steps"]]
        rec.losses = [float(v) for v in _from_json_list(data["losses"])]
        rec.labels = [list(row) for row in data["labels"]]
        n = len(rec.steps)
        for name in rec.history:
            rows = data["norms"][name]
            if len(rows) != n:
                raise ValueError(
                    f"gradient profile has {n} steps but {len(rows)} rows of {name!r} norms"
                )
            rec.history[name] = [_from_json_list(row) for row in rows]
        if len(rec.losses) != n or len(rec.labels) != n:
            raise ValueError("gradient profile: steps, losses and labels differ in length")
        return rec

    @classmethod
    def from_json(cls, text: str) -> GradientProfileRecorder:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (temporary file in the same folder, then os.replace)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GradientProfileRecorder:
        """Read :meth:`save` output.

        Raises:
            ValueError: naming the file, when it is not a readable gradient profile.
        """
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (KeyError, TypeError, ValueError, RecursionError) as err:
            raise ValueError(f"{str(path)!r} is not a readable gradient profile: {err}") from None
