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

:meth:`RTRL.run` (T steps, weights fixed) gives the same sums and the same M_T, Z_T without
the T products over the influence. Unrolling the recursion over the chunk (steps 1..T,
Φ_s = J_T ⋯ J_{s+1}, Φ_T = 1):

    [M | Z]_T = Φ_0 [M | Z]_0 + Σ_s Φ_s Ī_s,   (Φ_s Ī_s)[k, (r, q)] = A_s[k, r] ĥ_{s,q},
    A_s = Φ_s diag(f'_s),   Φ_{s-1} = A_s W                     (backward over s, H³ each)

    Σ_t c_t M_t = g_0 M_0 + Σ_s δ_s ⊗ ĥ_s,   Σ_t c_t Z_t = g_0 Z_0,
    δ_s = g_s ⊙ f'_s,  g_s = c_s + δ_{s+1} W  (g_T = c_T),  g_0 = δ_1 W   (BPTT in the chunk)

so a chunk costs T·B·(H³ + H²·Q) for the A_s and their sum (one product (H·H, T) @ (T, Q) per
stream) plus ONE influence product Φ_0 [M | Z]_0 (B·H²·(H·Q + H)), instead of T of them:
about min(T, Q)/2 times fewer multiply-adds. Exact: the same M_T and Σ_t grads_t, summed in
another order (equal to the step-by-step results to rounding).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..model import RNN
from ..params import Gradients
from .base import OnlineAlgorithm, StateDict, _outer_sum
from .cellwise import CellRTRL

_BLOCK_BYTES = 16 << 20  # A_s of at most this many bytes are held before they are summed


class RTRL(OnlineAlgorithm):
    """M_t = J_t M_{t-1} + Ī_t, dΘ_t = Σ_b c_tb M_tb: the exact online gradient (see the module).

    ``state_dict()`` keeps the public layout M (B, H, H, Q) and Z (B, H, H) (unit k, then
    row r / column j); inside, both live in one (H, B, H·Q + H) buffer.
    """

    name = "rtrl"
    generic = CellRTRL

    def __init__(self, model: RNN, batch: int, seed: int = 0, fast: bool = True) -> None:
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

    # -- a chunk with the weights fixed ----------------------------------------------------------

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """T steps at once: BPTT inside the chunk for Σ_t grads_t, Φ_0 and Σ_s A_s ⊗ ĥ_s for the
        carried [M | Z] (see the module)."""
        ch = self._chunk(x, y, mask)
        W = self.model.params["W"]  # (H, H)
        fprime, c = ch.fprime, ch.c  # (T, B, H) each
        T = fprime.shape[0]
        # Σ_t c_t M_t and Σ_t c_t Z_t: δ_s = g_s ⊙ f'_s, g_s = c_s + δ_{s+1} W, g_0 = δ_1 W
        delta = np.empty_like(fprime)  # (T, B, H)
        np.multiply(c[T - 1], fprime[T - 1], out=delta[T - 1])
        for s in range(T - 2, -1, -1):
            g = delta[s + 1] @ W
            g += c[s]
            np.multiply(g, fprime[s], out=delta[s])
        g0 = delta[0] @ W  # (B, H): Σ_t c_t J_t ⋯ J_1
        theta = _outer_sum(delta, ch.hhat) + self._theta_grad(g0, ch.dz[0])  # (H, Q)
        h0 = self._h0_grad(g0)  # (B, H), from the chunk's starting Z_0
        self._advance_chunk(fprime, ch.hhat)
        self.t += T
        return ch.losses, self._gradients(ch, theta, h0)

    def _advance_chunk(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        """[M | Z]_T = Φ_0 [M | Z]_0 + Σ_s A_s ⊗ ĥ_s, given f'(E_s) (T, B, H) and ĥ_s (T, B, Q)."""
        T, B, H = fprime.shape
        Q = self.Q
        W = self.model.params["W"]
        dt = self.model.dtype
        phi = np.broadcast_to(np.eye(H, dtype=dt), (B, H, H)).copy()  # (B, H, H): Φ_T = 1
        added = np.zeros((B, H * H, Q), dtype=dt)  # Σ_s A_s[b, (k, r)] ĥ_s[b, q]
        block = max(1, min(T, _BLOCK_BYTES // max(1, B * H * H * dt.itemsize)))
        A = np.empty((B, block, H * H), dtype=dt)  # (B, S, H·H): a block of A_s, s descending
        stop = T
        while stop > 0:
            start = max(0, stop - block)
            n = stop - start
            for j, s in enumerate(range(stop - 1, start - 1, -1)):
                a = A[:, j].reshape(B, H, H)
                np.multiply(phi, fprime[s][:, None, :], out=a)  # A_s = Φ_s diag(f'_s)
                np.matmul(a.reshape(B * H, H), W, out=phi.reshape(B * H, H))  # Φ_{s-1}
            rows = hhat[start:stop][::-1].transpose(1, 0, 2)  # (B, n, Q), s descending
            added += np.matmul(A[:, :n].transpose(0, 2, 1), rows)
            stop = start
        cur, nxt = self._buf, self._next  # (H, B, H·Q + H) each
        for b in range(B):  # Φ_0 [M | Z]_0, stream by stream
            np.matmul(phi[b], cur[:, b, :], out=nxt[:, b, :])
        nxt[:, :, : H * Q].reshape(H, B, H, Q)[...] += added.reshape(B, H, H, Q).transpose(
            1, 0, 2, 3
        )
        self._buf, self._next = nxt, cur
