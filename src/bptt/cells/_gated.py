"""Pieces the gated cells share: the hoisted input projection, its backward, the gates' σ.

G_t = V x_t + b          for every step at once: one (T·B, I) × (I, kH) product, or a row
                         gather of Vᵀ for token ids
dV  = Σ_t dG_tᵀ x_t      one (kH, T·B) × (T·B, I) product (ids: a scatter-add of rows)
db  = Σ_t dG_t           dx_t = dG_t V
"""

from __future__ import annotations

import numpy as np

from .. import _kernels, _workspace
from ..activations import get_activation
from .elman import input_projection_backward

sigmoid_ = get_activation("sigmoid").forward_inplace
"""σ(a) = ½(1 + tanh(a/2)) in place: one transcendental, no overflow for large |a|."""


def project_inputs(
    V: np.ndarray, b: np.ndarray, x: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """G = V x + b for every leading index of x: (…, I) dense or (…,) ids → (…, kH).

    ``out``: a C-contiguous (…, kH) array to write G into (None: a new one).

    Raises:
        IndexError: an id outside 0..I−1.
    """
    kH, I = V.shape
    if x.dtype.kind in "iu":  # token ids: a row gather of the small table Vᵀ + b (I, kH)
        if x.size and (x.min() < 0 or x.max() >= I):
            raise IndexError(f"token ids must be in 0..{I - 1}")
        table = np.add(V.T, b, out=_workspace.empty(V.shape[::-1], np.result_type(V, b)))
        return np.take(table, x, axis=0, out=out, mode="clip")  # clip: checked, unbuffered
    rows = x.reshape(-1, I)
    G = _kernels.matmul(rows, V.T, out=None if out is None else out.reshape(rows.shape[0], kH))
    G += b
    return G.reshape(*x.shape[:-1], kH)


def input_grads(
    dG: np.ndarray, x: np.ndarray, V: np.ndarray, need_dx: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """dV = Σ dGᵀ x, db = Σ dG over all T·B rows at once, and dx = dG V (dense inputs only).

    Args:
        dG: (T, B, kH) gradient on the input projection G_t = V x_t + b.
        x: (T, B, I) dense inputs or (T, B) ids.
        V: (kH, I).
        need_dx: whether to form dx.
    """
    dV, db = input_projection_backward(dG, x, V.shape[1])  # (kH, I), (kH,)
    return dV, db, input_dx(dG, x, V, need_dx)


def input_dV(dG: np.ndarray, x: np.ndarray, n_in: int) -> np.ndarray:
    """dV = Σ_t dG_tᵀ x_t (kH, I) alone, for a db summed elsewhere (in a compiled loop)."""
    T, B, G = dG.shape
    rows = dG.reshape(T * B, G)  # (T·B, kH)
    if x.dtype.kind in "iu":
        return _workspace.contiguous(_kernels.scatter_add_rows(n_in, x.reshape(-1), rows).T)
    return _kernels.matmul_tn(rows, x.reshape(T * B, -1))


def input_dx(dG: np.ndarray, x: np.ndarray, V: np.ndarray, need_dx: bool) -> np.ndarray | None:
    """dx_t = dG_t V (T, B, I) for dense inputs when asked for, else None."""
    if not need_dx or x.dtype.kind in "iu":
        return None
    T, B, G = dG.shape
    dx = _workspace.empty((T, B, V.shape[1]), dG.dtype)  # (T, B, I), reused (see _workspace)
    _kernels.matmul(dG.reshape(T * B, G), V, out=dx.reshape(T * B, -1))
    return dx


def step_input_grads(dG: np.ndarray, x_t: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, ...]:
    """dV and db of one step: dG (B, kH), x_t (B, I) or ids (B,)."""
    dV, db, _ = input_grads(dG[None], x_t[None], V, need_dx=False)
    return dV, db
