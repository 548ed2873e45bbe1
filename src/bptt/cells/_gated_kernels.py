"""Batch-sharded, GIL-free time loops for the gated cells (Numba + NumPy's CBLAS).

The same scheme as the Elman cell's sharded loops (:mod:`bptt._kernels`, "batch-sharded time
loops"): the rows of a batch never meet inside the recurrence, so each shard of batch rows
runs its whole forward (or backward) loop on its own thread, one single-threaded GEMM per step
through a ctypes pointer to NumPy's own ``cblas_?gemm`` (or MKL's, where :mod:`bptt.tuning`
measured it faster; the shard count is measured there too), and the gate arithmetic of the step
fused into one pass over the shard's (rows, H) units with the vectorisable tanh of
:mod:`bptt._kernels` (σ(a) = ½ + ½ tanh(a/2)). No (T, B, ·) temporaries beyond what the
backward needs: the forward writes the activated gates, h_t and c_t; the backward writes
dA_t and nothing else of that size, and sums db = Σ_t Σ_b dA_t in float64 per shard in the
same pass. The large arrays come from :mod:`bptt._workspace` (no page faults per step).

LSTM (gates i, f, g, o; see :mod:`bptt.cells.lstm`):

    forward   A_t = G_t + h_{t-1} Wᵀ           G_t = V x_t + b on entry, the gates on exit
              c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t)
    backward  dh = ∂L/∂h_t + carry_h,  k = tanh(c_t),  dc ← dc + dh ⊙ o ⊙ (1 − k²)
              dA_t = [dc g i(1−i), dc c_{t-1} f(1−f), dc i(1−g²), dh k o(1−o)]
              carry_h ← dA_t W,  dc ← dc ⊙ f

The recurrent product is computed transposed, S = W h_{t-1}ᵀ (4H, rows) and carry_hᵀ = Wᵀ
dA_tᵀ (H, rows): OpenBLAS runs these shapes 1.2–1.9× faster than the row-major ones at the
charlm shape (docs/benchmarks.md, "Gated cells"); the fused pass reads them back through a
small transpose in cache.

GRU (gates r, z, n; see :mod:`bptt.cells.gru`):

    forward   R = h_{t-1} Wᵀ,  r, z = σ(G + R),  m = R^n + b_hn,  n = tanh(G^n + r ⊙ m)
              h_t = n + z ⊙ (h_{t-1} − n)                 gates [r, z, m, n] stored
    backward  dh = ∂L/∂h_t + carry,  F_n = (1 − z)(1 − n²)
              dA_t = dh ⊙ [F_n m r(1−r), (h_{t-1} − n) z(1−z), F_n r, F_n]
              carry ← dh ⊙ z + dA_t[:, :3H] W

Every kernel computes its NumPy twin's equation in the same dtype; only the order of the
floating-point sums inside the GEMMs, db (summed in float64 here) and tanh's last bits differ
(``tests/test_gated_kernels.py`` and ``tests/test_cells_gated.py`` run both paths, the latter
against PyTorch autograd in float64).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _kernels, _workspace

_compiled: dict[str, Callable[..., Any]] | None = None
_failed = False


def _load() -> dict[str, Callable[..., Any]] | None:
    """Compile (lazily, once) the gated kernels; None where the Elman sharded loops are off."""
    global _compiled, _failed
    if _compiled is not None or _failed:
        return _compiled
    gemms = _kernels.sharding_gemms()  # also makes _tanh compile
    if gemms is None:
        _failed = True
        return None
    import numba

    global _quarters
    _quarters = numba.njit(inline="always", error_model="numpy")(_quarters_py)
    # cached on disk: the GEMM is an argument (a ctypes function), not a baked-in pointer
    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    _compiled = {
        "lstm_forward": _kernels.cached_njit(_lstm_forward_py, **options),
        "lstm_backward": _kernels.cached_njit(_lstm_backward_py, **options),
        "gru_forward": _kernels.cached_njit(_gru_forward_py, **options),
        "gru_backward": _kernels.cached_njit(_gru_backward_py, **options),
    }
    return _compiled


def shard_count(batch: int, hidden: int) -> int:
    """Shards for a gated step of (B, H); 0: use the NumPy loops (see _kernels.shard_count)."""
    n = _kernels.shard_count(batch, hidden)
    if n and _load() is None:
        return 0
    return n


def _quarters_py(a: np.ndarray, start: int, H: int) -> tuple[np.ndarray, ...]:  # pragma: no cover
    """The four H-long gate blocks of a 4H row beginning at a[start], as views."""
    return (
        a[start : start + H],
        a[start + H : start + 2 * H],
        a[start + 2 * H : start + 3 * H],
        a[start + 3 * H : start + 4 * H],
    )


_quarters: Callable[..., Any] = _quarters_py  # the compiled, inlined helper once loaded
_tanh = _kernels.tanh_any  # tanh per dtype in compiled code (an overload, see _kernels)


# CBLAS enums: CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112


def _lstm_forward_py(
    gemm: Any,
    gates: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray,
    W: np.ndarray,
    b0: int,
    b1: int,
    code: int,
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1 of the LSTM forward: gates (T, B, 4H) hold G_t on entry, [i f g o] on
    exit; hs, cs (T+1, B, H) hold h_0, c_0 in row 0 and h_t, c_t in row t on exit.
    W (4H, H) C-contiguous; ``code`` is unused (the shard runner's slot)."""
    one = np.ones(1, dtype=gates.dtype)[0]  # 1 and 0 in the arrays' dtype
    zero = one * 0
    T, B, G4 = gates.shape
    H = G4 // 4
    n = b1 - b0
    gflat = gates.reshape(-1)
    hflat = hs.reshape(-1)
    cflat = cs.reshape(-1)
    size = gates.itemsize
    S = np.empty(G4 * n, dtype=gates.dtype)  # (4H, rows): W h_{t-1}ᵀ
    s_ptr = S.ctypes.data
    half = one / (one + one)
    for t in range(T):
        g_off = (t * B + b0) * G4
        h_prev = (t * B + b0) * H
        h_next = h_prev + B * H
        # S (4H, rows) ← W (4H, H) · h_{t-1}ᵀ, then added onto G_t row by row
        h_ptr = hs.ctypes.data + np.uintp(h_prev * size)
        gemm(101, 111, 112, G4, n, H, one, W.ctypes.data, H, h_ptr, H, zero, s_ptr, n)
        for j0 in range(0, G4, 16):  # in column blocks: each S row stays in cache
            w = min(16, G4 - j0)
            for b in range(n):
                row = gflat[g_off + b * G4 + j0 : g_off + b * G4 + j0 + w]
                col = S[j0 * n + b :]
                for j in range(w):
                    row[j] += col[j * n]
        for b in range(n):
            o0 = g_off + b * G4
            ai, af, ag, ao = _quarters(gflat, o0, H)  # views from 0: the loop vectorises
            cp = cflat[h_prev + b * H : h_prev + (b + 1) * H]
            cn = cflat[h_next + b * H : h_next + (b + 1) * H]
            hn = hflat[h_next + b * H : h_next + (b + 1) * H]
            for j in range(H):
                i = half + half * _tanh(half * ai[j])
                f = half + half * _tanh(half * af[j])
                g = _tanh(ag[j])
                o = half + half * _tanh(half * ao[j])
                c = f * cp[j] + i * g
                ai[j] = i
                af[j] = f
                ag[j] = g
                ao[j] = o
                cn[j] = c
                hn[j] = o * _tanh(c)


