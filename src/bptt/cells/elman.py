"""The Elman cell, in the seed's notation: its recurrence, forward and backward side by side.

    E_t = V x_t + W h_{t-1} + b_h        h_t = f_h(E_t)        (s_t = h_t)           t = 1..T

Backward, with δ_t = dL/dE_t and the recursion run from t = T down to 1; ∂L/∂h_t is the
direct gradient from above (the head's U^T dL/dz_t, :func:`bptt.heads.output_backward`, or
the next layer's dL/dx):

    dL/dh_t  = ∂L/∂h_t  +  W^T δ_{t+1}        (the second term is the BPTT carry)
    δ_t      = dL/dh_t ⊙ f_h'(E_t)
    dL/dW    = Σ_t δ_t h_{t-1}^T      dL/dV = Σ_t δ_t x_t^T      dL/db_h = Σ_t δ_t
    dL/dh_0  = W^T δ_1                dL/dx_t = V^T δ_t (so that layers stack)

Unrolling the carry gives the seed's double sum over Jacobian products (see
:mod:`bptt.algorithms.seed_formula`); here it is evaluated right to left, one (B, H) vector
per step. One step's Jacobians (:class:`ElmanCell`, for the online algorithms and the
diagnostics):

    ∂h_t/∂h_{t-1} = diag(f_h'(E_t)) W
    ∂h_t/∂θ · dθ  = f_h'(E_t) ⊙ (dV x_t + dW h_{t-1} + db_h)

Everything that is not recurrent is hoisted out of the time loop into single products over
all T·B rows: the input projection, dW, dV and the bias sums (pairwise). Only ``h_t``
(forward) and ``dL/dh_t`` (backward) are computed step by step: in the compiled loops of
:mod:`bptt.cells._elman_kernels` (per-row loops for small steps, independent row shards of
the batch, one per core, for larger ones: :func:`bptt._kernels.shard_count`) or NumPy's;
the large hoisted products are split into row blocks the same way
(:func:`bptt._kernels.matmul`, :func:`bptt._kernels.matmul_tn`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _kernels, _workspace
from ..activations import Activation, get_activation
from . import _elman_kernels
from .base import (
    Cell,
    CellGrads,
    CellParams,
    ParamJacobian,
    StepArgs,
    outer_rows,
    unit_rows,
)


@dataclass(frozen=True)
class ElmanCache:
    """What the forward keeps for the backward: the inputs and the hidden states.

    f_h'(E_t) is recomputed from h_t (cheap, elementwise), so E is never stored.

    Attributes:
        x: (T, B, I) dense inputs or (T, B) integer ids.
        hs: (T+1, B, H) hidden states, ``hs[0] = h_0``.
    """

    x: np.ndarray
    hs: np.ndarray

    @property
    def inputs_are_ids(self) -> bool:
        return self.x.ndim == 2


def input_projection(params: Mapping[str, np.ndarray], x: np.ndarray, out: np.ndarray) -> None:
    """out[t, b] = V x_tb + b_h for every step at once; ids gather columns of V."""
    T, B = x.shape[:2]
    H = params["W"].shape[0]
    if x.ndim == 2:  # (T, B, H): row gather of V^T
        n_in = params["V"].shape[1]
        # mode="raise" would gather into a hidden (T, B, H) buffer; "clip" writes out directly
        # and is the same gather for ids in range (others: as before, an IndexError, or -k
        # counted from the end; and small gathers, where the two checks cost more)
        unbuffered = out.size >= _workspace.MIN_ELEMENTS and x.min() >= 0 and x.max() < n_in
        table = _workspace.contiguous(params["V"].T)  # np.take would copy it to C order
        np.take(table, x, axis=0, out=out, mode="clip" if unbuffered else "raise")
    else:
        _kernels.matmul(x.reshape(T * B, -1), params["V"].T, out=out.reshape(T * B, H))
    out += params["b_h"]


def input_projection_backward(
    delta: np.ndarray, x: np.ndarray, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dV = Σ_t δ_t x_t^T and dL/db_h = Σ_t δ_t; ids scatter-add rows of δ."""
    T, B, H = delta.shape
    delta_rows = delta.reshape(T * B, H)
    if x.ndim == 2:
        dV_t = _kernels.scatter_add_rows(n_in, x.reshape(-1), delta_rows)  # (I, H)
        dV = _workspace.contiguous(dV_t.T)
    else:
        dV = _kernels.matmul_tn(delta_rows, x.reshape(T * B, -1))  # (H, I)
    return dV, _kernels.column_sums(delta_rows)


