"""The Elman cell, in the seed's notation.

    E_t = V x_t + W h_{t-1} + b_h        h_t = f_h(E_t)        (s_t = h_t)

    ∂h_t/∂h_{t-1} = diag(f_h'(E_t)) W
    ∂h_t/∂θ · dθ  = f_h'(E_t) ⊙ (dV x_t + dW h_{t-1} + db_h)

The sequence forward and backward are :func:`bptt.rnn.recurrent_forward` and
:func:`bptt.rnn.recurrent_backward` (input projection hoisted, compiled loops for small steps);
this class adds dL/dx = δ V so that layers stack, and the one-step Jacobian products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _kernels, _workspace
from ..activations import Activation, get_activation
from ..rnn import Cache, recurrent_backward, recurrent_forward
from .base import (
    Cell,
    CellGrads,
    CellParams,
    ParamJacobian,
    StepArgs,
    outer_rows,
    unit_rows,
)


class ElmanCell(Cell):
    """h_t = f_h(V x_t + W h_{t-1} + b_h), PyTorch's ``nn.RNN`` with one bias (b_ih + b_hh)."""

    name = "elman"
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
        assert isinstance(cache, Cache)
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
