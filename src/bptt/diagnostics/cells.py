"""The BPTT sum taken apart lag by lag for any cell, through the cell's Jacobian products.

For one layer in one direction, s_t = F_θ(x_t, s_{t-1}) and L = Σ_t L_t(h_t). With
g^{(t)}_k = dL_t/ds_k, the gradient of the loss at step t with respect to the state at step
k ≤ t (lag d = t − k):

    g^{(t)}_t = ∂L_t/∂s_t                     (through the head only: [Uᵀ dL/dz_t ‖ 0])
    g^{(t)}_k = g^{(t)}_{k+1} ∂s_{k+1}/∂s_k   (one step further back: :meth:`Cell.vjp_state`)

    dL/dθ = Σ_d C[d]        C[d] = Σ_k g^{(k+d)}_kᵀ ∂s_k/∂θ      (:meth:`Cell.vjp_params`)

For the Elman cell this is :func:`bptt.diagnostics.lag_contributions` (there in closed form,
δ = g ⊙ f'); here it holds for every cell, and the LSTM's state s = [h ‖ c] carries the
gradient along the cell path ∂c_k/∂c_{k-1} = diag(f_k) as well as through W.

Also here: the norms ‖∂s_t/∂s_{t−d}‖₂ of the state-Jacobian products against the lag, built
from :meth:`Cell.state_jacobian`, and :func:`lag_profile`, the one number per lag that the
figure of tanh RNN, GRU and LSTM side by side draws.

All steps of a lag move together: the operating points of steps 1..T are stacked into one
(T·B)-row :class:`~bptt.cells.StepArgs`, so lag d costs one Jacobian product over (T−d)·B
rows rather than T − d small ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _kernels
from ..cells import Cell, StepArgs
from ..model import RNN
from ..validation import check_inputs, check_max_lag


@dataclass(frozen=True)
class _Sweep:
    """A validated forward pass of a one-layer model, stacked over steps.

    Attributes:
        cell, p: the cell and its parameters (local names).
        at: every step's operating point, (T·B)-row StepArgs in time order.
        direct: (T, B, S) ∂L_t/∂s_t through the head only.
        loss: L.
        T, B: sizes.
    """

    cell: Cell
    p: dict[str, np.ndarray]
    at: StepArgs
    direct: np.ndarray
    loss: float
    T: int
    B: int

    def rows(self, first: int, stop: int) -> StepArgs:
        """The operating points of steps first..stop−1 (1-based steps; stop exclusive)."""
        a, b = (first - 1) * self.B, (stop - 1) * self.B
        return StepArgs(x=self.at.x[a:b], s_prev=self.at.s_prev[a:b], s=self.at.s[a:b])


def _one_layer(model: object) -> RNN:
    if not isinstance(model, RNN):
        raise TypeError(f"model must be a bptt.RNN, got {type(model).__name__}")
    if not model.simple:
        raise ValueError(
            "lag diagnostics take one layer in one direction; got "
            f"num_layers={model.num_layers}, bidirectional={model.bidirectional}"
        )
    model.validated_params()
    return model


def _states(model: RNN, x: object, h0: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated inputs and the states s_0..s_T (T+1, B, S), one step at a time."""
    model = _one_layer(model)
    x_arr = check_inputs(x, model.input_size, model.dtype)
    T, B = x_arr.shape[:2]
    layer = model.layers[0]
    p = layer.take(model.params)
    states = np.empty((T + 1, B, layer.cell.state_size), dtype=model.dtype)  # (T+1, B, S)
    states[0] = model.split_state(h0, B)[0]
    for t in range(T):
        states[t + 1] = layer.cell.step(p, x_arr[t], states[t])
    return x_arr, states


def _sweep(model: RNN, x: object, y: object, h0: object, mask: object) -> _Sweep:
    x_arr, states = _states(model, x, h0)
    T, B, S = states.shape[0] - 1, states.shape[1], states.shape[2]
    layer = model.layers[0]
    y_arr = model.head.check_targets(y, (T, B), model.output_size, model.dtype)
    weight = model.loss_weights(mask, (T, B))
    H = model.hidden_size
    z = model.head_logits(model.params, np.ascontiguousarray(states[1:, :, :H]))  # (T, B, O)
    loss, dz = model.head.loss_and_dz(z, y_arr, weight)
    direct = np.zeros((T, B, S), dtype=model.dtype)  # (T, B, S): [Uᵀ dL/dz_t ‖ 0]
    direct[..., :H] = (dz.reshape(T * B, -1) @ model.params["U"]).reshape(T, B, H)
    xs = x_arr.reshape(T * B, *x_arr.shape[2:])
    at = StepArgs(x=xs, s_prev=states[:-1].reshape(T * B, S), s=states[1:].reshape(T * B, S))
    return _Sweep(layer.cell, layer.take(model.params), at, direct, loss, T, B)


