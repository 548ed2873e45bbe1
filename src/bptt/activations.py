"""Hidden activations f_h, each beside its derivative.

    h = f(E)          f'(E) written as a function of the output h (no need to keep E)

    tanh:      h = tanh(E)              f'(E) = 1 − h²
    sigmoid:   h = 1 / (1 + e^{−E})     f'(E) = h (1 − h)
    relu:      h = max(E, 0)            f'(E) = [h > 0]
    identity:  h = E                    f'(E) = 1

Writing f' from the output means the forward keeps only the hidden states, which the
backward needs anyway for dW; the pre-activations E are never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _tanh(e: np.ndarray) -> np.ndarray:
    return np.tanh(e, out=e)


def _tanh_grad(h: np.ndarray) -> np.ndarray:
    return 1.0 - h * h


def _sigmoid(e: np.ndarray) -> np.ndarray:
    # 1/(1+e^{-E}) = ½(1 + tanh(E/2)): one transcendental, no overflow for large |E|.
    e *= 0.5
    np.tanh(e, out=e)
    e += 1.0
    e *= 0.5
    return e


def _sigmoid_grad(h: np.ndarray) -> np.ndarray:
    return h * (1.0 - h)


def _relu(e: np.ndarray) -> np.ndarray:
    return np.maximum(e, 0.0, out=e)


def _relu_grad(h: np.ndarray) -> np.ndarray:
    return (h > 0).astype(h.dtype)


def _identity(e: np.ndarray) -> np.ndarray:
    return e


def _identity_grad(h: np.ndarray) -> np.ndarray:
    return np.ones_like(h)


@dataclass(frozen=True)
class Activation:
    """A hidden nonlinearity f_h with its derivative expressed through the output.

    Attributes:
        name: one of ``tanh``, ``sigmoid``, ``relu``, ``identity``.
        forward_inplace: E ↦ f(E), overwriting and returning its argument.
        grad_from_output: h ↦ f'(E) where h = f(E).
        bound: γ = sup |f'|, used by the Pascanu et al. (2013) vanishing condition.
    """

    name: str
    forward_inplace: Callable[[np.ndarray], np.ndarray]
    grad_from_output: Callable[[np.ndarray], np.ndarray]
    bound: float

    def __call__(self, e: np.ndarray) -> np.ndarray:
        """f(E), leaving E untouched."""
        return self.forward_inplace(np.array(e, copy=True))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", _tanh, _tanh_grad, 1.0),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_grad, 0.25),
    "relu": Activation("relu", _relu, _relu_grad, 1.0),
    "identity": Activation("identity", _identity, _identity_grad, 1.0),
}


def get_activation(name: str) -> Activation:
    """Look up a hidden activation by name.

    Raises:
        ValueError: ``name`` is not one of :data:`ACTIVATIONS`.
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"hidden_activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]
