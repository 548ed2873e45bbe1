"""The user-facing Elman RNN.

E_t = V x_t + W h_{t-1} + b_h        h_t = f_h(E_t)        ŷ_t = f_y(U h_t + b_y)
L   = (1/B) Σ_t Σ_b mask_tb L(ŷ_tb, y_tb)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from .activations import Activation, get_activation
from .checkpointing import checkpointed_forward_backward, segment_length
from .heads import Head, get_head
from .params import Gradients, Params
from .rnn import output_backward, output_forward, recurrent_backward, recurrent_forward
from .validation import (
    check_dtype,
    check_float_array,
    check_inputs,
    check_mask,
    check_positive_int,
)


def init_uniform(
    input_size: int,
    hidden_size: int,
    output_size: int,
    rng: np.random.Generator,
    dtype: np.dtype,
) -> Params:
    """PyTorch's default for nn.RNN and nn.Linear: every weight ~ U(−1/√fan, 1/√fan).

    The recurrent and input weights use fan = H (as ``torch.nn.RNN``); U and b_y use fan = H
    (as ``torch.nn.Linear(H, O)``); b_h is the sum of two such draws in PyTorch and one here.
    """
    bound = 1.0 / np.sqrt(hidden_size)

    def draw(*shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape).astype(dtype)

    return Params(
        U=draw(output_size, hidden_size),
        V=draw(hidden_size, input_size),
        W=draw(hidden_size, hidden_size),
        b_h=draw(hidden_size),
        b_y=draw(output_size),
    )


@dataclass(frozen=True)
class BPTTResult:
    """Everything one forward + backward sweep produces.

    Attributes:
        loss: L = (1/B) Σ_t Σ_b mask_tb L_tb, a Python float.
        grads: dL/dθ for the five parameters, and ``grads.h0`` = dL/dh_0 (B, H).
        h_last: (B, H) the final hidden state h_T, to carry into the next chunk.
    """

    loss: float
    grads: Gradients
    h_last: np.ndarray


class ElmanRNN:
    """An Elman RNN trained by explicit backpropagation through time.

    Args:
        input_size: I, the number of input features (or the vocabulary size for token ids).
        hidden_size: H.
        output_size: O, the number of outputs (or classes for the softmax head).
        hidden_activation: f_h, one of ``tanh``, ``relu``, ``sigmoid``, ``identity``.
        output: the head f_y with its loss: ``softmax`` (cross-entropy on class ids),
            ``sigmoid`` (binary cross-entropy), ``identity`` (½ squared error).
        seed: seeds the initialisation.
        dtype: float32 or float64; inputs, outputs and gradients all have this dtype.

    Raises:
        ValueError: a non-positive size, an unknown activation or head.
        TypeError: a size that is not an int, a dtype that is not float32/float64.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        hidden_activation: str = "tanh",
        output: str = "softmax",
        seed: int | None = 0,
        dtype: DTypeLike = np.float64,
    ) -> None:
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.output_size = check_positive_int("output_size", output_size)
        self.activation: Activation = get_activation(hidden_activation)
        self.head: Head = get_head(output)
        self.dtype = check_dtype(dtype)
        self.params = init_uniform(
            self.input_size,
            self.hidden_size,
            self.output_size,
            np.random.default_rng(seed),
            self.dtype,
        )

    @property
    def hidden_activation(self) -> str:
        return self.activation.name

    @property
    def output(self) -> str:
        return self.head.name

    def __repr__(self) -> str:
        return (
            f"ElmanRNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, hidden_activation={self.hidden_activation!r}, "
            f"output={self.output!r}, dtype={self.dtype.name})"
        )

    # -- input checks -------------------------------------------------------------------

    def validated_params(self) -> Params:
        """``self.params`` after checking their shapes and dtype against the model's sizes.

        Raises:
            ValueError: a shape differs from (I, H, O).
            TypeError: a dtype differs from the model's.
        """
        params = self.params
        if not isinstance(params, Params):
            raise TypeError(f"model.params must be a Params, got {type(params).__name__}")
        params.validate(self.dtype)
        expected = (self.input_size, self.hidden_size, self.output_size)
        if params.sizes != expected or params.dtype != self.dtype:
            raise ValueError(
                f"model.params have sizes (I, H, O) = {params.sizes} and dtype {params.dtype}, "
                f"but the model was built with {expected} and {self.dtype}"
            )
        return params

    def initial_state(self, h0: object, batch: int) -> np.ndarray:
        """h_0 (B, H): zeros when ``h0`` is None, else ``h0`` checked (shape, dtype, finite)."""
        shape = (batch, self.hidden_size)
        if h0 is None:
            return np.zeros(shape, dtype=self.dtype)
        return check_float_array("h0", h0, shape, self.dtype, "(B, H)")

    def loss_weights(self, mask: object, shape_tb: tuple[int, int]) -> np.ndarray:
        """w_tb = mask_tb / B (T, B), the weight of each step's loss; mask None means all ones."""
        batch = shape_tb[1]
        if mask is None:
            return np.full(shape_tb, 1.0 / batch, dtype=self.dtype)
        return check_mask(mask, shape_tb, self.dtype) / self.dtype.type(batch)

    # -- forward only -------------------------------------------------------------------

    def hidden_states(self, x: object, h0: object = None) -> np.ndarray:
        """h_0..h_T for inputs x (T, B, I) or ids (T, B); returns (T+1, B, H)."""
        params = self.validated_params()
        x = check_inputs(x, self.input_size, self.dtype)
        hs, _ = recurrent_forward(params, x, self.initial_state(h0, x.shape[1]), self.activation)
        return hs

    def predict(self, x: object, h0: object = None) -> tuple[np.ndarray, np.ndarray]:
        """ŷ_t = f_y(U h_t + b_y) for every step.

        Args:
            x: (T, B, I) dense inputs of the model's dtype, or (T, B) integer token ids.
            h0: (B, H) initial hidden state; zeros when None.

        Returns:
            y_hat (T, B, O) and the hidden states hs (T+1, B, H) with ``hs[0] = h0``.
        """
        hs = self.hidden_states(x, h0)
        return self.head.predict(output_forward(self.params, hs)), hs

    def loss(self, x: object, y: object, h0: object = None, mask: object = None) -> float:
        """L = (1/B) Σ_t Σ_b mask_tb L_tb without the backward (for evaluation)."""
        hs = self.hidden_states(x, h0)
        T, B = hs.shape[0] - 1, hs.shape[1]
        y = self.head.check_targets(y, (T, B), self.output_size, self.dtype)
        weight = self.loss_weights(mask, (T, B))
        z = output_forward(self.params, hs)
        return float(np.sum(weight * self.head.step_losses(z, y), dtype=np.float64))

    # -- forward and backward -----------------------------------------------------------

    def forward_backward(
        self,
        x: object,
        y: object,
        h0: object = None,
        mask: object = None,
        *,
        dh_last: object = None,
        checkpoint: bool | int = False,
    ) -> BPTTResult:
        """One forward pass and full backpropagation through time.

        Args:
            x: (T, B, I) dense inputs of the model's dtype, or (T, B) integer token ids.
            y: targets: class ids (T, B) for ``softmax``; (T, B, O) for ``sigmoid``
                (values in [0, 1]) and ``identity``.
            h0: (B, H) initial hidden state; zeros when None.
            mask: (T, B) of 0/1 or bool; masked steps contribute no loss.
            dh_last: (B, H) gradient of a downstream loss with respect to h_T, added to the
                sweep (for chunked schedules); None means zero.
            checkpoint: memory schedule of the sweep (the same gradients either way).
                ``False`` stores every step; ``True`` stores only the hidden states at
                segment boundaries, segments of about √T steps, and recomputes each segment
                during the backward sweep (memory O(√T) instead of O(T), about a third more
                time); a positive int K uses segments of K steps. See
                :mod:`bptt.checkpointing`.

        Returns:
            A :class:`BPTTResult` with the loss, the gradients (and dL/dh_0) and h_T.

        Raises:
            ValueError: a shape, range or value is wrong (the message names the argument).
            TypeError: a dtype is wrong.
        """
        params = self.validated_params()
        x = check_inputs(x, self.input_size, self.dtype)
        T, B = x.shape[:2]
        y = self.head.check_targets(y, (T, B), self.output_size, self.dtype)
        h0 = self.initial_state(h0, B)
        weight = self.loss_weights(mask, (T, B))
        if dh_last is not None:
            dh_last = check_float_array(
                "dh_last", dh_last, (B, self.hidden_size), self.dtype, "(B, H)"
            )
        segment = segment_length(T, checkpoint)
        if segment is not None and segment < T:
            loss, grads, h_last = checkpointed_forward_backward(
                params, self.activation, self.head, x, y, h0, weight, segment, dh_last
            )
            return BPTTResult(loss=loss, grads=grads, h_last=h_last)

        hs, cache = recurrent_forward(params, x, h0, self.activation)
        z = output_forward(params, hs)  # (T, B, O)
        loss, dz = self.head.loss_and_dz(z, y, weight)
        dU, db_y, dh = output_backward(dz, hs, params)
        dV, dW, db_h, dh0 = recurrent_backward(dh, cache, params, self.activation, dh_last)
        grads = Gradients(U=dU, V=dV, W=dW, b_h=db_h, b_y=db_y, h0=dh0)
        return BPTTResult(loss=loss, grads=grads, h_last=hs[-1].copy())

    def loss_and_grads(
        self,
        x: object,
        y: object,
        h0: object = None,
        mask: object = None,
        *,
        dh_last: object = None,
        checkpoint: bool | int = False,
    ) -> tuple[float, Gradients]:
        """L and dL/dθ by BPTT; see :meth:`forward_backward` for the arguments.

        ``checkpoint=True`` (or a segment length K) trades a second forward pass for
        O(√T) memory; the gradients are the same.

        Returns:
            ``(loss, grads)``: loss a Python float; grads with ``.U .V .W .b_h .b_y`` shaped as
            the parameters and ``.h0`` = dL/dh_0 (B, H).
        """
        result = self.forward_backward(x, y, h0, mask, dh_last=dh_last, checkpoint=checkpoint)
        return result.loss, result.grads
