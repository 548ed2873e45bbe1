"""Exact BPTT under a memory budget: the binomial recompute schedule that fits (Griewank 1992).

Cut the T steps into m blocks of ℓ steps (the last one r ≤ ℓ). Reversing a block is one of
the model's sweeps (:meth:`bptt.model.RNN.sweep`: forward with its cache, head, loss,
backward), which needs the state at the block's start. With s checkpoint slots besides the
initial state, the fewest block forwards that reverse m blocks is, for m > 1,

    C(m, s) = min_{1≤y<m} [ y + C(m−y, s−1) + C(y, s) ]       C(1, s) = 0    C(m, 0) = m(m−1)/2

(advance y blocks without a cache, store the state there, reverse the right part with one
slot fewer, then the left part with the slot back). Its closed form is Griewank's binomial
count (Griewank & Walther 2000, "revolve"; Gruslys et al. 2016 give the same DP for hidden-
state storage):

    β(s, ρ) = binom(s + 1 + ρ, ρ)                the most blocks s slots reverse with every
                                                block forwarded at most ρ extra times
    C(m, s) = ρ·m − binom(s + ρ + 1, ρ − 1)      ρ the least with β(s, ρ) ≥ m

and an optimal split is the least y with 1 + ρ(y + 1, s) ≥ ρ(m − y, s − 1) (the extra-forward
counts of the two parts balance; C is convex in y). The forward steps recomputed are C(m, s)·ℓ:
the last block, the only short one, is never advanced over.

Memory. A sweep over k steps allocates ``fixed + k·per_step`` bytes (its forward cache, the
logits and dL/dz, the backward's temporaries and the parameter gradients), measured for the
model's cell, depth, batch and dtype with tracemalloc on two short sequences
(:func:`measure_step_bytes`). The schedule's peak is

    fixed + T·mask_step + (s + 3)·state + (ℓ + r′)·per_step + |θ|

(the mask as bools, if there is one: the loss weights are made a block at a time; s
checkpoints, the start state, the running state and the carried dL/ds, one block's sweep, the
gradient totals; r′ = r when the short last block exists: bptt's workspace pool keeps each
shape's buffers for reuse, so the last block's buffers stay allocated beside the others, and
for the same reason every block but the last has one length).

Time. The planner scans every ℓ, takes the most slots that fit, and keeps the schedule with
the least predicted time (then the longest blocks): T sweep steps, m sweep calls and C(m, s)
advances of ℓ steps, each call with a fixed cost beyond its steps (:class:`Costs`,
:func:`costs_for`). With free calls that is the fewest recomputed steps, the optimum over
schedules whose blocks share one length (for ℓ = 1 the unrestricted step-level optimum);
with a call's measured cost (~0.55 ms a sweep on the benchmark machine, as much as ten
steps) it takes fewer, longer blocks where very short ones would spend more on calls than
they save in recomputation.

``model.loss_and_grads(x, y, memory_budget=BYTES)`` runs it; :func:`plan` shows the schedule
before running it; :func:`parse_bytes` reads ``200MB``.
"""

from __future__ import annotations

import math
import re
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _workspace
from ..model import RNN, BPTTResult, register_memory_budget_runner

__all__ = [
    "Costs",
    "LossWeights",
    "Schedule",
    "StepBytes",
    "costs_for",
    "forward_backward",
    "measure_step_bytes",
    "parse_bytes",
    "plan",
    "plan_for",
    "recompute_count",
    "run_schedule",
    "smallest_budget",
    "validated",
]

# -- the binomial count ------------------------------------------------------------------------


def _repetitions(m: int, slots: int) -> int:
    """ρ(m, s): the least ρ with β(s, ρ) = binom(s + 1 + ρ, ρ) ≥ m (0 for one block)."""
    rho, beta = 0, 1  # β(s, 0) = 1
    while beta < m:
        rho += 1
        beta = beta * (slots + 1 + rho) // rho  # binom(s+1+ρ, ρ) from binom(s+ρ, ρ−1)
    return rho


def recompute_count(m: int, slots: int) -> int:
    """C(m, s): the fewest block forwards beyond one per block that reverse m blocks with s
    checkpoint slots (besides the initial state): ρ·m − binom(s + ρ + 1, ρ − 1).

    Raises:
        ValueError: m < 1 or s < 0.
    """
    if m < 1 or slots < 0:
        raise ValueError(f"need m >= 1 blocks and s >= 0 slots, got m={m}, s={slots}")
    if m == 1:
        return 0
    rho = _repetitions(m, slots)
    return rho * m - math.comb(slots + rho + 1, rho - 1)


