"""SnAp-n (Menick et al. 2021): RTRL with the influence kept on a fixed sparsity pattern.

    M_t = P_n ⊙ (J_t M_{t-1} + Ī_t)          dΘ_t = Σ_b c_tb M_tb
    Z_t = P_n ⊙ (J_t Z_{t-1})     Z_0 = 1    dL_t/dh_0 ≈ c_t Z_t

P_n[k, r] = 1 when unit k is reached from unit r (whose row Θ_r· the parameter belongs to) in
at most n − 1 steps through the nonzero pattern of W (every unit reaches itself). h_0's entry
j is treated as a parameter of unit j whose immediate influence is the identity (Z_0 = 1), so
SnAp-n keeps ∂h_k/∂h_{0,j} on the same pattern P_n[k, j]; it is exact wherever M is.

- SnAp-1:  P_1 = 1 (k = r only): m_t[r, q] = J_t[r, r] m_{t-1}[r, q] + f'_r ĥ_q, z_t = J_t[r, r]
  z_{t-1}, stored as (B, H, Q) and (B, H), cost O(B·H·Q) per step — exact when W is diagonal.
- SnAp-n, sparse storage (:class:`SnApN`): only the entries e = (k, r) with P_n[k, r] are
  stored, M as (nnz, B, Q + 1) (the last column is Z[k, j = r]). With the pattern fixed by W's
  mask (``model.set_recurrent_mask``), entry e's update reads only the entries (j, r) with
  W_kj ≠ 0 in the mask and (j, r) in P_n:

      M_t[(k, r)] = f'_k Σ_{j: W_kj ≠ 0, (j, r) ∈ P_n} W_kj M_{t-1}[(j, r)] + δ_kr f'_k ĥ_t

  so memory scales with the pattern's size (nnz·(Q + 1) per stream) and time with the number
  of those reads (times Q), not H²·Q: the compiled kernel (Numba) walks exactly the reads; the
  NumPy path multiplies, for each r, the block W[S_r, S_r] (S_r = {k: P_n[k, r]}) into the
  entries of column r, |S_r|² reads instead (W's mask is sparse inside the block too).
  It assumes W is zero outside its mask (the model keeps it so).
- SnAp-n, dense storage (:class:`DenseSnApN`): RTRL's (H, B, H·Q + H) buffer, masked by P_n after
  each step — RTRL's time and memory; the faster choice when P_n is (nearly) full, e.g. SnAp-2
  with a dense W, where it is exactly RTRL.

``bptt.online.make("snap-n", …, storage="auto")`` picks the sparse storage when P_n keeps at most
half of the (k, r) pairs, the dense one otherwise.
"""

from __future__ import annotations

import numpy as np

from ..model import RNN
from ..params import Gradients
from ._kernels import compiled
from .base import OnlineAlgorithm, StateDict, _outer_sum
from .cellwise import CellDenseSnAp, CellSnAp
from .rtrl import RTRL

STORAGES = ("auto", "sparse", "dense")
SPARSE_BELOW = 0.5
"""``storage="auto"`` stores SnAp-n sparsely when P_n keeps at most this fraction of (k, r)."""


def snap_pattern(w_nonzero: np.ndarray, n: int) -> np.ndarray:
    """P_n (H, H) of bools: k reached from r in ≤ n − 1 steps of the graph k ← r (W_kr ≠ 0)."""
    H = w_nonzero.shape[0]
    step = w_nonzero.astype(bool) | np.eye(H, dtype=bool)
    reach = np.eye(H, dtype=bool)
    for _ in range(n - 1):
        reach = (step.astype(np.int64) @ reach.astype(np.int64)) > 0
    return reach


def _w_nonzero(model: RNN) -> np.ndarray:
    H = model.hidden_size
    return np.ones((H, H), dtype=bool) if model.w_mask is None else np.asarray(model.w_mask, bool)


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"SnAp-n takes n >= 2 here (snap-1 is its own class), got {n!r}")
    return int(n)


