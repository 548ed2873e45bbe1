"""The BPTT sum of any layer taken apart lag by lag, the state gradients and the truncation bias.

For one layer-direction (any cell; :mod:`.trace` for the notation) with g^{(t)}_k = dL_t/ds_k,
the gradient of what arrives at step t from above with respect to the state at step k ≤ t
(lag d = t − k):

    g^{(t)}_t = g_t                              (the direct term: no carry, lag 0)
    g^{(t)}_k = g^{(t)}_{k+1} ∂s_{k+1}/∂s_k      (one step further back: lag + 1)

    dL/dθ = Σ_d C[d]        C[d] = Σ_k g^{(k+d)}_kᵀ ∂s_k/∂θ

For one Elman layer in one direction, with δ = g ⊙ f'(E): C_W[d] = Σ_k δ^{(k+d)}_k h_{k−1}ᵀ,
C_V[d] = Σ_k δ^{(k+d)}_k x_kᵀ, C_b[d] = Σ_k δ^{(k+d)}_k — the seed formula's terms
(:mod:`bptt.algorithms.seed_formula`) grouped by t − k. For the LSTM the state s = [h ‖ c]
carries the gradient along the cell path ∂c_k/∂c_{k−1} = diag(f_k) as well as through W. In
a deep model each layer's lags are steps of its own recurrence, the origin of a lag being what
arrives on that layer's state from above (the head, or the layer above, itself a sum over lags
there).

All origins move back together: G_d (T−d, B, S) with G_d[k−1] = g^{(k+d)}_k is one
:meth:`~.trace.LayerSteps.back` over (T−d)·B rows from G_{d−1}, and C[d] one
:meth:`~.trace.LayerSteps.param_grads` over the same rows: O(T·L) Jacobian-vector products
for L lags, in L batched calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..cells import ElmanCell
from ..model import RNN
from ..validation import check_max_lag
from .trace import LayerSteps, Trace, check_layer, check_model, one_blas_thread, trace

Tick = Callable[[int], None]
"""Called with a count of units of work just done (lags, steps): for a progress bar."""


def frobenius(a: np.ndarray) -> np.ndarray:
    """‖a[l]‖_F for each leading index, accumulated in float64; returns (L,)."""
    flat = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    return np.sqrt(np.einsum("lp,lp->l", flat, flat))


ROLE_KEYS = {"recurrent": "W", "input": "V", "bias": "b_h"}
"""The key of each parameter role in :meth:`LagContributions.role_norms` (the seed's names:
the recurrent matrices, the input matrices, the biases)."""


# -- per-lag contributions ---------------------------------------------------------------


@dataclass(frozen=True)
class LagContributions:
    """The lag-by-lag parts of one layer-direction's parameter gradients.

    ``parts[name][d]`` is the part of dL/dθ (θ = the model's parameter ``name``, e.g. ``W`` or
    ``W_l1_reverse``) that the losses at steps t send back over t − d = k. Summed over the first
    axis, each array is the full gradient ``model.loss_and_grads`` returns.

    With ``max_lag`` = m the arrays have L = m + 2 entries: ``[0..m]`` the exact lag-d parts
    (exactly zero for lags d ≥ T, which have no terms) and ``[m + 1]`` the *remainder*, the sum
    of every lag ≥ m + 1. With ``max_lag=None`` there is no remainder and L = T.

    The cell's local names read the same arrays: ``contrib.W`` is ``parts["W_l1"]`` for layer
    ``l1`` (and ``.V``, ``.b_h`` for the Elman cell; ``.b``, ``.b_hn`` for the GRU).

    Attributes:
        parts: the model's parameter name → (L, *shape), in the cell's storage order.
        roles: the model's parameter name → ``input``, ``recurrent`` or ``bias``.
        local: the cell's local name → the model's parameter name.
        layer: ``l0``, ``l1_reverse``, …
        cell: the cell's name.
        max_lag: m, or None.
        seq_len: T of the batch.
        loss: L on the batch.
    """

    parts: dict[str, np.ndarray]
    roles: dict[str, str]
    local: dict[str, str]
    layer: str
    cell: str
    max_lag: int | None
    seq_len: int
    loss: float

    def __getattr__(self, name: str) -> np.ndarray:
        # only called when ordinary lookup fails: the cell's local names (W, V, b_h, b, …)
        if not name.startswith("_"):
            local = self.__dict__.get("local", {})
            if name in local:
                return np.asarray(self.__dict__["parts"][local[name]])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def has_remainder(self) -> bool:
        return self.max_lag is not None

    @property
    def n_exact(self) -> int:
        """How many leading entries are single lags (all of them without a remainder)."""
        first = next(iter(self.parts.values()))
        return int(first.shape[0]) - int(self.has_remainder)

    @property
    def labels(self) -> list[str]:
        """``"0", "1", …`` and ``"≥m+1"`` for the remainder."""
        labels = [str(d) for d in range(self.n_exact)]
        if self.has_remainder:
            labels.append(f"≥{self.n_exact}")
        return labels

    def total(self, name: str) -> np.ndarray:
        """Σ_d parts[name][d]: the full gradient of ``name`` (model or local name)."""
        return np.asarray(self.parts[self.local.get(name, name)].sum(axis=0))

    def norms(self) -> dict[str, np.ndarray]:
        """‖parts[name][d]‖_F per entry under the model's names, and ``total`` = √Σ_name ‖·‖²;
        each (L,) float64."""
        out = {name: frobenius(a) for name, a in self.parts.items()}
        out["total"] = np.sqrt(sum(v**2 for v in out.values()))
        return out

    def role_norms(self) -> dict[str, np.ndarray]:
        """The norms grouped by role under the seed's names: ``W`` (the recurrent matrices),
        ``V`` (the input matrices), ``b_h`` (all biases) and ``total``; each (L,) float64.

        For one Elman layer these are exactly ‖C_W[d]‖, ‖C_V[d]‖, ‖C_b[d]‖; for the GRU, ``b_h``
        holds ``b`` and ``b_hn`` together.
        """
        by_name = self.norms()
        L = len(by_name["total"])
        out = {key: np.zeros(L) for key in ROLE_KEYS.values()}
        for name, role in self.roles.items():
            out[ROLE_KEYS[role]] += by_name[name] ** 2
        out = {key: np.sqrt(v) for key, v in out.items()}
        out["total"] = by_name["total"]
        return out


def lag_blocks(steps: LayerSteps, direct: np.ndarray, n_lags: int) -> Iterator[np.ndarray]:
    """Yield G_d (T−d, B, S) for d = 0..min(n_lags, T)−1, G_d[k−1] = dL_{k+d}/ds_k, k = 1..T−d.

    G_0 = direct;  G_d[k] = G_{d−1}[k+1] ∂s_{k+1}/∂s_k for all k at once (one product over
    (T−d)·B rows at the operating points of steps 2..T−d+1).
    """
    block = direct
    yield block
    for _ in range(1, min(n_lags, steps.T)):
        block = steps.back(2, block[1:])
        yield block


def remainder_block(steps: LayerSteps, last: np.ndarray) -> np.ndarray:
    """R[k−1] = Σ_{d > m} dL_{k+d}/ds_k for k = 1..T−m−1, from G_m = ``last`` (T−m, B, S).

    R_k = (R_{k+1} + G_m[k+1]) ∂s_{k+1}/∂s_k with R_{T−m} = 0: one sequential sweep.
    """
    n = last.shape[0] - 1  # T − m − 1 parameter uses receive lags ≥ m + 1
    rem = np.empty((n, *last.shape[1:]), dtype=last.dtype)  # (T−m−1, B, S)
    carry = np.zeros(last.shape[1:], dtype=last.dtype)  # (B, S): R_{k+1} + G_m[k+1]
    for k in range(n - 1, -1, -1):  # rem[k] is the state of step k + 1
        carry = carry + last[k + 1]
        rem[k] = steps.back(k + 2, carry[None])[0]
        carry = rem[k]
    return rem


def _named(steps: LayerSteps, local_grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {steps.names[local]: g for local, g in local_grads.items()}


def layer_lag_parts(
    tr: Trace, k: int, max_lag: int | None, tick: Tick | None = None
) -> LagContributions:
    """The lag-by-lag parts of layer-direction k's gradients (see :func:`lag_contributions`);
    ``max_lag`` already checked."""
    assert tr.direct is not None and tr.loss is not None
    steps = tr.layers[k]
    model = tr.model
    T = steps.T
    n_exact = T if max_lag is None else max_lag + 1
    L = n_exact + (0 if max_lag is None else 1)
    shapes = steps.cell.param_shapes()
    parts = {
        steps.names[local]: np.zeros((L, *shape), dtype=model.dtype)
        for local, shape in shapes.items()
    }
    last = None
    for d, block in enumerate(lag_blocks(steps, tr.direct[k], n_exact)):
        for name, g in _named(steps, steps.param_grads(1, block)).items():
            parts[name][d] = g
        last = block
        if tick is not None:
            tick(1)
    if max_lag is not None and last is not None and T > max_lag + 1:
        for name, g in _named(steps, steps.param_grads(1, remainder_block(steps, last))).items():
            parts[name][-1] = g
    if tick is not None and n_exact > T:
        tick(n_exact - T)
    if model.w_mask is not None:  # a fixed sparsity of W: dL/dW ⊙ M, as loss_and_grads does
        H = model.hidden_size
        for name, role in steps.roles.items():
            if role == "recurrent" and parts[name].shape[1:] == (H, H):
                parts[name] *= model.w_mask
    return LagContributions(
        parts=parts,
        roles=dict(steps.roles),
        local=dict(steps.names),
        layer=steps.name,
        cell=steps.cell.name,
        max_lag=max_lag,
        seq_len=T,
        loss=tr.loss,
    )


def lag_contributions(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    max_lag: int | None = None,
    layer: int | str | None = None,
    *,
    fast_path: bool = True,
    tick: Tick | None = None,
) -> LagContributions:
    """C[d] = Σ_k g^{(k+d)}_kᵀ ∂s_k/∂θ: the lag-d parts of a layer's parameter gradients.

    Any :class:`bptt.RNN`: Elman, GRU, LSTM, any depth, one or two directions. Computed along
    the lag "diagonals": the (T, B, S) block of every origin's signal moves back one step at a
    time, G_d[k] = G_{d−1}[k+1] ∂s_{k+1}/∂s_k, through the cell's ``vjp_state`` over
    (T−d)·B rows, and ``vjp_params`` turns it into C[d]. For the Elman cell the closed forms
    are used (S_d[k] = (S_{d−1}[k+1] W) ⊙ f'_k on δ = dL/dE; ``fast_path=False`` goes through
    the cell protocol instead, the tests compare the two).

    Cost: Σ_{d<L} (T−d)·B times one step's backward and parameter products: O(L·T·B·H²) for
    L lags (about T²·B·H² for all lags — the flops of one backward sweep per origin t, but
    as L large batched products rather than T² small ones; gated cells recompute their gates
    in each product). With ``max_lag=m`` it is m + 1 lags plus one ordinary O(T·B·H²) sweep
    for the remainder. Memory: two (T, B, S) blocks and the (L, …) result.

    Args:
        model: the model (its current parameters).
        x: (T, B, I) dense inputs or (T, B) ids; y: targets; h0: initial state; mask:
            (T, B) 0/1 or None — all as :meth:`bptt.RNN.loss_and_grads`.
        max_lag: None for every lag 0..T−1; an int m ≥ 0 for lags 0..m plus a final entry
            holding the sum of all lags ≥ m + 1 (see :class:`LagContributions`).
        layer: for a deep or bidirectional model, the layer-direction (k = l·D + d, or its
            name ``"l1_reverse"``) whose recurrence is taken apart; None for a one-layer model.
        fast_path: the Elman closed forms where they apply.
        tick: called with 1 after each lag (a progress bar).

    Returns:
        :class:`LagContributions`; ``.parts[name].sum(0)`` equals
        ``model.loss_and_grads(...)[1][name]`` up to rounding, with or without ``max_lag``.

    Raises:
        TypeError: not a :class:`bptt.RNN`; ValueError, TypeError: bad inputs (as
        :meth:`bptt.RNN.loss_and_grads`), max_lag or layer.
    """
    m = check_max_lag(max_lag)
    k = check_layer(check_model(model), layer)
    tr = trace(model, x, y, h0, mask, fast_path=fast_path)
    with one_blas_thread():
        return layer_lag_parts(tr, k, m, tick)


def layer_lag_contributions(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    max_lag: int | None = None,
    *,
    fast_path: bool = True,
    tick: Tick | None = None,
) -> dict[str, LagContributions]:
    """:func:`lag_contributions` of every layer-direction from one forward and backward.

    Returns:
        ``{"l0": …, "l0_reverse": …, "l1": …}`` (:func:`~.trace.layer_name`), bottom layer
        first; for a one-layer, one-direction model the single entry ``"l0"``. Each entry's
        sums over lags are that layer's parameter gradients (``V_l1``, ``W_l1``, …).
    """
    m = check_max_lag(max_lag)
    tr = trace(model, x, y, h0, mask, fast_path=fast_path)
    with one_blas_thread():
        return {steps.name: layer_lag_parts(tr, steps.index, m, tick) for steps in tr.layers}


# -- state gradients ---------------------------------------------------------------------


@dataclass(frozen=True)
class HiddenStateGradients:
    """dL/ds_t for t = 0..T (any cell), dL/dh_t its h part, and for the Elman cell dL/dE_t.

    L is the batch loss (summed over time, averaged over the batch), so each sequence's
    gradient carries the factor 1/B. Steps are in the layer's own time order.

    Attributes:
        ds: (T+1, B, S), ``ds[t]`` = dL/ds_t (``ds[0]`` = dL/ds_0, the layer's part of
            ``grads.h0``). For the LSTM s = [h ‖ c].
        dh: (T+1, B, H), the h part of ``ds``.
        delta: (T, B, H), ``delta[t−1]`` = dL/dE_t, for the Elman cell only (else None).
    """

    ds: np.ndarray
    dh: np.ndarray
    delta: np.ndarray | None

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


def layer_state_gradients(tr: Trace, k: int) -> HiddenStateGradients:
    """dL/ds_t = g_t + dL/ds_{t+1} ∂s_{t+1}/∂s_t from t = T down to 0 (g_0 = 0)."""
    assert tr.direct is not None
    steps, direct = tr.layers[k], tr.direct[k]
    T, B, S = direct.shape
    ds = np.empty((T + 1, B, S), dtype=direct.dtype)  # (T+1, B, S)
    carry = np.zeros((B, S), dtype=direct.dtype)  # (B, S): dL/ds_{t+1} ∂s_{t+1}/∂s_t
    for t in range(T, 0, -1):
        np.add(direct[t - 1], carry, out=ds[t])
        carry = steps.back(t, ds[t][None])[0]
    ds[0] = carry
    H = tr.model.hidden_size
    delta = None
    if isinstance(steps.cell, ElmanCell):
        fprime = steps.cell.activation.grad_from_output(steps.at.s)  # (T·B, H): f'(E_t)
        delta = ds[1:] * fprime.reshape(T, B, H)  # (T, B, H): dL/dE_t
    return HiddenStateGradients(ds=ds, dh=ds[..., :H], delta=delta)


def hidden_state_gradients(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    layer: int | str | None = None,
    *,
    fast_path: bool = True,
) -> HiddenStateGradients:
    """dL/ds_t = g_t + dL/ds_{t+1} ∂s_{t+1}/∂s_t for t = 0..T (no direct term at t = 0).

    For one Elman layer: dL/dh_t = Uᵀ dL/dz_t + Wᵀ δ_{t+1}, δ_t = dL/dh_t ⊙ f'(E_t). One
    backward sweep, O(T·B·H²). Arguments as :meth:`bptt.RNN.loss_and_grads`; ``layer`` as
    for :func:`lag_contributions` (the direct term is then what arrives from above).
    """
    k = check_layer(check_model(model), layer)
    return layer_state_gradients(trace(model, x, y, h0, mask, fast_path=fast_path), k)


# -- truncation bias ---------------------------------------------------------------------


@dataclass(frozen=True)
class TruncationBias:
    """How far the k2-truncated gradient is from the full one, for k2 = 1..T.

    The truncated gradient keeps, for every loss L_t, only the paths of lag t − k < k2:
    g(k2) = Σ_{d<k2} C[d] (Williams & Peng's BPTT(h=k2) applied to each step's loss). For a
    sequence of length T, g(T) is the full gradient. Compared for each of the layer's
    parameters (the model's names: ``W``, ``V``, ``b_h`` for one Elman layer) and all of them
    stacked (``"all"``); the head's dL/dU and dL/db_y do not depend on k2.

    Attributes:
        k2: (T,) 1..T.
        cosine: name → (T,) cos∠(g(k2), g); NaN where either is zero.
        rel_error: name → (T,) ‖g(k2) − g‖ / ‖g‖; NaN where g is zero.
        layer: the layer-direction.
    """

    k2: np.ndarray
    cosine: dict[str, np.ndarray]
    rel_error: dict[str, np.ndarray]
    layer: str = "l0"


def truncation_from_lags(
    lags: Iterable[dict[str, np.ndarray]], full: dict[str, np.ndarray], T: int, layer: str
) -> TruncationBias:
    """:class:`TruncationBias` from the parts C[d], d = 0..T−1, streamed (one lag at a time),
    against the full gradient ``full`` of the same names."""
    names = (*full, "all")

    def f64(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float64, copy=False).ravel()

    full64 = {name: f64(g) for name, g in full.items()}
    partial = {name: np.zeros_like(g) for name, g in full64.items()}
    dots = {name: np.zeros(T) for name in names}  # ⟨g(k2), g⟩
    sq_partial = {name: np.zeros(T) for name in names}  # ‖g(k2)‖²
    sq_diff = {name: np.zeros(T) for name in names}  # ‖g(k2) − g‖²
    d = -1
    for d, parts in enumerate(lags):
        for name in full:
            partial[name] += f64(parts[name])
            p, g = partial[name], full64[name]
            dots[name][d] = p @ g
            sq_partial[name][d] = p @ p
            sq_diff[name][d] = (p - g) @ (p - g)
        for acc in (dots, sq_partial, sq_diff):
            acc["all"][d] = sum(acc[name][d] for name in full)
    if d != T - 1:
        raise ValueError(f"truncation needs the parts of all T = {T} lags, got {d + 1}")
    sq_full = {name: float(g @ g) for name, g in full64.items()}
    sq_full["all"] = sum(sq_full.values())
    cosine, rel_error = {}, {}
    for name in names:
        denom = np.sqrt(sq_partial[name] * sq_full[name])
        cosine[name] = np.divide(dots[name], denom, out=np.full(T, np.nan), where=denom > 0).clip(
            -1.0, 1.0
        )
        rel_error[name] = (
            np.sqrt(sq_diff[name] / sq_full[name]) if sq_full[name] > 0 else np.full(T, np.nan)
        )
    return TruncationBias(k2=np.arange(1, T + 1), cosine=cosine, rel_error=rel_error, layer=layer)


def layer_truncation_bias(tr: Trace, k: int, tick: Tick | None = None) -> TruncationBias:
    """:func:`truncation_bias` of layer-direction k, the lags streamed from the blocks."""
    assert tr.direct is not None and tr.grads is not None
    steps = tr.layers[k]
    full = {name: tr.grads[name] for name in steps.names.values()}

    def per_lag() -> Iterator[dict[str, np.ndarray]]:
        for block in lag_blocks(steps, tr.direct[k], steps.T):  # type: ignore[index]
            yield _named(steps, steps.param_grads(1, block))
            if tick is not None:
                tick(1)

    return truncation_from_lags(per_lag(), full, steps.T, steps.name)


def truncation_bias(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    layer: int | str | None = None,
    *,
    fast_path: bool = True,
    tick: Tick | None = None,
) -> TruncationBias:
    """cos∠(g(k2), g) and ‖g(k2) − g‖/‖g‖ with g(k2) = Σ_{d<k2} C[d], for k2 = 1..T.

    The full gradient g comes from the model's ordinary backward sweep; the partial sums are
    built lag by lag as in :func:`lag_contributions` without storing them (O(T²·B·H²) time,
    O(T·B·S + the layer's parameters) memory). Arguments as :func:`lag_contributions`.
    """
    k = check_layer(check_model(model), layer)
    tr = trace(model, x, y, h0, mask, fast_path=fast_path)
    with one_blas_thread():
        return layer_truncation_bias(tr, k, tick)
