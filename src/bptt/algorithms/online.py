"""The online family (:mod:`bptt.online`) behind the one interface: an adapter.

    gradient(batch, restart):   reset() if restart;   (L_1..L_T), Σ_t grads_t = alg.run(x, y, mask)

Each online algorithm (RTRL, SnAp-n, UORO, KF-RTRL, RFLO, online TBPTT) advances its B streams
step by step with the weights fixed within the batch and estimates each step's dL_t/dθ; the
batch's estimate is their sum, and its loss the sum of the steps' losses. The adapter uses only
:class:`bptt.online.OnlineAlgorithm`'s public interface (``reset``, ``run``, ``state_dict``,
``load_state_dict``, ``state_is_finite``) and :func:`bptt.online.make`, so the online classes
stay free to change inside. Which models an online method runs (cells, depth) is the online
class's to decide: it refuses at construction, with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import online
from .._kernels import loop_blas_threads
from ..data.tasks import Batch
from ..model import RNN
from .base import Estimate, GradientAlgorithm, StateDict, counted_steps


class OnlineGradient(GradientAlgorithm):
    """An online algorithm of :mod:`bptt.online` as a :class:`GradientAlgorithm`.

    Args:
        method: the online algorithm's name (``rtrl``, ``snap-1``, ``snap-n``, ``uoro``,
            ``kf-rtrl``, ``rflo``, ``tbptt``).
        **options: passed to :func:`bptt.online.make` (``tbptt``: ``k``; ``uoro``/``kf-rtrl``:
            ``eps``; ``rflo``: ``alpha``, ``feedback``; ``snap-n``: ``storage``).

    Raises:
        ValueError: an unknown method, or a model the method does not run (the online class's
            message).
    """

    streaming = True
    checkpoint_prefix = "online"  # ``online.<key>``: the names checkpoints have always used

    def __init__(
        self, model: RNN, batch: int = 1, seed: int = 0, method: str = "rtrl", **options: Any
    ) -> None:
        super().__init__(model, batch, seed)
        self.name = method
        self.online = online.make(method, model, batch=self.batch, seed=seed, **options)

    def reset(self, state: object = None) -> None:
        self.online.reset(state)

    def gradient(self, batch: Batch, restart: bool = False) -> Estimate:
        """Σ_t of the method's per-step estimates over the batch (its ``run``)."""
        self._check_batch(batch)
        x, y, mask = batch
        steps, counted = counted_steps(batch)
        if restart:
            self.online.reset()
        model = self.model
        H, Q = model.hidden_size, model.input_size + model.hidden_size + 1
        # the forward and head hoisted over the batch; the same as its steps one by one
        with (
            np.errstate(over="ignore", invalid="ignore"),
            loop_blas_threads(self.batch * H * H * Q),
        ):
            losses, grads = self.online.run(x, y, mask)
        if not self.online.state_is_finite():  # one divergent batch does not poison the next
            self.online.reset()
        return Estimate(float(np.sum(losses)), grads, steps, counted)

    def state_dict(self) -> StateDict:
        return self.online.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.online.load_state_dict(state)

    def state_is_finite(self) -> bool:
        return self.online.state_is_finite()

    @classmethod
    def carried_bytes(
        cls, model: RNN, batch: int, method: str = "rtrl", k: int = 1, **options: Any
    ) -> int:
        """The online method's carried state (:func:`bptt.online.carried_bytes`)."""
        # The package's one call of online.carried_bytes (the trainer's memory check reaches
        # it through the registry); W's sparsity mask is read from the model.
        return online.carried_bytes(method, model, batch, k)
