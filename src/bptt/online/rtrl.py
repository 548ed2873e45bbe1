"""Real-time recurrent learning (Williams & Zipser 1989): the exact influence, carried forward.

    M_t = J_t M_{t-1} + Ī_t          M_0 = 0          dΘ_t = Σ_b c_tb M_tb
    Z_t = J_t Z_{t-1}                Z_0 = 1          dL_t/dh_0 = c_t Z_t

with M_t = ∂h_t/∂Θ (unit k, row r, column q of Θ = [V | W | b_h]), J_t = diag(f'(E_t)) W and
Ī_t[k, r, q] = δ_kr f'_k ĥ_q added on the k = r diagonal. Cost per step: B·H²·(H·Q + H)
multiply-adds for J_t [M_{t-1} | Z_{t-1}] (O(H⁴)), memory 2·B·H·(H·Q + H) (two buffers).

How the step is laid out (the product is the whole cost; everything else is O(B·H·Q)):

- M and Z share one array ``[M | Z]`` of shape (H, B, H·Q + H), unit k first, so that
  J_t [M | Z] = diag(f') (W @ [M | Z]) is ONE matrix product (H × H) @ (H × B·(H·Q + H)) for all
  B streams, written into a preallocated second buffer (the two are swapped each step), then
  scaled by f'_k row by row in place (B = 1: W's rows are scaled before the product instead,
  J_t @ [M | Z], which saves a pass over the influence);
- Ī_t is never formed: a strided view of the k = r diagonal blocks (H, B, Q) gets f' ⊗ ĥ added.

With the weights fixed, Σ_t grads_t is the BPTT gradient of the whole stream.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..model import RNN
from .base import OnlineAlgorithm, StateDict


class RTRL(OnlineAlgorithm):
    """M_t = J_t M_{t-1} + Ī_t, dΘ_t = Σ_b c_tb M_tb: the exact online gradient (see the module).

    ``state_dict()`` keeps the public layout M (B, H, H, Q) and Z (B, H, H) (unit k, then
    row r / column j); inside, both live in one (H, B, H·Q + H) buffer.
    """

    name = "rtrl"

    def __init__(self, model: RNN, batch: int, seed: int = 0) -> None:
        super().__init__(model, batch, seed)
        self._reset_traces()

    # -- the carried [M | Z] in its inner layout ------------------------------------------------

    def _alloc(self) -> None:
        B, H, Q = self.batch, self.H, self.Q
        dt = self.model.dtype
        self._buf = np.zeros((H, B, H * Q + H), dtype=dt)  # (H_k, B, H·Q + H): [M | Z]
        self._next = np.empty_like(self._buf)
        self._tmp = np.empty((H, B, Q), dtype=dt)  # f' ⊗ ĥ for the diagonal blocks

    @staticmethod
    def _diagonal(buf: np.ndarray, Q: int) -> np.ndarray:
        """The k = r blocks of M inside ``buf`` (H, B, H·Q + H), as a writable (H, B, Q) view."""
        s0, s1, s2 = buf.strides
        H, B = buf.shape[:2]
        return as_strided(buf, shape=(H, B, Q), strides=(s0 + Q * s2, s1, s2))

    def _reset_traces(self) -> None:
        if not hasattr(self, "_buf") or self._buf.shape[1] != self.batch:
            self._alloc()
        H, Q = self.H, self.Q
        self._buf.fill(0.0)
        diag = np.arange(H)
        self._buf[diag, :, H * Q + diag] = 1.0  # Z_0 = 1

    @property
    def M(self) -> np.ndarray:
        """M_t = ∂h_t/∂Θ, (B, H, H, Q) (a copy)."""
        B, H, Q = self.batch, self.H, self.Q
        return self._buf[:, :, : H * Q].reshape(H, B, H, Q).transpose(1, 0, 2, 3).copy()

    @property
    def Z(self) -> np.ndarray:
        """Z_t = ∂h_t/∂h_0, (B, H, H) (a copy)."""
        H, Q = self.H, self.Q
        return self._buf[:, :, H * Q :].transpose(1, 0, 2).copy()

    def _traces(self) -> StateDict:
        return {"M": self.M, "Z": self.Z}

    def _carried(self) -> list[np.ndarray]:
        return [self.h, self._buf]

    def _load_traces(self, arrays: StateDict) -> None:
        B, H, Q = self.batch, self.H, self.Q
        dt = self.model.dtype
        self._buf[:, :, : H * Q] = (
            np.asarray(arrays["M"], dtype=dt).transpose(1, 0, 2, 3).reshape(H, B, H * Q)
        )
        self._buf[:, :, H * Q :] = np.asarray(arrays["Z"], dtype=dt).transpose(1, 0, 2)

    # -- one step ------------------------------------------------------------------------------

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        H, Q = self.H, self.Q
        W = self.model.params["W"]
        cur, nxt = self._buf, self._next
        if self.batch == 1:  # J_t = diag(f') W is (H, H): scale W's rows, not the product's
            np.matmul(fprime.T * W, cur.reshape(H, -1), out=nxt.reshape(H, -1))
        else:  # W @ [M | Z] for all streams at once: (H, H) @ (H, B·(H·Q + H)), then diag(f'_k)
            np.matmul(W, cur.reshape(H, -1), out=nxt.reshape(H, -1))
            nxt *= fprime.T[:, :, None]
        np.multiply(fprime.T[:, :, None], hhat[None], out=self._tmp)  # (H, B, Q)
        self._diagonal(nxt, Q)[...] += self._tmp  # + Ī_t on the k = r blocks
        self._buf, self._next = nxt, cur

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        B, H, Q = self.batch, self.H, self.Q
        # Σ_b Σ_k c_bk M[k, b, :]: c (B, H) → (H·B) in the buffer's (k, b) order
        flat = self._buf.reshape(H * B, H * Q + H)
        return (np.ascontiguousarray(c.T).reshape(1, H * B) @ flat[:, : H * Q]).reshape(H, Q)

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        H, Q = self.H, self.Q
        return np.einsum("bk,kbj->bj", c, self._buf[:, :, H * Q :])  # (B, H): c_t Z_t
