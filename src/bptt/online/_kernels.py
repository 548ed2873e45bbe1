"""Compiled inner loops of the online algorithms (Numba, the optional extra ``fast``).

Each kernel computes exactly the equation of its NumPy twin beside the algorithm, in the same
dtype; only the order of floating-point sums may differ (tests run both paths). They run when
Numba is installed and the package's kernel backend is not ``numpy``
(``bptt._kernels.set_backend``, ``BPTT_KERNELS=numpy``).

    snap_propagate   M_t[(k, r)] = f'_k (W_kk M[(k, r)] + Σ_p W_{k, j_p} M[src_p]) + δ_kr f'_k ĥ
                     (SnAp-n's sparse update; entry by entry, so a block of entries sharing r
                     stays in cache while it is read)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _kernels

_compiled: dict[str, Callable[..., Any]] | None = None


def compiled() -> dict[str, Callable[..., Any]] | None:
    """The compiled kernels (compiled lazily, once), or None: Numba missing or not wanted."""
    global _compiled
    if not _kernels._numba_wanted():
        return None
    if _compiled is None:
        import numba

        jit = numba.njit(cache=False, nogil=True, boundscheck=False, error_model="numpy")
        _compiled = {"snap_propagate": jit(_snap_propagate_py)}
    return _compiled


def _snap_propagate_py(
    cur: np.ndarray,  # (nnz, B, Q + 1): [M | Z] at t − 1
    nxt: np.ndarray,  # (nnz, B, Q + 1): written
    W: np.ndarray,  # (H, H)
    rows: np.ndarray,  # (nnz,): k_e
    cols: np.ndarray,  # (nnz,): r_e
    indptr: np.ndarray,  # (nnz + 1,): reads of e are src[indptr[e]:indptr[e + 1]]
    src: np.ndarray,  # the entry (j, r_e) each read takes
    wcol: np.ndarray,  # its j (W's column)
    fT: np.ndarray,  # (H, B): f'(E_t) unit first
    hhat: np.ndarray,  # (B, Q): ĥ_t
) -> None:
    nnz, B, Q1 = cur.shape
    Q = Q1 - 1
    for e in range(nnz):
        k = rows[e]
        w = W[k, k]
        for b in range(B):
            for q in range(Q1):
                nxt[e, b, q] = w * cur[e, b, q]
        for p in range(indptr[e], indptr[e + 1]):
            w = W[k, wcol[p]]
            s = src[p]
            for b in range(B):
                for q in range(Q1):
                    nxt[e, b, q] += w * cur[s, b, q]
        diag = k == cols[e]
        for b in range(B):
            f = fT[k, b]
            for q in range(Q1):
                nxt[e, b, q] *= f
            if diag:
                for q in range(Q):
                    nxt[e, b, q] += f * hhat[b, q]
