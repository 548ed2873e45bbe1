"""The workspace pool: a step's temporaries reused across steps, never what the caller keeps."""

from __future__ import annotations

import numpy as np
import pytest

import bptt
from bptt import _workspace


def test_a_step_reuses_the_pool_instead_of_allocating() -> None:
    """After the first step, a step of the same shapes takes every large array from the pool
    (it does not grow), and returns arrays the pool does not hold."""
    _workspace.clear()
    model = bptt.ElmanRNN(9, 64, 9, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 9, (40, 16)), rng.integers(0, 9, (40, 16))
    model.loss_and_grads(x, y)
    pooled = dict((k, len(v)) for k, v in _workspace._pool.items())
    assert pooled, "no (T, B, H) array went through the pool"
    _, grads = model.loss_and_grads(x, y)
    assert dict((k, len(v)) for k, v in _workspace._pool.items()) == pooled
    held = [a for arrays in _workspace._pool.values() for a in arrays]
    for g in grads.arrays():
        assert not any(np.shares_memory(g, a) for a in held)


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
    T, B, In, H, O = 40, 24, 11, 32, 7  # big enough that hs and dh go through the pool

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


def test_checkpointed_steps_pool_one_segment_not_the_sequence() -> None:
    """The recompute schedule runs one sweep per segment: still equal to full BPTT, and the
    pool ends up holding one segment's temporaries, not the whole sequence's."""
    T, B, H = 200, 16, 128  # segments of ~14 steps: 14·16·128 entries, enough to pool
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 9, (T, B)), rng.integers(0, 9, (T, B))

    def pooled_bytes() -> int:
        return sum(a.nbytes for arrays in _workspace._pool.values() for a in arrays)

    _workspace.clear()
    want = bptt.ElmanRNN(9, H, 9, seed=0).forward_backward(x, y)
    full = pooled_bytes()
    _workspace.clear()
    model = bptt.ElmanRNN(9, H, 9, seed=0)
    model.forward_backward(x, y, checkpoint=True)
    got = model.forward_backward(x, y, checkpoint=True)  # the second call reuses the pool
    for name in want.grads:
        np.testing.assert_allclose(got.grads[name], want.grads[name], rtol=1e-10, atol=1e-12)
    assert 0 < pooled_bytes() < full / 3
    _workspace.clear()