def _lag_blocks(sw: _Sweep, n_lags: int):  # type: ignore[no-untyped-def]
    """Yield G_d (T−d, B, S) for d = 0..n_lags−1, G_d[k−1] = dL_{k+d}/ds_k for k = 1..T−d.

    G_0 = direct;  G_d[k] = G_{d−1}[k+1] ∂s_{k+1}/∂s_k, all k at once (one vjp_state over
    (T−d)·B rows at the operating points of steps 2..T−d+1).
    """
    T, B = sw.T, sw.B
    block = sw.direct
    yield block
    for d in range(1, min(n_lags, T)):
        n = T - d
        u = block[1:].reshape(n * B, -1)
        block = sw.cell.vjp_state(sw.p, sw.rows(2, n + 2), u).reshape(n, B, -1)
        yield block


def _block_params(sw: _Sweep, block: np.ndarray) -> dict[str, np.ndarray]:
    """Σ_k block[k−1]ᵀ ∂s_k/∂θ for a block over steps 1..n."""
    n = block.shape[0]
    return sw.cell.vjp_params(sw.p, sw.rows(1, n + 1), block.reshape(n * sw.B, -1))


def _remainder(sw: _Sweep, last: np.ndarray) -> np.ndarray:
    """R[k−1] = Σ_{d > m} dL_{k+d}/ds_k for k = 1..T−m−1, from G_m = ``last`` (T−m, B, S).

    R_k = (R_{k+1} + G_m[k+1]) ∂s_{k+1}/∂s_k, R_{T−m} = 0: one sequential sweep.
    """
    n = last.shape[0] - 1
    rem = np.empty((n, *last.shape[1:]), dtype=last.dtype)
    carry = np.zeros(last.shape[1:], dtype=last.dtype)  # (B, S)
    for k in range(n - 1, -1, -1):  # rem[k] is the state of step k + 1
        carry = carry + last[k + 1]
        rem[k] = sw.cell.vjp_state(sw.p, sw.rows(k + 2, k + 3), carry)
        carry = rem[k]
    return rem


