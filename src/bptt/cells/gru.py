"""The GRU cell in PyTorch's convention (``nn.GRU``), forward and backward side by side.

Forward, gates stacked in the order r, z, n (rows of V, W and b):

    G_t  = V x_t + b                                  (T, B, 3H), all steps in one product
    R_t  = W h_{t-1}                                  (B, 3H), the only recurrent product
    r_t  = σ(G^r_t + R^r_t)        z_t = σ(G^z_t + R^z_t)
    m_t  = R^n_t + b_hn                               (W_hn h_{t-1} + b_hn, kept apart: r_t
    n_t  = tanh(G^n_t + r_t ⊙ m_t)                      multiplies it, bias included)
    h_t  = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}            (s_t = h_t)

``b`` is PyTorch's b_ih + b_hh for r and z (only their sum enters) and b_in for n; ``b_hn`` is
PyTorch's b_hh for n, which must stay separate.

Backward, with dh_t = ∂L/∂h_t from above plus the carry from step t+1:

    dn = dh ⊙ (1 − z)                 dz = dh ⊙ (h_{t-1} − n)
    da_n = dn ⊙ (1 − n²)              dm = da_n ⊙ r           dr = da_n ⊙ m
    da_r = dr ⊙ r(1 − r)              da_z = dz ⊙ z(1 − z)
    dG_t = [da_r, da_z, da_n]         dR_t = [da_r, da_z, dm]
    carry: ∂L/∂h_{t-1} ∋ dh ⊙ z + dR_t W
    dW = Σ_t dR_tᵀ h_{t-1}   dV = Σ_t dG_tᵀ x_t   db = Σ_t dG_t   db_hn = Σ_t dm   dx_t = dG_t V

Only R_t = W h_{t-1} (forward) and dR_t W (backward) run step by step; G, dV, dW, db and dx
are single products over all T·B rows. Every block of dA_t = [da_r, da_z, dm, da_n] is dh_t
times a factor known after the forward (:func:`_backward_factors`), so the factors of all steps
are computed at once and the loop does one multiply, the product dR_t W and the dh ⊙ z term.
With Numba, the same equations run in batch-sharded compiled loops
(:mod:`bptt.cells._gated_kernels`) that compute F_t inside the backward loop instead.

The cache keeps the inputs, h_0..h_T and per step the activated gates [r, z, m, n]
(T, B, 4H): m = W_hn h_{t-1} + b_hn cannot be had from the others without dividing by r, nor n
from h without dividing by 1 − z, so they are stored; the gate derivatives r(1 − r),
z(1 − z), 1 − n² are recomputed from them (elementwise, cheap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _kernels, _workspace
from . import _gated_kernels
from ._gated import (
    input_dV,
    input_dx,
    input_grads,
    project_inputs,
    sigmoid_,
    step_input_grads,
)
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
class GRUCache:
    """x (T, B, I) or ids (T, B); hs (T+1, B, H) with hs[0] = h_0; gates (T, B, 4H) [r z m n]."""

    x: np.ndarray
    hs: np.ndarray
    gates: np.ndarray


def _gates_step(G: np.ndarray, R: np.ndarray, b_hn: np.ndarray, out: np.ndarray) -> None:
    """[r, z, m, n] of one step from G (B, 3H) and R = h_{t-1} Wᵀ (B, 3H), into out (B, 4H)."""
    H = b_hn.shape[0]
    rz = out[:, : 2 * H]
    np.add(G[:, : 2 * H], R[:, : 2 * H], out=rz)
    sigmoid_(rz)  # r, z
    m = out[:, 2 * H : 3 * H]
    np.add(R[:, 2 * H :], b_hn, out=m)  # m = W_hn h_{t-1} + b_hn
    n = out[:, 3 * H :]
    np.multiply(out[:, :H], m, out=n)
    n += G[:, 2 * H :]
    np.tanh(n, out=n)  # n = tanh(G_n + r ⊙ m)


def _new_h(gates: np.ndarray, h_prev: np.ndarray, out: np.ndarray) -> np.ndarray:
    """h = n + z ⊙ (h_{t-1} − n) = (1 − z) ⊙ n + z ⊙ h_{t-1}."""
    H = h_prev.shape[-1]
    z, n = gates[..., H : 2 * H], gates[..., 3 * H :]
    np.subtract(h_prev, n, out=out)
    out *= z
    out += n
    return out


def _backward_factors(gates: np.ndarray, h_prev: np.ndarray, out: np.ndarray) -> np.ndarray:
    """F (…, 4H) with dA = [da_r, da_z, dm, da_n] = dh ⊙ F blockwise (see the module):

        F_n = (1 − z)(1 − n²)
        F   = [F_n ⊙ m ⊙ r(1 − r),  (h_{t-1} − n) ⊙ z(1 − z),  F_n ⊙ r,  F_n]

    Every block of dA is linear in dh = ∂L/∂h_t with a factor known after the forward, so the
    backward computes F for all steps at once and multiplies by dh inside the time loop.
    """
    H = h_prev.shape[-1]
    r, z, m, n = (gates[..., k * H : (k + 1) * H] for k in range(4))
    f_r, f_z, f_m, f_n = (out[..., k * H : (k + 1) * H] for k in range(4))
    np.multiply(n, n, out=f_n)
    np.subtract(1.0, f_n, out=f_n)
    np.subtract(1.0, z, out=f_m)  # scratch
    f_n *= f_m  # (1 − z)(1 − n²)
    np.subtract(h_prev, n, out=f_z)
    f_z *= z
    f_z *= f_m  # (h_{t-1} − n) z(1 − z)
    np.multiply(f_n, r, out=f_m)  # F_n r
    np.subtract(1.0, r, out=f_r)
    f_r *= m
    f_r *= f_m  # F_n r m (1 − r)
    return out


def _step_backward(gates: np.ndarray, h_prev: np.ndarray, dh: np.ndarray, dA: np.ndarray) -> None:
    """dA = [da_r, da_z, dm, da_n] (B, 4H) of one step from dh = ∂L/∂h_t (see the module).

    dR = dA[:, :3H] (matches W's rows r, z, n) and dG = [dA[:, :2H], dA[:, 3H:]].
    """
    B, H = dh.shape
    _backward_factors(gates, h_prev, dA)
    dA.reshape(B, 4, H)[...] *= dh[:, None, :]


class GRUCell(Cell):
    """PyTorch's ``nn.GRU`` layer: gates r, z, n; the reset gate multiplies W_hn h + b_hn."""

    name = "gru"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        return {"V": (3 * H, I), "W": (3 * H, H), "b": (3 * H,), "b_hn": (H,)}

    # -- a whole sequence ------------------------------------------------------------------

    def forward(
        self, p: CellParams, x: np.ndarray, s0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        T, B = x.shape[:2]
        H = self.hidden_size
        shards = _gated_kernels.shard_count(B, H)
        if shards:  # row blocks of the batch, each its own GIL-free compiled loop (same equations)
            dtype = p["W"].dtype  # arrays reused from step to step (see _workspace)
            G = project_inputs(p["V"], p["b"], x, out=_workspace.empty((T, B, 3 * H), dtype))
            hs = _workspace.empty((T + 1, B, H), dtype)  # (T+1, B, H)
            hs[0] = s0
            gates = _gated_kernels.gru_forward(G, hs, p["W"], p["b_hn"], shards)  # (T, B, 4H)
            return hs[1:], hs[-1].copy(), GRUCache(x=x, hs=hs, gates=gates)
        G = project_inputs(p["V"], p["b"], x)  # (T, B, 3H): V x_t + b, all steps at once
        hs = np.empty((T + 1, B, H), dtype=G.dtype)  # (T+1, B, H)
        hs[0] = s0
        gates = np.empty((T, B, 4 * H), dtype=G.dtype)  # (T, B, 4H): r z m n
        W_T = np.ascontiguousarray(p["W"].T)  # (H, 3H)
        R = np.empty((B, 3 * H), dtype=G.dtype)  # (B, 3H) scratch: W h_{t-1}
        with _kernels.loop_blas_threads(3 * B * H * H):
            for t in range(T):
                np.matmul(hs[t], W_T, out=R)
                _gates_step(G[t], R, p["b_hn"], gates[t])
                _new_h(gates[t], hs[t], hs[t + 1])
        return hs[1:], hs[-1].copy(), GRUCache(x=x, hs=hs, gates=gates)

    def backward(
        self,
        dh: np.ndarray,
        cache: Any,
        p: CellParams,
        ds_last: np.ndarray | None = None,
        need_dx: bool = True,
    ) -> CellGrads:
        assert isinstance(cache, GRUCache)
        hs, gates = cache.hs, cache.gates
        T, B, H = dh.shape
        carry = np.zeros((B, H), dtype=dh.dtype)  # (B, H): ∂L/∂h_t through step t+1
        if ds_last is not None:
            carry += ds_last
        shards = _gated_kernels.shard_count(B, H) if dh.dtype == gates.dtype else 0
        rows = T * B
        G_cols = np.r_[0 : 2 * H, 3 * H : 4 * H]  # dG = [da_r, da_z, da_n] among dA's columns
        if shards:  # the factors F_t and Σ dA fused into each shard's loop (same equations)
            dA, sums = _gated_kernels.gru_backward(dh, gates, hs, p["W"], carry, shards)
            # dV over dA's 4H columns (the m block then dropped: no (T, B, 3H) copy of dG)
            dV_all = input_dV(dA, cache.x, p["V"].shape[1])  # (4H, I)
            dV = np.take(  # (3H, I); mode "clip" (ids in range) writes out unbuffered
                dV_all, G_cols, axis=0, mode="clip",
                out=_workspace.empty((3 * H, dV_all.shape[1]), dV_all.dtype),
            )  # fmt: skip
            db, db_hn = sums[G_cols], sums[2 * H : 3 * H]
            dx = None
            if need_dx and cache.x.dtype.kind not in "iu":  # dense: dG (T, B, 3H) copied out
                dG = np.take(  # (T, B, 3H): dA[..., G_cols], unbuffered into the pool
                    dA, G_cols, axis=2, mode="clip", out=_workspace.empty((T, B, 3 * H), dA.dtype)
                )
                dx = input_dx(dG, cache.x, p["V"], need_dx)
        else:
            dA = self._numpy_backward(dh, hs, gates, p["W"], carry)
            db_hn = dA.reshape(rows, 4 * H)[:, 2 * H : 3 * H].sum(axis=0)  # (H,)
            dG = np.delete(dA, np.s_[2 * H : 3 * H], axis=2)  # (T, B, 3H): [da_r, da_z, da_n]
            dV, db, dx = input_grads(dG, cache.x, p["V"], need_dx)
        # (3H, H): Σ_t dR_tᵀ h_{t-1}
        dW = _kernels.matmul_tn(dA.reshape(rows, 4 * H)[:, : 3 * H], hs[:-1].reshape(rows, H))
        return CellGrads(params={"V": dV, "W": dW, "b": db, "b_hn": db_hn}, dx=dx, ds0=carry)

    @staticmethod
    def _numpy_backward(
        dh: np.ndarray, hs: np.ndarray, gates: np.ndarray, W: np.ndarray, carry: np.ndarray
    ) -> np.ndarray:
        """dA (T, B, 4H) by the NumPy loop; carry (B, H) carried in place."""
        T, B, H = dh.shape
        # (T, B, 4H): the factors F_t for all steps at once, then dA_t = dh_t ⊙ F_t in place
        dA = _backward_factors(gates, hs[:-1], np.empty((T, B, 4 * H), dtype=dh.dtype))
        dA4 = dA.reshape(T, B, 4, H)
        total = np.empty((B, H), dtype=dh.dtype)
        with _kernels.loop_blas_threads(3 * B * H * H):
            for t in range(T - 1, -1, -1):
                np.add(dh[t], carry, out=total)  # ∂L/∂h_t
                dA4[t] *= total[:, None, :]  # [da_r, da_z, dm, da_n]
                np.matmul(dA[t, :, : 3 * H], W, out=carry)  # dR_t W
                total *= gates[t, :, H : 2 * H]
                carry += total  # + dh ⊙ z
        return dA

    # -- one step and its Jacobians ---------------------------------------------------------

    def _gates(self, p: CellParams, x_t: np.ndarray, h_prev: np.ndarray) -> np.ndarray:
        """[r, z, m, n] (B, 4H) at x_t and h_{t-1}."""
        G = project_inputs(p["V"], p["b"], x_t)  # (B, 3H)
        R = h_prev @ p["W"].T  # (B, 3H)
        out = np.empty((h_prev.shape[0], 4 * self.hidden_size), dtype=R.dtype)
        _gates_step(G, R, p["b_hn"], out)
        return out

    def step(self, p: CellParams, x_t: np.ndarray, s_prev: np.ndarray) -> np.ndarray:
        return _new_h(self._gates(p, x_t, s_prev), s_prev, np.empty_like(s_prev))

    def _tangent(
        self, gates: np.ndarray, h_prev: np.ndarray, dG: np.ndarray, dR: np.ndarray, dh_prev: Any
    ) -> np.ndarray:
        """dh_t for tangents dG of G (B, 3H), dR of [R^r, R^z, m] (B, 3H), dh_{t-1} (or 0).

        dr = r(1−r) ⊙ (dG^r + dR^r)   dz = z(1−z) ⊙ (dG^z + dR^z)
        dn = (1 − n²) ⊙ (dG^n + dr ⊙ m + r ⊙ dR^m)
        dh = (1 − z) ⊙ dn + z ⊙ dh_{t-1} + dz ⊙ (h_{t-1} − n)
        """
        H = self.hidden_size
        r, z, m, n = (gates[:, k * H : (k + 1) * H] for k in range(4))
        da = dG + dR  # (B, 3H); its n block is replaced below
        dr = r * (1.0 - r) * da[:, :H]
        dz = z * (1.0 - z) * da[:, H : 2 * H]
        dn = (1.0 - n * n) * (dG[:, 2 * H :] + dr * m + r * dR[:, 2 * H :])
        return (1.0 - z) * dn + z * dh_prev + dz * (h_prev - n)

    def jvp_state(self, p: CellParams, at: StepArgs, v: np.ndarray) -> np.ndarray:
        gates = self._gates(p, at.x, at.s_prev)
        dG = np.zeros((v.shape[0], 3 * self.hidden_size), dtype=v.dtype)  # x_t is held fixed
        return self._tangent(gates, at.s_prev, dG, v @ p["W"].T, v)

    def vjp_state(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dA = np.empty_like(gates)
        _step_backward(gates, at.s_prev, u, dA)
        return u * gates[:, H : 2 * H] + dA[:, : 3 * H] @ p["W"]  # uᵀ (diag(z) + ∂(…)/∂h W)

    def jvp_params(self, p: CellParams, at: StepArgs, dp: CellParams) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dG = project_inputs(dp["V"], dp["b"], at.x)  # (B, 3H): dV x_t + db
        dR = at.s_prev @ dp["W"].T  # (B, 3H): dW h_{t-1}
        dR[:, 2 * H :] += dp["b_hn"]
        return self._tangent(gates, at.s_prev, dG, dR, 0.0)

    def vjp_params(self, p: CellParams, at: StepArgs, u: np.ndarray) -> CellParams:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dA = np.empty_like(gates)
        _step_backward(gates, at.s_prev, u, dA)
        dG = np.delete(dA, np.s_[2 * H : 3 * H], axis=1)  # (B, 3H)
        dV, db = step_input_grads(dG, at.x, p["V"])
        return {
            "V": dV,
            "W": dA[:, : 3 * H].T @ at.s_prev,
            "b": db,
            "b_hn": dA[:, 2 * H : 3 * H].sum(axis=0),
        }

    def jvp_input(self, p: CellParams, at: StepArgs, dx: np.ndarray) -> np.ndarray:
        gates = self._gates(p, at.x, at.s_prev)
        dR = np.zeros((dx.shape[0], 3 * self.hidden_size), dtype=dx.dtype)  # h_{t-1} held fixed
        return self._tangent(gates, at.s_prev, dx @ p["V"].T, dR, 0.0)

    def vjp_input(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dA = np.empty_like(gates)
        _step_backward(gates, at.s_prev, u, dA)
        dG = np.delete(dA, np.s_[2 * H : 3 * H], axis=1)  # (B, 3H): [da_r, da_z, da_n]
        return dG @ p["V"]

    def param_jacobian(self, p: CellParams, at: StepArgs) -> ParamJacobian:
        """Gate row g·H + r of V, W, b (and b_hn's r) moves unit r only, through the factors F
        of :func:`_backward_factors` (∂h_r/∂ of each pre-activation):

            ∂h/∂V = [F_r, F_z, F_n] ⊗ x     ∂h/∂W = [F_r, F_z, F_m] ⊗ h_{t-1}
            ∂h/∂b = [F_r, F_z, F_n]         ∂h/∂b_hn = F_m
        """
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        F = _backward_factors(gates, at.s_prev, np.empty_like(gates))  # (B, 4H): r z m n
        d_in = np.concatenate([F[:, : 2 * H], F[:, 3 * H :]], axis=1)  # (B, 3H): ∂h/∂G
        d_rec = F[:, : 3 * H]  # (B, 3H): ∂h/∂[R^r, R^z, m]
        values = np.concatenate(
            [
                outer_rows(d_in, at.x, self.input_size),
                outer_rows(d_rec, at.s_prev, H),
                d_in,
                F[:, 2 * H : 3 * H],
            ],
            axis=1,
        )[:, None, :]  # (B, 1, P)
        return ParamJacobian(rows=unit_rows(self.param_shapes(), H), values=values)

    def state_jacobian(self, p: CellParams, at: StepArgs) -> np.ndarray:
        """∂h_t/∂h_{t-1} (B, H, H) in closed form, the gates computed once per stream:

        J = diag(z) + diag(a_r) W_r + diag(a_z) W_z + diag(a_n) W_n
        a_z = (h_{t-1} − n) z(1−z)    a_n = (1−z)(1−n²) r    a_r = a_n m (1−r)
        """
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        r, z, m, n = (gates[:, k * H : (k + 1) * H] for k in range(4))
        a_n = (1.0 - z) * (1.0 - n * n) * r
        a = np.stack([a_n * m * (1.0 - r), (at.s_prev - n) * z * (1.0 - z), a_n], axis=1)
        jac = np.einsum("bkh,khj->bhj", a, p["W"].reshape(3, H, H))  # (B, H, H)
        jac[:, np.arange(H), np.arange(H)] += z
        return jac
