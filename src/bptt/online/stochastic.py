"""Unbiased rank-one estimates of the influence: UORO and KF-RTRL.

UORO (Tallec & Ollivier 2018), M_t ≈ ã_t b̃_tᵀ with ã (B, H), b̃ (B, H, Q) = Θ's shape:

    ν ~ {±1}^H                    ρ₀ = √(‖b̃_{t-1}‖ / ‖J_t ã_{t-1}‖)    ρ₁ = √(‖νᵀĪ_t‖ / ‖ν‖)
    ã_t = ρ₀ J_t ã_{t-1} + ρ₁ ν   b̃_t = b̃_{t-1} / ρ₀ + νᵀĪ_t / ρ₁      dΘ_t = Σ_b (c_tb·ã_tb) b̃_tb

KF-RTRL (Mujika, Meier & Steger 2018), M_t ≈ u_t ⊗ A_t, i.e. M[k, (r, q)] = A[k, r] u[q], with
u (B, Q) and A (B, H, H), using Ī_t = ĥ_tᵀ ⊗ diag(f'(E_t)):

    c₁, c₂ ~ {±1}                 p₁ = √(‖J_t A_{t-1}‖ / ‖u_{t-1}‖)      p₂ = √(‖f'‖ / ‖ĥ_t‖)
    u_t = c₁ p₁ u_{t-1} + c₂ p₂ ĥ_t          A_t = (c₁/p₁) J_t A_{t-1} + (c₂/p₂) diag(f')
    dΘ_t[r, q] = Σ_b (c_tb A_tb)_r u_tb,q

Both are unbiased, E[M̂_t] = M_t (the cross terms carry an independent sign of mean zero; the
scalings ρ, p only change variance), so E[Σ_t grads_t] is the BPTT gradient with fixed weights.
ε = 1e-7·(dtype scale) keeps ρ and p finite when a factor is zero (at t = 1).
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from ..model import RNN
from ..params import Gradients
from ._kernels import compiled
from .base import OnlineAlgorithm, StateDict, _Chunk
from .cellwise import CellKFRTRL, CellUORO


def _norms(a: np.ndarray) -> np.ndarray:
    """‖a_b‖₂ over all but the first axis: (B, …) → (B,)."""
    flat = a.reshape(a.shape[0], -1)
    return np.sqrt(np.einsum("bi,bi->b", flat, flat))


class _RankOne(OnlineAlgorithm):
    """M_t ≈ (random rank one), E[M̂_t] = M_t; ``eps`` keeps its scalings finite."""

    def __init__(
        self, model: RNN, batch: int, seed: int = 0, eps: float = 1e-7, fast: bool = True
    ) -> None:
        super().__init__(model, batch, seed)
        if not float(eps) > 0.0:
            raise ValueError(f"{self.name} eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self._reset_traces()

    def _signs(self, shape: tuple[int, ...]) -> np.ndarray:
        """Independent ±1 of the model's dtype (one uniform double each: u < ½ → −1)."""
        signs = np.where(self.rng.random(shape) < 0.5, -1.0, 1.0)
        return signs.astype(self.model.dtype, copy=False)

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """T steps on a hoisted forward (see ``OnlineAlgorithm.run``); with Numba, the whole
        chunk's influence updates in one compiled loop, its signs drawn at once beforehand
        (one uniform double each, so the same signs as step by step)."""
        kernels = compiled()
        if kernels is None or not self._kernel_pays():
            return super()._run(x, y, mask)
        ch = self._chunk(x, y, mask)
        T, _, H = ch.c.shape
        theta = np.zeros((H, self.Q), dtype=self.model.dtype)
        self._kernel(kernels, ch, theta)
        self.t += T
        return ch.losses, self._gradients(ch, theta, np.zeros_like(self.h))

    def _kernel_pays(self) -> bool:
        """Whether the compiled loop beats NumPy's per-step update at this size."""
        return True

    @abstractmethod
    def _kernel(self, kernels: dict, ch: _Chunk, theta: np.ndarray) -> None:
        """Run the chunk through the compiled loop (updates the factors, adds into theta)."""


KF_KERNEL_MAX = 64**3
"""KF-RTRL's ``run`` uses the compiled loop while B·H³ is at most this (else NumPy per step)."""