def _frobenius(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    return np.sqrt(np.einsum("lp,lp->l", flat, flat))


@dataclass(frozen=True)
class CellLagContributions:
    """The lag-by-lag parts of the recurrent layer's gradient, for any cell.

    ``parts[name][d]`` is the part of dL/dθ (θ = the cell's parameter ``name``, local name)
    that the losses at steps t send back through t − d = k. Summed over the first axis, each
    array is the full gradient. With ``max_lag`` = m the arrays have m + 2 entries, the last
    the sum of every lag ≥ m + 1; with None, T entries (lags 0..T−1).

    Attributes:
        parts: local name → (L, *shape).
        max_lag: m or None.
        seq_len: T.
        loss: L on the batch.
    """

    parts: dict[str, np.ndarray]
    max_lag: int | None
    seq_len: int
    loss: float

    @property
    def n_exact(self) -> int:
        first = next(iter(self.parts.values()))
        return int(first.shape[0]) - int(self.max_lag is not None)

    @property
    def labels(self) -> list[str]:
        labels = [str(d) for d in range(self.n_exact)]
        if self.max_lag is not None:
            labels.append(f"≥{self.n_exact}")
        return labels

    def norms(self) -> dict[str, np.ndarray]:
        """‖parts[name][d]‖_F per entry, and ``total`` = √Σ_name ‖·‖²; each (L,) float64."""
        out = {name: _frobenius(a) for name, a in self.parts.items()}
        out["total"] = np.sqrt(sum(v**2 for v in out.values()))
        return out


def lag_contributions(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    max_lag: int | None = None,
) -> CellLagContributions:
    """C[d] = Σ_k g^{(k+d)}_kᵀ ∂s_k/∂θ for d = 0..T−1 (or 0..m and the rest), any cell.

    Args:
        model: a one-layer, one-direction :class:`~bptt.model.RNN` (any cell).
        x, y, h0, mask: as :meth:`RNN.loss_and_grads` (h0 a tuple (h0, c0) for the LSTM).
        max_lag: None for every lag; m ≥ 0 for lags 0..m plus one entry for all lags > m.

    Cost: lag d is one vjp_state and one vjp_params over (T−d)·B rows, each about one
    forward step's work per row (the gates are recomputed), so all lags cost O(T²·B·H²).

    Raises:
        ValueError: a deeper or bidirectional model, bad inputs or max_lag.
    """
    m = check_max_lag(max_lag)
    sw = _sweep(_one_layer(model), x, y, h0, mask)
    T = sw.T
    n_exact = T if m is None else m + 1
    shapes = sw.cell.param_shapes()
    L = n_exact + (0 if m is None else 1)
    parts = {name: np.zeros((L, *shape), dtype=model.dtype) for name, shape in shapes.items()}
    last = None
    with _kernels.loop_blas_threads(sw.B * sw.direct.shape[2] ** 2):  # one thread: small steps
        for d, block in enumerate(_lag_blocks(sw, n_exact)):
            for name, g in _block_params(sw, block).items():
                parts[name][d] = g
            last = block
        if m is not None and last is not None and T > m + 1:
            for name, g in _block_params(sw, _remainder(sw, last)).items():
                parts[name][-1] = g
    return CellLagContributions(parts=parts, max_lag=m, seq_len=T, loss=sw.loss)


@dataclass(frozen=True)
class StateJacobianReport:
    """‖∂s_t/∂s_{t−d}‖₂ = ‖J_t J_{t−1} ⋯ J_{t−d+1}‖₂ against the lag d, per sequence.

    J_i = ∂s_i/∂s_{i−1} (B, S, S) from :meth:`Cell.state_jacobian`; for the LSTM it includes
    the cell path diag(f_i). Lag 0 is the identity (norm 1).

    Attributes:
        cell: the cell's name.
        origin: t.
        log10_norms: (L, B) log₁₀ of the spectral norm (−inf for an exactly zero product).
    """

    cell: str
    origin: int
    log10_norms: np.ndarray

    @property
    def lags(self) -> np.ndarray:
        return np.arange(self.log10_norms.shape[0])

    @property
    def log10_mean(self) -> np.ndarray:
        """(L,) log₁₀ of the batch-mean norm, computed without overflow."""
        top = np.max(self.log10_norms, axis=1)  # (L,)
        ref = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore", under="ignore"):
            rel = np.power(10.0, self.log10_norms - ref[:, None])  # (L, B) in (0, 1]
            return np.asarray(ref + np.log10(rel.mean(axis=1)))


def state_jacobian_norms(
    model: RNN,
    x: object,
    h0: object = None,
    *,
    origin: int | None = None,
    max_lag: int | None = None,
) -> StateJacobianReport:
    """‖∂s_t/∂s_{t−d}‖₂ for d = 0..min(t, max_lag), any one-layer cell, in float64.

    The product is grown one factor at a time, P_d = P_{d−1} J_{t−d+1}, for all sequences at
    once and renormalised after each step (its log-norm kept aside), so neither vanishing nor
    exploding products under- or overflow. Cost O(L·B·S³).

    Raises:
        ValueError: a deeper or bidirectional model, bad inputs, origin or max_lag.
    """
    x_arr, states = _states(model, x, h0)
    T = states.shape[0] - 1
    t = T if origin is None else origin
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= T:
        raise ValueError(f"origin must be an int step in 1..T={T}, got {origin!r}")
    m = check_max_lag(max_lag)
    n_lags = t + 1 if m is None else min(t, m) + 1
    layer = model.layers[0]
    p = {k: v.astype(np.float64) for k, v in layer.take(model.params).items()}
    B, S = states.shape[1:]
    states64 = states.astype(np.float64)
    log10 = np.empty((n_lags, B))
    log10[0] = 0.0
    product = np.broadcast_to(np.eye(S), (B, S, S)).copy()  # (B, S, S): P_0 = I
    scale = np.zeros(B)
    # one BLAS thread: many small (S, S) products and SVDs, which two threads on a shared
    # machine make many times slower (see bptt._kernels.loop_blas_threads)
    with _kernels.loop_blas_threads(1):
        for d in range(1, n_lags):
            i = t - d + 1  # the step whose Jacobian is appended
            x_i = x_arr[i - 1] if x_arr.dtype.kind in "iu" else x_arr[i - 1].astype(np.float64)
            J = layer.cell.state_jacobian(p, StepArgs(x_i, states64[i - 1], states64[i]))
            product = product @ J  # (B, S, S)
            norm = np.linalg.norm(product, ord=2, axis=(1, 2))  # (B,)
            alive = norm > 0
            safe = np.where(alive, norm, 1.0)
            scale = np.where(alive, scale + np.log10(safe), scale)
            log10[d] = np.where(alive, scale, -np.inf)
            product /= safe[:, None, None]
    return StateJacobianReport(cell=model.cell, origin=int(t), log10_norms=log10)
