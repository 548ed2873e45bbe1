"""The seed's BPTT formula, written literally: a double sum over products of Jacobians.

    ∂h_i/∂h_{i-1} = diag(f_h'(E_i)) W                                   (the step Jacobian J_i)

    dL/dW = Σ_t Σ_{k≤t} dL_t/dh_t · ( Π_{i=k+1..t} J_i ) · ∂⁺h_k/∂W
    ∂⁺h_k/∂W_{pq} = e_p f_h'(E_k)_p h_{k-1,q}                           (the immediate term)

and the same for V (with x_k in place of h_{k-1}) and b_h (with 1). dU and db_y need no BPTT.

Any cell of a one-layer, one-direction model fits the same sum with its state s in place of h
(the LSTM's s = (h, c)): J_i is the cell's :meth:`~bptt.cells.Cell.state_jacobian`, and the
immediate term of step k is the cell's :meth:`~bptt.cells.Cell.vjp_params`. The states are
recomputed here one :meth:`~bptt.cells.Cell.step` at a time, not taken from the fast path.

This is O(T² S³) per sequence and exists to be read and to serve as an oracle: every
product of Jacobians is formed as an explicit (S, S) matrix, nothing is reused between
terms except the running product for one t. The model's backward computes the same sums in
O(T S²).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..cells import StepArgs
from ..model import RNN
from ..params import Params
from ..validation import check_inputs


@dataclass(frozen=True)
class SeedTerm:
    """One term (t, k) of the double sum: the part of dL_t/dθ through the weights' use at k.

    Attributes:
        t: the step whose loss is differentiated (1..T).
        k: the step at which the cell's weights are used (1..t); the lag is t − k.
        parts: the term's contribution to each cell parameter (Elman: ``W`` (H, H),
            ``V`` (H, I), ``b_h`` (H,)), summed over the batch; also readable as ``term.W``.
    """

    t: int
    k: int
    parts: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["parts"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def lag(self) -> int:
        return self.t - self.k


@dataclass(frozen=True)
class _Unrolled:
    """The literal forward: step arguments of every step, dL_t/ds_t through ŷ_t, dL/dz."""

    steps: list[StepArgs]  # steps[t-1]: x_t, s_{t-1}, s_t
    direct: np.ndarray  # (T, B, S): dL_t/ds_t through ŷ_t only (zero on the c part)
    dz: np.ndarray  # (T, B, O)
    outputs: np.ndarray  # (T, B, H): h_t


def _unroll(model: RNN, x: object, y: object, h0: object, mask: object) -> _Unrolled:
    if not model.simple:
        raise ValueError(
            "the seed formula is the one-layer, one-direction reference; this model has "
            f"num_layers={model.num_layers}, bidirectional={model.bidirectional}"
        )
    params = model.validated_params()
    x_arr = check_inputs(x, model.input_size, model.dtype)
    T, B = x_arr.shape[:2]
    y_arr = model.head.check_targets(y, (T, B), model.output_size, model.dtype)
    weight = model.loss_weights(mask, (T, B))
    layer = model.layers[0]
    cell, p = layer.cell, layer.take(params)
    s = model.split_state(h0, B)[0]  # (B, S)
    steps = []
    for t in range(T):  # s_t = F(x_t, s_{t-1}), one step at a time
        s_next = cell.step(p, x_arr[t], s)
        steps.append(StepArgs(x=x_arr[t], s_prev=s, s=s_next))
        s = s_next
    outputs = np.stack([cell.output(a.s) for a in steps])  # (T, B, H)
    z = outputs @ params["U"].T + params["b_y"]  # (T, B, O)
    _, dz = model.head.loss_and_dz(z, y_arr, weight)
    direct = np.zeros((T, B, cell.state_size), dtype=model.dtype)
    direct[..., : model.hidden_size] = dz @ params["U"]  # ∂L_t/∂h_t = U^T dL/dz_t
    return _Unrolled(steps=steps, direct=direct, dz=dz, outputs=outputs)


def step_jacobians(model: RNN, x: object, h0: object = None) -> np.ndarray:
    """J_t = ∂s_t/∂s_{t-1} for t = 1..T (Elman: diag(f_h'(E_t)) W).

    Returns:
        (T, B, S, S): ``J[t-1, b]`` is the Jacobian of step t for sequence b.
    """
    x_arr = check_inputs(x, model.input_size, model.dtype)
    T, B = x_arr.shape[:2]
    y_dummy = (
        np.zeros((T, B), dtype=np.int64)
        if model.output == "softmax"
        else np.zeros((T, B, model.output_size), dtype=model.dtype)
    )
    unrolled = _unroll(model, x_arr, y_dummy, h0, None)
    layer = model.layers[0]
    p = layer.take(model.params)
    return np.stack([layer.cell.state_jacobian(p, at) for at in unrolled.steps])


def seed_terms(
    model: RNN, x: object, y: object, h0: object = None, mask: object = None
) -> Iterator[SeedTerm]:
    """Yield every term (t, k), 1 ≤ k ≤ t ≤ T, of the seed's double sum, in order of t then k."""
    unrolled = _unroll(model, x, y, h0, mask)
    layer = model.layers[0]
    cell, p = layer.cell, layer.take(model.params)
    jac = [cell.state_jacobian(p, at) for at in unrolled.steps]  # J_t, (B, S, S) each
    B, S = unrolled.direct.shape[1:]
    eye = np.broadcast_to(np.eye(S, dtype=model.dtype), (B, S, S))
    for t in range(1, len(jac) + 1):
        dLt_dst = unrolled.direct[t - 1]  # (B, S): dL_t/ds_t through ŷ_t only
        product = eye.copy()  # (B, S, S): Π_{i=k+1..t} J_i, empty product for k = t
        for k in range(t, 0, -1):
            dLt_dsk = np.einsum("bi,bij->bj", dLt_dst, product)  # (B, S)
            # the immediate term ∂⁺s_k/∂θ, contracted with dL_t/ds_k and summed over the batch
            yield SeedTerm(t=t, k=k, parts=cell.vjp_params(p, unrolled.steps[k - 1], dLt_dsk))
            product = product @ jac[k - 1]  # extend to Π_{i=k..t} J_i


def seed_gradients(
    model: RNN, x: object, y: object, h0: object = None, mask: object = None
) -> Params:
    """dL/dθ from the literal formula: dU, db_y directly, the cell's parameters as the double
    sum, under the model's parameter names."""
    unrolled = _unroll(model, x, y, h0, mask)
    grads = model.params.zeros_like()
    grads["U"] = np.einsum("tbo,tbh->oh", unrolled.dz, unrolled.outputs)  # no BPTT
    grads["b_y"] = unrolled.dz.sum(axis=(0, 1))
    names = model.layers[0].names
    for term in seed_terms(model, x, y, h0, mask):
        for local, part in term.parts.items():
            grads[names[local]] += part
    return grads
