"""The gated cells' batch-sharded compiled loops (cells/_gated_kernels.py) against their NumPy
loops, shard by shard, and the NumPy path's own fallback when the compiled one is off.

The independent reference (PyTorch autograd, float64) runs on both paths in
tests/test_cells_gated.py (``test_matches_torch_module_and_linear`` is parametrised over the
backend); here every shard count (uneven splits included), float32 and float64, ids and dense
inputs, with h0, a mask and an upstream gradient on the last state, none of them all ones.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import bptt
from bptt import _kernels, _workspace
from bptt.cells import _gated_kernels
from sharding import numpy_and_sharded

SHARDED = _gated_kernels._load() is not None
needs_sharded = pytest.mark.skipif(not SHARDED, reason="sharded kernels unavailable")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(np.max(np.abs(b64)), 1e-300))


def _problem(
    cell: str, dtype: type, ids: bool, rng: np.random.Generator, T: int = 30, B: int = 7
) -> tuple[bptt.RNN, dict[str, object]]:
    I, H, O = 6, 33, 5  # odd sizes: no shard or row is a multiple of a SIMD width
    model = bptt.RNN(I, H, O, cell=cell, seed=4, dtype=dtype)
    for array in model.params.values():
        array *= 3.0  # gates well into their saturated range, so tanh's whole span is used
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I)).astype(dtype)
    parts = model.state_parts
    h0 = [(0.5 * rng.standard_normal((B, H))).astype(dtype) for _ in range(parts)]
    up = [rng.standard_normal((B, H)).astype(dtype) for _ in range(parts)]
    a: dict[str, object] = {
        "x": x,
        "y": rng.integers(0, O, (T, B)),
        "h0": tuple(h0) if parts > 1 else h0[0],
        "mask": (rng.uniform(size=(T, B)) < 0.8).astype(dtype),
        "dh_last": tuple(up) if parts > 1 else up[0],
    }
    return model, a


def _parts(state: object) -> list[np.ndarray]:
    return list(state) if isinstance(state, tuple) else [np.asarray(state)]


@needs_sharded
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_sharded_matches_numpy_path(
    cell: str, dtype: type, shards: int, rng: np.random.Generator
) -> None:
    """Every shard count gives the NumPy loops' loss, final state and gradients."""
    model, a = _problem(cell, dtype, ids=shards % 2 == 1, rng=rng)
    ref, got = numpy_and_sharded(model, a, shards, _gated_kernels.shard_count)
    tol = 1e-13 if dtype == np.float64 else 2e-5
    assert abs(got.loss - ref.loss) <= tol * abs(ref.loss)
    for g, r in zip(_parts(got.h_last), _parts(ref.h_last), strict=True):
        assert rel(g, r) < tol
    for name in model.params:
        g = got.grads[name]
        assert g.dtype == dtype, name
        assert rel(g, ref.grads[name]) < tol, (name, rel(g, ref.grads[name]))
    for g, r in zip(_parts(got.grads.h0), _parts(ref.grads.h0), strict=True):
        assert g.dtype == dtype
        assert rel(g, r) < tol


@needs_sharded
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sharded_forward_keeps_nan_in_its_row(cell: str, rng: np.random.Generator) -> None:
    """A NaN entering one batch row stays in that row's later states, never elsewhere."""
    model, a = _problem(cell, np.float32, ids=False, rng=rng, T=5, B=4)
    x = np.array(a["x"])
    x[1, 3, 0] = np.nan  # row 3, step 1 (below the model's input checks, which reject NaN)
    layer = model.layers[0]
    c, p = layer.cell, layer.take(model.params)
    s0 = np.zeros((4, c.state_size), np.float32)
    with _kernels.backend("sharded"):
        hs, _, _ = c.forward(p, x, s0)
    assert np.isnan(hs[1:, 3]).all()
    assert np.isfinite(hs[:, :3]).all() and np.isfinite(hs[0]).all()


def test_numpy_path_when_sharding_is_off() -> None:
    with _kernels.backend("numpy"):
        assert _gated_kernels.shard_count(64, 512) == 0


@needs_sharded
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_reused_arrays_never_overwrite_live_results(
    cell: str, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sweeps alive at once (their outputs and caches held) get separate arrays; the
    first sweep's states and gradients are unchanged by the second (cf. _workspace)."""
    monkeypatch.setattr(_workspace, "MIN_ELEMENTS", 0)  # pool even these small arrays
    model, a = _problem(cell, np.float64, ids=True, rng=rng, T=6, B=5)
    layer = model.layers[0]
    c, p = layer.cell, layer.take(model.params)
    s0 = np.zeros((5, c.state_size))
    with _kernels.backend("sharded"):
        h1, _, cache1 = c.forward(p, a["x"], s0)
        kept = h1.copy()
        x2 = rng.integers(0, model.input_size, a["x"].shape)
        h2, _, cache2 = c.forward(p, x2, s0)
        assert not np.shares_memory(h1, h2)
        np.testing.assert_array_equal(h1, kept)
        dh = rng.standard_normal(h1.shape)
        g1 = c.backward(dh.copy(), cache1, p)
        c.backward(dh.copy(), cache2, p)
        again = c.backward(dh.copy(), cache1, p)  # the cache is not spent by its backward
    for name in g1.params:
        np.testing.assert_array_equal(g1.params[name], again.params[name])
    np.testing.assert_array_equal(h1, kept)


def test_workspace_reuses_only_unreferenced_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workspace, "MIN_ELEMENTS", 0)
    _workspace.clear()
    a = _workspace.empty((3, 4), np.float32)
    b = _workspace.empty((3, 4), np.float32)
    assert a is not b and a.dtype == np.float32 and a.flags.c_contiguous
    a_id = id(a)
    del a
    c = _workspace.empty((3, 4), np.float32)
    assert id(c) == a_id  # free again: handed out anew
    view = c[1:]
    del c
    d = _workspace.empty((3, 4), np.float32)
    assert id(d) != a_id  # a view still holds it
    assert not np.shares_memory(d, view)
    assert _workspace.empty((3, 4), np.float64).dtype == np.float64  # dtype is part of the key
    _workspace.clear()
    monkeypatch.setattr(_workspace, "MIN_ELEMENTS", 100)
    small = _workspace.empty((3, 4), np.float32)
    small_id = id(small)
    del small
    assert not _workspace._pool  # below MIN_ELEMENTS: never pooled
    assert _workspace.empty((3, 4), np.float32) is not None and small_id is not None


def test_without_numba_the_numpy_loops_run() -> None:
    """With Numba absent (import blocked in a fresh process) the gated cells take the NumPy
    loops and give the same loss as the compiled path here."""
    code = """
import sys
sys.modules["numba"] = None  # import numba raises ImportError
import numpy as np, bptt
from bptt.cells import _gated_kernels
assert _gated_kernels.shard_count(32, 64) == 0
for cell in ("gru", "lstm"):
    m = bptt.RNN(5, 64, 5, cell=cell, seed=0)
    x = np.random.default_rng(0).integers(0, 5, (4, 32))
    print(cell, repr(m.loss_and_grads(x, x)[0]))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    x = np.random.default_rng(0).integers(0, 5, (4, 32))
    for cell, loss in zip(out[::2], out[1::2], strict=True):
        here = bptt.RNN(5, 64, 5, cell=cell, seed=0).loss_and_grads(x, x)[0]
        assert abs(float(loss) - here) <= 1e-12 * abs(here), cell
