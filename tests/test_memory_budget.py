"""BPTT under a memory budget gives full BPTT's numbers, recomputes the optimum, fits the budget.

References: full storage (itself tested against PyTorch autograd elsewhere) for the gradients;
an exhaustive search over every recompute strategy, and the plain recurrence, for the
planner's count; tracemalloc for the memory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt import _workspace
from bptt.algorithms import budget
from bptt.algorithms.budget import (
    Costs,
    LossWeights,
    Schedule,
    StepBytes,
    parse_bytes,
    plan,
    plan_for,
    recompute_count,
    run_schedule,
    smallest_budget,
)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# -- the count: an exhaustive search and the recurrence -----------------------------------------


@cache
def exhaustive(remaining: int, stored: frozenset[int], slots: int) -> int:
    """Fewest block forwards (beyond the sweeps) to reverse blocks 0..remaining−1, any strategy.

    The state at 0 is always held; ``stored`` are the other held states (at most ``slots``).
    A move: from any held state c ≤ k = remaining−1, advance to k (k − c forwards), keeping
    any subset of the old and the passed states within the slots, then sweep block k from the
    running state. States at or past k are of no further use and are dropped.
    """
    if remaining == 0:
        return 0
    k = remaining - 1
    best = None
    for c in [0, *sorted(p for p in stored if p <= k)]:
        passed = range(c + 1, k)  # states the advance runs through, before k
        candidates = sorted((stored | set(passed)) - {0})
        candidates = [p for p in candidates if p < k]
        for size in range(min(slots, len(candidates)) + 1):
            for keep in combinations(candidates, size):
                # a state passed by the advance must lie after c; an old one must be held
                cost = (k - c) + exhaustive(k, frozenset(keep), slots)
                if best is None or cost < best:
                    best = cost
    assert best is not None
    return best


@cache
def recurrence(m: int, s: int) -> int:
    """C(m, s) = min_y y + C(m−y, s−1) + C(y, s), C(1, s) = 0, C(m, 0) = m(m−1)/2."""
    if m == 1:
        return 0
    if s == 0:
        return m * (m - 1) // 2
    return min(y + recurrence(m - y, s - 1) + recurrence(y, s) for y in range(1, m))


@pytest.mark.parametrize("slots", [0, 1, 2, 3])
def test_count_equals_exhaustive_search(slots: int) -> None:
    for m in range(1, 8):
        assert recompute_count(m, slots) == exhaustive(m, frozenset(), slots), (m, slots)


def test_count_equals_recurrence() -> None:
    for s in range(0, 7):
        for m in range(1, 120):
            assert recompute_count(m, s) == recurrence(m, s), (m, s)


def test_count_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="m >= 1"):
        recompute_count(0, 2)


def _counting(model: bptt.RNN) -> list[int]:
    """Wrap the model's forward so that every step advanced without a cache is counted."""
    advanced: list[int] = []
    forward = model.forward_layers

    def counted(params, x, states, keep=True):  # type: ignore[no-untyped-def]
        if not keep:
            advanced.append(x.shape[0])
        return forward(params, x, states, keep)

    model.forward_layers = counted  # type: ignore[method-assign]
    return advanced


