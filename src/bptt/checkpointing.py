"""Recompute-based BPTT in O(√T) memory (Chen et al. 2016; Gruslys et al. 2016).

Full BPTT keeps every hidden state h_1..h_T, every logit z_t and the (T, B, H) gradient
buffers: memory ∝ T·B·(H + O). This schedule cuts the sequence into segments of K steps,

    [0, K), [K, 2K), …, [(S−1)K, T)          S = ⌈T / K⌉

and runs the same forward/backward of :mod:`bptt.rnn` on each segment:

1. forward sweep: h_{sK} for s = 0..S is all that is kept, (S+1, B, H);
2. backward sweep, s = S−1 down to 0: recompute the segment's hidden states from h_{sK},
   its logits, loss and dL/dz (the head, per segment), then backpropagate through the segment
   with the carry dL/dh_{(s+1)K} arriving from the segment after it (``dh_last``), and add the
   segment's dU, dV, dW, db_h, db_y to the totals. The carry it returns, dL/dh_{sK}, goes on
   to the segment before; the last one is dL/dh_0.

The gradients are those of full BPTT (the same sums, regrouped by segment; tested to 1e-10
in float64). Memory: (S+1)·B·H for the boundaries plus one segment's work, about
K·B·(4H + 2O) values, instead of T·B·(4H + 2O); with K ≈ √T both terms are O(√T). Time: the
forward runs twice, about a third more than full BPTT.

The word "checkpoint" here is the recompute schedule; saving a training run to disk is
:mod:`bptt.checkpoint` (another module).
"""

from __future__ import annotations

import math

import numpy as np

from .activations import Activation
from .heads import Head
from .params import Gradients, Params
from .rnn import output_backward, output_forward, recurrent_backward, recurrent_forward


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


def checkpointed_forward_backward(
    params: Params,
    activation: Activation,
    head: Head,
    x: np.ndarray,
    y: np.ndarray,
    h0: np.ndarray,
    weight: np.ndarray,
    segment: int,
    dh_last: np.ndarray | None = None,
) -> tuple[float, Gradients, np.ndarray]:
    """L and dL/dθ by BPTT that stores only segment-boundary hidden states.

    Args:
        params: the weights.
        activation: f_h.
        head: the output head with its loss.
        x: (T, B, I) dense inputs or (T, B) integer ids, already validated.
        y: targets, already validated by ``head.check_targets``.
        h0: (B, H) initial hidden state.
        weight: (T, B) per-step loss weights mask_tb / B.
        segment: K, the steps per segment (≥ 1).
        dh_last: (B, H) gradient arriving on h_T, or None.

    Returns:
        ``(loss, grads, h_T)`` exactly as full BPTT gives them (grads.h0 = dL/dh_0).
    """
    T, B = x.shape[:2]
    H = params.W.shape[0]
    starts = list(range(0, T, segment))
    # 1. forward sweep: keep h at each segment start and h_T, nothing else.
    boundaries = np.empty((len(starts) + 1, B, H), dtype=params.W.dtype)  # (S+1, B, H)
    boundaries[0] = h0
    for s, a in enumerate(starts):
        hs, _ = recurrent_forward(params, x[a : a + segment], boundaries[s], activation)
        boundaries[s + 1] = hs[-1]
        del hs  # freed before the next segment: one segment alive at a time

    # 2. backward sweep: recompute a segment, its head and loss, backpropagate, accumulate.
    zeros = params.zeros_like()
    grads = Gradients(
        U=zeros.U, V=zeros.V, W=zeros.W, b_h=zeros.b_h, b_y=zeros.b_y, h0=np.zeros_like(h0)
    )
    carry = dh_last  # dL/dh at the end of the current segment, (B, H) or None
    loss = 0.0
    for s in range(len(starts) - 1, -1, -1):
        a = starts[s]
        seg = slice(a, a + segment)
        hs, cache = recurrent_forward(params, x[seg], boundaries[s], activation)  # (K+1, B, H)
        z = output_forward(params, hs)  # (K, B, O)
        seg_loss, dz = head.loss_and_dz(z, y[seg], weight[seg])
        dU, db_y, dh = output_backward(dz, hs, params)
        del z, dz
        dV, dW, db_h, carry = recurrent_backward(dh, cache, params, activation, carry)
        del hs, cache, dh
        loss += seg_loss
        grads.U += dU
        grads.V += dV
        grads.W += dW
        grads.b_h += db_h
        grads.b_y += db_y
    assert carry is not None  # at least one segment ran (T ≥ 1)
    grads.h0 = carry
    return loss, grads, boundaries[-1].copy()
