"""Recompute-based (checkpointed) BPTT gives full BPTT's loss, gradients, dL/dh_0 and h_T.

The reference is the full-storage schedule, itself tested against PyTorch autograd in
tests/test_perf_paths.py; here every head, activation, input kind, mask, h0 and dh_last is run
through both schedules and several segment lengths (equinox's one-problem-every-loop idea).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import bptt
from bptt import _kernels
from bptt.algorithms.recompute import (
    estimated_peak_bytes,
    segment_for_memory_budget,
    segment_length,
)

NAMES = ("U", "V", "W", "b_h", "b_y", "h0")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _problem(
    act: str, head: str, ids: bool, rng: np.random.Generator, T: int = 11, B: int = 3
) -> tuple[bptt.ElmanRNN, dict[str, object]]:
    I, H, O = 4, 6, 5
    model = bptt.ElmanRNN(I, H, O, act, head, seed=7, dtype=np.float64)
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    if head == "softmax":
        y: np.ndarray = rng.integers(0, O, (T, B))
    elif head == "sigmoid":
        y = rng.uniform(size=(T, B, O))
    else:
        y = rng.standard_normal((T, B, O))
    kwargs: dict[str, object] = {
        "x": x,
        "y": y,
        "h0": 0.5 * rng.standard_normal((B, H)),
        "mask": (rng.uniform(size=(T, B)) < 0.75).astype(np.float64),
        "dh_last": rng.standard_normal((B, H)),
    }
    return model, kwargs


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "identity"])
@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity"])
@pytest.mark.parametrize("ids", [True, False])
def test_checkpointed_equals_full(act: str, head: str, ids: bool, rng: np.random.Generator) -> None:
    model, a = _problem(act, head, ids, rng)
    full = model.forward_backward(**a)  # type: ignore[arg-type]
    for checkpoint in (True, 1, 2, 4, 10):  # True → K = round(√11) = 3; 4 leaves a short tail
        got = model.forward_backward(**a, checkpoint=checkpoint)  # type: ignore[arg-type]
        assert abs(got.loss - full.loss) <= 1e-12 * abs(full.loss)
        for name in NAMES:
            g, f = getattr(got.grads, name), getattr(full.grads, name)
            assert g.shape == f.shape and g.dtype == f.dtype == np.float64
            assert rel(g, f) < 1e-10, (checkpoint, name)
        np.testing.assert_array_equal(got.h_last, full.h_last)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_checkpointed_float32_and_loss_and_grads(backend: str, rng: np.random.Generator) -> None:
    model = bptt.ElmanRNN(7, 12, 7, seed=2, dtype=np.float32)
    x = rng.integers(0, 7, (30, 2))
    y = rng.integers(0, 7, (30, 2))
    with _kernels.backend(backend):
        loss, grads = model.loss_and_grads(x, y)
        loss_c, grads_c = model.loss_and_grads(x, y, checkpoint=True)
    assert abs(loss - loss_c) <= 1e-5 * abs(loss)
    for name in NAMES:
        assert getattr(grads_c, name).dtype == np.float32
        assert rel(getattr(grads_c, name), getattr(grads, name)) < 1e-4


def test_segment_length_rules() -> None:
    assert segment_length(100, False) is None
    assert segment_length(100, True) == 10
    assert segment_length(20_000, True) == 141
    assert segment_length(1, True) == 1
    assert segment_length(50, 7) == 7
    assert segment_length(50, np.int64(3)) == 3
    assert segment_length(50, np.bool_(False)) is None


@pytest.mark.parametrize("bad", [0, -3])
def test_checkpoint_rejects_non_positive(bad: int, rng: np.random.Generator) -> None:
    model, a = _problem("tanh", "softmax", True, rng)
    with pytest.raises(
        ValueError, match=r"checkpoint must be a positive segment length in steps, got -?\d"
    ):
        model.loss_and_grads(a["x"], a["y"], checkpoint=bad)


@pytest.mark.parametrize("bad", [2.0, "yes", None, [3]])
def test_checkpoint_rejects_wrong_type(bad: object, rng: np.random.Generator) -> None:
    model, a = _problem("tanh", "softmax", True, rng)
    with pytest.raises(TypeError, match=r"checkpoint must be False .* got"):
        model.loss_and_grads(a["x"], a["y"], checkpoint=bad)  # type: ignore[arg-type]


def _traced_peak(fn: object) -> int:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_checkpointed_peak_memory_is_sublinear(rng: np.random.Generator) -> None:
    """tracemalloc sees NumPy's buffers: at T=2500 the √T schedule needs a small fraction."""
    T, B, H, O = 2500, 4, 32, 8
    model = bptt.ElmanRNN(8, H, O, output="identity", seed=0, dtype=np.float64)
    x = rng.standard_normal((T, B, 8))
    y = rng.standard_normal((T, B, O))
    model.loss_and_grads(x[:3], y[:3], checkpoint=True)  # warm caches and kernels
    full = _traced_peak(lambda: model.loss_and_grads(x, y))
    ckpt = _traced_peak(lambda: model.loss_and_grads(x, y, checkpoint=True))
    stored = T * B * H * 8  # one float64 (T, B, H) array
    assert full > 2 * stored  # full BPTT holds several T·B·H arrays at its peak
    assert ckpt < 0.15 * full, (ckpt, full)


def test_memory_budget_schedule(rng: np.random.Generator) -> None:
    T, B, H, O = 400, 2, 16, 3
    full_bytes = estimated_peak_bytes(T, B, H, O, None, 8)
    assert segment_for_memory_budget(T, B, H, O, 8, full_bytes) is None
    budget = full_bytes // 5
    k = segment_for_memory_budget(T, B, H, O, 8, budget)
    assert k is not None and 1 <= k < T
    assert estimated_peak_bytes(T, B, H, O, k, 8) <= budget
    assert estimated_peak_bytes(T, B, H, O, k + 1, 8) > budget or k + 1 >= T
    with pytest.raises(ValueError, match="budget_bytes"):
        segment_for_memory_budget(T, B, H, O, 8, 100)
    # the chosen K runs and gives the full gradients
    model = bptt.ElmanRNN(5, H, O, output="identity", seed=1, dtype=np.float64)
    x = rng.standard_normal((T, B, 5))
    y = rng.standard_normal((T, B, O))
    _, g_full = model.loss_and_grads(x, y)
    _, g_k = model.loss_and_grads(x, y, checkpoint=k)
    for name in NAMES:
        assert rel(getattr(g_k, name), getattr(g_full, name)) < 1e-10
    # and the model's estimate bounds what tracemalloc measures for that K
    measured = _traced_peak(lambda: model.loss_and_grads(x, y, checkpoint=k))
    assert measured <= 1.25 * estimated_peak_bytes(T, B, H, O, k, 8) + 16 * 1024
