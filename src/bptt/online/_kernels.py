"""Compiled inner loops of the online algorithms (Numba, the optional extra ``fast``).

Each kernel computes exactly the equation of its NumPy twin beside the algorithm, in the same
dtype; only the order of floating-point sums may differ (tests run both paths). They run when
Numba is installed and the package's kernel backend is not ``numpy``
(``bptt._kernels.set_backend``, ``BPTT_KERNELS=numpy``).

    snap_propagate   M_t[(k, r)] = f'_k (W_kk M[(k, r)] + Σ_p W_{k, j_p} M[src_p]) + δ_kr f'_k ĥ
                     (SnAp-n's sparse update; entry by entry, so a block of entries sharing r
                     stays in cache while it is read)
    uoro_run         T steps of UORO's update and gradient (``UORO._propagate``,
                     ``_theta_grad``) on a hoisted forward, signs drawn beforehand
    kf_run           T steps of KF-RTRL's (``KFRTRL._propagate``, ``_theta_grad``), alike

The ``*_run`` kernels take the chunk's f' (T, B, H), ĥ (T, B, Q), c (T, B, H) and signs, update
the carried factors in place and add Σ_t dΘ_t into ``theta`` (H, Q).
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
    if not _kernels.numba_wanted():
        return None
    if _compiled is None:
        import numba

        jit = numba.njit(cache=False, nogil=True, boundscheck=False, error_model="numpy")
        _compiled = {
            "snap_propagate": jit(_snap_propagate_py),
            "uoro_run": jit(_uoro_run_py),
            "kf_run": jit(_kf_run_py),
        }
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


def _uoro_run_py(
    fp: np.ndarray,  # (T, B, H)
    hhat: np.ndarray,  # (T, B, Q)
    c: np.ndarray,  # (T, B, H)
    nus: np.ndarray,  # (T, B, H): ν
    W: np.ndarray,  # (H, H)
    a: np.ndarray,  # (B, H): ã, updated
    b: np.ndarray,  # (B, H, Q): b̃, updated
    eps: float,
    theta: np.ndarray,  # (H, Q): += Σ_t Σ_b (c_tb·ã_tb) b̃_tb
) -> None:
    T, B, H = fp.shape
    Q = hhat.shape[2]
    ja = np.empty(H, dtype=a.dtype)
    nf = np.empty(H, dtype=a.dtype)
    for t in range(T):
        for s in range(B):
            sq_ja = 0.0
            for k in range(H):  # J_t ã = f' ⊙ (W ã)
                acc = 0.0
                for j in range(H):
                    acc += W[k, j] * a[s, j]
                ja[k] = fp[t, s, k] * acc
                sq_ja += ja[k] * ja[k]
            sq_b = 0.0
            for r in range(H):
                for q in range(Q):
                    sq_b += b[s, r, q] * b[s, r, q]
            sq_nf = 0.0
            sq_nu = 0.0
            for r in range(H):
                nf[r] = nus[t, s, r] * fp[t, s, r]
                sq_nf += nf[r] * nf[r]
                sq_nu += nus[t, s, r] * nus[t, s, r]
            sq_h = 0.0
            for q in range(Q):
                sq_h += hhat[t, s, q] * hhat[t, s, q]
            rho0 = np.sqrt((np.sqrt(sq_b) + eps) / (np.sqrt(sq_ja) + eps))
            # ‖νᵀĪ_t‖ = ‖ν ⊙ f'‖ ‖ĥ‖ (Ī_t's rows are f'_r ĥ)
            rho1 = np.sqrt((np.sqrt(sq_nf) * np.sqrt(sq_h) + eps) / (np.sqrt(sq_nu) + eps))
            scale = 0.0
            for k in range(H):
                a[s, k] = rho0 * ja[k] + rho1 * nus[t, s, k]
                scale += c[t, s, k] * a[s, k]
            for r in range(H):
                g = nf[r] / rho1
                for q in range(Q):
                    b[s, r, q] = b[s, r, q] / rho0 + g * hhat[t, s, q]
                    theta[r, q] += scale * b[s, r, q]


def _kf_run_py(
    fp: np.ndarray,  # (T, B, H)
    hhat: np.ndarray,  # (T, B, Q)
    c: np.ndarray,  # (T, B, H)
    signs: np.ndarray,  # (T, 2, B): c₁, c₂
    W: np.ndarray,  # (H, H)
    u: np.ndarray,  # (B, Q), updated
    A: np.ndarray,  # (B, H, H), updated
    eps: float,
    theta: np.ndarray,  # (H, Q): += Σ_t Σ_b (c_tb A_tb) ⊗ u_tb
) -> None:
    T, B, H = fp.shape
    Q = hhat.shape[2]
    ja = np.empty((H, H), dtype=A.dtype)
    ca = np.empty(H, dtype=A.dtype)
    for t in range(T):
        for s in range(B):
            ja[:, :] = 0.0
            for k in range(H):  # J_t A = diag(f') W A, rows as axpys (contiguous, vectorised)
                for j in range(H):
                    w = W[k, j]
                    for r in range(H):
                        ja[k, r] += w * A[s, j, r]
            sq_ja = 0.0
            for k in range(H):
                for r in range(H):
                    ja[k, r] *= fp[t, s, k]
                    sq_ja += ja[k, r] * ja[k, r]
            sq_u = 0.0
            for q in range(Q):
                sq_u += u[s, q] * u[s, q]
            sq_f = 0.0
            for k in range(H):
                sq_f += fp[t, s, k] * fp[t, s, k]
            sq_h = 0.0
            for q in range(Q):
                sq_h += hhat[t, s, q] * hhat[t, s, q]
            p1 = np.sqrt((np.sqrt(sq_ja) + eps) / (np.sqrt(sq_u) + eps))
            p2 = np.sqrt((np.sqrt(sq_f) + eps) / (np.sqrt(sq_h) + eps))
            c1, c2 = signs[t, 0, s], signs[t, 1, s]
            for q in range(Q):
                u[s, q] = c1 * p1 * u[s, q] + c2 * p2 * hhat[t, s, q]
            for k in range(H):
                for r in range(H):
                    A[s, k, r] = (c1 / p1) * ja[k, r]
                A[s, k, k] += (c2 / p2) * fp[t, s, k]
            ca[:] = 0.0
            for k in range(H):  # c_t A_t
                ck = c[t, s, k]
                for r in range(H):
                    ca[r] += ck * A[s, k, r]
            for r in range(H):
                for q in range(Q):
                    theta[r, q] += ca[r] * u[s, q]