def _lstm_backward_py(
    gemm: Any,
    dA: np.ndarray,
    dh: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    W_T: np.ndarray,
    carry: np.ndarray,
    dc: np.ndarray,
    db: np.ndarray,
    b0: int,
    b1: int,
    code: int,
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1 of the LSTM backward, t = T−1..0: dA (T, B, 4H) written; dh (T, B, H)
    and gates, cs read; carry, dc (B, H) hold ∂L/∂h_T, ∂L/∂c_T from beyond on entry and
    ∂L/∂h_0, ∂L/∂c_0 on exit; db[b0] (B, 4H) float64 zeros on entry gets Σ_t Σ_rows dA_t.
    W_T = Wᵀ (H, 4H) C-contiguous; ``code`` unused."""
    one = np.ones(1, dtype=dA.dtype)[0]  # 1 and 0 in the arrays' dtype
    zero = one * 0
    T, B, G4 = dA.shape
    H = G4 // 4
    n = b1 - b0
    aflat = dA.reshape(-1)
    gflat = gates.reshape(-1)
    dflat = dh.reshape(-1)
    cflat = cs.reshape(-1)
    size = dA.itemsize
    ch = carry.reshape(-1)[b0 * H : b1 * H]  # this shard's rows, (rows·H,)
    dcs = dc.reshape(-1)[b0 * H : b1 * H]
    C = np.empty(H * n, dtype=dA.dtype)  # (H, rows): Wᵀ dA_tᵀ
    c_ptr = C.ctypes.data
    si, sf, sg, so = _quarters(db[b0], 0, H)  # (4H,) float64: this shard's bias gradient
    for t in range(T - 1, -1, -1):
        g_off = (t * B + b0) * G4
        h_off = (t * B + b0) * H
        c_prev = h_off
        c_now = h_off + B * H
        for b in range(n):
            o0 = g_off + b * G4
            gi, gf, gg, go = _quarters(gflat, o0, H)
            di, df, dg, do = _quarters(aflat, o0, H)
            dht = dflat[h_off + b * H : h_off + (b + 1) * H]
            cp = cflat[c_prev + b * H : c_prev + (b + 1) * H]
            cn = cflat[c_now + b * H : c_now + (b + 1) * H]
            car = ch[b * H : (b + 1) * H]
            dcb = dcs[b * H : (b + 1) * H]
            for j in range(H):
                i, f, g, o = gi[j], gf[j], gg[j], go[j]
                k = _tanh(cn[j])
                tot = dht[j] + car[j]  # ∂L/∂h_t
                d = dcb[j] + tot * o * (one - k * k)  # ∂L/∂c_t
                ai = d * g * i * (one - i)
                af = d * cp[j] * f * (one - f)
                ag = d * i * (one - g * g)
                ao = tot * k * o * (one - o)
                di[j] = ai
                df[j] = af
                dg[j] = ag
                do[j] = ao
                si[j] += ai
                sf[j] += af
                sg[j] += ag
                so[j] += ao
                dcb[j] = d * f  # the cell path: ∂L/∂c_{t-1}
        # C (H, rows) ← Wᵀ (H, 4H) · dA_tᵀ, then back into this shard's rows of the carry
        a_ptr = dA.ctypes.data + np.uintp(g_off * size)
        gemm(101, 111, 112, H, n, G4, one, W_T.ctypes.data, G4, a_ptr, G4, zero, c_ptr, n)
        for b in range(n):
            row = ch[b * H : (b + 1) * H]
            col = C[b:]
            for j in range(H):
                row[j] = col[j * n]


def _gru_forward_py(
    gemm: Any,
    G: np.ndarray,
    gates: np.ndarray,
    hs: np.ndarray,
    W: np.ndarray,
    b_hn: np.ndarray,
    b0: int,
    b1: int,
    code: int,
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1 of the GRU forward: G (T, B, 3H) = V x_t + b read; gates (T, B, 4H)
    [r z m n] and hs[1:] (T+1, B, H) written; W (3H, H) C-contiguous."""
    one = np.ones(1, dtype=gates.dtype)[0]  # 1 and 0 in the arrays' dtype
    zero = one * 0
    T, B, G3 = G.shape
    H = G3 // 3
    n = b1 - b0
    Gf = G.reshape(-1)
    gflat = gates.reshape(-1)
    hflat = hs.reshape(-1)
    size = hs.itemsize
    S = np.empty(G3 * n, dtype=G.dtype)  # (3H, rows): W h_{t-1}ᵀ
    s_ptr = S.ctypes.data
    R = np.empty(G3, dtype=G.dtype)  # one row of S, transposed back
    half = one / (one + one)
    for t in range(T):
        x_off = (t * B + b0) * G3
        g_off = (t * B + b0) * 4 * H
        h_prev = (t * B + b0) * H
        h_next = h_prev + B * H
        h_ptr = hs.ctypes.data + np.uintp(h_prev * size)
        gemm(101, 111, 112, G3, n, H, one, W.ctypes.data, H, h_ptr, H, zero, s_ptr, n)
        for b in range(n):
            col = S[b:]
            for j in range(G3):
                R[j] = col[j * n]
            xr = Gf[x_off + b * G3 : x_off + b * G3 + H]
            xz = Gf[x_off + b * G3 + H : x_off + b * G3 + 2 * H]
            xn = Gf[x_off + b * G3 + 2 * H : x_off + (b + 1) * G3]
            o0 = g_off + b * 4 * H
            gr, gz, gm, gn = _quarters(gflat, o0, H)
            hp = hflat[h_prev + b * H : h_prev + (b + 1) * H]
            hn = hflat[h_next + b * H : h_next + (b + 1) * H]
            Rr = R[:H]
            Rz = R[H : 2 * H]
            Rn = R[2 * H :]
            for j in range(H):
                r = half + half * _tanh(half * (xr[j] + Rr[j]))
                z = half + half * _tanh(half * (xz[j] + Rz[j]))
                m = Rn[j] + b_hn[j]
                nn = _tanh(xn[j] + r * m)
                gr[j] = r
                gz[j] = z
                gm[j] = m
                gn[j] = nn
                hn[j] = nn + z * (hp[j] - nn)


def _gru_backward_py(
    gemm: Any,
    dA: np.ndarray,
    dh: np.ndarray,
    gates: np.ndarray,
    hs: np.ndarray,
    W_T: np.ndarray,
    carry: np.ndarray,
    db: np.ndarray,
    b0: int,
    b1: int,
    code: int,
) -> None:  # pragma: no cover - compiled
    """Rows b0:b1 of the GRU backward, t = T−1..0: dA (T, B, 4H) [da_r da_z dm da_n]
    written; dh (T, B, H), gates, hs read; carry (B, H) holds ∂L/∂h_T from beyond on
    entry, ∂L/∂h_0 on exit; db[b0] (B, 4H) float64 zeros on entry gets Σ_t Σ_rows dA_t.
    W_T = Wᵀ (H, 3H) C-contiguous."""
    one = np.ones(1, dtype=dA.dtype)[0]  # 1 and 0 in the arrays' dtype
    zero = one * 0
    T, B, G4 = dA.shape
    H = G4 // 4
    n = b1 - b0
    aflat = dA.reshape(-1)
    gflat = gates.reshape(-1)
    dflat = dh.reshape(-1)
    hflat = hs.reshape(-1)
    size = dA.itemsize
    ch = carry.reshape(-1)[b0 * H : b1 * H]
    C = np.empty(H * n, dtype=dA.dtype)  # (H, rows): Wᵀ dR_tᵀ
    Z = np.empty(H * n, dtype=dA.dtype)  # (rows, H): dh ⊙ z, the direct path
    c_ptr = C.ctypes.data
    sr, sz, sm, sn = _quarters(db[b0], 0, H)  # (4H,) float64: this shard's Σ dA
    for t in range(T - 1, -1, -1):
        g_off = (t * B + b0) * G4
        h_off = (t * B + b0) * H
        for b in range(n):
            o0 = g_off + b * G4
            gr, gz, gm, gn = _quarters(gflat, o0, H)
            dr, dz, dm, dn = _quarters(aflat, o0, H)
            dht = dflat[h_off + b * H : h_off + (b + 1) * H]
            hp = hflat[h_off + b * H : h_off + (b + 1) * H]
            car = ch[b * H : (b + 1) * H]
            zb = Z[b * H : (b + 1) * H]
            for j in range(H):
                r, z, m, nn = gr[j], gz[j], gm[j], gn[j]
                tot = dht[j] + car[j]  # ∂L/∂h_t
                fn = tot * (one - z) * (one - nn * nn)  # da_n
                fm = fn * r
                fr = fm * m * (one - r)
                fz = tot * (hp[j] - nn) * z * (one - z)
                dn[j] = fn
                dm[j] = fm
                dr[j] = fr
                dz[j] = fz
                sr[j] += fr
                sz[j] += fz
                sm[j] += fm
                sn[j] += fn
                zb[j] = tot * z
        # C (H, rows) ← Wᵀ (H, 3H) · dR_tᵀ with dR_t = dA_t[:, :3H] (row stride 4H)
        a_ptr = dA.ctypes.data + np.uintp(g_off * size)
        gemm(101, 111, 112, H, n, 3 * H, one, W_T.ctypes.data, 3 * H, a_ptr, G4, zero, c_ptr, n)
        for b in range(n):
            row = ch[b * H : (b + 1) * H]
            zb = Z[b * H : (b + 1) * H]
            col = C[b:]
            for j in range(H):
                row[j] = zb[j] + col[j * n]


# -- dispatch -------------------------------------------------------------------------------


def _kernel(name: str, dtype: np.dtype, provider: str) -> Callable[..., Any]:
    kernels = _load()
    assert kernels is not None
    return functools.partial(kernels[name], _kernels.loop_gemm(provider, dtype))


def _plan(
    cell: str, B: int, H: int, dtype: np.dtype, shards: int, provider: str | None
) -> tuple[int, str]:
    """(shards, GEMM provider): as given with a provider (the tuner's own runs), else the
    measured choice where tuning is on (:mod:`bptt.tuning`), else (shards, NumPy's BLAS)."""
    if provider is not None:
        return shards, provider
    tuning = _kernels.tuning_module()
    if tuning.active():
        chosen = tuning.choice(cell, B, H, dtype)
        if chosen.path == "sharded":
            return chosen.shards, chosen.provider
    return shards, "numpy"


def lstm_forward(
    gates: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray,
    W: np.ndarray,
    shards: int,
    provider: str | None = None,
) -> None:
    """The LSTM forward loop in place (see the module), ``shards`` row blocks in parallel.

    gates (T, B, 4H): G_t = V x_t + b on entry, [i f g o] on exit; hs, cs (T+1, B, H) with
    row 0 set; W (4H, H).
    """
    W = np.ascontiguousarray(W)  # (4H, H)
    shards, provider = _plan("lstm", gates.shape[1], hs.shape[2], gates.dtype, shards, provider)
    kernel = _kernel("lstm_forward", gates.dtype, provider)
    _kernels.run_shards(kernel, gates.shape[1], shards, gates, hs, cs, W, 0)


def lstm_backward(
    dh: np.ndarray,
    gates: np.ndarray,
    cs: np.ndarray,
    W: np.ndarray,
    carry: np.ndarray,
    dc: np.ndarray,
    shards: int,
    provider: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The LSTM backward loop: returns dA (T, B, 4H) and db = Σ_t Σ_b dA_t (4H,);
    carry, dc (B, H) updated in place."""
    dA = _workspace.empty(gates.shape, gates.dtype)  # (T, B, 4H)
    W_T = _transposed(W)  # (H, 4H)
    dh = np.ascontiguousarray(dh)
    shards, provider = _plan("lstm", gates.shape[1], W.shape[1], gates.dtype, shards, provider)
    kernel = _kernel("lstm_backward", gates.dtype, provider)
    db = _workspace.zeros(gates.shape[1:], np.float64)  # (B, 4H): row b0 per shard
    _kernels.run_shards(kernel, gates.shape[1], shards, dA, dh, gates, cs, W_T, carry, dc, db, 0)
    return dA, _shard_sum(db, shards).astype(dA.dtype)


def _transposed(W: np.ndarray) -> np.ndarray:
    """Wᵀ as a C-contiguous array from the workspace."""
    return _workspace.contiguous(W.T)


def _shard_sum(db: np.ndarray, shards: int) -> np.ndarray:
    """Σ of the shards' float64 rows of db (B, kH), at their first rows as in _run_shards."""
    B = db.shape[0]
    return db[[B * s // shards for s in range(shards)]].sum(axis=0)


def gru_forward(
    G: np.ndarray,
    hs: np.ndarray,
    W: np.ndarray,
    b_hn: np.ndarray,
    shards: int,
    provider: str | None = None,
) -> np.ndarray:
    """The GRU forward loop: returns gates (T, B, 4H) [r z m n]; hs[1:] (T+1, B, H) written."""
    T, B, G3 = G.shape
    gates = _workspace.empty((T, B, 4 * (G3 // 3)), G.dtype)  # (T, B, 4H)
    shards, provider = _plan("gru", B, hs.shape[2], G.dtype, shards, provider)
    kernel = _kernel("gru_forward", G.dtype, provider)
    W = np.ascontiguousarray(W)
    b_hn = np.ascontiguousarray(b_hn)
    _kernels.run_shards(kernel, B, shards, G, gates, hs, W, b_hn, 0)
    return gates


def gru_backward(
    dh: np.ndarray,
    gates: np.ndarray,
    hs: np.ndarray,
    W: np.ndarray,
    carry: np.ndarray,
    shards: int,
    provider: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The GRU backward loop: returns dA (T, B, 4H) [da_r da_z dm da_n] and its sum over
    steps and rows (4H,); carry updated in place."""
    dA = _workspace.empty(gates.shape, gates.dtype)  # (T, B, 4H)
    W_T = _transposed(W)  # (H, 3H)
    dh = np.ascontiguousarray(dh)
    shards, provider = _plan("gru", gates.shape[1], W.shape[1], gates.dtype, shards, provider)
    kernel = _kernel("gru_backward", gates.dtype, provider)
    db = _workspace.zeros(gates.shape[1:], np.float64)  # (B, 4H): row b0 per shard
    _kernels.run_shards(kernel, gates.shape[1], shards, dA, dh, gates, hs, W_T, carry, db, 0)
    return dA, _shard_sum(db, shards).astype(dA.dtype)
