"""Recompute-based BPTT in O(√T) memory (Chen et al. 2016; Gruslys et al. 2016).

Full BPTT keeps every hidden state h_1..h_T, every logit z_t and the (T, B, H) gradient
buffers: memory ∝ T·B·(H + O). This schedule cuts the sequence into segments of K steps,

    [0, K), [K, 2K), …, [(S−1)K, T)          S = ⌈T / K⌉

keeps only each layer's state at the segment starts during the forward sweep, and during the
backward sweep recomputes each segment from its boundary and backpropagates through it with
the carries from the segment after it (:meth:`bptt.model.RNN.sweep_segments`, the model's one
sweep run segment by segment).

The gradients are those of full BPTT (the same sums, regrouped by segment; tested to 1e-10
in float64). Memory: (S+1)·B·H for the boundaries plus one segment's work, about
K·B·(4H + 2O) values, instead of T·B·(4H + 2O); with K ≈ √T both terms are O(√T). Time: the
forward runs twice, about a third more than full BPTT.

``model.loss_and_grads(x, y, checkpoint=True | K)`` selects this schedule (the name PyTorch
gives it, "gradient checkpointing"); :class:`Recompute` is the registry's ``recompute`` entry
(``bptt train --algorithm recompute [--segment K]``); :func:`segment_for_memory_budget` picks
K for a memory budget. Saving a training run to disk is :mod:`bptt.checkpoint`.
For a budget in bytes rather than a segment length (any number of levels, the least
recomputation that fits, measured memory), see :mod:`bptt.algorithms.budget`
(``memory_budget=``).

Why the segment executor lives in the model: ``checkpoint=`` is part of the model's public
``loss_and_grads``, and the model imports nothing from :mod:`bptt.algorithms` (the arrow runs
from the algorithms to the model); the executor only regroups the model's own sweep, so it is
the model's. This module holds what is an algorithm's: the registry entry and the memory model.
"""

from __future__ import annotations

from typing import Any

from ..model import RNN, segment_length
from .truncated import WindowBPTT

__all__ = [
    "Recompute",
    "estimated_peak_bytes",
    "segment_for_memory_budget",
    "segment_length",
]


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


class Recompute(WindowBPTT):
    """The registry's ``recompute``: :class:`~bptt.algorithms.truncated.WindowBPTT` (BPTT
    through each batch from the carried state) with each sweep run in segments.

        grads = dL/dθ exactly as ``bptt``'s, in O(√T) memory instead of O(T)

    Args:
        segment: K, steps per segment; None: about √T for each batch's T.
    """

    name = "recompute"
    bidirectional = False  # segments are recomputed left to right

    def __init__(
        self, model: RNN, batch: int = 1, seed: int = 0, segment: int | None = None
    ) -> None:
        super().__init__(model, batch, seed, checkpoint=True if segment is None else segment)
        segment_length(1, self.runner.checkpoint)  # a bad segment is refused now, not later

    @classmethod
    def carried_bytes(cls, model: RNN, batch: int, **options: Any) -> int:
        """The carried state, as ``bptt``'s (the segment boundaries are workspace)."""
        return WindowBPTT.carried_bytes(model, batch)
