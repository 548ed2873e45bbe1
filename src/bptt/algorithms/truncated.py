"""Truncated BPTT(k1, k2) after Williams & Peng (1990), over B parallel streams.

Every k1 new steps (an *update point* t), the losses of those k1 steps are backpropagated
through the last k2 ≥ k1 steps only:

    g_t = Σ_{τ=t−k1+1..t} ∂L_τ/∂θ   with h_{t−k2} treated as a constant

(the gradient is cut at the same horizon t − k2 for every τ of the update, as in Williams &
Peng's BPTT(h; h′) with h = k2, h′ = k1). The hidden state is carried forward across updates,
so each stream sees one unbroken sequence. A last, shorter chunk of n < k1 steps is
backpropagated through its n steps plus the k2 − k1 buffered before it.

    k1 = k2      chunked BPTT (char-rnn's default): one forward_backward per window of k1 steps,
                 h carried over, no recomputation.
    k1 < k2      each update re-runs the forward over the k2 − k1 buffered steps from the
                 stored h_{t−k2}, with those steps masked out of the loss.
    k2 ≥ T       on a sequence of T steps: the summed update gradients equal full BPTT
                 (when T is a multiple of k1; in general when k2 ≥ k1·⌈T/k1⌉, so that the last
                 shorter chunk's window also reaches h_0).

Composed from :meth:`RNN.forward_backward` (h0 in, h_T out) and :meth:`RNN.final_state`, so
it runs any cell and depth; a bidirectional model is refused (its reverse direction would need
steps that have not arrived yet).

This is the package's one TBPTT: :class:`TruncatedBPTT` carries the state and the buffer;
:class:`WindowBPTT` is the registry's ``bptt`` entry on it (full BPTT through each batch, or
TBPTT(k1, k2)); online TBPTT(1, k) (:class:`bptt.online.OnlineTBPTT`) runs on it as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..data.tasks import Batch
from ..model import RNN, BPTTResult
from ..params import Gradients
from ..validation import check_positive_int
from .base import Estimate, GradientAlgorithm, StateDict, counted_steps


class TruncatedBPTT:
    """Carried state and buffer for TBPTT(k1, k2) over B parallel streams.

    Args:
        model: the RNN (its current params are used at each call).
        k1: new steps per update; None: each call's steps, however many (then k2 is k1: the
            gradient through the call's steps only, the carried state flowing in).
        k2: steps backpropagated through at each update, k2 ≥ k1 (default k1).
        checkpoint: the memory schedule of each window's sweep
            (:meth:`bptt.model.RNN.forward_backward`'s ``checkpoint``; the same gradients).
        memory_budget: or the bytes each window's sweep may hold (``forward_backward``'s
            ``memory_budget``, e.g. ``"200MB"``; :mod:`bptt.algorithms.budget`).

    State (all (B, …) arrays, saved in checkpoints via :meth:`state_arrays`):
        h_start: (B, H) hidden state before the first buffered step (None: zeros).
        x_buf, y_buf, m_buf: the last ≤ k2 − k1 steps' inputs, targets and mask.

    Raises:
        ValueError: k1 or k2 not positive, k2 < k1, or k2 without k1.
    """

    def __init__(
        self,
        model: RNN,
        k1: int | None,
        k2: int | None = None,
        checkpoint: bool | int = False,
        memory_budget: int | str | None = None,
    ) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.memory_budget = memory_budget
        if k1 is None:
            if k2 is not None:
                raise ValueError(f"TBPTT with k2={k2} needs k1, the new steps per update")
            self.k1: int | None = None
            self.k2: int | None = None
        else:
            self.k1 = check_positive_int("k1", k1)
            self.k2 = self.k1 if k2 is None else check_positive_int("k2", k2)
            if self.k2 < self.k1:
                raise ValueError(f"TBPTT needs k2 >= k1, got k1={self.k1}, k2={self.k2}")
        self.reset()

    @property
    def schedule(self) -> dict[str, Any]:
        """The memory schedule of each window's sweep, as ``forward_backward`` takes it."""
        return {"checkpoint": self.checkpoint, "memory_budget": self.memory_budget}

    def reset(self) -> None:
        """Start every stream afresh from h = 0 with an empty buffer."""
        self.h_start: Any = None  # the model's state layout: an array, or a tuple (LSTM)
        self.x_buf: np.ndarray | None = None
        self.y_buf: np.ndarray | None = None
        self.m_buf: np.ndarray | None = None

    @property
    def window_start_state(self) -> Any:
        """The state just before the next window's first step when k1 = k2 (chunked BPTT);
        None when k1 < k2 (the runner then keeps the state before its buffer instead) or at
        the start of the streams (zeros)."""
        return self.h_start if self.k2 == self.k1 else None

    def reset_if_not_finite(self) -> None:
        """Start the streams afresh if the carried state holds an inf or NaN (after a
        divergent update), so that one bad window does not poison every later one."""
        h = self.h_start
        if h is None:
            return
        if isinstance(h, tuple):  # (h, c)
            finite = all(np.isfinite(p).all() for p in h)
        else:
            finite = bool(np.isfinite(h).all())
        if not finite:
            self.reset()

    def step(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> BPTTResult:
        """One update point: the gradient of the new steps' losses through the last k2 steps.

        Args:
            x: (n, B, I) or (n, B) ids, the n ≤ k1 new steps (n < k1 only for a last chunk).
            y: their targets, (n, B) or (n, B, O).
            mask: (n, B) or None.

        Returns:
            The :class:`BPTTResult` of the window: ``loss`` counts only the n new steps,
            ``h_last`` is the state after them. The carried state is advanced.
        """
        self.model.require_unidirectional("truncated BPTT on carried streams")
        x, y = np.asarray(x), np.asarray(y)
        n, B = x.shape[:2]
        if self.k1 is not None and n > self.k1:
            raise ValueError(f"x holds {n} steps, more than k1={self.k1} per update")
        loss_mask: np.ndarray | None
        if self.k2 == self.k1:  # nothing buffered: the window is the new steps
            res = self.model.forward_backward(x, y, self.h_start, mask, **self.schedule)
            self.h_start = res.h_last
            return res
        new_mask = np.ones((n, B), dtype=self.model.dtype) if mask is None else np.asarray(mask)
        new_mask = new_mask.astype(self.model.dtype)
        if self.x_buf is None:
            xw, yw, keep_mask = x, y, new_mask
            loss_mask = None if mask is None else new_mask
        else:
            assert self.y_buf is not None and self.m_buf is not None
            xw = np.concatenate([self.x_buf, x])
            yw = np.concatenate([self.y_buf, y])
            keep_mask = np.concatenate([self.m_buf, new_mask])
            # buffered steps are backpropagated through but carry no loss in this update
            loss_mask = np.concatenate([np.zeros_like(self.m_buf), new_mask])
        h0 = self.h_start
        res = self.model.forward_backward(xw, yw, h0, loss_mask, **self.schedule)
        self._advance(xw, yw, keep_mask, h0, res.h_last)
        return res

    def _advance(
        self,
        xw: np.ndarray,
        yw: np.ndarray,
        mw: np.ndarray | None,
        h0: Any,
        h_last: Any,
    ) -> None:
        """Keep the last k2 − k1 steps of the window and the state before them."""
        assert self.k1 is not None and self.k2 is not None  # only k2 > k1 buffers
        keep = min(self.k2 - self.k1, xw.shape[0])
        if keep == 0:
            self.h_start = h_last
            self.x_buf = self.y_buf = self.m_buf = None
            return
        drop = xw.shape[0] - keep
        if drop > 0:
            self.h_start = self.model.final_state(xw[:drop], h0)
        else:
            self.h_start = h0
        assert mw is not None  # k2 > k1 always builds the mask
        self.x_buf, self.y_buf, self.m_buf = xw[drop:], yw[drop:], mw[drop:]

    # -- checkpoint state ------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The carried state as named arrays (empty entries omitted)."""
        out: dict[str, np.ndarray] = {}
        for key in ("h_start", "x_buf", "y_buf", "m_buf"):
            value = getattr(self, key)
            if isinstance(value, tuple):  # a state of several arrays: h_start.0, h_start.1
                out |= {f"tbptt.{key}.{i}": np.ascontiguousarray(v) for i, v in enumerate(value)}
            elif value is not None:
                out[f"tbptt.{key}"] = np.ascontiguousarray(value)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        self.reset()
        for key in ("h_start", "x_buf", "y_buf", "m_buf"):
            value = arrays.get(f"tbptt.{key}")
            if value is None and f"tbptt.{key}.0" in arrays:
                parts = sorted(k for k in arrays if k.startswith(f"tbptt.{key}."))
                setattr(self, key, tuple(np.array(arrays[k]) for k in parts))
            else:
                setattr(self, key, None if value is None else np.array(value))


def tbptt_gradients(
    model: RNN,
    x: np.ndarray,
    y: np.ndarray,
    k1: int,
    k2: int | None = None,
    mask: np.ndarray | None = None,
) -> tuple[float, Gradients]:
    """Σ over update points of the TBPTT(k1, k2) gradients on one sequence, weights held fixed.

    Update points are t = k1, 2k1, …, and T (a last shorter chunk). With k2 ≥ k1·⌈T/k1⌉ (k2 ≥ T
    when k1 divides T) the sum equals the full-BPTT gradient of the whole sequence (h_0 = 0).

    Args:
        x: (T, B, I) or (T, B) ids; y: (T, B) or (T, B, O); mask: (T, B) or None.

    Returns:
        (total loss, summed gradients); ``grads.h0`` sums dL/dh_0 over the updates whose
        window reaches back to h_0 (all of them when k2 ≥ T).
    """
    runner = TruncatedBPTT(model, k1, k2)
    T = np.asarray(x).shape[0]
    total_loss = 0.0
    total: Gradients | None = None
    step = check_positive_int("k1", k1)
    for start in range(0, T, step):
        stop = min(start + step, T)
        m = None if mask is None else mask[start:stop]
        reaches_h0 = runner.h_start is None  # the window starts at step 0
        res = runner.step(x[start:stop], y[start:stop], m)
        total_loss += res.loss
        if total is None:
            total = res.grads
        else:
            for name, arr in total.items():
                arr += getattr(res.grads, name)
            if reaches_h0:
                total.h0 += res.grads.h0
    assert total is not None
    return total_loss, total


class WindowBPTT(GradientAlgorithm):
    """The registry's ``bptt``: BPTT through each batch from the carried state.

        grads = dL/dθ of the batch's loss, s_0 the carried state held constant     (k2 None)

    With B streams served window after window (character text), the state flows from window
    to window and the gradient stops at each window's start: TBPTT(k1 = k2 = T), char-rnn's
    scheme. With fresh sequences each batch (``restart``), this is full BPTT. With ``k2 > k1``
    each update backpropagates the k1 new steps' losses through the last k2 steps:
    TBPTT(k1, k2) (:class:`TruncatedBPTT`).

    Args:
        k1: steps per update (the window length) when ``k2`` is given; else None (each batch,
            whatever its length, is one update).
        k2: steps to backpropagate through, k2 ≥ k1; None: the batch itself.
        checkpoint: each window's sweep stores only segment boundaries and recomputes
            (``forward_backward(checkpoint=…)``; see :class:`bptt.algorithms.recompute.Recompute`).
        memory_budget: each window's sweep fits this many bytes, recomputing as little as
            possible (``bptt train --memory-budget``; :mod:`bptt.algorithms.budget`).

    A bidirectional model runs when every batch starts new sequences (``restart``): its
    reverse direction reads the whole sequence, so no state is carried.
    """

    name = "bptt"
    bidirectional = True
    checkpoint_prefix = "tbptt"  # the names charlm checkpoints have always used

    def __init__(
        self,
        model: RNN,
        batch: int = 1,
        seed: int = 0,
        k1: int | None = None,
        k2: int | None = None,
        checkpoint: bool | int = False,
        memory_budget: int | str | None = None,
    ) -> None:
        super().__init__(model, batch, seed)
        self.runner = TruncatedBPTT(
            model, k1, k2, checkpoint=checkpoint, memory_budget=memory_budget
        )

    def reset(self, state: object = None) -> None:
        self.runner.reset()
        if state is not None:
            states = self.model.split_state(state, self.batch)  # validated
            self.runner.h_start = self.model.join_state([np.array(s) for s in states])

    def gradient(self, batch: Batch, restart: bool = False) -> Estimate:
        self._check_batch(batch)
        x, y, mask = batch
        steps, counted = counted_steps(batch)
        if restart:
            self.reset()
        with np.errstate(over="ignore", invalid="ignore"):
            if self.model.bidirectional:  # whole sequences only: nothing is carried
                if not restart:
                    raise ValueError(
                        "a bidirectional model needs every batch to start new sequences "
                        "(restart=True): its reverse direction reads the whole sequence"
                    )
                res = self.model.forward_backward(x, y, None, mask, **self.runner.schedule)
                return Estimate(res.loss, res.grads, steps, counted)
            start = self.runner.window_start_state
            res = self.runner.step(x, y, mask)
        self.runner.reset_if_not_finite()  # one divergent window does not poison the next
        return Estimate(res.loss, res.grads, steps, counted, state=res.h_last, start=start)

    def state_dict(self) -> StateDict:
        """The carried state and the TBPTT buffer: ``h_start`` (``h_start.0``, ``.1`` for an
        LSTM's (h, c)), ``x_buf``, ``y_buf``, ``m_buf``; absent entries omitted."""
        return {k.removeprefix("tbptt."): v for k, v in self.runner.state_arrays().items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.runner.load_state_arrays({f"tbptt.{k}": v for k, v in state.items()})
        h = self.runner.h_start
        if h is not None:  # shaped as the model's states, (B, H) or (L, B, H), or a tuple
            self.model.split_state(h, self.batch, "the checkpoint's carried state")

    def state_is_finite(self) -> bool:
        h = self.runner.h_start
        parts = () if h is None else h if isinstance(h, tuple) else (h,)
        return all(bool(np.isfinite(p).all()) for p in parts)

    @classmethod
    def carried_bytes(cls, model: RNN, batch: int, **options: Any) -> int:
        """The carried state (every layer's, B·S each) and the k2 − k1 buffered steps'
        inputs, targets and mask (at most I + O + 1 numbers per stream step)."""
        k1, k2 = options.get("k1"), options.get("k2")
        itemsize = model.dtype.itemsize
        S = model.state_parts * model.hidden_size
        state = len(model.layers) * batch * S
        buffered = 0 if k1 is None or k2 is None else (k2 - k1) * batch
        per_step = model.input_size + model.output_size + 1
        return itemsize * (state + buffered * per_step)