class UORO(_RankOne):
    """M_t ≈ ã_t b̃_tᵀ, ã_t = ρ₀ J_t ã_{t-1} + ρ₁ ν, b̃_t = b̃_{t-1}/ρ₀ + νᵀĪ_t/ρ₁: UORO.

    Args:
        eps: added to numerator and denominator of ρ₀ and ρ₁.
    """

    name = "uoro"
    generic = CellUORO

    def _reset_traces(self) -> None:
        dt = self.model.dtype
        self.a = np.zeros((self.batch, self.H), dtype=dt)  # (B, H): ã
        self.b = np.zeros((self.batch, self.H, self.Q), dtype=dt)  # (B, H, Q): b̃ (Θ-shaped)

    def _traces(self) -> StateDict:
        return {"a": self.a, "b": self.b}

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        nu = self._signs((self.batch, self.H))
        ja = fprime * (self.a @ self.model.params["W"].T)  # (B, H): J_t ã_{t-1}
        nu_i = (nu * fprime)[:, :, None] * hhat[:, None, :]  # (B, H, Q): νᵀĪ_t
        eps = self.eps
        rho0 = np.sqrt((_norms(self.b) + eps) / (_norms(ja) + eps))  # (B,)
        rho1 = np.sqrt((_norms(nu_i) + eps) / (_norms(nu) + eps))  # (B,)
        self.a = rho0[:, None] * ja + rho1[:, None] * nu
        self.b = self.b / rho0[:, None, None] + nu_i / rho1[:, None, None]

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        scale = np.einsum("bk,bk->b", c, self.a)  # (B,): c_t·ã_t
        return np.einsum("b,brq->rq", scale, self.b)  # (H, Q)

    def _kernel(self, kernels: dict, ch: _Chunk, theta: np.ndarray) -> None:
        T, B, H = ch.c.shape
        nus = self._signs((T, B, H))
        W = np.ascontiguousarray(self.model.params["W"])
        kernels["uoro_run"](ch.fprime, ch.hhat, ch.c, nus, W, self.a, self.b, self.eps, theta)


class KFRTRL(_RankOne):
    """M_t ≈ u_t ⊗ A_t, u_t = c₁p₁u_{t-1} + c₂p₂ĥ_t, A_t = (c₁/p₁) J_t A_{t-1} + (c₂/p₂) D_t:
    Kronecker-factored RTRL (see the module).

    Args:
        eps: added to numerator and denominator of p₁ and p₂.
    """

    name = "kf-rtrl"
    generic = CellKFRTRL

    def _reset_traces(self) -> None:
        dt = self.model.dtype
        self.u = np.zeros((self.batch, self.Q), dtype=dt)  # (B, Q)
        self.A = np.zeros((self.batch, self.H, self.H), dtype=dt)  # (B, H, H)

    def _traces(self) -> StateDict:
        return {"u": self.u, "A": self.A}

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        signs = self._signs((2, self.batch))
        c1, c2 = signs[0], signs[1]  # (B,) each
        ja = np.matmul(self.model.params["W"], self.A)  # (B, H, H): W A_{t-1}
        ja *= fprime[:, :, None]  # J_t A_{t-1} = diag(f') W A_{t-1}
        eps = self.eps
        p1 = np.sqrt((_norms(ja) + eps) / (_norms(self.u) + eps))  # (B,)
        p2 = np.sqrt((_norms(fprime) + eps) / (_norms(hhat) + eps))  # (B,)
        self.u = (c1 * p1)[:, None] * self.u + (c2 * p2)[:, None] * hhat
        A = (c1 / p1)[:, None, None] * ja
        diag = np.arange(self.H)
        A[:, diag, diag] += (c2 / p2)[:, None] * fprime
        self.A = A

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        ca = np.einsum("bk,bkr->br", c, self.A)  # (B, H): c_t A_t
        return ca.T @ self.u  # (H, Q)

    def _kernel_pays(self) -> bool:
        # J_t A is B·H³ multiply-adds: the compiled loop's plain triple loop beats NumPy's
        # batched BLAS product only while that is small (measured: 6 vs ~30 µs a step at
        # B = 1, H = 32; 3x slower than NumPy at B = 32, H = 32 and 64)
        return self.batch * self.H**3 <= KF_KERNEL_MAX

    def _kernel(self, kernels: dict, ch: _Chunk, theta: np.ndarray) -> None:
        T, B, _ = ch.c.shape
        signs = self._signs((T, 2, B))
        W = np.ascontiguousarray(self.model.params["W"])
        kernels["kf_run"](ch.fprime, ch.hhat, ch.c, signs, W, self.u, self.A, self.eps, theta)
