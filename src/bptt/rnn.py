"""Forward and backward of the Elman RNN, side by side.

    E_t = V x_t + W h_{t-1} + b_h      h_t = f_h(E_t)                     t = 1..T
    z_t = U h_t + b_y                   ŷ_t = f_y(z_t)

Backward, with δ_t = dL/dE_t and the recursion run from t = T down to 1:

    dL/dh_t  = U^T dL/dz_t  +  W^T δ_{t+1}        (the second term is the BPTT carry)
    δ_t      = dL/dh_t ⊙ f_h'(E_t)
    dL/dW    = Σ_t δ_t h_{t-1}^T      dL/dV = Σ_t δ_t x_t^T      dL/db_h = Σ_t δ_t
    dL/dU    = Σ_t dL/dz_t h_t^T      dL/db_y = Σ_t dL/dz_t      dL/dh_0 = W^T δ_1

Unrolling the carry gives the seed's double sum over Jacobian products (see
:mod:`bptt.algorithms.seed_formula`); here it is evaluated right to left, one (B, H) vector
per step.

Everything that is not recurrent is hoisted out of the time loop into single products over
all T·B rows: the input projection, the output projection, dU, dW, dV and the bias sums
(pairwise). Only ``h_t`` (forward) and ``dL/dh_t`` (backward) are computed step by step; with
Numba those loops run as independent row shards of the batch, one per core
(:func:`bptt._kernels.shard_count`), and the large hoisted products are split into row
blocks the same way (:func:`bptt._kernels.matmul`, :func:`bptt._kernels.matmul_tn`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import _kernels, _workspace


def output_forward(params: Mapping[str, np.ndarray], top: np.ndarray) -> np.ndarray:
    """z_t = U h_t + b_y for t = 1..T as one product: top (T, B, K) → (T, B, O).

    ``top`` is the head's input, the top layer's states h_1..h_T (K = D·H).
    """
    T, B, K = top.shape
    O = params["U"].shape[0]
    z = _kernels.matmul(
        top.reshape(T * B, K), params["U"].T, out=_workspace.empty((T * B, O), top.dtype)
    )
    z += params["b_y"]
    return z.reshape(T, B, -1)


def output_backward(
    dz: np.ndarray, top: np.ndarray, params: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dL/dU = Σ_t dz_t h_t^T, dL/db_y = Σ_t dz_t, ∂L/∂h_t = U^T dz_t (all steps at once).

    Args:
        dz: (T, B, O) dL/dz_t. top: (T, B, K) the head's input h_1..h_T.

    Returns:
        dU (O, K), db_y (O,), dh (T, B, K).
    """
    T, B, O = dz.shape
    K = top.shape[2]
    dz_rows = dz.reshape(T * B, O)
    dU = _kernels.matmul_tn(dz_rows, top.reshape(T * B, K))  # (O, K)
    dh = _kernels.matmul(dz_rows, params["U"], out=_workspace.empty((T * B, K), dz.dtype))
    dh = dh.reshape(T, B, K)
    db_y = _kernels.column_sums(dz_rows)
    return dU, db_y, dh
