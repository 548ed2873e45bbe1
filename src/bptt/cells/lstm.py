"""The LSTM cell in PyTorch's convention (``nn.LSTM``), forward and backward side by side.

Forward, gates stacked in the order i, f, g, o (rows of V, W and b):

    A_t = V x_t + b + W h_{t-1}                       (B, 4H); V x_t + b for all steps in one
    i_t = σ(A^i_t)   f_t = σ(A^f_t)   g_t = tanh(A^g_t)   o_t = σ(A^o_t)        product
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)                             s_t = [h_t ‖ c_t]  (B, 2H)

``b`` is PyTorch's b_ih + b_hh (only the sum enters the equations).

Backward, with dh_t = ∂L/∂h_t from above plus the carry, and dc_t the carry on the cell:

    k = tanh(c_t)
    dc = dc_t + dh ⊙ o ⊙ (1 − k²)
    dA = [dc ⊙ g ⊙ i(1−i),  dc ⊙ c_{t-1} ⊙ f(1−f),  dc ⊙ i ⊙ (1−g²),  dh ⊙ k ⊙ o(1−o)]
    carry: ∂L/∂h_{t-1} ∋ dA_t W        ∂L/∂c_{t-1} = dc ⊙ f      (the cell path: no W, no σ')
    dW = Σ_t dA_tᵀ h_{t-1}    dV = Σ_t dA_tᵀ x_t    db = Σ_t dA_t    dx_t = dA_t V

Only W h_{t-1} (forward) and dA_t W (backward) run step by step; the input projection, dV, dW,
db and dx are single products over all T·B rows, and so are the backward's gate factors
(dA_t is dc_t or dh_t times a factor known after the forward). With Numba, the same
equations run in batch-sharded compiled loops (:mod:`bptt.cells._gated_kernels`) that fuse
the gate factors into the backward loop instead. The cache keeps the inputs, h_0..h_T,
c_0..c_T and the activated gates (T, B, 4H); tanh(c_t) and the gate derivatives are
recomputed from them (elementwise, cheap).

The state Jacobian ∂s_t/∂s_{t-1} has four blocks: ∂c_t/∂c_{t-1} = diag(f_t) is the cell path
(the "constant error carousel"), the others go through W.
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
class LSTMCache:
    """x (T, B, I) or ids (T, B); hs, cs (T+1, B, H) with row 0 = h_0, c_0; gates (T, B, 4H)."""

    x: np.ndarray
    hs: np.ndarray
    cs: np.ndarray
    gates: np.ndarray


def _activate(A: np.ndarray) -> np.ndarray:
    """[i, f, g, o] = [σ, σ, tanh, σ](A) in place on A (B, 4H)."""
    H = A.shape[-1] // 4
    sigmoid_(A[..., : 2 * H])
    np.tanh(A[..., 2 * H : 3 * H], out=A[..., 2 * H : 3 * H])
    sigmoid_(A[..., 3 * H :])
    return A


def _new_state(gates: np.ndarray, c_prev: np.ndarray, h: np.ndarray, c: np.ndarray) -> None:
    """c = f ⊙ c_{t-1} + i ⊙ g,  h = o ⊙ tanh(c), into h and c (B, H)."""
    H = c_prev.shape[-1]
    i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=h)  # scratch
    c += h
    np.tanh(c, out=h)
    h *= o


def _step_backward(
    gates: np.ndarray,
    c_prev: np.ndarray,
    c: np.ndarray,
    dh: np.ndarray,
    dc: np.ndarray,
    dA: np.ndarray,
) -> None:
    """dA (B, 4H) of one step from dh = ∂L/∂h_t; dc = ∂L/∂c_t from beyond is overwritten by the
    cell's total gradient dc_t + dh ⊙ o ⊙ (1 − tanh² c_t) (see the module)."""
    H = c.shape[-1]
    i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
    da_i, da_f, da_g, da_o = (dA[..., k * H : (k + 1) * H] for k in range(4))
    k = da_o  # tanh(c_t), then overwritten by da_o
    np.tanh(c, out=k)
    np.multiply(k, k, out=da_g)  # scratch: k²
    np.subtract(1.0, da_g, out=da_g)
    da_g *= o
    da_g *= dh
    dc += da_g  # dc = dc_t + dh ⊙ o ⊙ (1 − k²)
    k *= dh
    np.subtract(1.0, o, out=da_i)  # scratch
    da_i *= o
    da_o *= da_i  # dh ⊙ k ⊙ o(1 − o)
    np.multiply(g, g, out=da_g)
    np.subtract(1.0, da_g, out=da_g)
    da_g *= i
    da_g *= dc  # dc ⊙ i ⊙ (1 − g²)
    np.subtract(1.0, f, out=da_f)
    da_f *= f
    da_f *= c_prev
    da_f *= dc  # dc ⊙ c_{t-1} ⊙ f(1 − f)
    np.subtract(1.0, i, out=da_i)
    da_i *= i
    da_i *= g
    da_i *= dc  # dc ⊙ g ⊙ i(1 − i)


