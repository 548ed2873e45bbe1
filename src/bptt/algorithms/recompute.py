"""Recompute-based BPTT in O(√T) memory (Chen et al. 2016; Gruslys et al. 2016).

Full BPTT keeps every hidden state h_1..h_T, every logit z_t and the (T, B, H) gradient
buffers: memory ∝ T·B·(H + O). This schedule cuts the sequence into segments of K steps,

    [0, K), [K, 2K), …, [(S−1)K, T)          S = ⌈T / K⌉

and runs the model's one forward/backward sweep (:meth:`bptt.model.RNN.sweep`) on each
segment, every layer at once:

1. forward sweep: each layer's state at sK for s = 0..S is all that is kept, (S+1, L, B, H);
2. backward sweep, s = S−1 down to 0: recompute the segment's states from those at sK,
   its logits, loss and dL/dz (the head, per segment), then backpropagate through the segment
   with the carries dL/ds_{(s+1)K} arriving from the segment after it (``ds_last``), and add
   the segment's parameter gradients to the totals. The carries it returns, dL/ds_{sK}, go on
   to the segment before; the last ones are dL/ds_0.

The gradients are those of full BPTT (the same sums, regrouped by segment; tested to 1e-10
in float64). Memory: (S+1)·B·H for the boundaries plus one segment's work, about
K·B·(4H + 2O) values, instead of T·B·(4H + 2O); with K ≈ √T both terms are O(√T). Time: the
forward runs twice, about a third more than full BPTT.

``model.loss_and_grads(x, y, checkpoint=True | K)`` selects this schedule (the name PyTorch
gives it, "gradient checkpointing"); saving a training run to disk is :mod:`bptt.checkpoint`.
For a budget in bytes rather than a segment length (any number of levels, the least
recomputation that fits, measured memory), see :mod:`bptt.algorithms.budget`
(``memory_budget=``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

SweepFn = Callable[..., tuple[float, dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]]
ForwardFn = Callable[..., Any]


def segment_length(n_steps: int, checkpoint: object) -> int | None:
    """The segment length K that ``checkpoint`` asks for, or None for full storage.

    ``False`` → None (store every step); ``True`` → K = round(√T) (at least 1);
    a positive int K → K. A K ≥ T is one segment, the same as full storage.

    Raises:
        TypeError: ``checkpoint`` is not a bool or an int.
        ValueError: an int below 1.
    """
    if isinstance(checkpoint, (bool, np.bool_)):
        return max(1, round(math.sqrt(n_steps))) if checkpoint else None
    if not isinstance(checkpoint, (int, np.integer)):
        raise TypeError(
            "checkpoint must be False (store every step), True (segments of about √T steps) "
            f"or a positive int K (segments of K steps), got {type(checkpoint).__name__} "
            f"{checkpoint!r}"
        )
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be a positive segment length in steps, got {checkpoint}")
    return int(checkpoint)


def estimated_peak_bytes(
    n_steps: int, batch: int, hidden: int, n_out: int, segment: int | None, itemsize: int
) -> int:
    """The model of peak working memory used to pick a segment length.

    Full storage (segment None or ≥ T): about T·B·(4H + 2O) values (hidden states, their
    gradient buffer, f'(E) and one product temporary; the logits and dL/dz). Segments of K:
    (S+1)·B·H for the boundaries plus the same for K steps. A model fitted to tracemalloc
    measurements (tests/test_checkpointing.py checks it bounds them), not a guarantee.
    """
    per_step = batch * (4 * hidden + 2 * n_out)
    if segment is None or segment >= n_steps:
        return itemsize * (n_steps * per_step + batch * hidden)
    n_segments = -(-n_steps // segment)
    return itemsize * ((n_segments + 1) * batch * hidden + segment * per_step)


def segment_for_memory_budget(
    n_steps: int, batch: int, hidden: int, n_out: int, itemsize: int, budget_bytes: int
) -> int | None:
    """The longest segment K whose :func:`estimated_peak_bytes` fits in ``budget_bytes``.

    Longer segments mean fewer, larger products (faster), so the longest that fits is best;
    None when full storage fits. Pass the result as ``checkpoint=``.

    Raises:
        ValueError: not even the memory-minimising K fits the budget.
    """
    if estimated_peak_bytes(n_steps, batch, hidden, n_out, None, itemsize) <= budget_bytes:
        return None
    best = None
    # The estimate falls then rises in K; scan the candidates (T is at most millions).
    for k in range(1, n_steps + 1):
        if estimated_peak_bytes(n_steps, batch, hidden, n_out, k, itemsize) <= budget_bytes:
            best = k
    if best is None:
        smallest = min(
            estimated_peak_bytes(n_steps, batch, hidden, n_out, k, itemsize)
            for k in range(1, n_steps + 1)
        )
        raise ValueError(
            f"budget_bytes={budget_bytes} is below the smallest checkpointed footprint "
            f"(about {smallest} bytes for T={n_steps}, B={batch}, H={hidden}, O={n_out})"
        )
    return best


def recompute_forward_backward(
    sweep: SweepFn,
    forward: ForwardFn,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    states: Sequence[np.ndarray],
    ds_last: Sequence[np.ndarray | None],
    segment: int,
) -> tuple[float, dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """L and dL/dθ by BPTT that stores only the states at segment boundaries.

    Args:
        sweep: the model's forward → head → backward over one segment
            (:meth:`bptt.model.RNN.sweep`): ``(params, x, y, weight, states, ds_last) →
            (loss, grads, ds0, finals)``.
        forward: the model's forward without a cache (``keep=False``), for the first sweep.
        params: the weights.
        x: (T, B, I) dense inputs or (T, B) integer ids, already validated.
        y: targets, already validated by ``head.check_targets``.
        weight: (T, B) per-step loss weights mask_tb / B.
        states: the initial state of each layer, (B, S) each.
        ds_last: gradient arriving on each layer's s_T, or None.
        segment: K, the steps per segment (≥ 1).

    Returns:
        ``(loss, grads, ds0, finals)`` exactly as full BPTT gives them.
    """
    T = x.shape[0]
    starts = list(range(0, T, segment))
    # 1. forward sweep: keep every layer's state at each segment start, nothing else.
    boundaries: list[list[np.ndarray]] = [list(states)]  # (S+1) × layers × (B, S)
    for a in starts:
        boundaries.append(forward(params, x[a : a + segment], boundaries[-1], False).finals)

    # 2. backward sweep: recompute a segment, its head and loss, backpropagate, accumulate.
    carry: Sequence[np.ndarray | None] = ds_last  # dL/ds at the end of the current segment
    loss = 0.0
    totals: dict[str, np.ndarray] | None = None
    for s in range(len(starts) - 1, -1, -1):
        seg = slice(starts[s], starts[s] + segment)
        seg_loss, grads, carry, _ = sweep(params, x[seg], y[seg], weight[seg], boundaries[s], carry)
        loss += seg_loss
        if totals is None:
            totals = grads
        else:
            for name, g in grads.items():
                totals[name] += g
    assert totals is not None  # at least one segment ran (T ≥ 1)
    return loss, totals, list(carry), boundaries[-1]  # type: ignore[arg-type]