def recurrent_forward(
    params: Mapping[str, np.ndarray], x: np.ndarray, h0: np.ndarray, activation: Activation
) -> tuple[np.ndarray, ElmanCache]:
    """h_t = f_h(V x_t + W h_{t-1} + b_h) for t = 1..T.

    Args:
        params: the weights.
        x: (T, B, I) dense inputs or (T, B) integer ids.
        h0: (B, H) initial hidden state.
        activation: f_h.

    Returns:
        hs: (T+1, B, H) with ``hs[0] = h0``, and the :class:`ElmanCache` for the backward.
    """
    T, B = x.shape[:2]
    H = params["W"].shape[0]
    hs = _workspace.empty((T + 1, B, H), params["W"].dtype)  # (T+1, B, H)
    hs[0] = h0
    input_projection(params, x, out=hs[1:])  # hs[t] holds V x_t + b_h until step t
    W_T = _workspace.contiguous(params["W"].T)  # (H, H): a plain GEMM operand, no transpose flag
    if _elman_kernels.use_time_loop_kernel(B, H, hs.dtype):
        _elman_kernels.forward_loop(hs, W_T, activation.name)  # compiled loop, same equation
        return hs, ElmanCache(x=x, hs=hs)
    shards = _kernels.shard_count(B, H, hs.dtype)
    if shards:  # row blocks of the batch, each its own GIL-free loop (same equation)
        W = np.ascontiguousarray(params["W"])
        _elman_kernels.sharded_forward(hs, W, W_T, activation.name, shards)
        return hs, ElmanCache(x=x, hs=hs)
    recurrent = np.empty((B, H), dtype=hs.dtype)  # (B, H) scratch for W h_{t-1}
    with _kernels.loop_blas_threads(B * H * H):  # one thread for small steps (see there)
        for t in range(1, T + 1):
            np.matmul(hs[t - 1], W_T, out=recurrent)
            hs[t] += recurrent  # E_t
            activation.forward_inplace(hs[t])  # h_t
    return hs, ElmanCache(x=x, hs=hs)


