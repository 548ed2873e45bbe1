"""The GRU with the reset gate applied *before* the recurrent product, forward and backward.

This is ONNX's ``GRU`` with ``linear_before_reset = 0`` (its default), Keras's
``GRU(reset_after=False)`` and the original GRU of Cho et al. (2014); PyTorch's ``nn.GRU``
(:mod:`bptt.cells.gru`) applies the reset gate after the product instead, r ⊙ (W_hn h + b_hn).
Gates stacked in the order r, z, n (rows of V, W and b), as :mod:`bptt.cells.gru`:

    G_t  = V x_t + b                                  (T, B, 3H), all steps in one product
    r_t  = σ(G^r_t + W_r h_{t-1})    z_t = σ(G^z_t + W_z h_{t-1})
    q_t  = r_t ⊙ h_{t-1}                               the reset state
    n_t  = tanh(G^n_t + W_n q_t)
    h_t  = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}             (s_t = h_t)

Both biases of the n row enter only through their sum, so one ``b`` (3H,) holds everything
(ONNX's Wb + Rb, Keras's single bias). Each step has two dependent products, W_{rz} h_{t-1}
and then W_n q_t.

Backward, with dh_t = ∂L/∂h_t from above plus the carry from step t+1:

    dn = dh ⊙ (1 − z)                 dz = dh ⊙ (h_{t-1} − n)
    da_n = dn ⊙ (1 − n²)              dq = da_n W_n
    da_r = dq ⊙ h_{t-1} ⊙ r(1 − r)    da_z = dz ⊙ z(1 − z)
    dG_t = [da_r, da_z, da_n]
    carry: ∂L/∂h_{t-1} = dh ⊙ z + dq ⊙ r + [da_r, da_z] W_{rz}
    dW_{rz} = Σ_t [da_r, da_z]ᵀ h_{t-1}    dW_n = Σ_t da_nᵀ q_t
    dV = Σ_t dG_tᵀ x_t    db = Σ_t dG_t    dx_t = dG_t V

The loop runs dq and the carry's W_{rz} product step by step; dV, dW, db and dx are single
products over all T·B rows. The cache keeps the inputs, h_0..h_T and the activated gates
[r, z, n] (T, B, 3H); q_t = r_t ⊙ h_{t-1} and the gate derivatives are recomputed from them
(elementwise, cheap). A NumPy path only (no compiled kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _kernels
from ._gated import input_grads, project_inputs, sigmoid_, step_input_grads
from .base import Cell, CellGrads, CellParams, StepArgs


@dataclass(frozen=True)
class GRUResetBeforeCache:
    """x (T, B, I) or ids (T, B); hs (T+1, B, H) with hs[0] = h_0; gates (T, B, 3H) [r z n]."""

    x: np.ndarray
    hs: np.ndarray
    gates: np.ndarray


def _gates_step(G: np.ndarray, W: np.ndarray, h_prev: np.ndarray, out: np.ndarray) -> None:
    """[r, z, n] (B, 3H) of one step from G = V x_t + b (B, 3H), W (3H, H) and h_{t-1} (B, H)."""
    H = h_prev.shape[-1]
    rz = out[:, : 2 * H]
    np.matmul(h_prev, W[: 2 * H].T, out=rz)  # W_{rz} h_{t-1}
    rz += G[:, : 2 * H]
    sigmoid_(rz)  # r, z
    q = out[:, 2 * H :]
    np.multiply(out[:, :H], h_prev, out=q)  # q = r ⊙ h_{t-1}, overwritten by n
    n = q @ W[2 * H :].T  # (B, H): W_n q
    n += G[:, 2 * H :]
    np.tanh(n, out=out[:, 2 * H :])  # n = tanh(G_n + W_n q)


def _new_h(gates: np.ndarray, h_prev: np.ndarray, out: np.ndarray) -> np.ndarray:
    """h = n + z ⊙ (h_{t-1} − n) = (1 − z) ⊙ n + z ⊙ h_{t-1}."""
    H = h_prev.shape[-1]
    z, n = gates[..., H : 2 * H], gates[..., 2 * H :]
    np.subtract(h_prev, n, out=out)
    out *= z
    out += n
    return out


def _step_backward(
    gates: np.ndarray, h_prev: np.ndarray, dh: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(dG = [da_r, da_z, da_n] (B, 3H), ∂L/∂h_{t-1} (B, H)) of one step from dh = ∂L/∂h_t.

    The equations are the module's; every array here is new (dh is not written).
    """
    H = h_prev.shape[-1]
    r, z, n = (gates[..., k * H : (k + 1) * H] for k in range(3))
    dG = np.empty(gates.shape, dtype=dh.dtype)  # (B, 3H)
    da_r, da_z, da_n = (dG[..., k * H : (k + 1) * H] for k in range(3))
    np.multiply(n, n, out=da_n)
    np.subtract(1.0, da_n, out=da_n)
    da_n *= 1.0 - z
    da_n *= dh  # dh (1 − z)(1 − n²)
    dq = da_n @ W[2 * H :]  # (B, H): da_n W_n
    np.subtract(h_prev, n, out=da_z)
    da_z *= dh
    da_z *= z * (1.0 - z)  # dh (h_{t-1} − n) z(1 − z)
    np.multiply(dq, h_prev, out=da_r)
    da_r *= r * (1.0 - r)  # dq h_{t-1} r(1 − r)
    dh_prev = dh * z
    dh_prev += dq * r
    dh_prev += dG[:, : 2 * H] @ W[: 2 * H]  # [da_r, da_z] W_{rz}
    return dG, dh_prev


