"""The fast paths: compiled (Numba) kernels and their NumPy fallbacks give the same numbers.

Both backends run here (``_kernels.backend``), so CI tests the fallback even where Numba is
installed. Independent references: ``np.add.at`` for the scatter-add and PyTorch autograd in
float64 for a whole step (random mask, h0 and dh_last so no upstream signal is all ones).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import bptt
from bptt import _kernels
from bptt.cells import _elman_kernels
from bptt.cells.elman import recurrent_forward
from sharding import numpy_and_sharded

try:
    import numba  # noqa: F401

    BACKENDS = ["numpy", "numba"]
except ImportError:  # the fallback is still tested
    BACKENDS = ["numpy"]
SHARDED = _kernels.sharding_gemms() is not None
if SHARDED:  # batch-sharded GIL-free loops (Numba + NumPy's CBLAS)
    BACKENDS.append("sharded")
needs_sharded = pytest.mark.skipif(not SHARDED, reason="sharded kernels unavailable")

ACTS = ["tanh", "relu", "sigmoid", "identity"]
HEADS = ["softmax", "sigmoid", "identity"]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(np.max(np.abs(b64)), 1e-300))


# -- scatter-add ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_matches_add_at(backend: str, dtype: type, rng: np.random.Generator) -> None:
    n, rows = 11, 300
    idx = rng.integers(0, n - 2, size=rows)  # ids n-2, n-1 never occur: their rows stay 0
    data = rng.standard_normal((rows, 7)).astype(dtype)
    expected = np.zeros((n, 7), dtype)
    np.add.at(expected, idx, data)
    with _kernels.backend(backend):
        got = _kernels.scatter_add_rows(n, idx, data)
    assert got.shape == (n, 7) and got.dtype == dtype
    tol = 50 * np.finfo(dtype).eps
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(data).sum(0).max())
    assert not got[n - 2 :].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_add_empty(backend: str) -> None:
    with _kernels.backend(backend):
        got = _kernels.scatter_add_rows(4, np.zeros(0, np.intp), np.zeros((0, 3), np.float32))
    assert got.shape == (4, 3) and not got.any()


# -- backend selection ------------------------------------------------------------------------


def test_set_backend_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        _kernels.set_backend("fortran")


def test_backend_context_restores() -> None:
    before = _kernels.get_backend()
    with _kernels.backend("numpy"):
        assert _kernels.get_backend() == "numpy"
        assert not _elman_kernels.use_time_loop_kernel(1, 8)
    assert _kernels.get_backend() == before


@pytest.mark.skipif("numba" not in BACKENDS, reason="Numba not installed")
def test_auto_uses_kernels_only_for_small_steps() -> None:
    with _kernels.backend("auto"):
        assert _elman_kernels.use_time_loop_kernel(1, _kernels.SMALL_STEP)
        assert not _elman_kernels.use_time_loop_kernel(2, _kernels.SMALL_STEP)
    with _kernels.backend("numba"):
        assert _elman_kernels.use_time_loop_kernel(64, 512)


# -- whole step: numba == numpy == torch float64 ----------------------------------------------


def _problem(
    act: str, head: str, ids: bool, dtype: type, rng: np.random.Generator, T: int = 6, B: int = 3
) -> tuple[bptt.ElmanRNN, dict[str, object]]:
    I, H, O = 5, 7, 4
    model = bptt.ElmanRNN(I, H, O, act, head, seed=3, dtype=dtype)
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I)).astype(dtype)
    if head == "softmax":
        y: np.ndarray = rng.integers(0, O, (T, B))
    elif head == "sigmoid":
        y = rng.uniform(size=(T, B, O)).astype(dtype)
    else:
        y = rng.standard_normal((T, B, O)).astype(dtype)
    mask = (rng.uniform(size=(T, B)) < 0.8).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    dh_last = rng.standard_normal((B, H)).astype(dtype)
    return model, {"x": x, "y": y, "h0": h0, "mask": mask, "dh_last": dh_last}


def _torch_reference(model: bptt.ElmanRNN, a: dict[str, object]) -> dict[str, np.ndarray]:
    """L + ⟨dh_last, h_T⟩ and its gradients by autograd, written from the equations."""
    torch = pytest.importorskip("torch")
    p = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()
    }
    h = torch.tensor(a["h0"], dtype=torch.float64, requires_grad=True)
    h0 = h
    x = np.asarray(a["x"])
    mask = torch.tensor(a["mask"], dtype=torch.float64)
    f = {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "identity": lambda e: e,
    }[model.hidden_activation]
    B = x.shape[1]
    loss = torch.zeros((), dtype=torch.float64)
    for t in range(x.shape[0]):
        if x.ndim == 2:
            vx = p["V"][:, torch.tensor(x[t])].T
        else:
            vx = torch.tensor(x[t], dtype=torch.float64) @ p["V"].T
        h = f(vx + h @ p["W"].T + p["b_h"])
        z = h @ p["U"].T + p["b_y"]
        if model.output == "softmax":
            yt = torch.tensor(np.asarray(a["y"])[t])
            step = torch.nn.functional.cross_entropy(z, yt, reduction="none")
        else:
            yt = torch.tensor(np.asarray(a["y"])[t], dtype=torch.float64)
            if model.output == "sigmoid":
                step = torch.nn.functional.binary_cross_entropy_with_logits(
                    z, yt, reduction="none"
                ).sum(-1)
            else:
                step = 0.5 * ((z - yt) ** 2).sum(-1)
        loss = loss + (mask[t] * step).sum() / B
    total = loss + (h * torch.tensor(a["dh_last"], dtype=torch.float64)).sum()
    total.backward()
    out = {k: v.grad.numpy() for k, v in p.items()}
    out["h0"] = h0.grad.numpy()
    out["loss"] = np.array(loss.item())
    return out


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("ids", [True, False])
def test_kernel_and_fallback_match_torch_float64(
    act: str, head: str, ids: bool, rng: np.random.Generator
) -> None:
    model, a = _problem(act, head, ids, np.float64, rng)
    ref = _torch_reference(model, a)
    results = {}
    for backend in BACKENDS:
        with _kernels.backend(backend):
            x, y = a["x"], a["y"]
            loss, g = model.loss_and_grads(x, y, a["h0"], a["mask"], dh_last=a["dh_last"])
        results[backend] = (loss, g)
        assert rel(np.array(loss), ref["loss"]) < 1e-12
        for name in ("U", "V", "W", "b_h", "b_y", "h0"):
            assert getattr(g, name).dtype == np.float64
            assert rel(getattr(g, name), ref[name]) < 1e-10, (backend, name)
    (l1, g1), (l2, g2) = results[BACKENDS[-1]], results["numpy"]
    assert abs(l1 - l2) <= 1e-12 * abs(l2)
    for name in ("U", "V", "W", "b_h", "b_y", "h0"):
        assert rel(getattr(g1, name), getattr(g2, name)) < 1e-12, name


@pytest.mark.parametrize("B,H", [(1, 16), (4, 96)])  # below and above SMALL_STEP under auto
def test_float32_paths_agree_and_stay_float32(B: int, H: int, rng: np.random.Generator) -> None:
    model = bptt.ElmanRNN(9, H, 9, "tanh", "softmax", seed=1, dtype=np.float32)
    x = rng.integers(0, 9, (20, B))
    y = rng.integers(0, 9, (20, B))
    model64 = bptt.ElmanRNN(9, H, 9, "tanh", "softmax", seed=1, dtype=np.float64)
    model64.params = model.params.map(lambda v: v.astype(np.float64))
    _, ref = model64.loss_and_grads(x, y)
    for backend in ["auto", *BACKENDS]:
        with _kernels.backend(backend):
            _, g = model.loss_and_grads(x, y)
        for name, arr in g.items():
            assert arr.dtype == np.float32, (backend, name)
            assert rel(arr, getattr(ref, name)) < 1e-4, (backend, name)


def test_loop_blas_threads_restores_the_thread_count() -> None:
    controllers = _kernels.blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl not installed or cannot drive this BLAS")
    before = [c.num_threads for c in controllers]
    saved = _kernels.LOOP_BLAS_THREADS
    small, large = 1, _kernels.LARGE_STEP_MACS
    try:
        for setting, macs, inside in [
            (1, large, [1] * len(before)),
            ("auto", small, [1] * len(before)),
            ("auto", large, before),
            (None, small, before),
        ]:
            _kernels.set_loop_threads(setting)
            with _kernels.loop_blas_threads(macs):
                assert [c.num_threads for c in controllers] == inside, setting
            assert [c.num_threads for c in controllers] == before
    finally:
        _kernels.set_loop_threads(saved)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "many"])
def test_set_loop_threads_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="loop threads must be 'auto', None"):
        _kernels.set_loop_threads(bad)  # type: ignore[arg-type]


# -- batch-sharded loops: against the NumPy path, shard by shard ------------------------------


@needs_sharded
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_tanh_matches_numpy(dtype: type) -> None:
    """The vectorised tanh of the sharded kernels against np.tanh (computed in float64)."""
    x = np.concatenate(
        [np.linspace(-30, 30, 200_001), np.geomspace(1e-30, 1, 1000), [0.625, -0.625]]
    ).astype(dtype)
    out = _tanh_via_kernel(x)
    ref = np.tanh(x.astype(np.float64))
    if dtype == np.float64:
        ulp = np.abs(out - ref) / np.spacing(np.abs(ref).clip(1e-300))
        assert ulp.max() <= 2.0
    else:
        assert np.abs(out.astype(np.float64) - ref).max() < 5e-7
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], dtype)
    got = _tanh_via_kernel(special)
    assert np.isnan(got[0]) and list(got[1:]) == [1, -1, 1, -1]


def _tanh_via_kernel(x: np.ndarray) -> np.ndarray:
    """tanh of each entry through one forward step of the sharded kernel with W = 0."""
    n = x.size
    hs = np.zeros((2, n, 1), x.dtype)  # T = 1, B = n rows, H = 1
    hs[1, :, 0] = x
    W = np.zeros((1, 1), x.dtype)
    _elman_kernels.sharded_forward(hs, W, W, "tanh", 2)
    return hs[1, :, 0]


def _sharded_problem(
    act: str, dtype: type, ids: bool, rng: np.random.Generator, T: int = 40, B: int = 7
) -> tuple[bptt.ElmanRNN, dict[str, object]]:
    I, H, O = 6, 33, 5  # odd sizes: no shard or row is a multiple of a SIMD width
    model = bptt.ElmanRNN(I, H, O, act, "softmax", seed=4, dtype=dtype)
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I)).astype(dtype)
    a: dict[str, object] = {
        "x": x,
        "y": rng.integers(0, O, (T, B)),
        "h0": (0.5 * rng.standard_normal((B, H))).astype(dtype),
        "mask": (rng.uniform(size=(T, B)) < 0.8).astype(dtype),
        "dh_last": rng.standard_normal((B, H)).astype(dtype),
    }
    return model, a


@needs_sharded
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "transposed"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_sharded_matches_numpy_path(
    act: str, dtype: type, shards: int, transposed: bool, rng: np.random.Generator, monkeypatch
) -> None:
    """Every shard count (uneven splits included) gives the NumPy loops' loss and gradients,
    with the step's product in rows, h W^T, and transposed, W hᵀ (forced either way)."""
    monkeypatch.setattr(_elman_kernels, "TRANSPOSED_MIN_MACS", 0 if transposed else 1 << 62)
    monkeypatch.setattr(_elman_kernels, "TRANSPOSED_DTYPES", ("float32", "float64"))
    assert _elman_kernels.transposed_product(7, 33, shards, np.dtype(dtype)) == transposed
    model, a = _sharded_problem(act, dtype, ids=shards % 2 == 1, rng=rng)
    ref, got = numpy_and_sharded(model, a, shards, _kernels.shard_count)
    tol = 1e-13 if dtype == np.float64 else 2e-5
    assert abs(got.loss - ref.loss) <= tol * abs(ref.loss)
    assert rel(got.h_last, ref.h_last) < tol
    for name in ("U", "V", "W", "b_h", "b_y", "h0"):
        g = getattr(got.grads, name)
        assert g.dtype == dtype, name
        assert rel(g, getattr(ref.grads, name)) < tol, (name, rel(g, getattr(ref.grads, name)))


