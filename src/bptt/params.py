"""Parameters of the Elman RNN, in the seed's notation.

    E_t = V x_t + W h_{t-1} + b_h        h_t = f_h(E_t)        ŷ_t = f_y(U h_t + b_y)

One type, :class:`Params`, holds the weights, their gradients and each optimizer state
(moments, velocities), so every update is a loop over the same five names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

PARAM_NAMES: tuple[str, ...] = ("U", "V", "W", "b_h", "b_y")


@dataclass
class Params:
    """The five arrays of an Elman RNN with I inputs, H hidden units and O outputs.

    Attributes:
        U: (O, H) hidden → output weights.
        V: (H, I) input → hidden weights.
        W: (H, H) hidden → hidden (recurrent) weights.
        b_h: (H,) hidden bias (PyTorch's ``bias_ih + bias_hh``).
        b_y: (O,) output bias.
    """

    U: np.ndarray
    V: np.ndarray
    W: np.ndarray
    b_h: np.ndarray
    b_y: np.ndarray

    names = PARAM_NAMES

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(input_size, hidden_size, output_size)`` read off the shapes."""
        return self.V.shape[1], self.W.shape[0], self.U.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in PARAM_NAMES:
            yield name, getattr(self, name)

    def arrays(self) -> list[np.ndarray]:
        return [getattr(self, name) for name in PARAM_NAMES]

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Params:
        """A new :class:`Params` with ``fn`` applied to each array."""
        return Params(*(fn(a) for a in self.arrays()))

    def zeros_like(self) -> Params:
        return self.map(np.zeros_like)

    def copy(self) -> Params:
        return self.map(np.array)

    def global_norm(self) -> float:
        """sqrt(Σ ‖a‖²) over the five arrays, accumulated in float64."""
        wide = (np.asarray(a, dtype=np.float64).ravel() for a in self.arrays())
        return float(np.sqrt(sum(float(np.dot(a, a)) for a in wide)))

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(a).all()) for a in self.arrays())

    def validate(self, dtype: np.dtype | None = None) -> None:
        """Check that the five shapes fit together and share one floating dtype.

        Args:
            dtype: the dtype every array must have; that of ``W`` when None.

        Raises:
            ValueError: a shape disagrees with the others.
            TypeError: an array is not floating point or the dtypes differ.
        """
        for name, array in self.items():
            if not isinstance(array, np.ndarray):
                raise TypeError(f"params.{name} must be a NumPy array, got {type(array).__name__}")
        n_in, n_hidden, n_out = self.V.shape[1] if self.V.ndim == 2 else -1, -1, -1
        if self.W.ndim == 2:
            n_hidden = self.W.shape[0]
        if self.b_y.ndim == 1:  # O from the bias: a transposed U must not redefine it
            n_out = self.b_y.shape[0]
        expected = {
            "U": (n_out, n_hidden),
            "V": (n_hidden, n_in),
            "W": (n_hidden, n_hidden),
            "b_h": (n_hidden,),
            "b_y": (n_out,),
        }
        for name, array in self.items():
            if array.shape != expected[name]:
                raise ValueError(
                    f"params.{name} must have shape {expected[name]} (I={n_in}, H={n_hidden}, "
                    f"O={n_out}), got {array.shape}"
                )
            expected_dtype = self.W.dtype if dtype is None else dtype
            if array.dtype != expected_dtype or array.dtype.kind != "f":
                raise TypeError(
                    f"params.{name} must have the model's floating dtype {expected_dtype}, "
                    f"got {array.dtype}"
                )


@dataclass
class Gradients(Params):
    """dL/dθ for each parameter, plus dL/dh_0 (B, H) for composing chunked schedules."""

    h0: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