@pytest.mark.parametrize(
    ("n_steps", "block", "slots"),
    [(9, 1, 0), (13, 1, 2), (30, 1, 3), (29, 4, 1), (40, 3, 2), (17, 2, 9)],
)
def test_executor_recomputes_exactly_the_optimum(n_steps: int, block: int, slots: int) -> None:
    """The steps the executor really advances equal the recurrence's optimum, and its
    gradients are full BPTT's."""
    rng = np.random.default_rng(3)
    model = bptt.RNN(3, 4, 3, cell="gru", seed=2)
    x = rng.integers(0, 3, (n_steps, 2))
    y = rng.integers(0, 3, (n_steps, 2))
    full = model.forward_backward(x, y)
    m = -(-n_steps // block)
    slots_used = min(slots, max(m - 2, 0))
    optimum = recurrence(m, slots_used) * block
    schedule = Schedule(n_steps, block, m, slots_used, optimum, 0, 0, None, 1 / 3)
    advanced = _counting(model)
    params = model.validated_params()
    weight = model.loss_weights(None, (n_steps, 2))
    y_arr = model.head.check_targets(y, (n_steps, 2), 3, model.dtype)
    loss, grads, ds0, finals = run_schedule(
        model, schedule, params, x, y_arr, weight, model.split_state(None, 2), [None]
    )
    assert sum(advanced) == optimum
    assert abs(loss - full.loss) <= 1e-12 * abs(full.loss)
    for name in full.grads:
        assert rel(grads[name], getattr(full.grads, name)) < 1e-12
    np.testing.assert_array_equal(model.join_state(finals), full.h_last)
    assert rel(model.join_state(ds0), full.grads.h0) < 1e-12


def test_planner_is_the_optimum_over_blocks_and_slots() -> None:
    """For each budget, the planner's recomputation equals the best over every block length
    and slot count whose predicted peak fits, each counted by exhaustive search."""
    sizes = StepBytes.linear(per_step=100, fixed=50, state=30)
    for n_steps in (5, 7, 8):
        full = sizes.full_bytes(n_steps)
        smallest = sizes.peak(n_steps, 1, 0)
        for budget_bytes in range(smallest, full + 40, 7):
            best = None
            for block in range(1, n_steps + 1):
                m = -(-n_steps // block)
                for slots in range(0, m):
                    if sizes.peak(n_steps, block, slots) <= budget_bytes:
                        cost = exhaustive(m, frozenset(), slots) * block
                        best = cost if best is None else min(best, cost)
            got = plan_for(n_steps, sizes, budget_bytes)
            assert got.recomputed_steps == best, (n_steps, budget_bytes)
            assert got.peak_bytes <= budget_bytes
            assert got.recomputed_steps == recurrence(got.blocks, got.slots) * got.block


# -- exact gradients for every cell and depth ---------------------------------------------------


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("ids", [True, False])
def test_gradients_equal_full_bptt(cell: str, layers: int, ids: bool) -> None:
    rng = np.random.default_rng(11)
    T, B, I, H, O = 60, 2, 3, 8, 4
    model = bptt.RNN(I, H, O, cell=cell, num_layers=layers, output="identity", seed=5)
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    y = rng.standard_normal((T, B, O))
    shape = (B, H) if layers == 1 else (layers, B, H)

    def state() -> object:
        parts = [0.5 * rng.standard_normal(shape) for _ in range(model.state_parts)]
        return tuple(parts) if model.state_parts > 1 else parts[0]

    args = {
        "h0": state(),
        "mask": (rng.uniform(size=(T, B)) < 0.8).astype(np.float64),
        "dh_last": state(),
    }
    full = model.forward_backward(x, y, **args)  # type: ignore[arg-type]
    smallest = smallest_budget(model, T, B, ids, masked=True)  # the mask is held as bools
    full_bytes = budget.measure_step_bytes(model, B, ids, T, masked=True).full_bytes(T)
    budgets = sorted(
        {smallest, smallest + 2 * 10**3, smallest + (full_bytes - smallest) // 3, full_bytes}
    )
    seen_blocks = set()
    for memory_budget in budgets:
        schedule = plan(model, T, B, memory_budget, ids=ids)
        seen_blocks.add(schedule.blocks)
        got = model.forward_backward(x, y, **args, memory_budget=memory_budget)  # type: ignore[arg-type]
        assert abs(got.loss - full.loss) <= 1e-12 * abs(full.loss)
        for name in full.grads:
            g, f = getattr(got.grads, name), getattr(full.grads, name)
            assert g.shape == f.shape and g.dtype == f.dtype == np.float64
            assert rel(g, f) < 1e-11, (memory_budget, name)
        for g, f in zip(np.atleast_1d(got.grads.h0), np.atleast_1d(full.grads.h0), strict=True):
            assert rel(np.asarray(g), np.asarray(f)) < 1e-11
        for g, f in zip(np.atleast_1d(got.h_last), np.atleast_1d(full.h_last), strict=True):
            np.testing.assert_array_equal(g, f)
    assert max(seen_blocks) == T and 1 in seen_blocks  # step by step, and full storage


def test_float32_and_loss_and_grads() -> None:
    rng = np.random.default_rng(0)
    model = bptt.RNN(6, 8, 6, cell="lstm", seed=2, dtype=np.float32)
    x, y = rng.integers(0, 6, (40, 3)), rng.integers(0, 6, (40, 3))
    loss, grads = model.loss_and_grads(x, y)
    loss_b, grads_b = model.loss_and_grads(x, y, memory_budget=smallest_budget(model, 40, 3))
    assert abs(loss - loss_b) <= 1e-5 * abs(loss)
    for name in grads:
        assert getattr(grads_b, name).dtype == np.float32
        assert rel(getattr(grads_b, name), getattr(grads, name)) < 1e-4


# -- memory: what tracemalloc measures stays within the budget ---------------------------------


# The peak is measured in a fresh process: which compiled loops a process has already loaded
# (a training run before, in the same interpreter, loads the sharded ones) changes what a
# sweep allocates, and the plan measures the process it runs in, so both must be the same one.
_PEAK_CHECK = """
import gc, sys, tracemalloc
import numpy as np
import bptt
from bptt import _workspace
from bptt.algorithms import budget
from bptt.algorithms.budget import plan, smallest_budget

cell, layers, dtype = sys.argv[1], int(sys.argv[2]), np.dtype(sys.argv[3])
if sys.argv[4] == "trained":  # a training run first in this process: its loops, pool, choices
    rng = np.random.default_rng(2)
    trained = bptt.RNN(16, 64, 32, cell=cell, num_layers=layers, seed=1, dtype=dtype)
    X = rng.standard_normal((32, 60, 16)).astype(dtype)
    bptt.fit(trained, X, rng.integers(0, 32, (32, 60)), batch_first=True, steps=20, batch=8)


def traced_peak(fn):
    _workspace.clear()  # what the call uses is allocated under the trace, pooled or not
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


rng = np.random.default_rng(1)
T, B, I, H, O = 200, 8, 16, 64, 32
model = bptt.RNN(I, H, O, cell=cell, num_layers=layers, seed=0, dtype=dtype)
x = rng.standard_normal((T, B, I)).astype(dtype)
y = rng.integers(0, O, (T, B))
model.loss_and_grads(x[:50], y[:50], checkpoint=True)  # compile and warm the kernels
full_peak = traced_peak(lambda: model.loss_and_grads(x, y))
smallest = smallest_budget(model, T, B, ids=False)
state = budget.measure_step_bytes(model, B, False, T).state
# the smallest budget itself (no slot) recomputes T(T-1)/2 steps: it is run on T = 60 in
# test_gradients_equal_full_bptt; here twelve slots more
for memory_budget in (full_peak // 3, full_peak // 8, smallest + 12 * state):
    schedule = plan(model, T, B, memory_budget, ids=False)  # measures, before tracing
    assert schedule.peak_bytes <= memory_budget and not schedule.full_storage
    peak = traced_peak(lambda b=memory_budget: model.loss_and_grads(x, y, memory_budget=b))
    assert peak <= memory_budget, (memory_budget, peak, schedule)
assert smallest < full_peak // 6, (smallest, full_peak)  # far below full storage at T=200
print("ok")
"""


@pytest.mark.parametrize(
    ("cell", "layers", "dtype", "before"),
    [
        ("elman", 1, "float32", "fresh"),
        ("gru", 2, "float64", "fresh"),
        ("elman", 1, "float32", "trained"),
    ],
)
def test_measured_peak_within_budget(cell: str, layers: int, dtype: str, before: str) -> None:
    """The traced peak stays within the budget, in a fresh process and after a training run
    in the same process (once over its plan: 250 kB against 175 kB)."""
    src = Path(bptt.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_CHECK, cell, str(layers), dtype, before],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# -- refusals and plumbing -------------------------------------------------------------------


def test_refusal_names_the_smallest_budget() -> None:
    rng = np.random.default_rng(0)
    model = bptt.RNN(4, 6, 4, cell="lstm", num_layers=2, seed=0)
    x, y = rng.integers(0, 4, (30, 2)), rng.integers(0, 4, (30, 2))
    with pytest.raises(ValueError, match="memory_budget=1000 bytes") as err:
        model.loss_and_grads(x, y, memory_budget=1000)
    match = re.search(r"smallest budget that works for this shape is (\d+) bytes", str(err.value))
    assert match is not None
    smallest = int(match.group(1))
    assert smallest == smallest_budget(model, 30, 2)
    model.loss_and_grads(x, y, memory_budget=smallest)  # runs
    with pytest.raises(ValueError, match="smallest budget"):
        model.loss_and_grads(x, y, memory_budget=smallest - 1)


def test_refusals() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (10, 2)), rng.integers(0, 4, (10, 2))
    bi = bptt.RNN(4, 5, 4, bidirectional=True, seed=0)
    with pytest.raises(ValueError, match="bidirectional"):
        bi.loss_and_grads(x, y, memory_budget="1GB")
    model = bptt.RNN(4, 5, 4, seed=0)
    with pytest.raises(ValueError, match="not both"):
        model.loss_and_grads(x, y, checkpoint=True, memory_budget="1GB")
    with pytest.raises(ValueError, match="memory_budget must be bytes"):
        model.loss_and_grads(x, y, memory_budget="lots")
    with pytest.raises(TypeError, match="memory_budget must be a number of bytes"):
        model.loss_and_grads(x, y, memory_budget=1.5e6)  # type: ignore[arg-type]
    # checkpoint= keeps working beside it
    _, g_full = model.loss_and_grads(x, y)
    _, g_ckpt = model.loss_and_grads(x, y, checkpoint=3)
    assert rel(g_ckpt.W, g_full.W) < 1e-12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200MB", 200 * 10**6),
        ("200 mb", 200 * 10**6),
        ("1.5GiB", 3 * 2**29),
        ("64KiB", 65536),
        ("4096", 4096),
        ("2k", 2000),
        (12345, 12345),
    ],
)
def test_parse_bytes(text: object, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "-5MB", "3 parsecs", "0"])
def test_parse_bytes_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes(bad)