@needs_sharded
def test_sharded_forward_propagates_nan(rng: np.random.Generator) -> None:
    """A NaN in one row stays in that row (and its shard's later steps), never elsewhere."""
    model, a = _sharded_problem("tanh", np.float32, ids=False, rng=rng, T=5, B=4)
    x = np.array(a["x"])
    x[1, 3, 0] = np.nan  # row 3, step 1
    h0 = np.zeros((4, model.hidden_size), np.float32)
    with _kernels.backend("sharded"):  # below the input checks, which reject NaN inputs
        hs, _ = recurrent_forward(model.params, x, h0, model.activation)
    assert np.isnan(hs[2:, 3]).all()
    assert np.isfinite(hs[:, :3]).all() and np.isfinite(hs[:2]).all()


def test_shard_count_policy() -> None:
    saved = _kernels.LOOP_BLAS_THREADS
    try:
        with _kernels.backend("numpy"):
            assert _kernels.shard_count(64, 512) == 0
        if not SHARDED:
            return
        with _kernels.backend("auto"):
            assert _kernels.shard_count(1, _kernels.SMALL_STEP) == 0  # per-row loops instead
            assert _kernels.shard_count(2, 8 * _kernels.SMALL_STEP) == 1  # too few rows
            n = _kernels.shard_count(64, 512)
            assert 1 <= n <= len(os.sched_getaffinity(0))
            _kernels.set_loop_threads(None)  # leave BLAS alone: the NumPy loops
            assert _kernels.shard_count(64, 512) == 0
            _kernels.set_loop_threads(3)
            assert _kernels.shard_count(64, 512) == 3
            assert _kernels.shard_count(2, 512) == 2
    finally:
        _kernels.set_loop_threads(saved)