def recurrent_backward(
    dh: np.ndarray,
    cache: ElmanCache,
    params: Mapping[str, np.ndarray],
    activation: Activation,
    dh_last: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagate through time: δ_t = (dh_t + W^T δ_{t+1}) ⊙ f_h'(E_t).

    Args:
        dh: (T, B, H) the direct gradients ∂L/∂h_t from the outputs (t = 1..T). Overwritten
            with δ_t = dL/dE_t.
        cache: from :func:`recurrent_forward`.
        params: the weights.
        activation: f_h.
        dh_last: (B, H) gradient arriving on h_T from beyond the sequence, or None.

    Returns:
        dV (H, I), dW (H, H), db_h (H,), dh0 (B, H).
    """
    hs = cache.hs
    T, B, H = dh.shape
    delta = dh  # δ_t overwrites ∂L/∂h_t in place: (T, B, H)
    # carry = W^T δ_{t+1} (row-vector form δ_{t+1} W), the gradient that flows back through time
    carry = np.zeros((B, H), dtype=dh.dtype)  # (B, H)
    if dh_last is not None:
        carry[...] = dh_last
    W = params["W"]
    shards = _kernels.shard_count(B, H, delta.dtype) if delta.flags.c_contiguous else 0
    if shards and hs.flags.c_contiguous:  # f'(E_t) fused into each shard's loop
        _elman_kernels.sharded_backward(delta, hs, W, carry, activation.name, shards)
        return (*_hoisted_backward(delta, cache, params), carry)
    fprime = activation.grad_from_output(hs[1:])  # (T, B, H): f'(E_t), hoisted out of the loop
    delta *= fprime
    if _elman_kernels.use_time_loop_kernel(B, H, delta.dtype) and delta.flags.c_contiguous:
        _elman_kernels.backward_loop(delta, fprime, W, carry)  # compiled loop, same equation
    else:
        with _kernels.loop_blas_threads(B * H * H):
            for t in range(T - 1, -1, -1):
                carry *= fprime[t]
                delta[t] += carry  # δ_t = (∂L/∂h_t + W^T δ_{t+1}) ⊙ f'(E_t)
                np.matmul(delta[t], W, out=carry)
    return (*_hoisted_backward(delta, cache, params), carry)


def _hoisted_backward(
    delta: np.ndarray, cache: ElmanCache, params: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dW = Σ_t δ_t h_{t-1}^T, dV, db_h: products over all T·B rows at once; (dV, dW, db_h)."""
    T, B, H = delta.shape
    rows = T * B
    dW = _kernels.matmul_tn(delta.reshape(rows, H), cache.hs[:-1].reshape(rows, H))  # (H, H)
    dV, db_h = input_projection_backward(delta, cache.x, params["V"].shape[1])
    return dV, dW, db_h


class ElmanCell(Cell):
    """h_t = f_h(V x_t + W h_{t-1} + b_h), PyTorch's ``nn.RNN`` with one bias (b_ih + b_hh)."""

    name = "elman"
    kronecker_immediate = True  # every row of [V | W | b] reads ĥ_t = [x_t; h_{t-1}; 1]
    takes_activation = True

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__(input_size, hidden_size, activation)
        self.activation: Activation = get_activation(activation)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        return {"V": (H, I), "W": (H, H), "b_h": (H,)}

    # -- a whole sequence ------------------------------------------------------------------

    def forward(
        self, p: CellParams, x: np.ndarray, s0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        hs, cache = recurrent_forward(p, x, s0, self.activation)  # (T+1, B, H)
        return hs[1:], hs[-1].copy(), cache  # a copy: a view would keep all of hs alive

    def backward(
        self,
        dh: np.ndarray,
        cache: Any,
        p: CellParams,
        ds_last: np.ndarray | None = None,
        need_dx: bool = True,
    ) -> CellGrads:
        assert isinstance(cache, ElmanCache)
        delta = np.ascontiguousarray(dh)  # (T, B, H), becomes δ_t = dL/dE_t in place
        dV, dW, db_h, dh0 = recurrent_backward(delta, cache, p, self.activation, ds_last)
        dx = None
        if need_dx and not cache.inputs_are_ids:
            T, B, H = delta.shape
            # (T, B, I): δ_t V, one product over all T·B rows on the row-blocked BLAS path
            I = p["V"].shape[1]
            dx = _kernels.matmul(
                delta.reshape(T * B, H), p["V"], out=_workspace.empty((T * B, I), delta.dtype)
            ).reshape(T, B, I)
        return CellGrads(params={"V": dV, "W": dW, "b_h": db_h}, dx=dx, ds0=dh0)

    # -- one step and its Jacobians ---------------------------------------------------------

    def _pre_activation(self, p: CellParams, x_t: np.ndarray, s_prev: np.ndarray) -> np.ndarray:
        if x_t.ndim == 1:  # ids: a column gather of V
            e = p["V"].T[x_t] + s_prev @ p["W"].T
        else:
            e = x_t @ p["V"].T + s_prev @ p["W"].T
        e += p["b_h"]
        return e  # (B, H)

    def step(self, p: CellParams, x_t: np.ndarray, s_prev: np.ndarray) -> np.ndarray:
        return self.activation.forward_inplace(self._pre_activation(p, x_t, s_prev))

    def _fprime(self, at: StepArgs) -> np.ndarray:
        return self.activation.grad_from_output(at.s)  # (B, H): f'(E_t) from h_t

    def jvp_state(self, p: CellParams, at: StepArgs, v: np.ndarray) -> np.ndarray:
        return self._fprime(at) * (v @ p["W"].T)  # f'(E_t) ⊙ W v

    def vjp_state(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        return (u * self._fprime(at)) @ p["W"]  # (u ⊙ f'(E_t))ᵀ W

    def jvp_params(self, p: CellParams, at: StepArgs, dp: CellParams) -> np.ndarray:
        de = at.s_prev @ dp["W"].T + dp["b_h"]  # (B, H): dW h_{t-1} + db_h
        de += dp["V"].T[at.x] if at.x.ndim == 1 else at.x @ dp["V"].T  # + dV x_t
        return self._fprime(at) * de

    def vjp_params(self, p: CellParams, at: StepArgs, u: np.ndarray) -> CellParams:
        delta = u * self._fprime(at)  # (B, H): u ⊙ f'(E_t)
        if at.x.ndim == 1:
            dV = np.zeros_like(p["V"])
            np.add.at(dV.T, at.x, delta)  # ids: scatter-add into the gathered columns
        else:
            dV = delta.T @ at.x
        return {"V": dV, "W": delta.T @ at.s_prev, "b_h": delta.sum(axis=0)}

    def state_jacobian(self, p: CellParams, at: StepArgs) -> np.ndarray:
        return self._fprime(at)[:, :, None] * p["W"]  # (B, H, H): diag(f'(E_t)) W

    def jvp_input(self, p: CellParams, at: StepArgs, dx: np.ndarray) -> np.ndarray:
        return self._fprime(at) * (dx @ p["V"].T)  # f'(E_t) ⊙ V dx

    def vjp_input(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        return (u * self._fprime(at)) @ p["V"]  # (u ⊙ f'(E_t))ᵀ V

    def param_jacobian(self, p: CellParams, at: StepArgs) -> ParamJacobian:
        """Row r of V, W, b_h moves unit r only: Ī[r, (r, q)] = f'_r ĥ_q, ĥ = [x; h_{t-1}; 1]."""
        H = self.hidden_size
        fprime = self._fprime(at)  # (B, H)
        values = np.concatenate(
            [
                outer_rows(fprime, at.x, self.input_size),  # V: f'_r x_i
                outer_rows(fprime, at.s_prev, H),  # W: f'_r h_{t-1, j}
                fprime,  # b_h
            ],
            axis=1,
        )[:, None, :]  # (B, 1, P)
        return ParamJacobian(rows=unit_rows(self.param_shapes(), H), values=values)