def test_planner_with_call_costs_is_the_fastest_that_fits() -> None:
    """With call costs, the planner's schedule is the least predicted time over every block
    length and slot count that fits (each counted by exhaustive search), and longer blocks win
    against the fewest recomputed steps once a call costs enough."""
    sizes = StepBytes.linear(per_step=100, fixed=50, state=30)
    for costs in (Costs(3.0, 1.0, 0.0, 0.0), Costs(3.0, 1.0, 5.0, 2.0), Costs(3.0, 1.0, 40.0, 9.0)):
        for n_steps in (5, 7, 8):
            full = sizes.full_bytes(n_steps)
            for budget_bytes in range(sizes.peak(n_steps, 1, 0), full + 40, 7):
                best = None
                for block in range(1, n_steps + 1):
                    m = -(-n_steps // block)
                    for slots in range(0, m):
                        if sizes.peak(n_steps, block, slots) <= budget_bytes:
                            advances = exhaustive(m, frozenset(), slots)
                            t = costs.time(n_steps, block, m, advances)
                            best = t if best is None else min(best, t)
                got = plan_for(n_steps, sizes, budget_bytes, costs=costs)
                advances = got.recomputed_steps // got.block
                assert costs.time(n_steps, got.block, got.blocks, advances) == best
                assert got.peak_bytes <= budget_bytes
    # T = 64, room for blocks of 8 with every start kept: free calls take them (56 steps
    # recomputed); calls dear enough take fewer, longer blocks and recompute more
    sizes = StepBytes.linear(per_step=1000, fixed=0, state=10)
    free = plan_for(64, sizes, 30934, costs=Costs(3.0, 1.0))
    dear = plan_for(64, sizes, 30934, costs=Costs(3.0, 1.0, 200.0, 100.0))
    assert (free.block, free.slots, free.recomputed_steps) == (8, 6, 56)
    assert dear.blocks < free.blocks and dear.recomputed_steps > free.recomputed_steps


def test_loss_weights_are_made_a_block_at_a_time() -> None:
    """Block slices of :class:`LossWeights` are the model's weights for those steps, and
    checking a long sequence without a mask holds no (T, B) array of weights."""
    import tracemalloc

    rng = np.random.default_rng(0)
    model = bptt.RNN(3, 4, 3, cell="elman", seed=0)
    T, B = 50, 4
    mask = rng.uniform(size=(T, B)) < 0.7
    x, y = rng.integers(0, 3, (T, B)), rng.integers(0, 3, (T, B))
    for given in (None, mask, mask.astype(np.float32)):
        _, _, weights = budget.validated(model, x, y, given)
        assert isinstance(weights, LossWeights)
        full = model.loss_weights(given, (T, B))
        for steps in (slice(0, T), slice(0, 7), slice(7, 14), slice(49, 50), slice(40, None)):
            np.testing.assert_array_equal(weights[steps], full[steps])
        with pytest.raises(ValueError, match="consecutive"):
            weights[0:10:2]
    T = 20_000
    x, y = rng.integers(0, 3, (T, B)), rng.integers(0, 3, (T, B))
    tracemalloc.start()
    try:
        budget.validated(model, x, y, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < T * B * model.dtype.itemsize // 4, peak  # (T, B) float64 weights: 640 kB


def test_reuse_copies_copies_a_parameter_view_once() -> None:
    """Inside ``reuse_copies`` a transposed parameter is copied once and handed out again;
    other arrays, other threads and calls after it get fresh copies."""
    import threading

    rng = np.random.default_rng(0)
    W = rng.standard_normal((256, 256))
    other = rng.standard_normal((256, 256))
    with _workspace.reuse_copies([W]):
        first, again = _workspace.contiguous(W.T), _workspace.contiguous(W.T)
        assert first is again and first.flags.c_contiguous
        np.testing.assert_array_equal(first, W.T)
        assert _workspace.contiguous(other.T) is not _workspace.contiguous(other.T)
        seen: list[np.ndarray] = []
        worker = threading.Thread(target=lambda: seen.append(_workspace.contiguous(W.T)))
        worker.start()
        worker.join()
        assert seen[0] is not first
        np.testing.assert_array_equal(seen[0], W.T)
    W[0, 1] = 7.0  # after the block the parameters may change: copies are fresh again
    after = _workspace.contiguous(W.T)
    assert after is not first or after[1, 0] == 7.0
    np.testing.assert_array_equal(after, W.T)


def test_plan_is_cached_per_shape() -> None:
    model = bptt.RNN(5, 6, 5, cell="gru", seed=0)
    first = plan(model, 300, 2, "60kB")
    assert plan(model, 300, 2, 60_000) is first  # the same schedule object: the same sums
    assert plan(model, 300, 2, "60kB", masked=True) is not first


def test_schedule_reads_well() -> None:
    sizes = StepBytes.linear(per_step=1000, fixed=0, state=100)
    full = plan_for(100, sizes, None)
    assert full.full_storage and full.recomputed_steps == 0 and full.time_ratio == 1.0
    tight = plan_for(100, sizes, 30000)
    assert tight.peak_bytes <= 30000 < full.peak_bytes
    assert tight.recomputed_steps == recurrence(tight.blocks, tight.slots) * tight.block
    assert 1.0 < tight.time_ratio
    text = tight.summary()
    assert "blocks of" in text and "checkpoint slots" in text and "predicted peak" in text
    assert str(tight) == text
