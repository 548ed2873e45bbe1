"""The one interface every gradient algorithm stands behind, and what it returns.

    alg = bptt.algorithms.make(name, model, batch=B, seed=0, **options)
    alg.reset(state=None)                      # the carried state (the model's layout), zeros
    est = alg.gradient(batch, restart=False)   # batch: Batch(x, y, mask) of T steps, B streams
    est.loss, est.grads, est.steps, est.counted, est.state
    alg.state_dict() / alg.load_state_dict(d)  # named arrays: a checkpoint resumes bit for bit
    type(alg).carried_bytes(model, B, **options)   # memory of the carried state, before building

For a batch of T steps of B streams, starting from the carried state s_0 (zeros after a
``restart``), an algorithm returns

    loss   = Σ_t L_t,  L_t = (1/B) Σ_b mask_tb ℓ(ŷ_tb, y_tb)        (the model's loss)
    grads  ≈ dL/dθ      its estimate of the gradient of that loss (exact for BPTT; truncated,
                        online or approximate for the others), under the model's names
    state  = s_T        carried into the next batch unless the source restarts the streams

Two kinds, told apart by the class attribute :attr:`GradientAlgorithm.streaming`:

- window algorithms (``streaming = False``: BPTT, recompute) backpropagate through each batch
  as a whole; a data source serves them its windows (character streams) or fresh batches;
- streaming algorithms (``streaming = True``: the online family) advance step by step with the
  weights fixed within the batch; a source serves them ``--update-every`` steps at a time of
  unbroken streams.

Every algorithm is tested against full BPTT (tests/test_algorithms.py) and through the same
trainer test (training, checkpoint, bit-exact resume).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..data.tasks import Batch
from ..model import RNN
from ..params import Gradients
from ..validation import check_positive_int

StateDict = dict[str, np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """One batch's loss and gradient estimate.

    Attributes:
        loss: Σ_t L_t over the batch's steps (each L_t the mean over the B streams, mask-aware),
            a Python float.
        grads: the estimate of dL/dθ under the model's parameter names.
        steps: T·B, the stream steps the batch advanced (tokens, for the throughput).
        counted: Σ_tb mask_tb, the steps whose loss counts (T·B without a mask).
        state: the carried state after the batch (the model's layout; None where the algorithm
            carries no single model state).
        start: the state the batch's backward started from, when it is one model state (window
            BPTT with k2 = T); else None. The gradient profiler starts from it.
    """

    loss: float
    grads: Gradients
    steps: int
    counted: float
    state: Any = None
    start: Any = None


def counted_steps(batch: Batch) -> tuple[int, float]:
    """(T·B, Σ mask) of a batch: the stream steps and the counted ones."""
    T, B = np.shape(batch.x)[:2]
    counted = T * B if batch.mask is None else float(np.sum(batch.mask, dtype=np.float64))
    return T * B, counted


class GradientAlgorithm(ABC):
    """A way to compute the gradient of a model's loss over batches of B streams.

    Args:
        model: the RNN; its current ``params`` are read at every :meth:`gradient` (an optimizer
            changes them between calls).
        batch: B, the number of streams (sequences per batch).
        seed: seeds the algorithm's own random generator (the stochastic online methods).

    Subclasses set :attr:`name`, :attr:`streaming`, :attr:`checkpoint_prefix` and implement
    :meth:`reset`, :meth:`gradient`, :meth:`state_dict`, :meth:`load_state_dict` and
    :meth:`carried_bytes`; registering the class (:mod:`bptt.algorithms.registry`) is all that
    puts it in ``bptt train --algorithm``, the docs' table and the parametrised tests.
    """

    name: str  # the registry name (an instance may refine it: the online adapter's method)
    streaming: ClassVar[bool] = False
    """True: advances step by step on unbroken streams (served ``--update-every`` steps at a
    time); False: backpropagates through each batch as a whole."""
    bidirectional: ClassVar[bool] = False
    """Whether it runs bidirectional models (only whole-sequence BPTT can)."""
    checkpoint_prefix: ClassVar[str] = "algorithm"
    """The prefix of :meth:`state_dict`'s arrays in a training checkpoint (``tbptt.h_start``,
    ``online.rtrl_M``, …: the names checkpoints have always used)."""

    def __init__(self, model: RNN, batch: int = 1, seed: int = 0) -> None:
        if not isinstance(model, RNN):
            raise TypeError(f"model must be a bptt RNN, got {type(model).__name__}")
        self.model = model
        self.batch = check_positive_int("batch", batch)
        self.seed = seed

    @abstractmethod
    def reset(self, state: object = None) -> None:
        """Start every stream afresh from ``state`` (the model's h0 layout; zeros when None)."""

    @abstractmethod
    def gradient(self, batch: Batch, restart: bool = False) -> Estimate:
        """The loss and gradient estimate of ``batch`` under the model's current weights.

        Args:
            batch: ``Batch(x, y, mask)``: x (T, B, I) or ids (T, B), y (T, B) or (T, B, O),
                mask (T, B) or None; B must be the algorithm's ``batch``.
            restart: the batch starts new streams: :meth:`reset` first.

        The carried state moves past the batch (reset if it went non-finite).
        """

    @abstractmethod
    def state_dict(self) -> StateDict:
        """Everything carried from batch to batch, as named arrays (for checkpoints)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s arrays; the run then continues bit for bit.

        Raises:
            KeyError/ValueError: missing arrays, or arrays that do not fit this model.
        """

    def state_is_finite(self) -> bool:
        """Whether every carried array is finite (a diverging run resets the streams if not)."""
        return all(bool(np.isfinite(v).all()) for v in self.state_dict().values())

    @classmethod
    @abstractmethod
    def carried_bytes(cls, model: RNN, batch: int, **options: Any) -> int:
        """Peak bytes of the state this algorithm carries for ``model`` over ``batch`` streams
        (beyond one BPTT window's workspace), for a memory check before anything is built.
        ``model`` may be :func:`bptt.model.unallocated_model` (no weights)."""

    def _check_batch(self, batch: Batch) -> None:
        B = np.shape(batch.x)[1] if np.ndim(batch.x) >= 2 else None
        if B != self.batch:
            raise ValueError(
                f"batch.x must hold B={self.batch} streams in axis 1 ((T, B, I) or (T, B) ids), "
                f"got shape {np.shape(batch.x)}"
            )

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(name={self.name!r}, batch={self.batch}, model={self.model!r})"
