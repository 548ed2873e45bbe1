"""Online truncated BPTT: each step's loss backpropagated through the last k steps.

    grads_t = ∂L_t/∂θ  with h_{t−k} treated as a constant          (every step, window k)

This is :class:`bptt.truncation.TruncatedBPTT` with k1 = 1 and k2 = k: the last k − 1 steps
are buffered with the state before them, and each step reruns the model's forward and
backward over its window (cost O(k) model steps per step). With k ≥ T (weights fixed) the
sum over a stream of T steps equals full BPTT, h_0's gradient included. It runs any
unidirectional model (every cell and depth).
"""

from __future__ import annotations

import numpy as np

from ..model import RNN
from ..params import Gradients
from ..truncation import TruncatedBPTT
from .base import OnlineAlgorithm, StateDict


class OnlineTBPTT(OnlineAlgorithm):
    """Online TBPTT(1, k) (see the module).

    Args:
        k: steps to backpropagate each step's loss through (k ≥ 1).
    """

    name = "tbptt"
    needs_elman = False

    def __init__(self, model: RNN, batch: int, seed: int = 0, k: int = 10) -> None:
        super().__init__(model, batch, seed)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"tbptt k (the truncation window) must be an int >= 1, got {k!r}")
        self.k = int(k)
        self.runner = TruncatedBPTT(model, 1, self.k)

    def reset(self, h0: object = None) -> None:
        self.t = 0
        self.runner.reset()
        if h0 is not None:
            states = self.model.split_state(h0, self.batch)  # validated
            self.runner.h_start = self.model.join_state([np.array(s) for s in states])

    def _step(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[float, Gradients]:
        res = self.runner.step(x[None], y[None], mask[None])
        grads = res.grads
        if self.t >= self.k:  # the window no longer starts at h_0
            grads = Gradients(dict(grads.items()), h0=_zeros_like_state(grads.h0))
        return res.loss, grads

    def state_dict(self) -> StateDict:
        return {"t": np.array([self.t], dtype=np.int64)} | {
            k.removeprefix("tbptt."): v for k, v in self.runner.state_arrays().items()
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:  # type: ignore[override]
        if "t" not in state:
            raise KeyError("online tbptt state lacks ['t']")
        self.t = int(np.asarray(state["t"]).reshape(-1)[0])
        self.runner.load_state_arrays({f"tbptt.{k}": v for k, v in state.items() if k != "t"})

    def _propagate(self, at: object, fprime: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def _zeros_like_state(state: object) -> object:
    if isinstance(state, tuple):
        return tuple(np.zeros_like(s) for s in state)
    return np.zeros_like(state)
