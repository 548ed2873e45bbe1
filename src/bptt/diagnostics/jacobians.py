"""Norms of the state-Jacobian products against the lag, for any cell; the spectrum of W and the
Pascanu et al. (2013) condition for the Elman cell.

    J_i = ∂s_i/∂s_{i−1}          ‖∂s_t/∂s_{t−d}‖₂ = ‖J_t J_{t−1} ⋯ J_{t−d+1}‖₂

For the Elman cell J_i = diag(f_h'(E_i)) W, so ‖J_i‖₂ ≤ γ·σ_max(W) with γ = sup|f_h'|; for the
LSTM the state is s = [h ‖ c] and J_i holds the cell path ∂c_i/∂c_{i−1} = diag(f_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cells import ElmanCell
from ..model import RNN
from ..validation import check_max_lag
from .lags import Tick
from .trace import LayerSteps, check_layer, check_model, one_blas_thread, trace


@dataclass(frozen=True)
class JacobianReport:
    """‖Π_{i=t−d+1..t} J_i‖₂ against the lag d, per sequence; for the Elman cell with the
    spectrum of W.

    The product for lag d carries a gradient from s_t back to s_{t−d}; lag 0 is the identity
    (norm 1). The spectral fields are None for cells whose step Jacobian depends on gates
    (GRU, LSTM): no bound from the weights alone is computed for them.

    Attributes:
        origin: t, the step the products start from (T by default).
        log10_norms: (L, B) log₁₀ of the spectral norm per lag and sequence (−inf for an
            exactly zero product, e.g. all ReLU units off).
        cell: the cell's name.
        layer: the layer-direction (``l0``, ``l1_reverse``, …).
        singular_values: (H,) of W, descending, float64 (Elman).
        spectral_radius: max |λ(W)| (Elman).
        gamma: γ = sup |f_h'| of the hidden activation (Elman).
        activation: its name (Elman).
    """

    origin: int
    log10_norms: np.ndarray
    cell: str = "elman"
    layer: str = "l0"
    singular_values: np.ndarray | None = None
    spectral_radius: float | None = None
    gamma: float | None = None
    activation: str | None = None

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
    def log10_mean(self) -> np.ndarray:
        """(L,) log₁₀ of the batch-mean norm, computed without overflow."""
        top = np.max(self.log10_norms, axis=1)  # (L,)
        ref = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore", under="ignore"):
            rel = np.power(10.0, self.log10_norms - ref[:, None])  # (L, B) in (0, 1]
            return np.asarray(ref + np.log10(rel.mean(axis=1)))

    @property
    def has_spectrum(self) -> bool:
        """Whether the spectral fields (and the Pascanu et al. condition) are there (Elman)."""
        return self.singular_values is not None

    @property
    def sigma_max(self) -> float:
        """σ_max(W) (Elman; NaN for other cells)."""
        return float(self.singular_values[0]) if self.singular_values is not None else np.nan

    @property
    def step_bound(self) -> float:
        """γ·σ_max(W) ≥ ‖J_i‖₂ for every step: ‖Π‖ over d steps is at most (γ·σ_max)^d
        (Elman; NaN for other cells)."""
        return (self.gamma if self.gamma is not None else np.nan) * self.sigma_max

    @property
    def at_boundary(self) -> bool:
        """γ·σ_max(W) = 1 to a relative 1e−9 (e.g. an orthogonal or identity W with tanh/relu)."""
        return bool(abs(self.step_bound - 1.0) <= 1e-9)

    @property
    def vanishing_guaranteed(self) -> bool:
        """The Pascanu et al. (2013) sufficient condition for vanishing: σ_max(W) < 1/γ.

        A σ_max within 1e−9 (relative) of 1/γ counts as the boundary, not as below it, so that
        rounding in the SVD of an orthogonal W does not claim vanishing. False for cells
        without a computed bound.
        """
        return bool(self.step_bound < 1.0) and not self.at_boundary

    def rate(self) -> float:
        """The observed per-step factor: 10^slope of a least-squares line through
        log₁₀ of the batch-mean norm against lag (lags with a zero mean norm left out)."""
        y = self.log10_mean
        keep = np.isfinite(y)
        if keep.sum() < 2:
            return float("nan")
        slope = np.polyfit(self.lags[keep].astype(np.float64), y[keep], 1)[0]
        return float(10.0**slope)

    def statement(self) -> str:
        """The Pascanu et al. (2013) condition, in words, for this model (Elman); for a gated
        cell, what was measured."""
        if not self.has_spectrum:
            return (
                f"the {self.cell} cell's step Jacobian ∂s_t/∂s_(t−1) depends on its gates, so "
                "no bound from the weights alone is given (the Pascanu et al. 2013 condition is "
                f"for f(W h + V x)); measured: ‖∂s_t/∂s_(t−d)‖₂ shrinks or grows by a fitted "
                f"factor {self.rate():.3g} per step."
            )
        s, g = self.sigma_max, self.gamma
        assert g is not None
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


def spectral_norms(product: np.ndarray) -> np.ndarray:
    """‖P_b‖₂ for P (B, S, S): √λ_max(P_b P_bᵀ), the symmetric eigenproblem (a few times
    cheaper than the SVD, and as exact for the largest value: its error is ε‖P‖²)."""
    gram = product @ product.transpose(0, 2, 1)  # (B, S, S)
    top = np.linalg.eigvalsh(gram)[:, -1]
    return np.sqrt(np.maximum(top, 0.0))


def layer_jacobian_report(
    steps: LayerSteps,
    origin: int | None,
    max_lag: int | None,
    tick: Tick | None = None,
) -> JacobianReport:
    """:func:`jacobian_report` of one layer's steps (``max_lag`` already checked)."""
    T = steps.T
    t = T if origin is None else origin
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= T:
        raise ValueError(f"origin must be an int step in 1..T={T}, got {origin!r}")
    n_lags = t + 1 if max_lag is None else min(t, max_lag) + 1
    steps64 = steps.as_float64()
    B, S = steps.B, steps.S
    log10 = np.empty((n_lags, B))  # (L, B)
    log10[0] = 0.0
    product = np.broadcast_to(np.eye(S), (B, S, S)).copy()  # (B, S, S): P_0 = I
    scale = np.zeros(B)  # (B,): log₁₀ of the factor taken out of the product
    with one_blas_thread():  # many small (S, S) products and eigenproblems
        for d in range(1, n_lags):
            product = steps64.product_step(t - d + 1, product)  # P_d = P_{d−1} J_{t−d+1}
            norm = spectral_norms(product)  # (B,)
            alive = norm > 0
            safe = np.where(alive, norm, 1.0)
            scale = np.where(alive, scale + np.log10(safe), scale)
            log10[d] = np.where(alive, scale, -np.inf)
            product /= safe[:, None, None]
            if tick is not None:
                tick(1)
    spectrum: dict[str, object] = {}
    if isinstance(steps.cell, ElmanCell):
        W = steps64.p["W"]
        spectrum = {
            "singular_values": np.linalg.svd(W, compute_uv=False),  # (H,) descending
            "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(W)))),
            "gamma": float(steps.cell.activation.bound),
            "activation": steps.cell.activation.name,
        }
    return JacobianReport(
        origin=int(t),
        log10_norms=log10,
        cell=steps.cell.name,
        layer=steps.name,
        **spectrum,  # type: ignore[arg-type]
    )


