"""SnAp-n (Menick et al. 2021): RTRL with the influence kept on a fixed sparsity pattern.

    M_t = P_n ⊙ (J_t M_{t-1} + Ī_t)          dΘ_t = Σ_b c_tb M_tb

P_n[k, r] = 1 when unit k is reached from unit r (whose row Θ_r· the parameter belongs to) in
at most n − 1 steps through the nonzero pattern of W (every unit reaches itself). So

    SnAp-1:  P_1 = 1 (k = r only): m_t[r, q] = J_t[r, r] m_{t-1}[r, q] + f'_r ĥ_q
             stored as (B, H, Q), cost O(B·H·Q) per step — exact when W is diagonal;
    SnAp-n:  P_n = [(1 + |W|≠0)^{n−1} > 0], stored dense as RTRL's (B, H, H, Q) and masked:
             exact (= RTRL) whenever P_n covers every (k, r), e.g. SnAp-2 with a dense W.

This implementation of n ≥ 2 spends RTRL's time and memory (it masks a dense influence); the
point it measures is the gradient's quality for a given pattern, not the sparse cost.
"""

from __future__ import annotations

import numpy as np

from ..cells import StepArgs
from ..model import RNN
from .base import OnlineAlgorithm, StateDict
from .rtrl import RTRL


def snap_pattern(w_nonzero: np.ndarray, n: int) -> np.ndarray:
    """P_n (H, H) of bools: k reached from r in ≤ n − 1 steps of the graph k ← r (W_kr ≠ 0)."""
    H = w_nonzero.shape[0]
    step = w_nonzero.astype(bool) | np.eye(H, dtype=bool)
    reach = np.eye(H, dtype=bool)
    for _ in range(n - 1):
        reach = (step.astype(np.int64) @ reach.astype(np.int64)) > 0
    return reach


class SnAp1(OnlineAlgorithm):
    """m_t = diag(J_t) m_{t-1} + f'(E_t) ⊗ ĥ_t: SnAp-1 keeps only ∂h_r/∂Θ_r· (see the module)."""

    name = "snap-1"

    def __init__(self, model: RNN, batch: int, seed: int = 0) -> None:
        super().__init__(model, batch, seed)
        self._reset_traces()

    def _reset_traces(self) -> None:
        self.m = np.zeros((self.batch, self.H, self.Q), dtype=self.model.dtype)  # (B, H, Q)

    def _traces(self) -> StateDict:
        return {"m": self.m}

    def _propagate(self, at: StepArgs, fprime: np.ndarray) -> None:
        jdiag = fprime * np.diagonal(self.model.params["W"])  # (B, H): J_t[r, r]
        self.m *= jdiag[:, :, None]
        self.m += fprime[:, :, None] * self._hhat(at)[:, None, :]

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        return np.einsum("br,brq->rq", c, self.m)  # (H, Q)


class SnApN(RTRL):
    """M_t = P_n ⊙ (J_t M_{t-1} + Ī_t): SnAp-n for n ≥ 2, RTRL's update masked (see the module).

    Args:
        n: the pattern's reach (``snap-2`` is n = 2).
    """

    name = "snap-n"

    def __init__(self, model: RNN, batch: int, seed: int = 0, n: int = 2) -> None:
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"SnAp-n takes n >= 2 here (snap-1 is its own class), got {n!r}")
        self.n = n
        self.name = f"snap-{n}"
        H = model.hidden_size
        w_nonzero = np.ones((H, H), dtype=bool) if model.w_mask is None else model.w_mask
        self.pattern = snap_pattern(w_nonzero, n)  # (H, H): P_n[k, r]
        super().__init__(model, batch, seed)

    def _propagate(self, at: StepArgs, fprime: np.ndarray) -> None:
        super()._propagate(at, fprime)
        self.M *= self.pattern[None, :, :, None]

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        return np.zeros_like(self.h)
