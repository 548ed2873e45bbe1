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
from dataclasses import dataclass

import numpy as np

from . import _kernels, _workspace
from .activations import Activation
from .cells import _elman_kernels


@dataclass(frozen=True)
class Cache:
    """What the forward keeps for the backward: the inputs and the hidden states.

    f_h'(E_t) is recomputed from h_t (cheap, elementwise), so E is never stored.

    Attributes:
        x: (T, B, I) dense inputs or (T, B) integer ids.
        hs: (T+1, B, H) hidden states, ``hs[0] = h_0``.
    """

    x: np.ndarray
    hs: np.ndarray

    @property
    def inputs_are_ids(self) -> bool:
        return self.x.ndim == 2


def input_projection(params: Mapping[str, np.ndarray], x: np.ndarray, out: np.ndarray) -> None:
    """out[t, b] = V x_tb + b_h for every step at once; ids gather columns of V."""
    T, B = x.shape[:2]
    H = params["W"].shape[0]
    if x.ndim == 2:  # (T, B, H): row gather of V^T
        n_in = params["V"].shape[1]
        # mode="raise" would gather into a hidden (T, B, H) buffer; "clip" writes out directly
        # and is the same gather for ids in range (others: as before, an IndexError, or -k
        # counted from the end; and small gathers, where the two checks cost more)
        unbuffered = out.size >= _workspace.MIN_ELEMENTS and x.min() >= 0 and x.max() < n_in
        table = _workspace.contiguous(params["V"].T)  # np.take would copy it to C order
        np.take(table, x, axis=0, out=out, mode="clip" if unbuffered else "raise")
    else:
        _kernels.matmul(x.reshape(T * B, -1), params["V"].T, out=out.reshape(T * B, H))
    out += params["b_h"]


def input_projection_backward(
    delta: np.ndarray, x: np.ndarray, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dV = Σ_t δ_t x_t^T and dL/db_h = Σ_t δ_t; ids scatter-add rows of δ."""
    T, B, H = delta.shape
    delta_rows = delta.reshape(T * B, H)
    if x.ndim == 2:
        dV_t = _kernels.scatter_add_rows(n_in, x.reshape(-1), delta_rows)  # (I, H)
        dV = _workspace.contiguous(dV_t.T)
    else:
        dV = _kernels.matmul_tn(delta_rows, x.reshape(T * B, -1))  # (H, I)
    return dV, _kernels.column_sums(delta_rows)


def recurrent_forward(
    params: Mapping[str, np.ndarray], x: np.ndarray, h0: np.ndarray, activation: Activation
) -> tuple[np.ndarray, Cache]:
    """h_t = f_h(V x_t + W h_{t-1} + b_h) for t = 1..T.

    Args:
        params: the weights.
        x: (T, B, I) dense inputs or (T, B) integer ids.
        h0: (B, H) initial hidden state.
        activation: f_h.

    Returns:
        hs: (T+1, B, H) with ``hs[0] = h0``, and the :class:`Cache` for the backward.
    """
    T, B = x.shape[:2]
    H = params["W"].shape[0]
    hs = _workspace.empty((T + 1, B, H), params["W"].dtype)  # (T+1, B, H)
    hs[0] = h0
    input_projection(params, x, out=hs[1:])  # hs[t] holds V x_t + b_h until step t
    W_T = _workspace.contiguous(params["W"].T)  # (H, H): a plain GEMM operand, no transpose flag
    if _elman_kernels.use_time_loop_kernel(B, H):
        _elman_kernels.forward_loop(hs, W_T, activation.name)  # compiled loop, same equation
        return hs, Cache(x=x, hs=hs)
    shards = _kernels.shard_count(B, H)
    if shards:  # row blocks of the batch, each its own GIL-free loop (same equation)
        W = np.ascontiguousarray(params["W"])
        _elman_kernels.sharded_forward(hs, W, W_T, activation.name, shards)
        return hs, Cache(x=x, hs=hs)
    recurrent = np.empty((B, H), dtype=hs.dtype)  # (B, H) scratch for W h_{t-1}
    with _kernels.loop_blas_threads(B * H * H):  # one thread for small steps (see there)
        for t in range(1, T + 1):
            np.matmul(hs[t - 1], W_T, out=recurrent)
            hs[t] += recurrent  # E_t
            activation.forward_inplace(hs[t])  # h_t
    return hs, Cache(x=x, hs=hs)


def recurrent_backward(
    dh: np.ndarray,
    cache: Cache,
    params: Mapping[str, np.ndarray],
    activation: Activation,
    dh_last: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagate through time: δ_t = (dh_t + W^T δ_{t+1}) ⊙ f_h'(E_t).

    Args:
        dh: (T, B, H) the direct gradients ∂L/∂h_t from the outputs (t = 1..T). Overwritten
            with δ_t = dL/dE_t.
        cache: from :func:`recurrent_forward`.
        params: the weights.
        activation: f_h.
        dh_last: (B, H) gradient arriving on h_T from beyond the sequence, or None.

    Returns:
        dV (H, I), dW (H, H), db_h (H,), dh0 (B, H).
    """
    hs = cache.hs
    T, B, H = dh.shape
    delta = dh  # δ_t overwrites ∂L/∂h_t in place: (T, B, H)
    # carry = W^T δ_{t+1} (row-vector form δ_{t+1} W), the gradient that flows back through time
    carry = np.zeros((B, H), dtype=dh.dtype)  # (B, H)
    if dh_last is not None:
        carry[...] = dh_last
    W = params["W"]
    shards = _kernels.shard_count(B, H) if delta.flags.c_contiguous else 0
    if shards and hs.flags.c_contiguous:  # f'(E_t) fused into each shard's loop
        _elman_kernels.sharded_backward(delta, hs, W, carry, activation.name, shards)
        return (*_hoisted_backward(delta, cache, params), carry)
    fprime = activation.grad_from_output(hs[1:])  # (T, B, H): f'(E_t), hoisted out of the loop
    delta *= fprime
    if _elman_kernels.use_time_loop_kernel(B, H) and delta.flags.c_contiguous:
        _elman_kernels.backward_loop(delta, fprime, W, carry)  # compiled loop, same equation
    else:
        with _kernels.loop_blas_threads(B * H * H):
            for t in range(T - 1, -1, -1):
                carry *= fprime[t]
                delta[t] += carry  # δ_t = (∂L/∂h_t + W^T δ_{t+1}) ⊙ f'(E_t)
                np.matmul(delta[t], W, out=carry)
    return (*_hoisted_backward(delta, cache, params), carry)


def _hoisted_backward(
    delta: np.ndarray, cache: Cache, params: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dW = Σ_t δ_t h_{t-1}^T, dV, db_h: products over all T·B rows at once; (dV, dW, db_h)."""
    T, B, H = delta.shape
    rows = T * B
    dW = _kernels.matmul_tn(delta.reshape(rows, H), cache.hs[:-1].reshape(rows, H))  # (H, H)
    dV, db_h = input_projection_backward(delta, cache.x, params["V"].shape[1])
    return dV, dW, db_h


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