def jacobian_report(
    model: RNN,
    x: object,
    h0: object = None,
    *,
    origin: int | None = None,
    max_lag: int | None = None,
    layer: int | str | None = None,
    fast_path: bool = True,
    tick: Tick | None = None,
) -> JacobianReport:
    """‖J_t J_{t−1} ⋯ J_{t−d+1}‖₂ for d = 0..min(t, max_lag), J_i = ∂s_i/∂s_{i−1}, any cell.

    The product is grown one factor at a time for all sequences at once,
    P_d = P_{d−1} J_{t−d+1}: each row of P is pushed back one step by the cell's ``vjp_state``
    (B·S rows), or for the Elman cell by the closed form P diag(f'_i) W. It is renormalised
    after each step with its log-norm kept aside, so neither vanishing nor exploding
    products under- or overflow. Computed in float64. Cost O(L·B·S³) for L lags.

    Args:
        model: any :class:`bptt.RNN`; x: (T, B, I) or ids (T, B); h0: the initial state.
        origin: t in 1..T, the step whose gradient is carried back (default T, the last).
        max_lag: the largest lag (default t, i.e. back to s_0).
        layer: the layer-direction (k = l·D + d or its name) of a deep or bidirectional model.
        fast_path: the Elman closed form where it applies (False: the cell protocol).
        tick: called with 1 after each lag.

    Raises:
        TypeError, ValueError: bad inputs, origin, max_lag or layer.
    """
    k = check_layer(check_model(model), layer)
    m = check_max_lag(max_lag)
    tr = trace(model, x, None, h0, fast_path=fast_path)
    return layer_jacobian_report(tr.layers[k], origin, m, tick)


def state_jacobian_norms(
    model: RNN,
    x: object,
    h0: object = None,
    *,
    origin: int | None = None,
    max_lag: int | None = None,
    layer: int | str | None = None,
) -> JacobianReport:
    """:func:`jacobian_report` (the name under which the gated cells' report first came)."""
    return jacobian_report(model, x, h0, origin=origin, max_lag=max_lag, layer=layer)
