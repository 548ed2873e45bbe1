"""Random problems for the tests: a model and a batch that fits it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt import ElmanRNN


@dataclass
class Problem:
    model: ElmanRNN
    x: np.ndarray
    y: np.ndarray
    h0: np.ndarray | None
    mask: np.ndarray | None


def random_targets(
    rng: np.random.Generator, head: str, T: int, B: int, O: int, dtype: np.dtype
) -> np.ndarray:
    if head == "softmax":
        return rng.integers(0, O, size=(T, B))
    if head == "sigmoid":
        return rng.random((T, B, O)).astype(dtype)  # soft targets in [0, 1]
    return rng.standard_normal((T, B, O)).astype(dtype)


def random_problem(
    rng: np.random.Generator,
    *,
    activation: str = "tanh",
    head: str = "softmax",
    ids: bool = False,
    T: int = 5,
    B: int = 3,
    I: int = 4,
    H: int = 6,
    O: int = 3,
    use_h0: bool = True,
    use_mask: bool = True,
    dtype: type = np.float64,
    weight_scale: float = 1.0,
) -> Problem:
    model = ElmanRNN(
        I,
        H,
        O,
        hidden_activation=activation,
        output=head,
        seed=int(rng.integers(1 << 31)),
        dtype=dtype,
    )
    # Spread the weights so no activation sits only in its linear region.
    for _, array in model.params.items():
        array *= weight_scale * 2.0
    dt = np.dtype(dtype)
    x = rng.integers(0, I, size=(T, B)) if ids else rng.standard_normal((T, B, I)).astype(dt)
    y = random_targets(rng, head, T, B, O, dt)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dt) if use_h0 else None
    mask = None
    if use_mask:
        mask = rng.random((T, B)) < 0.7
        mask[-1, 0] = True  # at least one step carries loss
    return Problem(model, x, y, h0, mask)


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a − e| / max |e|: the error relative to the reference's scale."""
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
    return float(np.max(np.abs(actual - expected))) / max(scale, 1e-300)