class SnAp1(OnlineAlgorithm):
    """m_t = diag(J_t) m_{t-1} + f'(E_t) ⊗ ĥ_t, z_t = diag(J_t) z_{t-1}: SnAp-1 keeps only
    ∂h_r/∂Θ_r· and ∂h_r/∂h_{0,r} (see the module)."""

    name = "snap-1"

    @staticmethod
    def generic(model: RNN, batch: int, seed: int = 0) -> CellSnAp:
        return CellSnAp(model, batch, seed, n=1)

    def __init__(self, model: RNN, batch: int, seed: int = 0, fast: bool = True) -> None:
        super().__init__(model, batch, seed)
        self._reset_traces()

    def _reset_traces(self) -> None:
        self.m = np.zeros((self.batch, self.H, self.Q), dtype=self.model.dtype)  # (B, H, Q)
        self.z = np.ones((self.batch, self.H), dtype=self.model.dtype)  # (B, H): z_0 = 1

    def _traces(self) -> StateDict:
        return {"m": self.m, "z": self.z}

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        jdiag = fprime * np.diagonal(self.model.params["W"])  # (B, H): J_t[r, r]
        self.m *= jdiag[:, :, None]
        self.m += fprime[:, :, None] * hhat[:, None, :]
        self.z *= jdiag

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        return np.einsum("br,brq->rq", c, self.m)  # (H, Q)

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        return c * self.z  # (B, H)

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """T steps hoisted (see ``OnlineAlgorithm.run``). With j_t = f'_t ⊙ diag(W), a diagonal
        Jacobian, the chunk's gradient is a backward recursion, as in BPTT:

            Σ_t c_t ⊙ m_t = (j_1 ⊙ g_1) ⊙ m_0 + Σ_s (f'_s ⊙ g_s) ⊗ ĥ_s
            g_s = c_s + j_{s+1} ⊙ g_{s+1}                      (dL/dh_0: (j_1 ⊙ g_1) ⊙ z_0)

        and m_T, z_T are carried forward step by step as :meth:`step` does (a product
        Π j_i over the chunk would underflow into slow subnormal numbers).
        """
        ch = self._chunk(x, y, mask)
        T = ch.c.shape[0]
        j = ch.fprime * np.diagonal(self.model.params["W"])  # (T, B, H): J_t[r, r]
        g = ch.c.copy()  # (T, B, H)
        for s in range(T - 2, -1, -1):
            g[s] += j[s + 1] * g[s + 1]
        theta = _outer_sum(ch.fprime * g, ch.hhat)  # (H, Q)
        jg = j[0] * g[0]  # (B, H)
        theta += np.einsum("br,brq->rq", jg, self.m)
        h0 = jg * self.z
        m = self.m
        for s in range(T):
            m *= j[s][:, :, None]
            m += ch.fprime[s][:, :, None] * ch.hhat[s][:, None, :]
            self.z *= j[s]
        self.t += T
        return ch.losses, self._gradients(ch, theta, h0)


class DenseSnApN(RTRL):
    """M_t = P_n ⊙ (J_t M_{t-1} + Ī_t): SnAp-n with RTRL's dense storage, masked each step.

    Args:
        n: the pattern's reach (``snap-2`` is n = 2).
    """

    name = "snap-n"
    generic = CellDenseSnAp

    def __init__(
        self, model: RNN, batch: int, seed: int = 0, n: int = 2, fast: bool = True
    ) -> None:
        self.n = _check_n(n)
        self.name = f"snap-{self.n}"
        self.pattern = snap_pattern(_w_nonzero(model), self.n)  # (H, H): P_n[k, r]
        Q = model.input_size + model.hidden_size + 1
        keep = np.concatenate([np.repeat(self.pattern, Q, axis=1), self.pattern], axis=1)
        self._keep = keep[:, None, :].astype(model.dtype)  # (H, 1, H·Q + H): P_n on [M | Z]
        self.full = bool(self.pattern.all())  # P_n keeps every entry: exactly RTRL
        super().__init__(model, batch, seed)

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        super()._propagate(fprime, hhat)
        if not self.full:
            self._buf *= self._keep

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """A full pattern is RTRL, chunk and all (:meth:`RTRL._run`); otherwise the mask after
        every step does not commute with the products, so the influence is carried step by
        step (:meth:`OnlineAlgorithm._run`)."""
        if self.full:
            return super()._run(x, y, mask)
        return OnlineAlgorithm._run(self, x, y, mask)


