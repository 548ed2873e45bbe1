"""The seed's BPTT formula, written literally: a double sum over products of Jacobians.

    ∂h_i/∂h_{i-1} = diag(f_h'(E_i)) W                                   (the step Jacobian J_i)

    dL/dW = Σ_t Σ_{k≤t} dL_t/dh_t · ( Π_{i=k+1..t} J_i ) · ∂⁺h_k/∂W
    ∂⁺h_k/∂W_{pq} = e_p f_h'(E_k)_p h_{k-1,q}                           (the immediate term)

and the same for V (with x_k in place of h_{k-1}) and b_h (with 1). dU and db_y need no BPTT.

This is O(T² H³) per sequence and exists to be read and to serve as an oracle: every
product of Jacobians is formed as an explicit (H, H) matrix, nothing is reused between
terms except the running product for one t. :mod:`bptt.rnn` computes the same sums in O(T H²).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .model import ElmanRNN
from .params import Params
from .rnn import output_forward


@dataclass(frozen=True)
class SeedTerm:
    """One term (t, k) of the double sum: the part of dL_t/dθ through the weights' use at k.

    Attributes:
        t: the step whose loss is differentiated (1..T).
        k: the step at which W, V, b_h are used (1..t); the lag is t − k.
        W: (H, H), V: (H, I), b_h: (H,) the term's contribution, summed over the batch.
    """

    t: int
    k: int
    W: np.ndarray
    V: np.ndarray
    b_h: np.ndarray

    @property
    def lag(self) -> int:
        return self.t - self.k


def step_jacobians(model: ElmanRNN, x: object, h0: object = None) -> np.ndarray:
    """J_t = ∂h_t/∂h_{t-1} = diag(f_h'(E_t)) W for t = 1..T.

    Returns:
        (T, B, H, H): ``J[t-1, b]`` is the Jacobian of step t for sequence b.
    """
    hs = model.hidden_states(x, h0)
    fprime = model.activation.grad_from_output(hs[1:])  # (T, B, H)
    return fprime[..., :, None] * model.params.W  # (T, B, H, H)


def _one_hot_inputs(model: ElmanRNN, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        return x
    return np.eye(model.input_size, dtype=model.dtype)[x]  # (T, B, I) — oracle only


def seed_terms(
    model: ElmanRNN, x: object, y: object, h0: object = None, mask: object = None
) -> Iterator[SeedTerm]:
    """Yield every term (t, k), 1 ≤ k ≤ t ≤ T, of the seed's double sum, in order of t then k."""
    hs = model.hidden_states(x, h0)  # (T+1, B, H), validates x and h0
    x_arr = np.asarray(x)
    T, B = x_arr.shape[:2]
    y_arr = model.head.check_targets(y, (T, B), model.output_size, model.dtype)
    weight = model.loss_weights(mask, (T, B))
    x_dense = _one_hot_inputs(model, x_arr)  # (T, B, I)
    params = model.params
    _, dz = model.head.loss_and_dz(output_forward(params, hs), y_arr, weight)  # (T, B, O)
    fprime = model.activation.grad_from_output(hs[1:])  # (T, B, H)
    jac = fprime[..., :, None] * params.W  # (T, B, H, H): J_t = diag(f'(E_t)) W
    eye = np.broadcast_to(np.eye(model.hidden_size, dtype=model.dtype), jac.shape[1:])
    for t in range(1, T + 1):
        dLt_dht = dz[t - 1] @ params.U  # (B, H): dL_t/dh_t through ŷ_t only
        product = eye.copy()  # (B, H, H): Π_{i=k+1..t} J_i, empty product for k = t
        for k in range(t, 0, -1):
            dLt_dhk = np.einsum("bi,bij->bj", dLt_dht, product)  # (B, H)
            dLt_dEk = dLt_dhk * fprime[k - 1]  # immediate term: ∂⁺h_k/∂E_k = diag f'(E_k)
            yield SeedTerm(
                t=t,
                k=k,
                W=dLt_dEk.T @ hs[k - 1],  # Σ_b (dL_t/dE_k) h_{k-1}^T
                V=dLt_dEk.T @ x_dense[k - 1],
                b_h=dLt_dEk.sum(axis=0),
            )
            product = product @ jac[k - 1]  # extend to Π_{i=k..t} J_i
    return


def seed_gradients(
    model: ElmanRNN, x: object, y: object, h0: object = None, mask: object = None
) -> Params:
    """dL/dθ from the literal formula: dU, db_y directly, dW, dV, db_h as the double sum."""
    hs = model.hidden_states(x, h0)
    T, B = hs.shape[0] - 1, hs.shape[1]
    y_arr = model.head.check_targets(y, (T, B), model.output_size, model.dtype)
    weight = model.loss_weights(mask, (T, B))
    _, dz = model.head.loss_and_dz(output_forward(model.params, hs), y_arr, weight)
    grads = model.params.zeros_like()
    grads.U = np.einsum("tbo,tbh->oh", dz, hs[1:])  # dL/dU: one term per step, no BPTT
    grads.b_y = dz.sum(axis=(0, 1))
    for term in seed_terms(model, x, y, h0, mask):
        grads.W += term.W
        grads.V += term.V
        grads.b_h += term.b_h
    return grads