def test_blas_threads_never_raises_the_users_limit() -> None:
    controllers = _kernels.blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl not installed or cannot drive this BLAS")
    before = [c.num_threads for c in controllers]
    try:
        for c in controllers:
            c.set_num_threads(1)
        with _kernels.blas_threads(4):
            assert [c.num_threads for c in controllers] == [1] * len(controllers)
    finally:
        for c, n in zip(controllers, before, strict=True):
            c.set_num_threads(n)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_pairwise(
    dtype: type, backend: str, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairwise bias sums, compiled (blocks merged as a binary counter) and NumPy's halving:
    exact for integers, far closer than a running sum in float32."""
    from bptt._kernels import column_sums

    if backend == "numba" and not _kernels.numba_available():
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(_kernels, "_backend", backend)
    for R in (1, 63, 64, 65, 129, 1000, 4097):
        ints = rng.integers(-50, 50, (R, 3)).astype(dtype)
        np.testing.assert_array_equal(column_sums(ints), ints.astype(np.int64).sum(0))
    rows = (rng.standard_normal((200_000, 4)) + 0.5).astype(dtype)
    exact = np.array([math.fsum(col) for col in rows.T.astype(np.float64)])  # correctly rounded
    err = np.abs(column_sums(rows) - exact).max() / np.abs(exact).max()
    assert err < 8 * np.finfo(dtype).eps  # a running sum is ~20-70 eps off here


@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_block_products_match_numpy(
    blocks: int, dtype: type, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hoisted products split into row blocks equal one NumPy product."""
    monkeypatch.setattr(_kernels, "PRODUCT_SHARD_MACS", 0)
    monkeypatch.setattr(_kernels, "PRODUCT_MIN_MACS", 0)
    a = rng.standard_normal((101, 13)).astype(dtype)
    b = rng.standard_normal((13, 9)).astype(dtype)
    c = rng.standard_normal((101, 9)).astype(dtype)
    saved = _kernels.LOOP_BLAS_THREADS
    try:
        _kernels.set_loop_threads(blocks)
        out = np.empty((101, 9), dtype)
        got = _kernels.matmul(a, b, out=out)
        assert got is out
        tn = _kernels.matmul_tn(a, c)
    finally:
        _kernels.set_loop_threads(saved)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    assert tn.dtype == got.dtype == dtype
    assert rel(got, a.astype(np.float64) @ b) < tol
    assert rel(tn, a.T.astype(np.float64) @ c) < tol


def test_gemm_check_rejects_a_wrong_gemm() -> None:
    """The start-up check that disables the sharded path when NumPy's CBLAS GEMM misbehaves
    (a wrong integer width, say): a GEMM that writes nothing is refused, for either dtype;
    the real ones pass."""

    def writes_nothing(*args: object) -> None:
        return None

    assert "disagrees" in _kernels.gemm_check((writes_nothing, writes_nothing))
    gemms = _kernels.find_cblas_gemms()
    if gemms is not None:
        assert _kernels.gemm_check(gemms) == ""
        assert "float64" in _kernels.gemm_check((gemms[0], writes_nothing))