class SnApN(OnlineAlgorithm):
    """M_t = P_n ⊙ (J_t M_{t-1} + Ī_t) stored only on P_n: SnAp-n, sparse (see the module).

    Args:
        n: the pattern's reach (``snap-2`` is n = 2).

    Attributes:
        pattern: P_n (H, H) of bools. rows, cols: (nnz,) the k and r of each stored entry,
            sorted by r, then k. reads: the terms W_kj M[(j, r)] one step sums (per column of
            Θ and stream) in the compiled kernel.
    """

    name = "snap-n"

    @staticmethod
    def generic(model: RNN, batch: int, seed: int = 0, n: int = 2) -> CellSnAp:
        return CellSnAp(model, batch, seed, n=_check_n(n))

    def __init__(
        self, model: RNN, batch: int, seed: int = 0, n: int = 2, fast: bool = True
    ) -> None:
        self.n = _check_n(n)
        self.name = f"snap-{self.n}"
        super().__init__(model, batch, seed)
        w_nz = _w_nonzero(model)
        self.pattern = snap_pattern(w_nz, self.n)  # (H, H): P_n[k, r]
        self._build_index(w_nz)
        self._reset_traces()

    def _build_index(self, w_nz: np.ndarray) -> None:
        """The stored entries and, for each, the entries its update reads (see the module)."""
        H, P = self.H, self.pattern
        cols, rows = np.nonzero(P.T)  # sorted by r (= cols), then k
        self.rows, self.cols = rows, cols  # (nnz,): k_e, r_e
        nnz = rows.size
        entry = np.full((H, H), -1, dtype=np.int64)
        entry[rows, cols] = np.arange(nnz)  # entry[k, r] = e
        self._diag = entry[np.arange(H), np.arange(H)]  # (H,): e of (k, k)
        self._starts = np.searchsorted(cols, np.arange(H))  # first entry of each r
        # reads (e, j), j ≠ k_e: W_kj in the mask and (j, r_e) stored; j = k_e is read by every
        # entry (with W_kk, zero if masked) as its first term
        reads = w_nz[rows, :] & P[:, cols].T  # (nnz, H)
        reads[np.arange(nnz), rows] = False
        e_idx, j_idx = np.nonzero(reads)  # sorted by e
        self.reads = nnz + e_idx.size
        # CSR form for the compiled kernel: e's reads are _src[_indptr[e]:_indptr[e + 1]]
        self._indptr = np.searchsorted(e_idx, np.arange(nnz + 1))
        self._src = entry[j_idx, cols[e_idx]]  # the entry (j, r_e)
        self._wcol = j_idx  # W's column j
        # the NumPy path: entries sharing r form a block S_r, and every read of the block stays
        # in it, so M_t[S_r, r] = diag(f') W[S_r, S_r] M_{t-1}[S_r, r] is one small product
        # (W is zero outside its mask, so the block's extra entries add nothing)
        ends = np.append(self._starts[1:], nnz)
        self._blocks = [
            (int(a), int(e), np.ix_(rows[a:e], rows[a:e]))
            for a, e in zip(self._starts, ends, strict=True)
        ]

    def _reset_traces(self) -> None:
        B, Q, dt = self.batch, self.Q, self.model.dtype
        nnz = self.rows.size
        self.M = np.zeros((nnz, B, Q + 1), dtype=dt)  # (nnz, B, Q + 1): [M | Z] on P_n
        self.M[self._diag, :, Q] = 1.0  # Z_0 = 1
        self._next = np.empty_like(self.M)
        self._tmp = np.empty((self.H, B, Q), dtype=dt)
        self._cm: np.ndarray | None = None

    def _traces(self) -> StateDict:
        return {"M": self.M}

    def _load_traces(self, arrays: StateDict) -> None:
        self.M[...] = arrays["M"]

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        Q = self.Q
        W = self.model.params["W"]
        cur, nxt = self.M, self._next
        fT = np.ascontiguousarray(fprime.T)  # (H, B)
        kernels = compiled()
        if kernels is not None:
            args = (self.rows, self.cols, self._indptr, self._src, self._wcol, fT, hhat)
            kernels["snap_propagate"](cur, nxt, W, *args)
            self.M, self._next = nxt, cur
            return
        for a, e, block in self._blocks:  # W[S_r, S_r] M_{t-1}[S_r, r]: (s, s) @ (s, B·(Q + 1))
            np.matmul(W[block], cur[a:e].reshape(e - a, -1), out=nxt[a:e].reshape(e - a, -1))
        nxt *= fT[self.rows][:, :, None]  # f'_k
        np.multiply(fT[:, :, None], hhat[None], out=self._tmp)  # (H, B, Q)
        nxt[self._diag, :, :Q] += self._tmp  # + Ī_t on k = r
        self.M, self._next = nxt, cur

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        Q = self.Q
        cT = np.ascontiguousarray(c.T)  # (H, B)
        cm = np.multiply(self.M, cT[self.rows][:, :, None])  # (nnz, B, Q + 1): c_k M[(k, r)]
        self._cm = np.add.reduceat(cm, self._starts, axis=0)  # (H_r, B, Q + 1): Σ_k
        return self._cm[:, :, :Q].sum(axis=1)  # (H, Q)

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        assert self._cm is not None  # _theta_grad ran first in this step
        return np.ascontiguousarray(self._cm[:, :, self.Q].T)  # (B, H): Σ_k c_k Z[k, j]