def _split(m: int, slots: int) -> int:
    """An optimal y for C(m, s), m ≥ 2, s ≥ 1: the least y with 1 + ρ(y+1, s) ≥ ρ(m−y, s−1)."""
    lo, hi = 1, m - 1  # the predicate is monotone in y; y = m − 1 is always a candidate
    while lo < hi:
        mid = (lo + hi) // 2
        if 1 + _repetitions(mid + 1, slots) >= _repetitions(m - mid, slots - 1):
            hi = mid
        else:
            lo = mid + 1
    return lo


# -- what one step costs in memory -------------------------------------------------------------


@dataclass(frozen=True)
class StepBytes:
    """What a run allocates, by part, for one model, batch and input kind.

    Attributes:
        probes: (k, bytes) pairs, k ascending: the measured peak of two sweeps in a row over
            k steps each (forward cache, logits, dL/dz, backward temporaries, parameter
            gradients, and whatever the workspace pool keeps of them, the first block's
            results held while the second runs); a sweep of k′ ≤ k steps is bounded
            by the first probe at or above k′ (the peak grows with k).
        per_step: bytes per step beyond the last probe (the slope of the last two probes).
        validation: (a, b, c, K): checking the inputs and a mask, K steps at a time, peaks at
            a + b·min(T, K) + c·T bytes, before any sweep.
        held_per_step: bytes per step held for the whole call: the (T, B) mask as bools (see
            :class:`LossWeights`), 0 without a mask.
        state: one checkpoint, every layer's (B, S) state.
        params: one set of parameter-sized arrays (the gradient totals).
        linear_from: from this many steps on, every (k, B, ·) buffer is pooled and the peak
            is a line in k.
        single: as ``probes``, for one sweep alone (full storage); empty: ``probes``.
    """

    probes: tuple[tuple[int, int], ...]
    per_step: int
    validation: tuple[int, int, int, int]
    held_per_step: int
    state: int
    params: int
    linear_from: int = 1 << 62
    single: tuple[tuple[int, int], ...] = ()
    weights_per_step: int = 0
    """Bytes per step of the (T, B) loss weights one whole-sequence sweep (full storage)
    is given; blocks get theirs a block at a time."""

    @classmethod
    def linear(cls, per_step: int, fixed: int, state: int) -> StepBytes:
        """A sweep of k steps takes fixed + k·per_step bytes, nothing else (for reasoning and
        tests; :func:`measure_step_bytes` measures a model)."""
        return cls(((1, fixed + per_step),), per_step, (0, 0, 0, 1), 0, state, 0, 1)

    def sweep_bytes(self, n_steps: int, single: bool = False) -> int:
        """A bound on the peak of a block of ``n_steps`` after another (``single``: of one
        sweep alone, as full storage runs): the first probe at or above it, or, from
        :attr:`linear_from` steps on (where the peak is a line in k), the line through the
        probes on either side of it; past the last probe, its slope."""
        table = self.single if single and self.single else self.probes
        below: tuple[int, int] | None = None
        for k, peak in table:
            if n_steps <= k:
                if below is None or n_steps == k:
                    return peak
                k_a, peak_a = below
                return peak_a + -(-(peak - peak_a) * (n_steps - k_a) // (k - k_a))
            if k >= self.linear_from:
                below = (k, peak)
        last_k, last_peak = table[-1]
        return last_peak + (n_steps - last_k) * self.per_step

    def peak(self, n_steps: int, block: int, slots: int) -> int:
        """Predicted peak of blocks of ``block`` steps with ``slots`` checkpoints.

        Held through the sweeps: the loss weights, s checkpoints, the start state, the
        running state and the carried dL/ds, the gradient totals, one block's sweep, and the
        short last block's buffers that the pool keeps (module doc).
        """
        base, in_chunk, per_step, chunk = self.validation
        check = base + in_chunk * min(n_steps, chunk) + per_step * n_steps
        held = n_steps * self.held_per_step
        m = -(-n_steps // block)
        if m == 1:
            weights = n_steps * self.weights_per_step
            return max(check, held + weights + self.sweep_bytes(n_steps, single=True))
        last = n_steps - (m - 1) * block
        working = self.sweep_bytes(block) + (self.sweep_bytes(last) if last < block else 0)
        slack = working // 50 + _SLACK  # the carries, views, Python objects of the bookkeeping
        return max(check, held + (slots + 3) * self.state + self.params + working + slack)

    def full_bytes(self, n_steps: int) -> int:
        """Predicted peak of full storage over ``n_steps`` (one sweep, every step kept)."""
        return self.peak(n_steps, n_steps, 0)


_MEASURED: dict[tuple[Any, ...], dict[str, Any]] = {}
_LONGEST = 1 << 12
_SLACK = 16 << 10  # probes stop at this length, or sooner once the pool holds every buffer


def _traced_peak(fn: Any) -> tuple[int, int]:
    """Bytes allocated at the peak of ``fn()`` beyond what was allocated before (tracemalloc),
    and what was allocated before (for marks that ``fn`` reads itself).

    The workspace pool is emptied first, so what the sweep needs is allocated and seen. If
    tracemalloc is already tracing, its peak is reset (an outer measurement loses its peak).
    """
    from .. import _workspace  # package plumbing: the pool of reused buffers

    _workspace.clear()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before, before
    finally:
        if not tracing:
            tracemalloc.stop()


def _probe_arrays(model: RNN, n_steps: int, batch: int, ids: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    if ids:
        x = rng.integers(0, model.input_size, (n_steps, batch))
    else:
        x = rng.standard_normal((n_steps, batch, model.input_size)).astype(model.dtype)
    if model.output == "softmax":
        y = rng.integers(0, model.output_size, (n_steps, batch))
    else:  # sigmoid targets in [0, 1]; the identity head takes any
        y = rng.uniform(size=(n_steps, batch, model.output_size)).astype(model.dtype)
    return x, y


def measure_step_bytes(
    model: RNN,
    batch: int,
    ids: bool,
    n_steps: int | None = None,
    budget: int | None = None,
    masked: bool = False,
) -> StepBytes:
    """What a run of this model allocates, measured with tracemalloc and cached.

    Two sweeps in a row (the second from the first's final state and carry) of 1, 2, 4, …
    steps are measured until every (k, B, ·) buffer is past the
    workspace pool's threshold, one doubling more (a pooled buffer stays allocated when freed,
    a smaller one does not, so the peak is one line in k only past that point), but never a
    sweep longer than ``n_steps`` or one whose peak (twice the last) would pass ``budget``:
    measuring must fit the budget too. Past the last probe the bound goes on along the last
    two probes' slope, with a quarter more while buffers could still join the pool. Checking
    the inputs is measured on two lengths. Cached per (structure, batch, input kind).
    ``masked``: a mask comes with the sequence (held as bools, one byte per (t, b)).
    """
    from .. import _workspace  # package plumbing: the pool's size threshold

    key = (tuple(sorted(model.structure().items())), batch, bool(ids))
    params = model.validated_params()
    states = model.split_state(None, batch)
    ds_last: list[np.ndarray | None] = [None] * len(states)

    def sweep_peak(k: int) -> tuple[int, int]:
        """Peaks of one sweep of k steps, and of it and a second one after it."""
        x, y = _probe_arrays(model, k, batch, ids)
        y_checked = model.head.check_targets(y, (k, batch), model.output_size, model.dtype)
        weight = model.loss_weights(None, (k, batch))
        peaks: list[int] = []

        def two_blocks() -> None:
            # a block after a block, as a schedule runs them: the first one's gradients and
            # carry held, its pooled buffers free again (a second sweep needs a little more)
            first = model.sweep(params, x, y_checked, weight, states, ds_last)
            peaks.append(tracemalloc.get_traced_memory()[1])
            model.sweep(params, x, y_checked, weight, first[3], first[2])

        both, start = _traced_peak(two_blocks)
        return peaks[0] - start, both

    def check_peak(k: int) -> int:
        x, y = _probe_arrays(model, k, batch, ids)
        mask = np.ones((k, batch), dtype=bool)
        return _traced_peak(lambda: validated(model, x, y, mask))[0]

    if key not in _MEASURED:
        # warm-up: compiled kernels and lazily built tables load here, not inside a probe;
        # with more than 64 rows too (the compiled column sums start there)
        for k in sorted({1, min(-(-65 // batch), n_steps or _LONGEST)}):
            sweep_peak(k)
        chunk = _chunk_steps(model, batch)
        # within one chunk the temporaries grow with the steps; past it only what is held
        short = max(1, chunk // 4)
        inside = [(k, check_peak(k)) for k in (short, 2 * short)]
        past = [(k, check_peak(k)) for k in (2 * chunk, 4 * chunk)]
        _MEASURED[key] = {"probes": {}, "check": (inside, past, chunk)}
    found: dict[str, Any] = _MEASURED[key]
    probes: dict[int, tuple[int, int]] = found["probes"]
    narrowest = batch * min(model.hidden_size, model.output_size)  # elements per step
    pooled = -(-_workspace.MIN_ELEMENTS // narrowest)  # from here every buffer is pooled
    longest = min(2 * pooled, _LONGEST, n_steps if n_steps is not None else _LONGEST)
    k = 1
    while True:
        if k not in probes:
            probes[k] = sweep_peak(k)
        if k >= longest or (budget is not None and 2 * probes[k][1] > budget):
            break
        k = min(2 * k, longest)
    _workspace.clear()  # the probes' buffers: no run of this shape keeps them
    ks = sorted(probes)
    bounds = []
    for which in (1, 0):  # two blocks, one sweep
        bound = [probes[k][which] for k in ks]
        for i in range(len(bound) - 2, -1, -1):  # keep the bound monotone in k
            bound[i] = min(bound[i], bound[i + 1])
        bounds.append(tuple(zip(ks, bound, strict=True)))
    if len(ks) >= 2:
        slope = -(-(probes[ks[-1]][1] - probes[ks[-2]][1]) // (ks[-1] - ks[-2]))
    else:
        slope = probes[ks[-1]][1]
    if ks[-1] < 2 * pooled:
        slope += slope // 4  # buffers may still join the pool past the last probe
    inside, past, chunk = found["check"]
    held = max(0, -(-(past[1][1] - past[0][1]) // (past[1][0] - past[0][0])))
    in_chunk = max(held, -(-(inside[1][1] - inside[0][1]) // (inside[1][0] - inside[0][0])))
    base = max(
        0,
        inside[0][1] - inside[0][0] * in_chunk,
        past[0][1] - past[0][0] * held - chunk * (in_chunk - held),
    )
    return StepBytes(
        probes=bounds[0],
        per_step=max(1, slope),
        validation=(base, in_chunk - held, held, chunk),
        held_per_step=batch if masked else 0,
        # the arrays, their headers, their list and its place on the schedule's stack
        state=sum(s.nbytes for s in states) + 256 * len(states) + 256,
        params=model.n_parameters() * model.dtype.itemsize + 128 * len(model.param_shapes()),
        linear_from=pooled,
        single=bounds[1],
        weights_per_step=batch * model.dtype.itemsize,
    )


# -- the schedule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Costs:
    """The planner's time model, in any one unit (:func:`plan` uses FLOPs).

    A schedule with blocks of ℓ steps, m blocks and A block advances (A = C(m, s), each a
    call of its own) takes

        T·sweep_step + m·sweep_call + A·(ℓ·forward_step + forward_call)

    and full storage T·sweep_step + sweep_call. The call costs are what a call costs beyond
    its steps (thread hand-offs, the hoisted products' fixed part, Python): they make very
    short blocks slower than their recomputed steps say.

    Attributes:
        sweep_step: one step of a sweep (forward with its cache, head, loss, backward).
        forward_step: one forward step without a cache (an advance).
        sweep_call, forward_call: the fixed cost of one sweep call, one advance call.
    """

    sweep_step: float
    forward_step: float
    sweep_call: float = 0.0
    forward_call: float = 0.0

    def time(self, n_steps: int, block: int, blocks: int, advances: int) -> float:
        """Predicted time of a schedule; ``advances`` = C(m, s) block forwards."""
        if blocks == 1:
            return n_steps * self.sweep_step + self.sweep_call
        sweeps = n_steps * self.sweep_step + blocks * self.sweep_call
        return sweeps + advances * (block * self.forward_step + self.forward_call)


@dataclass(frozen=True)
class Schedule:
    """How to run BPTT over ``n_steps`` within ``budget`` bytes; look before running.

    Attributes:
        n_steps: T.
        block: ℓ, the steps per block (the last block has T − (m−1)·ℓ); ℓ = T is full storage.
        blocks: m = ⌈T/ℓ⌉.
        slots: s, checkpoints held at once besides the initial state.
        recomputed_steps: forward steps run again, beyond the one forward per step of full
            storage: C(m, s)·ℓ.
        peak_bytes: predicted peak working memory.
        full_bytes: predicted peak of full storage.
        budget: the budget asked for (bytes), or None.
        forward_fraction: a forward step's share of one full-storage step's time (a FLOP
            model), for :attr:`time_ratio` when ``costs`` is None.
        costs: the time model the planner chose by (:class:`Costs`), or None (recomputed
            steps alone).
    """

    n_steps: int
    block: int
    blocks: int
    slots: int
    recomputed_steps: int
    peak_bytes: int
    full_bytes: int
    budget: int | None
    forward_fraction: float
    costs: Costs | None = None

    @property
    def full_storage(self) -> bool:
        return self.blocks == 1

    @property
    def time_ratio(self) -> float:
        """Predicted time relative to full storage: :meth:`Costs.time` over full storage's,
        or without ``costs`` 1 + recomputed/T · forward fraction."""
        if self.costs is None:
            return 1.0 + self.recomputed_steps / self.n_steps * self.forward_fraction
        advances = self.recomputed_steps // self.block
        mine = self.costs.time(self.n_steps, self.block, self.blocks, advances)
        return mine / self.costs.time(self.n_steps, self.n_steps, 1, 0)

    @property
    def memory_ratio(self) -> float:
        """Predicted peak relative to full storage's."""
        return self.peak_bytes / self.full_bytes

    @property
    def max_forwards(self) -> int:
        """The most times one step is run forward (1 for full storage)."""
        return 1 + _repetitions(self.blocks, min(self.slots, self.blocks))

    def summary(self) -> str:
        """A few lines for a person: the plan, memory and predicted time."""
        if self.full_storage:
            how = "full storage: every step kept, nothing recomputed"
        else:
            last = self.n_steps - (self.blocks - 1) * self.block
            tail = "" if last == self.block else f" (the last one {last})"
            how = (
                f"{self.blocks} blocks of {self.block} steps{tail}, {self.slots} checkpoint "
                f"slots; {self.recomputed_steps} forward steps recomputed "
                f"({self.recomputed_steps / self.n_steps:.2f} per step, each step run forward "
                f"at most {self.max_forwards} times)"
            )
        budget = "none" if self.budget is None else _show(self.budget)
        return (
            f"schedule for T={self.n_steps}: {how}\n"
            f"  predicted peak {_show(self.peak_bytes)} of budget {budget} "
            f"({self.memory_ratio:.1%} of full storage's {_show(self.full_bytes)})\n"
            f"  predicted time {self.time_ratio:.2f}x full storage's"
        )

    def __str__(self) -> str:
        return self.summary()


def _show(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def plan_for(
    n_steps: int,
    sizes: StepBytes,
    budget: int | None,
    forward_fraction: float = 1 / 3,
    costs: Costs | None = None,
) -> Schedule:
    """The fastest schedule whose predicted peak fits ``budget``.

    Scans every block length ℓ = 1..T with the most slots that fit (more than m − 2 are never
    used; a slot more never costs time); full storage when it fits. Without ``costs`` the
    fastest is the one with the fewest recomputed steps; with them, the least
    :meth:`Costs.time`, which also counts each call's fixed cost. Ties go to longer blocks
    (fewer, larger products).

    Raises:
        ValueError: no schedule fits; the message names the smallest budget that does.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    full = sizes.full_bytes(n_steps)
    if budget is None or full <= budget:
        return Schedule(n_steps, n_steps, 1, 0, 0, full, full, budget, forward_fraction, costs)
    best: tuple[float, int, int, int] | None = None  # (time, −ℓ, s, recomputed)
    for block in range(1, n_steps):
        m = -(-n_steps // block)
        room = budget - sizes.peak(n_steps, block, 0)
        if room < 0:
            continue
        slots = min(room // sizes.state, max(m - 2, 0))
        advances = recompute_count(m, slots)
        cost = advances * block if costs is None else costs.time(n_steps, block, m, advances)
        candidate = (cost, -block, slots, advances * block)
        if best is None or candidate < best:
            best = candidate
    if best is None:
        smallest = min(sizes.peak(n_steps, 1, 0), full)
        raise ValueError(
            f"memory_budget={budget} bytes ({_show(budget)}) fits no schedule for T={n_steps}: "
            f"the smallest budget that works for this shape is {smallest} bytes "
            f"({_show(smallest)}: one step at a time, no checkpoint slots); full storage "
            f"needs {full} bytes ({_show(full)})"
        )
    _, neg_block, slots, recomputed = best
    block = -neg_block
    m = -(-n_steps // block)
    peak = sizes.peak(n_steps, block, slots)
    return Schedule(
        n_steps, block, m, slots, recomputed, peak, full, budget, forward_fraction, costs
    )


def smallest_budget(
    model: RNN, n_steps: int, batch: int, ids: bool = True, masked: bool = False
) -> int:
    """The smallest ``memory_budget`` (bytes) that :func:`plan` accepts for this shape: one
    step per block and no checkpoint slot (or full storage, if that is smaller)."""
    sizes = measure_step_bytes(model, batch, ids, n_steps, masked=masked)
    return min(sizes.peak(n_steps, 1, 0), sizes.full_bytes(n_steps))


SWEEP_CALL_FLOPS = 8e7
"""A sweep call's cost beyond its steps, in FLOPs at the loops' rate, for a large step.
Measured at issue 23's shape (Elman, B = 16, H = 256, blocks of 10–100 steps) on a 2-core AMD
EPYC: ~0.55 ms per call (thread hand-offs of the loops and the hoisted products, the
products' fixed part, Python) at ~150 GFLOP/s, about ten of that shape's sweep steps. A model
for choosing block lengths, not a measurement of the machine that runs: it moves the choice
between neighbouring block lengths, never the gradients beyond their grouping by block."""
FORWARD_CALL_FLOPS = 3e7
"""An advance call's cost beyond its steps (~0.19 ms at ~170 GFLOP/s, measured as above)."""
CALL_STEPS = 10
"""A call costs at most this many of its own steps: a small model's steps are far from the
loops' FLOP rate (Python and per-step work dominate), and so is its per-call cost; measured,
a 2-layer GRU of H = 32, B = 4 ran 60 blocks of 10 steps in 2.5× full storage's time."""


def _step_flops(model: RNN, ids: bool, batch: int) -> tuple[float, float]:
    """FLOPs of one forward step (f) and of the head (h), for B rows.

    f: the cell's products per step (gates·H·(I + H), the input product skipped for ids);
    h: the head's (O·D·H); a backward costs about twice its forward.
    """
    H, D, L = model.hidden_size, model.num_directions, model.num_layers
    gates = model.layers[0].cell.param_shapes()
    width = max(shape[0] for shape in gates.values())  # gates·H rows of W
    first_in = 0 if ids else model.input_size
    f = width * (first_in + H) + (L - 1) * width * (D * H + H)
    h = model.output_size * D * H
    return 2.0 * batch * f, 2.0 * batch * h


def _forward_fraction(model: RNN, ids: bool) -> float:
    """A forward step's share of a full-storage step's FLOPs: f / (3f + 3h)."""
    f, h = _step_flops(model, ids, 1)
    return f / (3 * f + 3 * h)


def costs_for(model: RNN, batch: int, ids: bool = True) -> Costs:
    """The planner's time model for this model and batch (:class:`Costs`, in FLOPs): a
    sweep step 3f + 3h, an advance step f, and the calls' fixed costs
    :data:`SWEEP_CALL_FLOPS` and :data:`FORWARD_CALL_FLOPS`, each at most
    :data:`CALL_STEPS` of the call's own steps."""
    f, h = _step_flops(model, ids, batch)
    sweep_step = 3 * f + 3 * h
    sweep_call = min(SWEEP_CALL_FLOPS, CALL_STEPS * sweep_step)
    return Costs(sweep_step, f, sweep_call, min(FORWARD_CALL_FLOPS, CALL_STEPS * f))


def plan(
    model: RNN,
    n_steps: int,
    batch: int,
    memory_budget: int | str | None,
    ids: bool = True,
    masked: bool = False,
) -> Schedule:
    """The schedule :func:`forward_backward` runs for this model, T, B and budget.

    Args:
        model: the network (its cell, depth, sizes and dtype set the bytes per step).
        n_steps: T; batch: B.
        memory_budget: bytes (an int, or a string such as ``"200MB"``); None for full storage.
        ids: the inputs are integer token ids (T, B) rather than dense (T, B, I).
        masked: a (T, B) mask comes with the sequence (held as bools: T·B bytes).

    The schedule is cached per (model structure, T, B, budget, input kind, mask): a training
    run plans once, and every later call with the same shape runs the same schedule (the
    same grouping of the sums by block, so the same bits).

    Raises:
        ValueError: a bidirectional model, a bad budget, or a budget no schedule fits.
    """
    if model.bidirectional:
        raise ValueError(
            "memory_budget= recomputes blocks from left to right, but a bidirectional layer's "
            "reverse direction needs them from right to left: use full storage "
            "(memory_budget=None) for bidirectional models"
        )
    budget = None if memory_budget is None else parse_bytes(memory_budget, "memory_budget")
    key = (tuple(sorted(model.structure().items())), n_steps, batch, budget, bool(ids), masked)
    if key not in _PLANNED:
        sizes = measure_step_bytes(model, batch, ids, n_steps, budget, masked)
        costs = costs_for(model, batch, ids)
        _PLANNED[key] = plan_for(n_steps, sizes, budget, _forward_fraction(model, ids), costs)
    return _PLANNED[key]


_PLANNED: dict[tuple[Any, ...], Schedule] = {}  # plan()'s schedules (a refusal is not kept)


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(value: object, name: str = "memory_budget") -> int:
    """Bytes from an int or a string: ``"200MB"`` (10⁶), ``"1.5GiB"`` (2³⁰), ``"4096"``.

    Raises:
        ValueError: not a positive amount with a known unit (B, kB, MB, GB, TB, KiB, MiB,
            GiB, TiB).
        TypeError: neither an int nor a string.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number of bytes or a string like '200MB', got {value!r}")
    if isinstance(value, (int, np.integer)):
        amount = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{name} must be bytes with an optional unit (B, kB, MB, GB, TB, KiB, MiB, "
                f"GiB, TiB), such as '200MB', got {value!r}"
            )
        amount = int(float(match.group(1)) * _UNITS[unit])
    else:
        raise TypeError(
            f"{name} must be a number of bytes or a string like '200MB', got "
            f"{type(value).__name__} {value!r}"
        )
    if amount < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
    return amount


# -- validation in chunks of steps -----------------------------------------------------------


def _chunk_steps(model: RNN, batch: int) -> int:
    """Steps per validation chunk: about 64 Ki elements of x or y at a time."""
    return max(1, (1 << 16) // (batch * max(model.input_size, model.output_size)))


def _in_chunks(check: Any, array: np.ndarray, chunk: int) -> np.ndarray:
    """``check`` applied to each run of ``chunk`` steps of ``array``; the array itself when
    every checked chunk is a view of it, else the checked chunks put together (a conversion)."""
    T = array.shape[0]
    out: np.ndarray | None = None
    for a in range(0, T, chunk):
        piece = array[a : a + chunk]
        got = check(piece, a)
        if out is None and not (got.base is array or got is piece or got.base is piece.base):
            out = np.empty((T, *got.shape[1:]), dtype=got.dtype)
            out[:a] = array[:a]  # earlier chunks passed unchanged: the same values
        if out is not None:
            out[a : a + chunk] = got
    return array if out is None else out


class LossWeights:
    """The loss weights w_tb = mask_tb / B of a whole sequence, made a block at a time.

    ``weights[a:b]`` is the (b − a, B) array :meth:`bptt.model.RNN.loss_weights` gives for
    those steps. Held for the whole run is only the mask as bools (T·B bytes), or nothing
    when there is no mask: a (T, B) array of weights in the model's dtype would cost 4–8 bytes
    per (t, b), 1.3 MB at T = 20,000, B = 16 (a fifth of a 1% budget there).
    """

    def __init__(self, model: RNN, shape_tb: tuple[int, int], mask: np.ndarray | None) -> None:
        self.model = model
        self.shape = shape_tb
        self.mask = mask  # (T, B) bool, or None for all ones
        self._ones: dict[int, np.ndarray] = {}  # block length → its (k, B) weights, no mask

    def __getitem__(self, steps: slice) -> np.ndarray:
        start, stop, stride = steps.indices(self.shape[0])
        if stride != 1:
            raise ValueError(f"LossWeights takes a slice of consecutive steps, got {steps}")
        k, batch = max(0, stop - start), self.shape[1]
        if self.mask is not None:
            return self.model.loss_weights(self.mask[start:stop], (k, batch))
        if k not in self._ones:  # one array per block length (at most two in a schedule)
            self._ones[k] = self.model.loss_weights(None, (k, batch))
        return self._ones[k]


def validated(
    model: RNN, x: object, y: object, mask: object
) -> tuple[np.ndarray, np.ndarray, LossWeights]:
    """x, y and the loss weights w = mask / B (:class:`LossWeights`, made a block at a time),
    checked as the model checks them, but a chunk of steps at a time: whole-sequence checks
    allocate (T, B, ·) temporaries (an ``isfinite`` mask of x, say) that a small budget
    cannot hold.

    Raises:
        ValueError, TypeError: as :meth:`bptt.model.RNN.forward_backward` raises them.
    """
    from ..validation import check_inputs

    x_arr = np.asarray(x)
    if x_arr.ndim < 2 or x_arr.shape[0] == 0:
        check_inputs(x_arr, model.input_size, model.dtype)  # raises with the model's message
    chunk = _chunk_steps(model, x_arr.shape[1])
    x_arr = _in_chunks(lambda p, a: check_inputs(p, model.input_size, model.dtype), x_arr, chunk)
    T, B = x_arr.shape[:2]
    y_arr = np.asarray(y)
    if y_arr.shape[:2] != (T, B):
        model.head.check_targets(y_arr, (T, B), model.output_size, model.dtype)  # raises
    y_arr = _in_chunks(
        lambda p, a: model.head.check_targets(p, (p.shape[0], B), model.output_size, model.dtype),
        y_arr,
        chunk,
    )
    if mask is None:
        return x_arr, y_arr, LossWeights(model, (T, B), None)
    mask_arr = np.asarray(mask)
    if mask_arr.shape != (T, B):
        model.loss_weights(mask_arr, (T, B))  # raises with the model's message
    kept = np.empty((T, B), dtype=bool)  # (T, B): one byte a step and sequence
    for a in range(0, T, chunk):
        piece = mask_arr[a : a + chunk]
        kept[a : a + chunk] = model.loss_weights(piece, piece.shape) != 0  # checks the piece
    return x_arr, y_arr, LossWeights(model, (T, B), kept)


# -- running a schedule ------------------------------------------------------------------------


def _copy(states: Sequence[np.ndarray]) -> list[Any]:
    """Own copies: a final state may be a view of a sweep's (T+1, B, H) buffer."""
    return [np.array(s) for s in states]


def run_schedule(
    model: RNN,
    schedule: Schedule,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | LossWeights,
    states: Sequence[np.ndarray],
    ds_last: Sequence[np.ndarray | None],
) -> tuple[float, dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """L and dL/dθ by the schedule's binomial recompute over validated arrays.

    Args:
        model: the network; its :meth:`~bptt.model.RNN.sweep` reverses a block and
            :meth:`~bptt.model.RNN.forward_layers` (``keep=False``) advances.
        schedule: from :func:`plan` for this T.
        params, x, y, weight, states, ds_last: as :meth:`~bptt.model.RNN.sweep` takes them
            (x (T, B, I) or (T, B) ids; weight (T, B), or :class:`LossWeights` that make it
            a block at a time; states and ds_last per layer (B, S)).

    Returns:
        ``(loss, grads, ds0, finals)`` exactly as full BPTT gives them.
    """
    T = x.shape[0]
    if schedule.n_steps != T:
        raise ValueError(f"the schedule is for T={schedule.n_steps} steps, x has T={T}")
    if schedule.full_storage:
        return model.sweep(params, x, y, weight[0:T], states, ds_last)
    ell, m = schedule.block, schedule.blocks

    def steps(block: int) -> slice:
        return slice(block * ell, min((block + 1) * ell, T))

    def advance(state: list[np.ndarray], block: int, count: int) -> list[np.ndarray]:
        """The state at the start of block + count, one block's forward at a time."""
        for k in range(block, block + count):
            state = _copy(model.forward_layers(params, x[steps(k)], state, keep=False).finals)
        return state

    loss = 0.0
    totals: dict[str, np.ndarray] | None = None
    carry: list[np.ndarray | None] = list(ds_last)  # dL/ds at the end of the next block
    finals: list[np.ndarray] = []

    def reverse(block: int, state: list[np.ndarray]) -> None:
        """Sweep one block from its start state, with the carry from the block after it."""
        nonlocal loss, totals, carry, finals
        sl = steps(block)
        block_loss, grads, ds0, block_finals = model.sweep(
            params, x[sl], y[sl], weight[sl], state, carry
        )
        if block == m - 1:
            finals = _copy(block_finals)
        loss += block_loss
        carry = list(_copy(ds0))
        if totals is None:
            totals = {name: np.array(g) for name, g in grads.items()}
        else:
            for name, g in grads.items():
                totals[name] += g

    # Explicit stack of left parts still to reverse: (first block, blocks, slots, start state).
    pending: list[tuple[int, int, int, list[np.ndarray]]] = [(0, m, schedule.slots, _copy(states))]
    with _workspace.reuse_copies(params.values()):  # Wᵀ once, not once per block
        _reverse_all(pending, reverse, advance)
    assert totals is not None
    return loss, totals, list(carry), finals  # type: ignore[arg-type]


def _reverse_all(
    pending: list[tuple[int, int, int, list[np.ndarray]]],
    reverse: Callable[[int, list[np.ndarray]], None],
    advance: Callable[[list[np.ndarray], int, int], list[np.ndarray]],
) -> None:
    """Reverse every block of ``pending``'s ranges by the binomial schedule: advance to the
    split, keep its state, reverse the right part with a slot fewer, then the left part."""
    while pending:
        block, count, slots, state = pending.pop()
        while count > 1:
            if slots >= count - 2:  # every block start fits: one level, each advanced once
                starts = [state]
                for k in range(block, block + count - 1):
                    starts.append(advance(starts[-1], k, 1))
                for k in range(block + count - 1, block - 1, -1):
                    reverse(k, starts.pop())
                count = 0
                break
            if slots == 0:  # no slot: from the start again for each block, right to left
                reverse(block + count - 1, advance(state, block, count - 1))
                count -= 1
                continue
            y_split = _split(count, slots)
            pending.append((block, y_split, slots, state))  # the left part, after the right
            state = advance(state, block, y_split)
            block, count, slots = block + y_split, count - y_split, slots - 1
        if count == 1:
            reverse(block, state)


def forward_backward(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    *,
    dh_last: object = None,
    memory_budget: int | str,
) -> BPTTResult:
    """Exact BPTT whose peak working memory fits ``memory_budget`` bytes, recomputing least.

    The arguments and the result are those of :meth:`bptt.model.RNN.forward_backward`;
    ``memory_budget`` is bytes (an int) or a string such as ``"200MB"``. The gradients are
    full BPTT's (the same sums, grouped by block).

    Raises:
        ValueError: a bidirectional model, or a budget no schedule fits (the message names
            the smallest that does), or bad inputs as the model raises them.
    """
    from ..params import Gradients

    params = model.validated_params()
    x_arr, y_arr, weight = validated(model, x, y, mask)
    T, B = x_arr.shape[:2]
    states = model.split_state(h0, B)
    schedule = plan(model, T, B, memory_budget, ids=x_arr.ndim == 2, masked=mask is not None)
    ds_last: list[np.ndarray | None] = (
        [None] * len(states) if dh_last is None else list(model.split_state(dh_last, B, "dh_last"))
    )
    loss, grads, ds0, finals = run_schedule(
        model, schedule, params, x_arr, y_arr, weight, states, ds_last
    )
    model.mask_gradients(grads)
    return BPTTResult(
        loss=loss,
        grads=Gradients.from_backward(grads, h0=model.join_state(ds0)),
        h_last=model.join_state(finals),
    )


# model.forward_backward(memory_budget=) runs this (the model imports no algorithm)
register_memory_budget_runner(forward_backward)
