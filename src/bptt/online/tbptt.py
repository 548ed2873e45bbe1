"""Online truncated BPTT: each step's loss backpropagated through the last k steps.

    grads_t = ∂L_t/∂θ  with h_{t−k} treated as a constant          (every step, window k)

This is the package's one TBPTT, :class:`bptt.algorithms.truncated.TruncatedBPTT`, with
k1 = 1 and k2 = k: the last k − 1 steps are buffered with the state before them, and each step
reruns the model's forward and backward over its window (cost O(k) model steps per step). With
k ≥ T (weights fixed) the sum over a stream of T steps equals full BPTT, h_0's gradient
included. It runs any unidirectional model (every cell and depth).

Elman fast path (one Elman layer; ``fast=False`` turns it off, and the tests compare the two):
the same numbers in closed form. Instead of rerunning the window, a ring of the last k
steps' ĥ_i = [x_i; h_{i-1}; 1] and f'(E_i) is kept, and each step backpropagates its own loss

    δ_t = c_t ⊙ f'(E_t)      δ_{i-1} = (δ_i W) ⊙ f'(E_{i-1})      dΘ_t = Σ_{i>t−k} δ_iᵀ ĥ_i

(the same numbers, O(k·B·H·(H + Q)) per step, no recomputed forward).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..algorithms.truncated import TruncatedBPTT
from ..cells import ElmanCell
from ..model import RNN
from ..params import Gradients
from .base import OnlineAlgorithm, StateDict, _outer_sum


class OnlineTBPTT(OnlineAlgorithm):
    """grads_t = ∂L_t/∂θ with h_{t−k} held constant: online TBPTT(1, k) (see the module).

    Args:
        k: steps to backpropagate each step's loss through (k ≥ 1).
        fast: the Elman closed form where it applies (one Elman layer; the default) or, with
            False, always the window rerun by :class:`~bptt.algorithms.truncated.TruncatedBPTT`.
    """

    name = "tbptt"
    needs_elman = False

    def __init__(
        self, model: RNN, batch: int, seed: int = 0, k: int = 10, fast: bool = True
    ) -> None:
        super().__init__(model, batch, seed)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"tbptt k (the truncation window) must be an int >= 1, got {k!r}")
        self.k = int(k)
        self.runner = TruncatedBPTT(model, 1, self.k)
        elman = model.simple and isinstance(model.layers[0].cell, ElmanCell)
        self.fast = bool(fast) and elman
        self._reset_traces()

    def _reset_traces(self) -> None:
        if self.fast:
            B, k, dt = self.batch, self.k, self.model.dtype
            self.hhat = np.zeros((k, B, self.Q), dtype=dt)  # (k, B, Q): ring of ĥ_i
            self.fp = np.zeros((k, B, self.H), dtype=dt)  # (k, B, H): ring of f'(E_i)

    def _traces(self) -> StateDict:
        return {"hhat": self.hhat, "fp": self.fp} if self.fast else {}

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        slot = self.t % self.k
        self.hhat[slot] = hhat
        self.fp[slot] = fprime

    def _backward(self, c: np.ndarray) -> np.ndarray:
        """δ_i for the window, newest first: (n, B, H)."""
        n = min(self.t + 1, self.k)
        order = (self.t - np.arange(n)) % self.k  # ring slots, newest first
        W = self.model.params["W"]
        deltas = np.empty((n, self.batch, self.H), dtype=self.model.dtype)
        deltas[0] = c * self.fp[order[0]]
        for j in range(1, n):
            np.matmul(deltas[j - 1], W, out=deltas[j])
            deltas[j] *= self.fp[order[j]]
        self._order, self._deltas = order, deltas
        return deltas

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        deltas = self._backward(c)
        n, B = deltas.shape[:2]
        hhat = self.hhat[self._order].reshape(n * B, self.Q)
        return deltas.reshape(n * B, self.H).T @ hhat  # (H, Q)

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """T steps hoisted (see ``OnlineAlgorithm.run``), Elman path. Over the chunk and the
        n ≤ k − 1 ring steps before it (with c = 0: their losses are counted), step t's δ at
        lag l (i = t − l) is one shifted product for all t at once:

            D_0[i] = c_i ⊙ f'_i      D_l[i] = (D_{l−1}[i+1] W) ⊙ f'_i      l = 1 … k − 1
            Σ_t dΘ_t = Σ_i (Σ_l D_l[i])ᵀ ĥ_i             dL/dh_0: (Σ_l D_l[0]) W  (while t < k)
        """
        if not self.fast:
            return self._run_steps(x, y, mask)
        t0, k = self.t, self.k
        ch = self._chunk(x, y, mask)
        T, B, H = ch.c.shape
        n = min(t0, k - 1)  # ring steps before the chunk that its windows reach
        ring = (t0 - n + np.arange(n)) % k  # their slots, oldest first
        hhat = np.concatenate([self.hhat[ring], ch.hhat])  # (L, B, Q)
        fp = np.concatenate([self.fp[ring], ch.fprime])  # (L, B, H)
        L = n + T
        W = self.model.params["W"]
        delta = np.zeros((L, B, H), dtype=self.model.dtype)  # Σ_l D_l
        lag = ch.c * ch.fprime  # D_0 on the chunk's rows
        delta[n:] = lag
        lag = delta.copy()
        for ell in range(1, min(k, L)):
            lag = (lag[1:] @ W) * fp[: L - ell]  # D_ℓ (L − ℓ, B, H)
            delta[: L - ell] += lag
        theta = _outer_sum(delta, hhat)  # (H, Q)
        h0 = delta[0] @ W if t0 < k else np.zeros_like(self.h)  # step 0 is row 0 when t0 < k
        keep = np.arange(L - min(k, L), L)  # the last k steps stay in the ring
        slots = (t0 - n + keep) % k
        self.hhat[slots] = hhat[keep]
        self.fp[slots] = fp[keep]
        self.t += T
        return ch.losses, self._gradients(ch, theta, h0)

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        if self.t >= self.k:  # the window no longer starts at h_0
            return np.zeros_like(self.h)
        return self._deltas[-1] @ self.model.params["W"]  # δ_1 W = ∂L_t/∂h_0

    def reset(self, h0: object = None) -> None:
        if self.fast:
            super().reset(h0)
            return
        self.t = 0
        self.runner.reset()
        if h0 is not None:
            states = self.model.split_state(h0, self.batch)  # validated
            self.runner.h_start = self.model.join_state([np.array(s) for s in states])

    def _step(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[float, Gradients]:
        if self.fast:
            return super()._step(x, y, mask)
        res = self.runner.step(x[None], y[None], mask[None])
        grads = res.grads
        if self.t >= self.k:  # the window no longer starts at h_0
            grads = Gradients(dict(grads.items()), h0=_zeros_like_state(grads.h0))
        return res.loss, grads

    def state_dict(self) -> StateDict:
        if self.fast:
            return super().state_dict()
        return {"t": np.array([self.t], dtype=np.int64)} | {
            k.removeprefix("tbptt."): v for k, v in self.runner.state_arrays().items()
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if self.fast:
            super().load_state_dict(state)
            return
        if "t" not in state:
            raise KeyError("online tbptt state lacks ['t']")
        self.t = int(np.asarray(state["t"]).reshape(-1)[0])
        self.runner.load_state_arrays({f"tbptt.{k}": v for k, v in state.items() if k != "t"})


def _zeros_like_state(state: object) -> object:
    if isinstance(state, tuple):
        return tuple(np.zeros_like(s) for s in state)
    return np.zeros_like(state)