class LSTMCell(Cell):
    """PyTorch's ``nn.LSTM`` layer: gates i, f, g, o; the state is s = [h ‖ c]."""

    name = "lstm"
    kronecker_immediate = True  # every row of [V | W | b] reads ĥ_t = [x_t; h_{t-1}; 1]
    state_factor = 2

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I = self.hidden_size, self.input_size
        return {"V": (4 * H, I), "W": (4 * H, H), "b": (4 * H,)}

    # -- a whole sequence ------------------------------------------------------------------

    def forward(
        self, p: CellParams, x: np.ndarray, s0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        T, B = x.shape[:2]
        H = self.hidden_size
        shards = _gated_kernels.shard_count(B, H)
        if shards:  # row blocks of the batch, each its own GIL-free compiled loop (same equations)
            dtype = p["W"].dtype  # arrays reused from step to step (see _workspace)
            gates = _workspace.empty((T, B, 4 * H), dtype)  # (T, B, 4H): V x_t + b, then gates
            project_inputs(p["V"], p["b"], x, out=gates)
            hs = _workspace.empty((T + 1, B, H), dtype)  # (T+1, B, H)
            cs = _workspace.empty((T + 1, B, H), dtype)  # (T+1, B, H)
            hs[0], cs[0] = s0[:, :H], s0[:, H:]
            _gated_kernels.lstm_forward(gates, hs, cs, p["W"], shards)
            s_last = np.concatenate([hs[-1], cs[-1]], axis=1)  # (B, 2H)
            return hs[1:], s_last, LSTMCache(x=x, hs=hs, cs=cs, gates=gates)
        # σ(a) = ½ + ½ tanh(a/2): with the σ gates' rows of V, b and W halved (exact, a power of
        # two), one tanh over all 4H pre-activations gives tanh(A^g) and tanh(A^{i,f,o}/2).
        half = np.where(np.arange(4 * H) // H == 2, 1.0, 0.5).astype(p["W"].dtype)  # (4H,)
        gates = project_inputs(p["V"], p["b"], x)  # (T, B, 4H): V x_t + b, then the gates
        gates *= half
        hs = np.empty((T + 1, B, H), dtype=gates.dtype)  # (T+1, B, H)
        cs = np.empty((T + 1, B, H), dtype=gates.dtype)  # (T+1, B, H)
        hs[0], cs[0] = s0[:, :H], s0[:, H:]
        W_T = p["W"].T * half  # (H, 4H), contiguous
        R = np.empty((B, 4 * H), dtype=gates.dtype)  # (B, 4H) scratch: W h_{t-1}, halved
        with _kernels.loop_blas_threads(4 * B * H * H):
            for t in range(T):
                np.matmul(hs[t], W_T, out=R)
                A = gates[t]
                A += R
                np.tanh(A, out=A)
                for sig in (A[:, : 2 * H], A[:, 3 * H :]):  # i, f and o: ½ + ½ tanh(a/2)
                    sig *= 0.5
                    sig += 0.5
                _new_state(A, cs[t], hs[t + 1], cs[t + 1])
        s_last = np.concatenate([hs[-1], cs[-1]], axis=1)  # (B, 2H)
        return hs[1:], s_last, LSTMCache(x=x, hs=hs, cs=cs, gates=gates)

    def backward(
        self,
        dh: np.ndarray,
        cache: Any,
        p: CellParams,
        ds_last: np.ndarray | None = None,
        need_dx: bool = True,
    ) -> CellGrads:
        assert isinstance(cache, LSTMCache)
        hs, cs, gates = cache.hs, cache.cs, cache.gates
        T, B, H = dh.shape
        carry_h = np.zeros((B, H), dtype=dh.dtype)  # ∂L/∂h_t through step t+1
        dc = np.zeros((B, H), dtype=dh.dtype)  # ∂L/∂c_t through step t+1
        if ds_last is not None:
            carry_h += ds_last[:, :H]
            dc += ds_last[:, H:]
        shards = _gated_kernels.shard_count(B, H) if dh.dtype == gates.dtype else 0
        if shards:  # the gate factors and db fused into each shard's loop (same equations)
            dA, db = _gated_kernels.lstm_backward(dh, gates, cs, p["W"], carry_h, dc, shards)
            dV = input_dV(dA, cache.x, p["V"].shape[1])
            dx = input_dx(dA, cache.x, p["V"], need_dx)
        else:
            dA = self._numpy_backward(dh, hs, cs, gates, p["W"], carry_h, dc)
            dV, db, dx = input_grads(dA, cache.x, p["V"], need_dx)
        rows = T * B
        dW = _kernels.matmul_tn(dA.reshape(rows, 4 * H), hs[:-1].reshape(rows, H))  # (4H, H)
        ds0 = np.concatenate([carry_h, dc], axis=1)  # (B, 2H)
        return CellGrads(params={"V": dV, "W": dW, "b": db}, dx=dx, ds0=ds0)

    @staticmethod
    def _numpy_backward(
        dh: np.ndarray,
        hs: np.ndarray,
        cs: np.ndarray,
        gates: np.ndarray,
        W: np.ndarray,
        carry_h: np.ndarray,
        dc: np.ndarray,
    ) -> np.ndarray:
        """dA (T, B, 4H) by the NumPy loop; carry_h, dc (B, H) carried in place."""
        T, B, H = dh.shape
        i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
        # Hoisted: dA_t = [dc ⊙ F^i, dc ⊙ F^f, dc ⊙ F^g, dh ⊙ F^o] with factors known after the
        # forward, F = [g i(1−i), c_{t-1} f(1−f), i(1−g²), tanh(c_t) o(1−o)], and the carry onto
        # the cell P = o (1 − tanh² c_t): computed for all steps at once into dA and P.
        dA = np.empty((T, B, 4 * H), dtype=dh.dtype)  # (T, B, 4H): F, then dA in place
        F_i, F_f, F_g, F_o = (dA[..., k * H : (k + 1) * H] for k in range(4))
        np.subtract(1.0, i, out=F_i)
        F_i *= i
        F_i *= g
        np.subtract(1.0, f, out=F_f)
        F_f *= f
        F_f *= cs[:-1]
        np.multiply(g, g, out=F_g)
        np.subtract(1.0, F_g, out=F_g)
        F_g *= i
        P = np.tanh(cs[1:])  # (T, B, H): tanh(c_t)
        np.subtract(1.0, o, out=F_o)
        F_o *= o
        F_o *= P
        P *= P
        np.subtract(1.0, P, out=P)
        P *= o  # o (1 − tanh² c_t)
        dA4 = dA.reshape(T, B, 4, H)
        total = np.empty((B, H), dtype=dh.dtype)
        scratch = np.empty((B, H), dtype=dh.dtype)
        with _kernels.loop_blas_threads(4 * B * H * H):
            for t in range(T - 1, -1, -1):
                np.add(dh[t], carry_h, out=total)  # ∂L/∂h_t
                np.multiply(total, P[t], out=scratch)
                dc += scratch  # dc_t + dh ⊙ o ⊙ (1 − tanh² c_t)
                dA4[t, :, :3] *= dc[:, None, :]  # da_i, da_f, da_g
                dA4[t, :, 3] *= total  # da_o
                np.matmul(dA[t], W, out=carry_h)  # dA_t W
                dc *= f[t]  # ∂L/∂c_{t-1} = dc ⊙ f: the cell path
        return dA

    # -- one step and its Jacobians ---------------------------------------------------------

    def _gates(self, p: CellParams, x_t: np.ndarray, h_prev: np.ndarray) -> np.ndarray:
        """[i, f, g, o] (B, 4H) at x_t and h_{t-1}."""
        A = project_inputs(p["V"], p["b"], x_t)  # (B, 4H)
        A += h_prev @ p["W"].T
        return _activate(A)

    def step(self, p: CellParams, x_t: np.ndarray, s_prev: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, x_t, s_prev[:, :H])
        s = np.empty_like(s_prev)  # (B, 2H): [h_t ‖ c_t]
        _new_state(gates, s_prev[:, H:], s[:, :H], s[:, H:])
        return s

    def _tangent(self, gates: np.ndarray, at: StepArgs, dA: np.ndarray, dc_prev: Any) -> np.ndarray:
        """[dh ‖ dc] for a tangent dA (B, 4H) of the pre-activations and dc_{t-1} (or 0).

        di = i(1−i) dA^i   df = f(1−f) dA^f   dg = (1−g²) dA^g   do = o(1−o) dA^o
        dc = df ⊙ c_{t-1} + f ⊙ dc_{t-1} + di ⊙ g + i ⊙ dg
        dh = do ⊙ tanh(c_t) + o ⊙ (1 − tanh² c_t) ⊙ dc
        """
        H = self.hidden_size
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        c_prev, c = at.s_prev[:, H:], at.s[:, H:]
        di = i * (1.0 - i) * dA[:, :H]
        df = f * (1.0 - f) * dA[:, H : 2 * H]
        dg = (1.0 - g * g) * dA[:, 2 * H : 3 * H]
        do = o * (1.0 - o) * dA[:, 3 * H :]
        dc = df * c_prev + f * dc_prev + di * g + i * dg
        k = np.tanh(c)
        dh = do * k + o * (1.0 - k * k) * dc
        return np.concatenate([dh, dc], axis=1)

    def jvp_state(self, p: CellParams, at: StepArgs, v: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev[:, :H])
        return self._tangent(gates, at, v[:, :H] @ p["W"].T, v[:, H:])

    def _backward_step(self, p: CellParams, at: StepArgs, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """dA (B, 4H) and dc = ∂⟨u, s_t⟩/∂c_t (total) for one step."""
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev[:, :H])
        dA = np.empty_like(gates)
        dc = u[:, H:].copy()
        _step_backward(gates, at.s_prev[:, H:], at.s[:, H:], u[:, :H], dc, dA)
        return gates, dA, dc

    def vjp_state(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates, dA, dc = self._backward_step(p, at, u)
        return np.concatenate([dA @ p["W"], dc * gates[:, H : 2 * H]], axis=1)

    def jvp_params(self, p: CellParams, at: StepArgs, dp: CellParams) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev[:, :H])
        dA = project_inputs(dp["V"], dp["b"], at.x)  # (B, 4H): dV x_t + db
        dA += at.s_prev[:, :H] @ dp["W"].T  # + dW h_{t-1}
        return self._tangent(gates, at, dA, 0.0)

    def vjp_params(self, p: CellParams, at: StepArgs, u: np.ndarray) -> CellParams:
        H = self.hidden_size
        _, dA, _ = self._backward_step(p, at, u)
        dV, db = step_input_grads(dA, at.x, p["V"])
        return {"V": dV, "W": dA.T @ at.s_prev[:, :H], "b": db}

    def jvp_input(self, p: CellParams, at: StepArgs, dx: np.ndarray) -> np.ndarray:
        H = self.hidden_size
        gates = self._gates(p, at.x, at.s_prev[:, :H])
        return self._tangent(gates, at, dx @ p["V"].T, 0.0)

    def vjp_input(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        _, dA, _ = self._backward_step(p, at, u)
        return dA @ p["V"]

    def param_jacobian(self, p: CellParams, at: StepArgs) -> ParamJacobian:
        """Gate row g·H + r of V, W, b moves h_r and c_r only (s = [h ‖ c], rows r and H + r):

        ∂c/∂A = [g i(1−i), c_{t-1} f(1−f), i(1−g²), 0]
        ∂h/∂A = o(1 − tanh² c_t) ∂c/∂A + [0, 0, 0, tanh(c_t) o(1−o)]
        ∂s/∂V = ∂s/∂A ⊗ x     ∂s/∂W = ∂s/∂A ⊗ h_{t-1}     ∂s/∂b = ∂s/∂A
        """
        H = self.hidden_size
        h_prev, c_prev, c = at.s_prev[:, :H], at.s_prev[:, H:], at.s[:, H:]
        gates = self._gates(p, at.x, h_prev)
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        k = np.tanh(c)
        d_c = np.concatenate(
            [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), np.zeros_like(o)],
            axis=1,
        )  # (B, 4H): ∂c_r/∂A
        d_h = d_c * np.tile(o * (1.0 - k * k), 4)  # (B, 4H): ∂h_r/∂A through c_r …
        d_h[:, 3 * H :] = k * o * (1.0 - o)  # … and through o
        values = np.stack(
            [
                np.concatenate(
                    [outer_rows(d, at.x, self.input_size), outer_rows(d, h_prev, H), d], axis=1
                )
                for d in (d_h, d_c)
            ],
            axis=1,
        )  # (B, 2, P)
        units = unit_rows(self.param_shapes(), H)  # (1, P)
        return ParamJacobian(rows=np.concatenate([units, units + H]), values=values)

    def state_jacobian(self, p: CellParams, at: StepArgs) -> np.ndarray:
        """∂s_t/∂s_{t-1} (B, 2H, 2H) over s = [h ‖ c] in closed form, the gates computed once:

        ∂c/∂h_{t-1} = Σ_{k=i,f,g} diag(F_k) W_k    F = [g i(1−i), c_{t-1} f(1−f), i(1−g²)]
        ∂c/∂c_{t-1} = diag(f)
        ∂h/∂· = diag(tanh(c_t) o(1−o)) [W_o ‖ 0] + diag(o(1 − tanh² c_t)) ∂c/∂·
        """
        H = self.hidden_size
        i, f, g, o = (
            self._gates(p, at.x, at.s_prev[:, :H])[:, k * H : (k + 1) * H] for k in range(4)
        )
        k = np.tanh(at.s[:, H:])  # (B, H): tanh(c_t)
        carry = o * (1.0 - k * k)  # (B, H): ∂h_t/∂c_t
        W4 = p["W"].reshape(4, H, H)
        F = np.stack(
            [g * i * (1.0 - i), at.s_prev[:, H:] * f * (1.0 - f), i * (1.0 - g * g)], axis=1
        )
        dc_dh = np.einsum("bkh,khj->bhj", F, W4[:3])  # (B, H, H)
        jac = np.zeros((at.s.shape[0], 2 * H, 2 * H), dtype=dc_dh.dtype)
        diag = np.arange(H)
        jac[:, H:, :H] = dc_dh
        jac[:, H + diag, H + diag] = f
        jac[:, :H, :H] = (k * o * (1.0 - o))[:, :, None] * W4[3] + carry[:, :, None] * dc_dh
        jac[:, diag, H + diag] = carry * f
        return jac
