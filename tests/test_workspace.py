"""The workspace pool: a step's temporaries reused across steps, never what the caller keeps."""

from __future__ import annotations

import numpy as np
import pytest

import bptt
from bptt import _workspace


def test_a_step_reuses_the_pool_instead_of_allocating() -> None:
    """After the first step, a step of the same shapes takes every large array from the pool
    (it does not grow), and returns arrays the pool does not hold (its weights are under
    MIN_ELEMENTS; larger gradients do come from the pool, see the tests at the end)."""
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


# -- parameter-sized arrays: gradients, new weights and optimizer slots ----------------------

# every weight matrix at least MIN_ELEMENTS entries: V (128, 130), W (128, 128), U (130, 128)
BIG = dict(n_in=130, hidden=128, n_out=130, T=2, B=2)  # few rows: small (T, B, ·) arrays
POOLED = _workspace.MIN_ELEMENTS


def _big_model_and_batches(
    dtype: type = np.float32,
) -> tuple[bptt.ElmanRNN, list[tuple[np.ndarray, np.ndarray]]]:
    model = bptt.ElmanRNN(BIG["n_in"], BIG["hidden"], BIG["n_out"], seed=0, dtype=dtype)
    for name in ("V", "W", "U"):
        assert model.params[name].size >= POOLED, name
    rng = np.random.default_rng(5)
    shape = (BIG["T"], BIG["B"])
    batches = [
        (rng.integers(0, BIG["n_in"], shape), rng.integers(0, BIG["n_out"], shape))
        for _ in range(6)
    ]
    return model, batches


def _warm_step_peak_rise(monkeypatch: pytest.MonkeyPatch, *, pool: bool) -> int:
    """tracemalloc's peak during one warm step (loss_and_grads + guarded_step with Adam and a
    norm clip, as the charlm recipe) over the traced size just before it, in bytes."""
    import tracemalloc

    from bptt.optim import guarded_step, make_optimizer

    _workspace.clear()
    if not pool:
        monkeypatch.setattr(_workspace, "MIN_ELEMENTS", 1 << 62)
    model, batches = _big_model_and_batches()
    opt = make_optimizer("adam", 1e-3)

    def step(k: int) -> None:
        x, y = batches[k % len(batches)]
        loss, grads = model.loss_and_grads(x, y)
        assert guarded_step(opt, model.params, grads, clip_norm=5.0, loss=loss).applied

    for k in range(3):
        step(k)
    tracemalloc.start()
    try:
        step(3)  # tracemalloc's own tables settle
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step(4)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        _workspace.clear()


def test_a_warm_training_step_allocates_no_pool_sized_array(monkeypatch) -> None:
    """After warm-up, the gradients, the norm clip's float64 copies, the new weights and the
    new Adam slots all come from the pool: the step's peak rise (~18 KiB of small arrays and
    NumPy's buffers) stays below half of one weight matrix (64 KiB in float32), where without
    the pool it is about a dozen of them."""
    pytest.importorskip("numba")  # the fused update (the NumPy fallback allocates)
    one_array = POOLED * 4  # bytes of the smallest pooled float32 array
    with_pool = _warm_step_peak_rise(monkeypatch, pool=True)
    without = _warm_step_peak_rise(monkeypatch, pool=False)
    assert without > 4 * one_array  # the measurement sees fresh arrays when they happen
    assert with_pool < one_array / 2, f"{with_pool} bytes allocated in a warm step"


def test_what_a_training_step_returns_survives_the_next_step() -> None:
    """Gradients, the optimizer's slots (state_dict) and a fused update's new weights that
    the caller keeps from step k are untouched by step k+1, though all come from the pool;
    and the run equals one whose every array is fresh (the pool off)."""
    pytest.importorskip("numba")
    from bptt._fused_optim import fused_compute
    from bptt.optim import guarded_step, make_optimizer

    def run(pool: bool) -> tuple[list, bptt.ElmanRNN]:
        _workspace.clear()
        saved = _workspace.MIN_ELEMENTS
        _workspace.MIN_ELEMENTS = saved if pool else 1 << 62
        try:
            model, batches = _big_model_and_batches(np.float64)
            opt = make_optimizer("adam", 1e-2)
            kept = []
            for x, y in batches:
                loss, grads = model.loss_and_grads(x, y)
                fused = fused_compute(opt, model.params, grads, None)  # kept, not committed
                assert fused is not None
                new_params, new_slots, _ = fused
                assert guarded_step(opt, model.params, grads, clip_norm=1.0, loss=loss).applied
                state = opt.state_dict()
                arrays = {f"grad.{n}": a for n, a in grads.items()}
                arrays |= {f"new.{n}": a for n, a in new_params.items()}
                arrays |= {f"new.{s}.{n}": a for s, d in new_slots.items() for n, a in d.items()}
                arrays |= {f"slot.{k}": v for k, v in state.items() if isinstance(v, np.ndarray)}
                kept.append((arrays, {k: a.copy() for k, a in arrays.items()}))
            return kept, model
        finally:
            _workspace.MIN_ELEMENTS = saved
            _workspace.clear()

    pooled, model = run(pool=True)
    for k, (arrays, copies) in enumerate(pooled):
        for key, a in arrays.items():
            np.testing.assert_array_equal(a, copies[key], err_msg=f"step {k}: {key}")
    fresh, reference = run(pool=False)
    for k, ((arrays, _), (want, _)) in enumerate(zip(pooled, fresh, strict=True)):
        assert arrays.keys() == want.keys()
        for key, a in arrays.items():
            assert a.tobytes() == want[key].tobytes(), f"step {k}: {key}"
    for name, a in model.params.items():
        assert a.tobytes() == reference.params[name].tobytes(), name


def test_zeros_and_contiguous_from_the_pool() -> None:
    """zeros is np.zeros and contiguous is np.ascontiguousarray, their large results pooled."""
    _workspace.clear()
    n = _workspace.MIN_ELEMENTS
    a = np.arange(2.0 * n).reshape(2, n)
    t = _workspace.contiguous(a.T)
    np.testing.assert_array_equal(t, np.ascontiguousarray(a.T))
    assert t.flags.c_contiguous and any(
        t is p for arrays in _workspace._pool.values() for p in arrays
    )
    assert _workspace.contiguous(a) is a
    small = np.arange(6.0).reshape(2, 3).T
    np.testing.assert_array_equal(_workspace.contiguous(small), np.ascontiguousarray(small))
    z = _workspace.empty((n,), np.float64)
    z.fill(7.0)
    del z  # back to the pool, dirty
    np.testing.assert_array_equal(_workspace.zeros((n,), np.float64), np.zeros(n))
    np.testing.assert_array_equal(_workspace.zeros((3,), np.float32), np.zeros(3, np.float32))
    _workspace.clear()
