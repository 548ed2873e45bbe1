"""bptt.online: each algorithm against the exact BPTT gradient of the same model and data.

The reference is ``model.loss_and_grads`` (itself checked against torch autograd and finite
differences elsewhere): with the weights fixed, Σ_t grads_t of RTRL (and of SnAp or online
TBPTT where they are exact) must equal it, and UORO / KF-RTRL must equal it in expectation.
"""

from __future__ import annotations

import numpy as np
import pytest

from bptt import online
from bptt.model import RNN, ElmanRNN
from bptt.params import Gradients

ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")
HEADS = ("softmax", "sigmoid", "identity")


def _data(rng, I, O, T, B, ids, head, masked):
    x = rng.integers(0, I, size=(T, B)) if ids else rng.normal(size=(T, B, I))
    if head == "softmax":
        y = rng.integers(0, O, size=(T, B))
    elif head == "sigmoid":
        y = rng.uniform(size=(T, B, O))
    else:
        y = rng.normal(size=(T, B, O))
    mask = (rng.uniform(size=(T, B)) > 0.3).astype(np.float64) if masked else None
    return x, y, mask


def _run(alg, x, y, mask, h0=None):
    """Σ_t loss_t and Σ_t grads_t (h0 included) over a sequence."""
    alg.reset(h0)
    total_loss, total = 0.0, None
    for t in range(x.shape[0]):
        loss, g = alg.step(x[t], y[t], None if mask is None else mask[t])
        total_loss += loss
        if total is None:
            total = Gradients({k: v.copy() for k, v in g.items()}, h0=np.array(g.h0))
        else:
            for k in total:
                total[k] += g[k]
            total.h0 += g.h0
    return total_loss, total


def _rel_err(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in b)