class GRUResetBeforeCell(Cell):
    """The GRU with n = tanh(V_n x + b_n + W_n (r ⊙ h_{t-1})): ONNX ``linear_before_reset=0``,
    Keras ``reset_after=False``. Gates r, z, n; parameters V (3H, I), W (3H, H), b (3H,)."""

    name = "gru_reset_before"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        return {"V": (3 * H, I), "W": (3 * H, H), "b": (3 * H,)}

    # -- a whole sequence ------------------------------------------------------------------

    def forward(
        self, p: CellParams, x: np.ndarray, s0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        T, B = x.shape[:2]
        H = self.hidden_size
        G = project_inputs(p["V"], p["b"], x)  # (T, B, 3H): V x_t + b, all steps at once
        hs = np.empty((T + 1, B, H), dtype=G.dtype)  # (T+1, B, H)
        hs[0] = s0
        gates = np.empty((T, B, 3 * H), dtype=G.dtype)  # (T, B, 3H): r z n
        with _kernels.loop_blas_threads(3 * B * H * H):
            for t in range(T):
                _gates_step(G[t], p["W"], hs[t], gates[t])
                _new_h(gates[t], hs[t], hs[t + 1])
        return hs[1:], hs[-1].copy(), GRUResetBeforeCache(x=x, hs=hs, gates=gates)

    def backward(
        self,
        dh: np.ndarray,
        cache: Any,
        p: CellParams,
        ds_last: np.ndarray | None = None,
        need_dx: bool = True,
    ) -> CellGrads:
        assert isinstance(cache, GRUResetBeforeCache)
        hs, gates, W = cache.hs, cache.gates, p["W"]
        T, B, H = dh.shape
        carry = np.zeros((B, H), dtype=dh.dtype)  # (B, H): ∂L/∂h_t through step t+1
        if ds_last is not None:
            carry += ds_last
        dG = np.empty((T, B, 3 * H), dtype=dh.dtype)  # (T, B, 3H): [da_r, da_z, da_n]
        with _kernels.loop_blas_threads(3 * B * H * H):
            for t in range(T - 1, -1, -1):
                dG[t], carry = _step_backward(gates[t], hs[t], dh[t] + carry, W)
        rows = T * B
        q = gates[..., :H] * hs[:-1]  # (T, B, H): r_t ⊙ h_{t-1}, recomputed
        dW = np.empty_like(W)  # (3H, H)
        h_prev = hs[:-1].reshape(rows, H)  # (T·B, H)
        dW[: 2 * H] = _kernels.matmul_tn(dG[..., : 2 * H].reshape(rows, 2 * H), h_prev)
        dW[2 * H :] = _kernels.matmul_tn(dG[..., 2 * H :].reshape(rows, H), q.reshape(rows, H))
        dV, db, dx = input_grads(dG, cache.x, p["V"], need_dx)
        return CellGrads(params={"V": dV, "W": dW, "b": db}, dx=dx, ds0=carry)

    # -- one step and its Jacobians ---------------------------------------------------------

    def _gates(self, p: CellParams, x_t: np.ndarray, h_prev: np.ndarray) -> np.ndarray:
        """[r, z, n] (B, 3H) at x_t and h_{t-1}."""
        G = project_inputs(p["V"], p["b"], x_t)  # (B, 3H)
        out = np.empty((h_prev.shape[0], 3 * self.hidden_size), dtype=G.dtype)
        _gates_step(G, p["W"], h_prev, out)
        return out

    def step(self, p: CellParams, x_t: np.ndarray, s_prev: np.ndarray) -> np.ndarray:
        return _new_h(self._gates(p, x_t, s_prev), s_prev, np.empty_like(s_prev))

    def _tangent(
        self,
        p: CellParams,
        gates: np.ndarray,
        h_prev: np.ndarray,
        e_rz: np.ndarray,
        e_n: np.ndarray,
        v: Any,
    ) -> np.ndarray:
        """dh_t for tangents of the pre-activations that do not pass through the reset gate,
        e_rz (B, 2H) of [a_r, a_z] and e_n (B, H) of a_n, and dh_{t-1} = v (or 0):

        dr = r(1−r) ⊙ e_r    dz = z(1−z) ⊙ e_z    dq = dr ⊙ h_{t-1} + r ⊙ v
        dn = (1 − n²) ⊙ (e_n + W_n dq)
        dh = (1 − z) ⊙ dn + z ⊙ v + dz ⊙ (h_{t-1} − n)
        """
        H = self.hidden_size
        r, z, n = (gates[:, k * H : (k + 1) * H] for k in range(3))
        dr = r * (1.0 - r) * e_rz[:, :H]
        dz = z * (1.0 - z) * e_rz[:, H:]
        dq = dr * h_prev + r * v
        dn = (1.0 - n * n) * (e_n + dq @ p["W"][2 * H :].T)
        return (1.0 - z) * dn + z * v + dz * (h_prev - n)

    def jvp_state(self, p: CellParams, at: StepArgs, v: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        e_n = np.zeros_like(v)  # x_t is held fixed; v reaches a_n only through q
        return self._tangent(p, gates, at.s_prev, v @ p["W"][: 2 * H].T, e_n, v)

    def vjp_state(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        gates = self._gates(p, at.x, at.s_prev)
        return _step_backward(gates, at.s_prev, u, p["W"])[1]

    def jvp_input(self, p: CellParams, at: StepArgs, dx: np.ndarray) -> np.ndarray:
        """dh_t = ∂h_t/∂x_t · dx: dx moves every pre-activation by V dx, h_{t-1} held fixed."""
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dG = dx @ p["V"].T  # (B, 3H): [a_r, a_z, a_n] tangents
        return self._tangent(p, gates, at.s_prev, dG[:, : 2 * H], dG[:, 2 * H :], 0.0)

    def vjp_input(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        """uᵀ ∂h_t/∂x_t = (dL/d[a_r, a_z, a_n]) V: the pre-activations' gradient through V."""
        gates = self._gates(p, at.x, at.s_prev)
        dG, _ = _step_backward(gates, at.s_prev, u, p["W"])  # (B, 3H)
        return dG @ p["V"]

    def jvp_params(self, p: CellParams, at: StepArgs, dp: CellParams) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dG = project_inputs(dp["V"], dp["b"], at.x)  # (B, 3H): dV x_t + db
        e_rz = dG[:, : 2 * H] + at.s_prev @ dp["W"][: 2 * H].T  # + dW_{rz} h_{t-1}
        q = gates[:, :H] * at.s_prev
        e_n = dG[:, 2 * H :] + q @ dp["W"][2 * H :].T  # + dW_n q
        return self._tangent(p, gates, at.s_prev, e_rz, e_n, 0.0)

    def vjp_params(self, p: CellParams, at: StepArgs, u: np.ndarray) -> CellParams:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev)
        dG, _ = _step_backward(gates, at.s_prev, u, p["W"])
        dV, db = step_input_grads(dG, at.x, p["V"])
        q = gates[:, :H] * at.s_prev
        dW = np.concatenate([dG[:, : 2 * H].T @ at.s_prev, dG[:, 2 * H :].T @ q])
        return {"V": dV, "W": dW, "b": db}
