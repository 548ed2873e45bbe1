"""The scratch arena: temporaries reused across steps, never returned to the caller."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import bptt
from bptt import _scratch


def test_the_ith_request_of_a_step_gets_the_same_array_again() -> None:
    arena = _scratch.Arena()
    with _scratch.using(arena):
        a = _scratch.empty((200, 100), np.float32)
        b = _scratch.empty((200, 100), np.float32)
    assert a is not b and not np.shares_memory(a, b)
    with _scratch.using(arena):
        assert _scratch.empty((200, 100), np.float32) is a
        c = _scratch.empty((100, 200), np.float32)  # a different shape replaces slot 1
    assert c is not b and c.shape == (100, 200)
    assert arena.nbytes == a.nbytes + c.nbytes
    arena.clear()
    assert arena.nbytes == 0


def test_small_requests_and_requests_outside_a_step_are_fresh() -> None:
    arena = _scratch.Arena()
    outside = _scratch.empty((300, 300), np.float64)
    with _scratch.using(arena):
        small = _scratch.empty((4, 4), np.float64)
    with _scratch.using(arena):
        assert _scratch.empty((4, 4), np.float64) is not small
    assert arena.nbytes == 0
    assert _scratch.empty((300, 300), np.float64) is not outside


def test_each_model_and_each_thread_has_its_own_arena() -> None:
    m1 = bptt.ElmanRNN(3, 4, 2, output="identity")
    m2 = bptt.ElmanRNN(3, 4, 2, output="identity")
    a1 = _scratch.arena_for(m1)
    assert _scratch.arena_for(m1) is a1 and _scratch.arena_for(m2) is not a1
    seen: list[_scratch.Arena] = []
    thread = threading.Thread(target=lambda model=m1: seen.append(_scratch.arena_for(model)))
    thread.start()
    thread.join()
    assert seen.pop() is not a1
    gone = weakref.ref(a1)
    del m1, a1, thread
    gc.collect()
    assert gone() is None  # the weakly keyed table lets a dead model's arena go


CONFIGS = [
    dict(cell="elman", num_layers=1, bidirectional=False),
    dict(cell="elman", num_layers=2, bidirectional=False),
    dict(cell="elman", num_layers=2, bidirectional=True),
    dict(cell="gru", num_layers=2, bidirectional=False),
    dict(cell="lstm", num_layers=1, bidirectional=True),
]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_what_a_step_returns_survives_the_next_step(config: dict, dense: bool) -> None:
    """Grads, dL/dh0 and h_last of step 1 are untouched by step 2 on other data, and the
    results equal those of a model that never reused anything (a fresh one per call)."""
    T, B, In, H, O = 40, 24, 11, 32, 7  # big enough that hs, z, dz, dh use the arena

    def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        x = r.standard_normal((T, B, In)) if dense else r.integers(0, In, (T, B))
        return x, r.integers(0, O, (T, B))

    def make() -> bptt.RNN:
        return bptt.RNN(In, H, O, seed=3, dtype=np.float64, **config)

    model = make()
    x1, y1 = batch(1)
    x2, y2 = batch(2)
    first = model.forward_backward(x1, y1)
    kept = {name: g.copy() for name, g in first.grads.items()}
    kept_h0 = np.copy(first.grads.h0) if not isinstance(first.grads.h0, tuple) else None
    h_last = first.h_last
    kept_h_last = (
        tuple(np.copy(a) for a in h_last) if isinstance(h_last, tuple) else np.copy(h_last)
    )
    second = model.forward_backward(x2, y2)
    for name, g in first.grads.items():
        np.testing.assert_array_equal(g, kept[name], err_msg=name)
    if kept_h0 is not None:
        np.testing.assert_array_equal(first.grads.h0, kept_h0)
    for got, want in zip(
        h_last if isinstance(h_last, tuple) else (h_last,),
        kept_h_last if isinstance(kept_h_last, tuple) else (kept_h_last,),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    reference = make().forward_backward(x2, y2)
    assert second.loss == reference.loss
    for name, g in second.grads.items():
        np.testing.assert_array_equal(g, reference.grads[name], err_msg=name)
    assert _scratch.arena_for(model).nbytes > 0


def test_checkpointed_steps_reuse_the_arena_per_segment() -> None:
    """The recompute schedule runs one sweep per segment through the same arena: still equal
    to full BPTT, and the arena holds one segment's temporaries, not the sequence's."""
    T, B, H = 120, 16, 64
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 9, (T, B)), rng.integers(0, 9, (T, B))
    full = bptt.ElmanRNN(9, H, 9, seed=0)
    recompute = bptt.ElmanRNN(9, H, 9, seed=0)
    want = full.forward_backward(x, y)
    got = recompute.forward_backward(x, y, checkpoint=True)
    got = recompute.forward_backward(x, y, checkpoint=True)  # the second call reuses slots
    for name in want.grads:
        np.testing.assert_allclose(got.grads[name], want.grads[name], rtol=1e-10, atol=1e-12)
    assert _scratch.arena_for(recompute).nbytes < _scratch.arena_for(full).nbytes / 3
