"""Property-based checks over shapes and dtypes (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from batches import max_relative_error, random_targets
from bptt import PARAM_NAMES, ElmanRNN
from bptt.algorithms.seed_formula import seed_gradients

shapes = st.tuples(
    st.integers(1, 12),  # T
    st.integers(1, 4),  # B
    st.integers(1, 6),  # I
    st.integers(1, 7),  # H
    st.integers(1, 5),  # O
)


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from([np.float32, np.float64]),
    act=st.sampled_from(["tanh", "relu", "sigmoid", "identity"]),
    head=st.sampled_from(["softmax", "sigmoid", "identity"]),
    ids=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_shapes_dtypes_and_seed_formula(shape, dtype, act, head, ids, seed):
    T, B, I, H, O = shape
    rng = np.random.default_rng(seed)
    model = ElmanRNN(I, H, O, hidden_activation=act, output=head, seed=seed, dtype=dtype)
    dt = np.dtype(dtype)
    x = rng.integers(0, I, size=(T, B)) if ids else rng.standard_normal((T, B, I)).astype(dt)
    y = random_targets(rng, head, T, B, O, dt)
    h0 = rng.standard_normal((B, H)).astype(dt)

    loss, grads = model.loss_and_grads(x, y, h0)
    y_hat, hs = model.predict(x, h0)

    assert isinstance(loss, float) and np.isfinite(loss)
    assert y_hat.shape == (T, B, O) and y_hat.dtype == dt
    assert hs.shape == (T + 1, B, H) and hs.dtype == dt
    np.testing.assert_array_equal(hs[0], h0)
    assert grads.h0.shape == (B, H) and grads.h0.dtype == dt
    for name in PARAM_NAMES:
        g = getattr(grads, name)
        assert g.shape == getattr(model.params, name).shape, name
        assert g.dtype == dt, name
    if dt == np.float64:
        oracle = seed_gradients(model, x, y, h0)
        for name in PARAM_NAMES:
            assert max_relative_error(getattr(grads, name), getattr(oracle, name)) < 1e-10


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 10), B=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_loss_is_mean_over_batch_and_sum_over_time(T, B, seed):
    """Splitting the batch and the sequence partitions the loss and the gradient exactly."""
    rng = np.random.default_rng(seed)
    model = ElmanRNN(3, 4, 5, seed=seed)
    x = rng.integers(0, 3, size=(T, B))
    y = rng.integers(0, 5, size=(T, B))
    loss, grads = model.loss_and_grads(x, y)
    per_sequence = [model.loss_and_grads(x[:, b : b + 1], y[:, b : b + 1]) for b in range(B)]
    assert abs(loss - sum(lo for lo, _ in per_sequence) / B) <= 1e-12 * max(loss, 1.0)
    np.testing.assert_allclose(grads.W, sum(g.W for _, g in per_sequence) / B, atol=1e-13)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), T=st.integers(2, 15))
def test_float32_tracks_float64(seed, T):
    rng = np.random.default_rng(seed)
    m64 = ElmanRNN(4, 6, 3, output="identity", seed=seed, dtype=np.float64)
    m32 = ElmanRNN(4, 6, 3, output="identity", seed=seed, dtype=np.float32)
    x = rng.standard_normal((T, 2, 4))
    y = rng.standard_normal((T, 2, 3))
    l64, g64 = m64.loss_and_grads(x, y)
    l32, g32 = m32.loss_and_grads(x.astype(np.float32), y.astype(np.float32))
    assert abs(l32 - l64) <= 1e-5 * max(abs(l64), 1.0)
    for name in PARAM_NAMES:
        assert max_relative_error(getattr(g32, name), getattr(g64, name)) < 1e-4