def _random_case(seed):
    rng = np.random.default_rng(seed)
    H, I, O = (int(v) for v in rng.integers(2, 6, size=3))
    T, B = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    act = ACTIVATIONS[seed % 4]
    head = HEADS[(seed // 4) % 3]
    ids, masked, with_h0 = bool(rng.integers(2)), bool(rng.integers(2)), bool(rng.integers(2))
    model = ElmanRNN(I, H, O, hidden_activation=act, output=head, seed=seed)
    if act == "relu":  # keep some units active with a positive bias
        model.params["b_h"] += 0.3
    x, y, mask = _data(rng, I, O, T, B, ids, head, masked)
    h0 = rng.normal(size=(B, H)) * 0.5 if with_h0 else None
    return model, x, y, mask, h0, B


@pytest.mark.parametrize("seed", range(24))
def test_rtrl_sum_equals_bptt(seed: int) -> None:
    """Every activation × head, ids/dense, h0, masks: Σ_t grads_t = BPTT to 1e-9 relative."""
    model, x, y, mask, h0, B = _random_case(seed)
    loss, ref = model.loss_and_grads(x, y, h0, mask)
    got_loss, got = _run(online.make("rtrl", model, batch=B), x, y, mask, h0)
    assert got_loss == pytest.approx(loss, rel=1e-12, abs=1e-14)
    assert list(got) == list(ref)
    assert _rel_err(got, ref) < 1e-9
    np.testing.assert_allclose(got.h0, ref.h0, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("seed", range(6))
def test_online_tbptt_with_k_at_least_T_equals_bptt(seed: int) -> None:
    model, x, y, mask, h0, B = _random_case(seed)
    T = x.shape[0]
    loss, ref = model.loss_and_grads(x, y, h0, mask)
    got_loss, got = _run(online.make("tbptt", model, batch=B, k=T + seed % 2), x, y, mask, h0)
    assert got_loss == pytest.approx(loss, rel=1e-12, abs=1e-14)
    assert _rel_err(got, ref) < 1e-9
    np.testing.assert_allclose(got.h0, ref.h0, rtol=1e-9, atol=1e-13)


def test_online_tbptt_runs_a_two_layer_model_exactly() -> None:
    rng = np.random.default_rng(3)
    model = RNN(3, 4, 2, num_layers=2, output="identity", seed=1)
    x, y, _ = _data(rng, 3, 2, 6, 2, False, "identity", False)
    loss, ref = model.loss_and_grads(x, y)
    got_loss, got = _run(online.make("tbptt", model, batch=2, k=6), x, y, None)
    assert got_loss == pytest.approx(loss, rel=1e-12)
    assert _rel_err(got, ref) < 1e-9


def test_online_tbptt_short_window_is_truncated() -> None:
    """k < T gives a different (truncated) gradient: the exactness test can fail."""
    model, *_, B = _random_case(5)
    rng = np.random.default_rng(0)
    x, y, _ = _data(rng, model.input_size, model.output_size, 8, B, False, model.output, False)
    _, ref = model.loss_and_grads(x, y)
    _, got = _run(online.make("tbptt", model, batch=B, k=2), x, y, None)
    assert _rel_err(got, ref) > 1e-3


def test_snap1_with_diagonal_w_equals_rtrl() -> None:
    rng = np.random.default_rng(1)
    model = ElmanRNN(3, 5, 2, output="softmax", seed=2)
    model.set_recurrent_mask(np.eye(5, dtype=bool))
    x, y, mask = _data(rng, 3, 2, 9, 3, False, "softmax", True)
    _, ref = _run(online.make("rtrl", model, batch=3), x, y, mask)
    _, got = _run(online.make("snap-1", model, batch=3), x, y, mask)
    _, bptt = model.loss_and_grads(x, y, None, mask)
    assert _rel_err(got, ref) < 1e-12
    assert _rel_err(got, bptt) < 1e-9


def test_snap1_with_dense_w_is_an_approximation() -> None:
    rng = np.random.default_rng(1)
    model = ElmanRNN(3, 5, 2, output="softmax", seed=2)
    x, y, _ = _data(rng, 3, 2, 9, 3, False, "softmax", False)
    _, ref = _run(online.make("rtrl", model, batch=3), x, y, None)
    _, got = _run(online.make("snap-1", model, batch=3), x, y, None)
    assert _rel_err(got, ref) > 1e-3


def test_snap_n_equals_rtrl_when_its_pattern_covers_the_influence() -> None:
    """Dense W: SnAp-2 covers everything. A ring W (k ← k−1): SnAp-H covers everything, while
    SnAp-2 does not (and differs)."""
    rng = np.random.default_rng(4)
    H = 5
    model = ElmanRNN(2, H, 3, output="identity", seed=3)
    x, y, _ = _data(rng, 2, 3, 8, 2, False, "identity", False)
    _, ref = _run(online.make("rtrl", model, batch=2), x, y, None)
    _, got = _run(online.make("snap-2", model, batch=2), x, y, None)
    assert _rel_err(got, ref) < 1e-12

    ring = np.roll(np.eye(H, dtype=bool), 1, axis=0)  # W_{k, k−1} ≠ 0 only
    model.set_recurrent_mask(ring)
    assert online.snap_pattern(ring, H).all() and not online.snap_pattern(ring, 2).all()
    _, ref = _run(online.make("rtrl", model, batch=2), x, y, None)
    _, full = _run(online.make(f"snap-{H}", model, batch=2), x, y, None)
    _, part = _run(online.make("snap-2", model, batch=2), x, y, None)
    assert _rel_err(full, ref) < 1e-12
    assert _rel_err(part, ref) > 1e-3


def _estimates(name: str, model, x, y, runs: int, per_run: int) -> np.ndarray:
    """`runs` independent means of `per_run` estimates each: (runs, P) flat vectors.

    All `per_run` streams see the same sequence, so grads_t (which averages over streams) is
    the mean of `per_run` independent estimates of the one-stream gradient."""
    xs = np.repeat(x, per_run, axis=1)
    ys = np.repeat(y, per_run, axis=1)
    out = []
    for seed in range(runs):
        _, g = _run(online.make(name, model, batch=per_run, seed=seed), xs, ys, None)
        out.append(np.concatenate([g[k].ravel() for k in g]))
    return np.array(out)


@pytest.mark.parametrize("name", ["uoro", "kf-rtrl"])
def test_stochastic_estimates_are_unbiased(name: str) -> None:
    rng = np.random.default_rng(7)
    model = ElmanRNN(2, 3, 2, output="softmax", seed=5)
    x, y, _ = _data(rng, 2, 2, 5, 1, False, "softmax", False)
    _, ref = model.loss_and_grads(x, y)
    exact = np.concatenate([ref[k].ravel() for k in ref])
    means = _estimates(name, model, x, y, runs=64, per_run=64)  # N = 4096 estimates
    mean = means.mean(axis=0)
    se = means.std(axis=0, ddof=1) / np.sqrt(len(means))
    z = np.abs(mean - exact) / np.maximum(se, 1e-15)
    assert z.max() < 4.5, f"largest |z| = {z.max():.2f}"
    # not a trivially exact estimator: single estimates scatter around the truth
    assert se.max() > 1e-6
    # the error of the mean shrinks as 1/√N: 16x the samples, about 1/4 of the error
    small = np.linalg.norm(means[:4].mean(axis=0) - exact)  # N = 256
    large = np.linalg.norm(mean - exact)  # N = 4096
    spread = np.sqrt(np.sum(means.var(axis=0, ddof=1)))  # E‖error‖ at one run's N = 64
    assert small == pytest.approx(spread / 2, rel=0.75)
    assert large == pytest.approx(spread / 8, rel=0.75)


def test_rflo_symmetric_memoryless_is_one_step_truncation() -> None:
    """RFLO with α = 1 and symmetric feedback is TBPTT with k = 1 (one step of credit)."""
    rng = np.random.default_rng(2)
    model = ElmanRNN(3, 4, 2, output="softmax", seed=1)
    x, y, mask = _data(rng, 3, 2, 6, 2, True, "softmax", True)
    _, ref = _run(online.make("tbptt", model, batch=2, k=1), x, y, mask)
    _, got = _run(online.make("rflo", model, batch=2, feedback="symmetric"), x, y, mask)
    assert _rel_err(got, ref) < 1e-12


@pytest.mark.parametrize("name", online.ALGORITHMS)
def test_state_dict_resumes_bit_for_bit(name: str) -> None:
    rng = np.random.default_rng(9)
    model = ElmanRNN(3, 4, 2, output="softmax", seed=1, dtype=np.float32)
    x, y, _ = _data(rng, 3, 2, 10, 2, True, "softmax", False)
    opts = {"k": 3} if name == "tbptt" else {}
    a = online.make(name, model, batch=2, seed=11, **opts)
    for t in range(5):
        a.step(x[t], y[t])
    saved = {k: np.array(v) for k, v in a.state_dict().items()}
    rest = [a.step(x[t], y[t]) for t in range(5, 10)]
    b = online.make(name, model, batch=2, seed=999, **opts)
    b.load_state_dict(saved)
    again = [b.step(x[t], y[t]) for t in range(5, 10)]
    for (la, ga), (lb, gb) in zip(rest, again, strict=True):
        assert la == lb
        for k in ga:
            assert np.array_equal(ga[k], gb[k]), k


def test_generic_tbptt_state_dict_resumes_bit_for_bit() -> None:
    """The window-rerunning path (any cell and depth) saves its buffer and carried state."""
    rng = np.random.default_rng(9)
    model = RNN(3, 4, 2, num_layers=2, output="softmax", seed=1)
    x, y, _ = _data(rng, 3, 2, 10, 2, True, "softmax", False)
    a = online.make("tbptt", model, batch=2, k=3)
    for t in range(5):
        a.step(x[t], y[t])
    saved = {k: np.array(v) for k, v in a.state_dict().items()}
    rest = [a.step(x[t], y[t]) for t in range(5, 10)]
    b = online.make("tbptt", model, batch=2, k=3)
    b.load_state_dict(saved)
    for t, (la, ga) in zip(range(5, 10), rest, strict=True):
        lb, gb = b.step(x[t], y[t])
        assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)


def test_rng_state_round_trip() -> None:
    rng = np.random.default_rng(123)
    rng.random(7)
    copy = online.rng_from_array(online.rng_to_array(rng))
    assert np.array_equal(rng.random(5), copy.random(5))


def test_bad_input_names_the_argument() -> None:
    model = ElmanRNN(3, 4, 2)
    with pytest.raises(ValueError, match="online algorithm must be one of"):
        online.make("bogus", model)
    with pytest.raises(ValueError, match=r"RFLO .* is defined for one leaky Elman layer"):
        online.make("rflo", RNN(3, 4, 2, num_layers=2))
    with pytest.raises(ValueError, match="unidirectional"):
        online.make("rtrl", RNN(3, 4, 2, bidirectional=True))
    with pytest.raises(ValueError, match="unidirectional"):
        online.make("tbptt", RNN(3, 4, 2, bidirectional=True))
    alg = online.make("rtrl", model, batch=2)
    with pytest.raises(ValueError, match="x_t must be one step for B=2"):
        alg.step(np.zeros((3, 3)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="mask must have shape"):
        alg.step(np.zeros((2, 3)), np.zeros(2, dtype=int), np.ones(3))
    with pytest.raises(ValueError, match="y must have shape"):
        alg.step(np.zeros((2, 3)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="rflo alpha"):
        online.make("rflo", model, alpha=0.0)
    with pytest.raises(KeyError, match="lacks"):
        alg.load_state_dict({"t": np.array(0)})


def test_recurrent_mask_is_respected_by_bptt_and_online() -> None:
    rng = np.random.default_rng(0)
    model = ElmanRNN(3, 6, 2, output="softmax", seed=0)
    mask = rng.uniform(size=(6, 6)) < 0.4
    model.set_recurrent_mask(mask)
    assert np.all(model.params["W"][~mask] == 0)
    x, y, _ = _data(rng, 3, 2, 7, 2, False, "softmax", False)
    _, ref = model.loss_and_grads(x, y)
    assert np.all(ref["W"][~mask] == 0) and np.any(ref["W"][mask] != 0)
    for name in ("rtrl", "uoro", "snap-1", "snap-2", "kf-rtrl", "rflo"):
        _, got = _run(online.make(name, model, batch=2), x, y, None)
        assert np.all(got["W"][~mask] == 0), name
    _, exact = _run(online.make("rtrl", model, batch=2), x, y, None)
    assert _rel_err(exact, ref) < 1e-9
    with pytest.raises(ValueError, match="mask must be"):
        model.set_recurrent_mask(np.ones((5, 5)))


def _snap_literal(model, x, y, mask, h0, n):
    """SnAp-n as the paper writes it, one dense (B, H, H·Q + H) influence masked by P_n each
    step, with J_t = diag(f') W formed explicitly: Σ_t of (dΘ_t, dL_t/dh_0) (an independent
    reference for both storages)."""
    T, B = x.shape[:2]
    H, I = model.hidden_size, model.input_size
    Q = I + H + 1
    p = model.params
    w_nz = np.ones((H, H), bool) if model.w_mask is None else model.w_mask
    P = online.snap_pattern(w_nz, n)
    keep = np.concatenate([np.kron(P, np.ones((1, Q))), P], axis=1)  # (H, H·Q + H)
    M = np.zeros((B, H, H * Q + H))
    M[:, :, H * Q :] = np.eye(H)
    h = np.zeros((B, H)) if h0 is None else np.array(h0)
    d_theta, d_h0 = np.zeros((H, Q)), np.zeros((B, H))
    for t in range(T):
        xv = np.eye(I)[x[t]] if x.ndim == 2 else x[t]  # (B, I)
        hhat = np.concatenate([xv, h, np.ones((B, 1))], axis=1)  # (B, Q)
        h = model.layers[0].cell.activation(xv @ p["V"].T + h @ p["W"].T + p["b_h"])
        fp = model.layers[0].cell.activation.grad_from_output(h)
        J = fp[:, :, None] * p["W"]  # (B, H, H)
        imm = np.zeros((B, H, H * Q + H))
        for k in range(H):
            imm[:, k, k * Q : (k + 1) * Q] = fp[:, k : k + 1] * hhat
        M = (J @ M + imm) * keep
        z = h @ p["U"].T + p["b_y"]
        w = np.ones(B) / B if mask is None else mask[t] / B
        _, dz = model.head.loss_and_dz(z[None], y[t][None], w[None])
        c = dz[0] @ p["U"]  # (B, H)
        d_theta += np.einsum("bk,bkp->p", c, M[:, :, : H * Q]).reshape(H, Q)
        d_h0 += np.einsum("bk,bkj->bj", c, M[:, :, H * Q :])
    d_theta[:, I : I + H] *= w_nz  # W's masked entries get no gradient (as in BPTT)
    return d_theta, d_h0


def _theta(g):
    return np.concatenate([g["V"], g["W"], g["b_h"][:, None]], axis=1)


@pytest.fixture(params=["numpy", "numba"])
def kernels(request):
    """Run a test on the NumPy path and on the compiled (Numba) kernels."""
    from bptt import _kernels
    from bptt.online._kernels import compiled

    if request.param == "numba" and compiled() is None:
        pytest.skip("Numba is not installed (the 'fast' extra)")
    with _kernels.backend("numpy" if request.param == "numpy" else "auto"):
        yield request.param


@pytest.mark.parametrize("seed", range(8))
def test_sparse_and_dense_snap_storage_equal_the_literal_masked_influence(
    seed: int, kernels: str
) -> None:
    """Random sparse masks, n = 2, 3, every activation, ids/dense, h0, stream masks: the sparse
    storage (NumPy blocks and the compiled kernel), the dense storage and the literal masked
    dense influence agree to rounding, h0's gradient included."""
    model, x, y, mask, h0, B = _random_case(seed)
    H = model.hidden_size
    rng = np.random.default_rng(100 + seed)
    w_mask = rng.uniform(size=(H, H)) < 0.3
    w_mask[0, 1 % H] = True  # at least one edge
    model.set_recurrent_mask(w_mask)
    n = 2 + seed % 2
    ref_theta, ref_h0 = _snap_literal(model, x, y, mask, h0, n)
    _, sparse = _run(online.make(f"snap-{n}", model, batch=B, storage="sparse"), x, y, mask, h0)
    _, dense = _run(online.make(f"snap-{n}", model, batch=B, storage="dense"), x, y, mask, h0)
    assert isinstance(online.make(f"snap-{n}", model, batch=B, storage="sparse"), online.SnApN)
    scale, scale_h0 = np.abs(ref_theta).max(), max(np.abs(ref_h0).max(), 1.0)
    for got in (sparse, dense):
        np.testing.assert_allclose(_theta(got), ref_theta, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(got.h0, ref_h0, rtol=0, atol=1e-12 * scale_h0)
    np.testing.assert_allclose(_theta(sparse), _theta(dense), rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize("storage", ["sparse", "dense"])
def test_snap_n_with_full_pattern_equals_rtrl_and_bptt_h0_included(
    storage: str, kernels: str
) -> None:
    """A ring W (k ← k−1): SnAp-H's pattern is full, so both storages are exact, dL/dh_0
    included; SnAp-2 on the ring is not."""
    rng = np.random.default_rng(6)
    H, B = 6, 2
    model = ElmanRNN(3, H, 2, output="softmax", seed=4)
    model.set_recurrent_mask(np.roll(np.eye(H, dtype=bool), 1, axis=0))
    x, y, mask = _data(rng, 3, 2, 9, B, True, "softmax", True)
    h0 = rng.normal(size=(B, H)) * 0.5
    _, bptt = model.loss_and_grads(x, y, h0, mask)
    _, full = _run(online.make(f"snap-{H}", model, batch=B, storage=storage), x, y, mask, h0)
    _, part = _run(online.make("snap-2", model, batch=B, storage=storage), x, y, mask, h0)
    assert _rel_err(full, bptt) < 1e-9
    np.testing.assert_allclose(full.h0, bptt.h0, rtol=1e-9, atol=1e-13)
    assert _rel_err(part, bptt) > 1e-3
    assert np.abs(part.h0 - bptt.h0).max() > 1e-3 * np.abs(bptt.h0).max()


def test_sparse_snap_with_dense_w_is_rtrl(kernels: str) -> None:
    """Forcing the sparse storage on a dense W (SnAp-2's pattern is then full) gives RTRL."""
    rng = np.random.default_rng(8)
    model = ElmanRNN(2, 5, 3, output="identity", seed=3)
    x, y, _ = _data(rng, 2, 3, 7, 3, False, "identity", False)
    h0 = rng.normal(size=(3, 5))
    _, ref = _run(online.make("rtrl", model, batch=3), x, y, None, h0)
    _, got = _run(online.make("snap-2", model, batch=3, storage="sparse"), x, y, None, h0)
    assert _rel_err(got, ref) < 1e-12
    np.testing.assert_allclose(got.h0, ref.h0, rtol=1e-12, atol=1e-14)


def test_snap1_h0_gradient_with_diagonal_w_is_exact() -> None:
    rng = np.random.default_rng(2)
    model = ElmanRNN(3, 4, 2, output="softmax", seed=2)
    model.set_recurrent_mask(np.eye(4, dtype=bool))
    x, y, mask = _data(rng, 3, 2, 8, 2, True, "softmax", True)
    h0 = rng.normal(size=(2, 4))
    _, ref = model.loss_and_grads(x, y, h0, mask)
    _, got = _run(online.make("snap-1", model, batch=2), x, y, mask, h0)
    np.testing.assert_allclose(got.h0, ref.h0, rtol=1e-9, atol=1e-13)
    assert np.abs(got.h0).max() > 1e-3


def test_sparse_snap_stores_only_its_pattern() -> None:
    """The carried state scales with the pattern (nnz entries of Q + 1), not H²·Q; the memory
    check's count matches what is allocated; auto picks the sparse storage for a sparse W."""
    H, I, B = 40, 3, 2
    model = ElmanRNN(I, H, 2, seed=0)
    rng = np.random.default_rng(0)
    model.set_recurrent_mask(rng.uniform(size=(H, H)) < 0.1)
    alg = online.make("snap-2", model, batch=B)
    assert isinstance(alg, online.SnApN)
    nnz = int(alg.pattern.sum())
    assert nnz < 0.3 * H * H
    Q = I + H + 1
    assert alg.state_dict()["M"].shape == (nnz, B, Q + 1)
    allocated = alg.M.nbytes + alg._next.nbytes + alg._tmp.nbytes
    assert online.carried_bytes("snap-2", model, B) == allocated
    model.set_recurrent_mask(None)
    assert online.carried_bytes("snap-2", model, B) > 3 * allocated  # RTRL's upper bound
    with pytest.raises(ValueError, match="storage"):
        online.make("snap-2", model, storage="csr")


@pytest.mark.parametrize("storage", ["sparse", "dense"])
def test_snap_n_state_dict_resumes_bit_for_bit(storage: str) -> None:
    rng = np.random.default_rng(3)
    model = ElmanRNN(3, 8, 2, output="softmax", seed=1)
    model.set_recurrent_mask(rng.uniform(size=(8, 8)) < 0.25)
    x, y, _ = _data(rng, 3, 2, 10, 2, True, "softmax", False)
    a = online.make("snap-3", model, batch=2, storage=storage)
    for t in range(5):
        a.step(x[t], y[t])
    saved = {k: np.array(v) for k, v in a.state_dict().items()}
    rest = [a.step(x[t], y[t]) for t in range(5, 10)]
    b = online.make("snap-3", model, batch=2, storage=storage)
    b.load_state_dict(saved)
    for t, (la, ga) in zip(range(5, 10), rest, strict=True):
        lb, gb = b.step(x[t], y[t])
        assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga)
        assert np.array_equal(ga.h0, gb.h0)


RUN_CASES = [
    ("rtrl", {}),
    ("uoro", {}),
    ("kf-rtrl", {}),
    ("snap-1", {}),
    ("snap-2", {"storage": "sparse"}),
    ("snap-2", {"storage": "dense"}),
    ("rflo", {}),
    ("rflo", {"alpha": 0.4, "feedback": "symmetric"}),
    ("tbptt", {"k": 4}),
    ("tbptt", {"k": 1}),
]


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(np.abs(b).max(initial=0), 1e-300))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("name", "opts"), RUN_CASES, ids=[f"{n}{o}" for n, o in RUN_CASES])
def test_run_equals_repeated_steps(name: str, opts: dict, seed: int, kernels: str) -> None:
    """``run`` over chunks (cut at 1, 5 and 13 steps, so TBPTT's window and RFLO/SnAp-1's
    traces cross chunk boundaries) gives each step's loss, each chunk's summed gradient
    (h0 included) and the final carried state of step-by-step calls, to rounding; a step after
    the chunks continues identically. On the NumPy path and with the compiled kernels."""
    model, *_ = _random_case(seed + 3)
    rng = np.random.default_rng(50 + seed)
    H, I, O = model.hidden_size, model.input_size, model.output_size
    if seed % 2:
        w_mask = rng.uniform(size=(H, H)) < 0.4
        model.set_recurrent_mask(w_mask)
    B = 1 + seed % 3
    x, y, mask = _data(rng, I, O, 14, B, bool(seed % 2 == 0), model.output, seed < 2)
    h0 = rng.normal(size=(B, H)) * 0.5 if seed != 1 else None
    a = online.make(name, model, batch=B, seed=7, **opts)
    b = online.make(name, model, batch=B, seed=7, **opts)
    a.reset(h0)
    b.reset(h0)
    for lo, hi in ((0, 1), (1, 5), (5, 13)):
        m = None if mask is None else mask[lo:hi]
        losses, total = b.run(x[lo:hi], y[lo:hi], m)
        assert losses.shape == (hi - lo,) and losses.dtype == np.float64
        ref_total = None
        for t in range(lo, hi):
            loss, g = a.step(x[t], y[t], None if mask is None else mask[t])
            assert losses[t - lo] == pytest.approx(loss, rel=1e-10, abs=1e-14)
            if ref_total is None:
                ref_total = Gradients({k: v.copy() for k, v in g.items()}, h0=np.array(g.h0))
            else:
                for k in ref_total:
                    ref_total[k] += g[k]
                ref_total.h0 += g.h0
        assert ref_total is not None and list(total) == list(ref_total)
        for k in ref_total:
            _close(total[k], ref_total[k])
        _close(total.h0, ref_total.h0)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        _close(sb[k], sa[k])
    la, ga = a.step(x[13], y[13])
    lb, gb = b.step(x[13], y[13])
    assert lb == pytest.approx(la, rel=1e-10)
    for k in ga:
        _close(gb[k], ga[k], tol=1e-9)


@pytest.mark.parametrize(("cell", "layers"), [("elman", 2), ("lstm", 1)])
def test_run_on_the_generic_tbptt_path(cell: str, layers: int) -> None:
    """Models other than one Elman layer: run = step by step, h_0's gradient (a pair for the
    LSTM) included, with a window (k = 8 > T) that reaches h_0 throughout."""
    rng = np.random.default_rng(4)
    model = RNN(3, 4, 2, cell=cell, num_layers=layers, output="softmax", seed=1)
    x, y, _ = _data(rng, 3, 2, 6, 2, True, "softmax", False)
    a = online.make("tbptt", model, batch=2, k=8)
    b = online.make("tbptt", model, batch=2, k=8)
    losses, total = b.run(x, y)
    steps = [a.step(x[t], y[t]) for t in range(6)]
    np.testing.assert_allclose(losses, [s[0] for s in steps], rtol=1e-12)
    for k in total:
        _close(total[k], sum(g[k] for _, g in steps), tol=1e-12)
    h0_parts = total.h0 if isinstance(total.h0, tuple) else (total.h0,)
    step_parts = [g.h0 if isinstance(g.h0, tuple) else (g.h0,) for _, g in steps]
    for i, part in enumerate(h0_parts):
        _close(part, sum(p[i] for p in step_parts), tol=1e-12)
        assert np.abs(part).max() > 0
    _, ref = model.loss_and_grads(x, y)  # k ≥ T: the whole sequence's gradient
    assert _rel_err(total, ref) < 1e-9


def test_run_rejects_bad_chunks() -> None:
    alg = online.make("rflo", ElmanRNN(3, 4, 2), batch=2)
    with pytest.raises(ValueError, match="B=2 streams"):
        alg.run(np.zeros((3, 1), dtype=int), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match="at least one step"):
        alg.run(np.zeros((0, 2), dtype=int), np.zeros((0, 2), dtype=int))
    with pytest.raises(ValueError, match="mask must have shape"):
        alg.run(np.zeros((3, 2), dtype=int), np.zeros((3, 2), dtype=int), np.ones((3, 1)))


@pytest.mark.parametrize(("name", "carried"), [("rtrl", "_buf"), ("snap-2", "M"), ("uoro", "b")])
def test_state_is_finite_sees_the_carried_influence(name: str, carried: str) -> None:
    model = ElmanRNN(2, 4, 2, seed=0)
    model.set_recurrent_mask(np.eye(4, dtype=bool) | np.eye(4, k=1, dtype=bool))
    alg = online.make(name, model, batch=2)
    alg.step(np.zeros(2, dtype=int), np.zeros(2, dtype=int))
    assert alg.state_is_finite()
    getattr(alg, carried).flat[-1] = np.nan
    assert not alg.state_is_finite()


@pytest.mark.parametrize(("name", "opts"), RUN_CASES, ids=[f"{n}{o}" for n, o in RUN_CASES])
def test_run_keeps_float32(name: str, opts: dict, kernels: str) -> None:
    """float32 flows through run (compiled loops included): float32 gradients and carried
    state, equal to step by step to float32 rounding."""
    rng = np.random.default_rng(12)
    model = ElmanRNN(3, 5, 2, output="softmax", seed=2, dtype=np.float32)
    model.set_recurrent_mask(rng.uniform(size=(5, 5)) < 0.4)
    x, y, _ = _data(rng, 3, 2, 9, 2, True, "softmax", False)
    a = online.make(name, model, batch=2, seed=3, **opts)
    b = online.make(name, model, batch=2, seed=3, **opts)
    steps = [a.step(x[t], y[t]) for t in range(9)]
    losses, total = b.run(x, y)
    np.testing.assert_allclose(losses, [s[0] for s in steps], rtol=1e-5)
    for k in total:
        assert total[k].dtype == np.float32, k
        ref = sum(g[k].astype(np.float64) for _, g in steps)
        np.testing.assert_allclose(total[k], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    for k, v in b.state_dict().items():
        assert v.dtype == a.state_dict()[k].dtype, k


@pytest.mark.parametrize("name", ["rtrl", "snap-2"])
@pytest.mark.parametrize("block_steps", [1, 3, 100])
def test_rtrl_chunk_in_blocks_equals_steps(name: str, block_steps: int, monkeypatch) -> None:
    """RTRL's chunk (BPTT inside it, one influence product; SnAp-2 on a dense W is RTRL and
    takes the same path) gives the step-by-step losses, summed gradients, h0's gradient and
    carried [M | Z], also when its A_s are summed in blocks of 1 or 3 steps."""
    from bptt.online import rtrl

    rng = np.random.default_rng(block_steps)
    B, I, H, O, T = 2, 3, 5, 4, 10
    model = ElmanRNN(I, H, O, output="softmax", seed=5, dtype=np.float64)
    monkeypatch.setattr(rtrl, "_BLOCK_BYTES", block_steps * B * H * H * 8)
    x, y, mask = _data(rng, I, O, T, B, True, "softmax", True)
    h0 = rng.normal(size=(B, H))
    opts = {"storage": "dense"} if name == "snap-2" else {}
    a = online.make(name, model, batch=B, **opts)
    b = online.make(name, model, batch=B, **opts)
    assert getattr(b, "full", True)  # SnAp-2's pattern on a dense W keeps every entry
    a.reset(h0)
    b.reset(h0)
    for t in range(2):  # a nonzero influence at the chunk's start
        a.step(x[t], y[t], mask[t])
        b.step(x[t], y[t], mask[t])
    losses, total = b.run(x[2:], y[2:], mask[2:])
    steps = [a.step(x[t], y[t], mask[t]) for t in range(2, T)]
    np.testing.assert_allclose(losses, [s[0] for s in steps], rtol=1e-12)
    for k in total:
        _close(total[k], sum(g[k] for _, g in steps))
    _close(total.h0, sum(g.h0 for _, g in steps))
    for k, v in a.state_dict().items():
        _close(b.state_dict()[k], v)


@pytest.mark.parametrize("name", ["rtrl", "snap-2"])
def test_memory_check_covers_what_an_rtrl_chunk_allocates(name: str) -> None:
    """carried_bytes bounds the traced peak of building RTRL (or dense SnAp-2) and running a
    chunk through it, beyond the chunk's own (T, B, ·) arrays."""
    import tracemalloc

    B, I, H, T = 2, 3, 24, 40
    model = ElmanRNN(I, H, 2, seed=0)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, I, size=(T, B)), rng.integers(0, 2, size=(T, B))
    online.make(name, model, batch=B).run(x, y)  # compiles and caches outside the trace
    tracemalloc.start()
    try:
        alg = online.make(name, model, batch=B)
        alg.run(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    chunk = T * B * (I + H + 1 + 4 * H + 2) * 8  # ĥ, h, f', c, δ, dz: the chunk's arrays
    assert peak <= online.carried_bytes(name, model, B) + chunk
    blocks = max(online.rtrl._BLOCK_BYTES, B * H * H * 8)  # the bound on A_s's block
    assert peak > (online.carried_bytes(name, model, B) - blocks) / 2  # not inflated
