"""Real-time recurrent learning (Williams & Zipser 1989): the exact influence, carried forward.

    M_t = J_t M_{t-1} + Ī_t          M_0 = 0          dΘ_t = Σ_b c_tb M_tb
    Z_t = J_t Z_{t-1}                Z_0 = 1          dL_t/dh_0 = c_t Z_t

with M_t = ∂h_t/∂Θ stored as (B, H, H, Q) (unit k, row r, column q of Θ = [V | W | b_h]),
J_t = diag(f'(E_t)) W from the cell protocol and Ī_t[k, r, q] = δ_kr f'_k ĥ_q added on the
k = r diagonal. Cost per step: B·H²·(H·Q) multiply-adds for J_t M_{t-1} (O(H⁴)), memory
B·H²·Q. With the weights fixed, Σ_t grads_t is the BPTT gradient of the whole stream.
"""

from __future__ import annotations

import numpy as np

from ..cells import StepArgs
from ..model import RNN
from .base import OnlineAlgorithm, StateDict


class RTRL(OnlineAlgorithm):
    """M_t = J_t M_{t-1} + Ī_t, dΘ_t = Σ_b c_tb M_tb: the exact online gradient (see the module)."""

    name = "rtrl"

    def __init__(self, model: RNN, batch: int, seed: int = 0) -> None:
        super().__init__(model, batch, seed)
        self._reset_traces()

    def _reset_traces(self) -> None:
        B, H, Q = self.batch, self.H, self.Q
        self.M = np.zeros((B, H, H, Q), dtype=self.model.dtype)  # (B, H, H, Q): ∂h_k/∂Θ_rq
        self.Z = np.broadcast_to(np.eye(H, dtype=self.model.dtype), (B, H, H)).copy()  # ∂h/∂h_0

    def _traces(self) -> StateDict:
        return {"M": self.M, "Z": self.Z}

    def _propagate(self, at: StepArgs, fprime: np.ndarray) -> None:
        B, H, Q = self.batch, self.H, self.Q
        J = self._jacobian(at)  # (B, H, H)
        M = np.matmul(J, self.M.reshape(B, H, H * Q)).reshape(B, H, H, Q)  # J_t M_{t-1}
        diag = np.arange(H)
        M[:, diag, diag, :] += fprime[:, :, None] * self._hhat(at)[:, None, :]  # + Ī_t
        self.M = M
        self.Z = np.matmul(J, self.Z)  # (B, H, H)

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        B, H, Q = self.batch, self.H, self.Q
        return (c.reshape(1, B * H) @ self.M.reshape(B * H, H * Q)).reshape(H, Q)

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        return np.einsum("bk,bkj->bj", c, self.Z)  # (B, H): c_t Z_t per stream
