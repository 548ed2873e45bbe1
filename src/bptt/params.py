"""Named parameters: one ordered mapping name → array for weights, gradients and optimizer state.

For a single-layer, one-direction Elman RNN the names are the seed's:

    E_t = V x_t + W h_{t-1} + b_h        h_t = f_h(E_t)        ŷ_t = f_y(U h_t + b_y)

    U (O, H)   V (H, I)   W (H, H)   b_h (H,)   b_y (O,)

Deeper or bidirectional models suffix each cell parameter with its layer and direction in
PyTorch's manner (``V_l0``, ``W_l1_reverse``, …); the head keeps ``U`` and ``b_y``. Optimizers,
clipping, checkpoints and gradcheck iterate the names and know no model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

import numpy as np

from . import _workspace

PARAM_NAMES: tuple[str, ...] = ("U", "V", "W", "b_h", "b_y")
_P = TypeVar("_P", bound="Params")
"""The names of a single-layer, one-direction Elman model's parameters."""


class Params(MutableMapping[str, np.ndarray]):
    """An ordered mapping name → array, with attribute access (``params.W``).

    ``Params(U=..., V=...)`` or ``Params({"U": ...})``; the order of insertion is the order of
    iteration, of optimizer state and of checkpoints.
    """

    __slots__ = ("_arrays",)
    _arrays: dict[str, np.ndarray]

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]] = (),
        /,
        **named: np.ndarray,
    ) -> None:
        object.__setattr__(self, "_arrays", {})
        pairs = arrays.items() if isinstance(arrays, Mapping) else arrays
        for name, array in pairs:  # a plain loop: MutableMapping.update is slow per call
            self[name] = array
        for name, array in named.items():
            self[name] = array

    @classmethod
    def adopt(cls: type[_P], arrays: dict[str, np.ndarray]) -> _P:
        """Wrap ``arrays`` (name → NumPy array, built by this package) without the
        per-entry checks of the constructor: for hot paths that made the arrays themselves."""
        params = cls.__new__(cls)
        object.__setattr__(params, "_arrays", arrays)
        return params

    # -- mapping ----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __setitem__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(name, str):
            raise TypeError(f"parameter names are strings, got {type(name).__name__} {name!r}")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"params.{name} must be a NumPy array, got {type(array).__name__}")
        self._arrays[name] = array

    def __delitem__(self, name: str) -> None:
        del self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    # -- attribute access: params.W is params["W"] ------------------------------------------

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):  # not yet initialised (copy, pickle): no recursion
            raise AttributeError(name)
        try:
            return self._arrays[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no parameter {name!r}; it holds {list(self._arrays)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        elif name in self._arrays:
            self[name] = value
        else:
            raise AttributeError(
                f"{type(self).__name__} has no parameter {name!r}; it holds {list(self._arrays)} "
                f"(add a new one with params[{name!r}] = array)"
            )

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={a.shape}" for n, a in self._arrays.items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:  # identity-free comparison is ambiguous for arrays
        return self is other

    __hash__ = None  # type: ignore[assignment]

    # -- whole-collection operations --------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._arrays)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first array (all share one in a model's parameters)."""
        return next(iter(self._arrays.values())).dtype

    def arrays(self) -> list[np.ndarray]:
        return list(self._arrays.values())

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Params:
        """A new :class:`Params` with ``fn`` applied to each array, names kept."""
        return Params({name: fn(a) for name, a in self._arrays.items()})

    def zeros_like(self) -> Params:
        return self.map(np.zeros_like)

    def copy(self) -> Params:
        return self.map(np.array)

    def global_norm(self) -> float:
        """sqrt(Σ ‖a‖²) over every array, accumulated in float64."""
        return float(np.sqrt(sum(_sum_squares(a) for a in self._arrays.values())))

    def is_finite(self) -> bool:
        return all(all_finite(a) for a in self._arrays.values())

    def check_shapes(
        self, expected: Mapping[str, tuple[int, ...]], dtype: np.dtype, what: str = "params"
    ) -> None:
        """Check that the names, shapes and dtype are exactly ``expected`` and ``dtype``.

        Raises:
            KeyError: a name is missing or unexpected (the message lists both sets).
            ValueError: a shape differs.
            TypeError: an array is not a NumPy array or has another dtype.
        """
        if list(self._arrays) != list(expected):
            missing = [n for n in expected if n not in self._arrays]
            extra = [n for n in self._arrays if n not in expected]
            raise KeyError(
                f"{what} must hold exactly {list(expected)} in that order; "
                f"missing {missing}, unexpected {extra}"
            )
        for name, shape in expected.items():
            array = self._arrays[name]
            if array.shape != tuple(shape):
                raise ValueError(f"{what}.{name} must have shape {tuple(shape)}, got {array.shape}")
            if array.dtype != dtype:
                raise TypeError(
                    f"{what}.{name} must have the model's floating dtype {dtype}, got {array.dtype}"
                )


def all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, its boolean array from the workspace (none per call)."""
    return bool(np.isfinite(a, out=_workspace.empty(a.shape, np.bool_)).all())


def _sum_squares(a: np.ndarray) -> float:
    """‖a‖² accumulated in float64 (a float32 array with entries near 1e20 must not overflow).

    Up to 8,192 entries ``np.dot`` (one thread in OpenBLAS at that length, the fastest);
    above, ``einsum``, which never wakes BLAS's threads: ``np.dot`` on a 65,536-entry vector
    took 17 µs on a quiet 2-core machine but 130–220 µs beside other jobs, waiting for its
    second thread, where ``einsum`` took 26–38 µs either way.
    """
    flat = a.reshape(-1)
    if flat.dtype != np.float64:  # astype(np.float64) into the pool: no allocation per call
        wide = _workspace.empty(flat.shape, np.float64)
        np.copyto(wide, flat, casting="unsafe")
        flat = wide
    if flat.size <= 8192:
        return float(np.dot(flat, flat))
    return float(np.einsum("i,i->", flat, flat))


class Gradients(Params):
    """dL/dθ under the parameters' names, plus ``h0`` = dL/d(initial state).

    ``h0`` is not a parameter (optimizers and clipping never see it): (B, H) for a
    single-layer, one-direction model, (L·D, B, H) otherwise; a pair for the LSTM.
    """

    __slots__ = ("h0",)

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]] = (),
        /,
        h0: Any = None,
        **named: np.ndarray,
    ) -> None:
        super().__init__(arrays, **named)
        object.__setattr__(self, "h0", np.zeros((0, 0)) if h0 is None else h0)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Gradients:
        return Gradients({name: fn(a) for name, a in self.items()}, h0=self.h0)

    @classmethod
    def from_backward(cls, arrays: dict[str, np.ndarray], h0: Any) -> Gradients:
        """Adopt ``arrays`` (name → NumPy array, as a backward produced them) without the
        per-entry checks of the constructor: the model's hot path, once per step."""
        grads = cls.adopt(arrays)
        object.__setattr__(grads, "h0", h0)
        return grads
