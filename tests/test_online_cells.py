"""bptt.online on every cell and depth (the cell-protocol forms of bptt.online.cellwise).

The reference is ``model.loss_and_grads`` (BPTT, checked against torch autograd elsewhere): with
the weights fixed, Σ_t grads_t of RTRL (and of SnAp where its pattern holds the influence) must
equal it; UORO and KF-RTRL must equal it in expectation. The Elman closed forms (the fast
paths) are compared with the generic forms on the same model and data.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from bptt import online
from bptt.cells import CELLS as CELL_REGISTRY
from bptt.cells import Cell, StepArgs, get_cell
from bptt.model import RNN, ElmanRNN
from bptt.online.cellwise import (
    CellDenseSnAp,
    CellRTRL,
    CellSnAp,
    CellUORO,
    snap_patterns,
)

CELLS = ("elman", "gru", "lstm")
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


def _h0(rng, model, B):
    """A random initial state in the model's public layout (a tuple (h, c) for the LSTM)."""
    shape = (B, model.hidden_size) if model.simple else (model.num_layers, B, model.hidden_size)
    parts = [rng.normal(size=shape) * 0.5 for _ in range(model.state_parts)]
    return tuple(parts) if model.state_parts > 1 else parts[0]


def _add(a, b):
    return tuple(p + q for p, q in zip(a, b, strict=True)) if isinstance(a, tuple) else a + b


def _sum_steps(alg, x, y, mask, h0=None):
    """Σ_t loss_t, Σ_t grads_t (dict) and Σ_t grads_t.h0, step by step."""
    alg.reset(h0)
    loss, total, h0_total = 0.0, None, None
    for t in range(x.shape[0]):
        loss_t, g = alg.step(x[t], y[t], None if mask is None else mask[t])
        loss += loss_t
        if total is None:
            total = {k: v.copy() for k, v in g.items()}
            h0_total = g.h0
        else:
            for k in total:
                total[k] += g[k]
            h0_total = _add(h0_total, g.h0)
    return loss, total, h0_total


def _rel_err(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in b)


def _h0_close(a, b, tol):
    """dL/dh_0 in the model's layout: one array, or a tuple (h, c) for the LSTM."""
    a_parts = a if isinstance(a, tuple) else (a,)
    b_parts = b if isinstance(b, tuple) else (b,)
    for p, q in zip(a_parts, b_parts, strict=True):
        np.testing.assert_allclose(p, q, rtol=tol, atol=1e-13)


def _random_case(seed, cell=None, layers=None):
    rng = np.random.default_rng(seed)
    cell = cell or CELLS[seed % 3]
    layers = layers or 1 + (seed // 3) % 3
    H, I, O = (int(v) for v in rng.integers(2, 5, size=3))
    T, B = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    head = HEADS[(seed // 9) % 3]
    ids, masked, with_h0 = (bool(v) for v in rng.integers(2, size=3))
    model = RNN(I, H, O, cell=cell, num_layers=layers, output=head, seed=seed)
    x, y, mask = _data(rng, I, O, T, B, ids, head, masked)
    h0 = _h0(rng, model, B) if with_h0 else None
    return model, x, y, mask, h0, B


# -- the cell protocol's new pieces ------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("ids", [False, True])
def test_param_jacobian_override_equals_the_generic_jvp_form(name: str, ids: bool) -> None:
    """Each cell's sparse Ī (closed form) = the base class's P pushforwards of jvp_params."""
    rng = np.random.default_rng(1)
    I, H, B = 3, 4, 2
    cell = get_cell(name)(I, H)
    p = cell.init_params(rng, np.float64)
    x = rng.integers(0, I, size=B) if ids else rng.normal(size=(B, I))
    s_prev = rng.normal(size=(B, cell.state_size)) * 0.5
    at = StepArgs(x=x, s_prev=s_prev, s=cell.step(p, x, s_prev))
    fast = cell.param_jacobian(p, at)
    generic = Cell.param_jacobian(cell, p, at)
    assert fast.rows.shape[0] < generic.rows.shape[0]  # the override is the sparse form
    np.testing.assert_allclose(
        fast.dense(cell.state_size), generic.dense(cell.state_size), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("name", sorted(CELL_REGISTRY))
def test_input_jacobian_against_finite_differences(name: str) -> None:
    rng = np.random.default_rng(2)
    I, H, B = 3, 4, 2
    cell = get_cell(name)(I, H)
    p = cell.init_params(rng, np.float64)
    x, s_prev = rng.normal(size=(B, I)), rng.normal(size=(B, cell.state_size)) * 0.5
    at = StepArgs(x=x, s_prev=s_prev, s=cell.step(p, x, s_prev))
    K = cell.input_jacobian(p, at)  # (B, S, I)
    eps = 1e-6
    fd = np.stack(
        [
            (cell.step(p, x + eps * e, s_prev) - cell.step(p, x - eps * e, s_prev)) / (2 * eps)
            for e in np.eye(I)
        ],
        axis=2,
    )
    np.testing.assert_allclose(K, fd, rtol=1e-7, atol=1e-9)
    u = rng.normal(size=(B, cell.state_size))
    np.testing.assert_allclose(cell.vjp_input(p, at, u), np.einsum("bs,bsi->bi", u, K), atol=1e-14)


# -- RTRL: exact on every cell and depth --------------------------------------------------------


@pytest.mark.parametrize("seed", range(27))
def test_rtrl_sum_equals_bptt_on_every_cell_and_depth(seed: int) -> None:
    """GRU/LSTM/Elman × 1–3 layers × heads, ids/dense, masks, h0: Σ_t grads_t = BPTT."""
    model, x, y, mask, h0, B = _random_case(seed)
    loss, ref = model.loss_and_grads(x, y, h0, mask)
    alg = online.make("rtrl", model, batch=B, fast=False)
    assert isinstance(alg, CellRTRL)
    got_loss, got, got_h0 = _sum_steps(alg, x, y, mask, h0)
    assert got_loss == pytest.approx(loss, rel=1e-12, abs=1e-14)
    assert list(got) == list(ref)
    assert _rel_err(got, ref) < 1e-9
    _h0_close(got_h0, ref.h0, 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_rtrl_sum_equals_bptt_on_every_registered_cell(seed: int) -> None:
    """Every cell in the registry (the GRU with the reset gate before the product too), 1–2
    layers: Σ_t grads_t = BPTT, through the generic cell protocol alone."""
    names = sorted(set(CELL_REGISTRY) - set(CELLS))
    for cell in names:
        model, x, y, mask, h0, B = _random_case(seed, cell=cell, layers=1 + seed % 2)
        loss, ref = model.loss_and_grads(x, y, h0, mask)
        got_loss, got, got_h0 = _sum_steps(online.make("rtrl", model, batch=B), x, y, mask, h0)
        assert got_loss == pytest.approx(loss, rel=1e-12, abs=1e-14)
        assert _rel_err(got, ref) < 1e-9, cell
        _h0_close(got_h0, ref.h0, 1e-9)


def test_kf_rtrl_refuses_the_reset_before_gru_whose_immediate_jacobian_is_no_kronecker() -> None:
    model = RNN(3, 4, 2, cell="gru_reset_before", seed=0)
    with pytest.raises(ValueError, match=r"kf-rtrl.*do not read one ĥ_t"):
        online.make("kf-rtrl", model)


@pytest.mark.parametrize(("cell", "layers"), [("gru", 1), ("lstm", 2), ("elman", 3)])
def test_make_picks_the_cell_form_for_gated_and_stacked_models(cell: str, layers: int) -> None:
    model = RNN(3, 4, 2, cell=cell, num_layers=layers)
    assert isinstance(online.make("rtrl", model), CellRTRL)
    assert isinstance(online.make("snap-1", model), CellSnAp)
    assert isinstance(online.make("snap-2", model), CellDenseSnAp)  # auto: a full pattern
    assert isinstance(online.make("snap-2", model, storage="sparse"), CellSnAp)
    assert isinstance(online.make("uoro", model), CellUORO)
    assert isinstance(online.make("rtrl", ElmanRNN(3, 4, 2)), online.RTRL)  # the fast path


# -- the fast paths against the generic forms ----------------------------------------------------

FAST_CASES = [
    ("rtrl", {}),
    ("snap-1", {}),
    ("snap-2", {"storage": "dense"}),
    ("snap-2", {"storage": "sparse"}),
    ("uoro", {}),
    ("kf-rtrl", {}),
]


@pytest.mark.parametrize(("name", "opts"), FAST_CASES, ids=[f"{n}{o}" for n, o in FAST_CASES])
@pytest.mark.parametrize("seed", range(3))
def test_elman_fast_path_equals_the_generic_form(name: str, opts: dict, seed: int) -> None:
    """Per-step losses and gradients (h0 included) of the closed form = the cell-protocol form,
    the same random signs for UORO and KF-RTRL; on a sparse W for SnAp-2."""
    rng = np.random.default_rng(seed)
    H, I, O, T, B = 5, 3, 2, 6, 3
    model = ElmanRNN(I, H, O, hidden_activation=("tanh", "sigmoid", "relu")[seed], seed=seed)
    if seed == 2:
        model.params["b_h"] += 0.3
    if name == "snap-2":
        model.set_recurrent_mask(rng.uniform(size=(H, H)) < 0.3)
    x, y, mask = _data(rng, I, O, T, B, seed % 2 == 0, "softmax", True)
    h0 = rng.normal(size=(B, H)) * 0.5
    fast = online.make(name, model, batch=B, seed=4, **opts)
    generic = online.make(name, model, batch=B, seed=4, fast=False, **opts)
    assert type(fast).__module__ != type(generic).__module__
    fast.reset(h0)
    generic.reset(h0)
    for t in range(T):
        lf, gf = fast.step(x[t], y[t], mask[t])
        lg, gg = generic.step(x[t], y[t], mask[t])
        assert lf == pytest.approx(lg, rel=1e-13, abs=1e-15)
        for k in gf:
            np.testing.assert_allclose(gg[k], gf[k], rtol=1e-10, atol=1e-13, err_msg=k)
        np.testing.assert_allclose(gg.h0, gf.h0, rtol=1e-10, atol=1e-13)


# -- SnAp ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize(("cell", "layers"), [("gru", 1), ("lstm", 1), ("gru", 2), ("lstm", 2)])
def test_snap_n_with_a_full_pattern_equals_rtrl_on_gated_cells(
    cell: str, layers: int, storage: str
) -> None:
    rng = np.random.default_rng(layers)
    model = RNN(3, 4, 2, cell=cell, num_layers=layers, seed=3)
    B = 2
    x, y, mask = _data(rng, 3, 2, 6, B, False, "softmax", True)
    h0 = _h0(rng, model, B)
    n = 2  # a dense W: P_2 is full, P_1 is not
    assert all(p.all() for p in snap_patterns(model, n))
    assert not all(p.all() for p in snap_patterns(model, n - 1))
    _, ref, ref_h0 = _sum_steps(online.make("rtrl", model, batch=B), x, y, mask, h0)
    alg = online.make(f"snap-{n}", model, batch=B, storage=storage)
    _, got, got_h0 = _sum_steps(alg, x, y, mask, h0)
    assert _rel_err(got, ref) < 1e-10
    _h0_close(got_h0, ref_h0, 1e-10)
    _, bptt = model.loss_and_grads(x, y, h0, mask)
    assert _rel_err(got, bptt) < 1e-9


@pytest.mark.parametrize("cell", CELLS)
def test_snap1_with_diagonal_recurrence_is_exact(cell: str) -> None:
    """W with every (H, H) block diagonal: the influence stays on the units each parameter
    drives, so SnAp-1 = BPTT (dL/dh_0 included); with the dense W it differs."""
    rng = np.random.default_rng(5)
    H, B = 4, 2
    model = RNN(3, H, 2, cell=cell, seed=2)
    x, y, mask = _data(rng, 3, 2, 6, B, True, "softmax", True)
    h0 = _h0(rng, model, B)
    _, dense_ref = model.loss_and_grads(x, y, h0, mask)
    _, dense_got, _ = _sum_steps(online.make("snap-1", model, batch=B, fast=False), x, y, mask, h0)
    assert _rel_err(dense_got, dense_ref) > 1e-3
    W = model.params["W"]
    W *= np.tile(np.eye(H), (W.shape[0] // H, 1))
    _, ref = model.loss_and_grads(x, y, h0, mask)
    alg = online.make("snap-1", model, batch=B, fast=False)
    assert isinstance(alg, CellSnAp)
    _, got, got_h0 = _sum_steps(alg, x, y, mask, h0)
    assert _rel_err(got, ref) < 1e-10
    _h0_close(got_h0, ref.h0, 1e-10)


@pytest.mark.parametrize(
    ("cell", "layers", "n"), [("lstm", 1, 1), ("gru", 2, 1), ("lstm", 2, 1), ("elman", 2, 2)]
)
def test_sparse_snap_storage_equals_the_dense_masked_influence(
    cell: str, layers: int, n: int
) -> None:
    """On a partial pattern (SnAp-1; SnAp-2 on a ring-shaped Elman W, 2 layers) the sparse storage
    carries exactly the dense masked influence, and both differ from RTRL."""
    rng = np.random.default_rng(n + layers)
    H, B = 5, 2
    model = RNN(3, H, 2, cell=cell, num_layers=layers, output="identity", seed=4)
    if cell == "elman":
        model.set_recurrent_mask(np.roll(np.eye(H), 1, axis=0))  # a ring: k ← k − 1
    closure = snap_patterns(model, 4 * H)  # where the exact influence lives
    assert any((p != c).any() for p, c in zip(snap_patterns(model, n), closure, strict=True))
    x, y, mask = _data(rng, 3, 2, 7, B, False, "identity", True)
    h0 = _h0(rng, model, B)
    _, sparse, sparse_h0 = _sum_steps(CellSnAp(model, B, n=n), x, y, mask, h0)
    _, dense, dense_h0 = _sum_steps(CellDenseSnAp(model, B, n=n), x, y, mask, h0)
    assert _rel_err(sparse, dense) < 1e-12
    _h0_close(sparse_h0, dense_h0, 1e-12)
    _, exact, _ = _sum_steps(online.make("rtrl", model, batch=B), x, y, mask, h0)
    assert _rel_err(sparse, exact) > 1e-4


def test_sparse_snap_stores_only_its_pattern_on_a_gru() -> None:
    """SnAp-1 on a GRU keeps one entry per parameter (the unit it drives) and per h_0 entry."""
    model = RNN(3, 6, 2, cell="gru")
    alg = online.make("snap-1", model, batch=2)
    P = sum(int(np.prod(s)) for k, s in model.param_shapes().items() if k not in ("U", "b_y"))
    assert alg.state_dict()["M0"].shape == (2, P + 6)


# -- UORO and KF-RTRL: unbiased ------------------------------------------------------------------


def _estimates(name, model, x, y, runs, per_run):
    """`runs` independent means of `per_run` estimates each (all streams see the same data)."""
    xs, ys = np.repeat(x, per_run, axis=1), np.repeat(y, per_run, axis=1)
    out = []
    for seed in range(runs):
        alg = online.make(name, model, batch=per_run, seed=seed, fast=False)
        _, g, _ = _sum_steps(alg, xs, ys, None)
        out.append(np.concatenate([g[k].ravel() for k in g]))
    return np.array(out)


@pytest.mark.parametrize(
    ("name", "cell", "layers"), [("uoro", "gru", 1), ("uoro", "lstm", 2), ("kf-rtrl", "lstm", 1)]
)
def test_stochastic_estimates_are_unbiased_on_gated_cells(
    name: str, cell: str, layers: int
) -> None:
    """The mean of 4096 estimates lies within 4.5 standard errors of BPTT in every coordinate,
    and single estimates do scatter (the check could fail)."""
    rng = np.random.default_rng(7)
    model = RNN(2, 3, 2, cell=cell, num_layers=layers, seed=5)
    x, y, _ = _data(rng, 2, 2, 4, 1, False, "softmax", False)
    _, ref = model.loss_and_grads(x, y)
    exact = np.concatenate([ref[k].ravel() for k in ref])
    means = _estimates(name, model, x, y, runs=64, per_run=64)  # N = 4096
    mean = means.mean(axis=0)
    se = means.std(axis=0, ddof=1) / np.sqrt(len(means))
    z = np.abs(mean - exact) / np.maximum(se, 1e-15)
    assert z.max() < 4.5, f"largest |z| = {z.max():.2f}"
    assert se.max() > 1e-6


# -- run, state_dict, refusals, memory -----------------------------------------------------------

GENERIC_CASES = [
    ("rtrl", {}),
    ("snap-1", {}),
    ("snap-2", {"storage": "sparse"}),
    ("snap-2", {"storage": "dense"}),
    ("uoro", {}),
]


@pytest.mark.parametrize(("name", "opts"), GENERIC_CASES, ids=[f"{n}{o}" for n, o in GENERIC_CASES])
@pytest.mark.parametrize(("cell", "layers"), [("gru", 2), ("lstm", 1)])
def test_run_equals_repeated_steps_on_gated_models(
    name: str, opts: dict, cell: str, layers: int
) -> None:
    rng = np.random.default_rng(3)
    model = RNN(3, 4, 2, cell=cell, num_layers=layers, seed=1)
    B, T = 2, 7
    x, y, mask = _data(rng, 3, 2, T, B, True, "softmax", True)
    h0 = _h0(rng, model, B)
    a = online.make(name, model, batch=B, seed=2, **opts)
    b = online.make(name, model, batch=B, seed=2, **opts)
    a.reset(h0)
    b.reset(h0)
    steps = [a.step(x[t], y[t], mask[t]) for t in range(T)]
    losses, total = b.run(x, y, mask)
    np.testing.assert_allclose(losses, [s[0] for s in steps], rtol=1e-13)
    for k in total:
        np.testing.assert_allclose(total[k], sum(g[k] for _, g in steps), rtol=1e-12, atol=1e-14)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


RESUME_CASES = [
    (name, opts, cell, layers)
    for name, opts in GENERIC_CASES
    for cell, layers in [("gru", 2), ("lstm", 1)]
] + [("kf-rtrl", {}, "lstm", 1), ("tbptt", {"k": 3}, "gru", 2)]


@pytest.mark.parametrize(("name", "opts", "cell", "layers"), RESUME_CASES, ids=str)
def test_state_dict_resumes_bit_for_bit_on_gated_models(
    name: str, opts: dict, cell: str, layers: int
) -> None:
    rng = np.random.default_rng(9)
    model = RNN(3, 4, 2, cell=cell, num_layers=layers, seed=1, dtype=np.float32)
    x, y, _ = _data(rng, 3, 2, 10, 2, True, "softmax", False)
    a = online.make(name, model, batch=2, seed=11, **opts)
    for t in range(5):
        a.step(x[t], y[t])
    saved = {k: np.array(v) for k, v in a.state_dict().items()}
    rest = [a.step(x[t], y[t]) for t in range(5, 10)]
    b = online.make(name, model, batch=2, seed=999, **opts)
    b.load_state_dict(saved)
    for t, (la, ga) in zip(range(5, 10), rest, strict=True):
        lb, gb = b.step(x[t], y[t])
        assert la == lb
        for k in ga:
            assert np.array_equal(ga[k], gb[k]), k
        assert all(np.array_equal(p, q) for p, q in zip(ga.h0, gb.h0, strict=True))
    for k, v in a.state_dict().items():
        assert np.array_equal(b.state_dict()[k], v), k


def test_refusals_say_why() -> None:
    gru = RNN(3, 4, 2, cell="gru")
    with pytest.raises(ValueError, match=r"RFLO .* one leaky Elman layer.*cell='gru'"):
        online.make("rflo", gru)
    with pytest.raises(ValueError, match=r"kf-rtrl.*reset gate"):
        online.make("kf-rtrl", gru)
    with pytest.raises(ValueError, match=r"kf-rtrl.*2 layers"):
        online.make("kf-rtrl", RNN(3, 4, 2, cell="lstm", num_layers=2))
    for name in ("rtrl", "snap-1", "snap-2", "uoro"):
        with pytest.raises(ValueError, match="unidirectional"):
            online.make(name, RNN(3, 4, 2, cell="lstm", bidirectional=True))
    with pytest.raises(ValueError, match="n >= 1"):
        CellSnAp(gru, 1, n=0)
    with pytest.raises(ValueError, match="uoro eps"):
        online.make("uoro", gru, eps=0.0)


MEMORY_CASES = [
    ("rtrl", "gru", 2),
    ("rtrl", "lstm", 1),
    ("snap-1", "lstm", 2),
    ("snap-1", "gru", 1),
    ("snap-2", "gru", 1),
    ("uoro", "gru", 3),
    ("kf-rtrl", "lstm", 1),
    ("rtrl", "elman", 3),
    ("snap-2", "elman", 2),  # sparse W: the sparse storage
    ("tbptt", "gru", 2),
]


@pytest.mark.parametrize(("name", "cell", "layers"), MEMORY_CASES)
def test_carried_bytes_bounds_what_a_step_holds(name: str, cell: str, layers: int) -> None:
    """carried_bytes ≥ the traced peak of building the algorithm and stepping it, and is not
    inflated (within 5x of that peak)."""
    B, I, H = 3, 3, 8
    model = RNN(I, H, 2, cell=cell, num_layers=layers, seed=0)
    if cell == "elman" and name == "snap-2":
        model.set_recurrent_mask(np.roll(np.eye(H), 1, axis=0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, I, size=(4, B)), rng.integers(0, 2, size=(4, B))
    opts = {"k": 4} if name == "tbptt" else {}
    online.make(name, model, batch=B, **opts).run(x, y)  # warm caches outside the trace
    tracemalloc.start()
    try:
        alg = online.make(name, model, batch=B, **opts)
        for t in range(4):
            alg.step(x[t], y[t])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bound = online.carried_bytes(name, model, B, k=4)
    assert peak <= bound
    assert bound < 5 * peak


@pytest.mark.parametrize(
    ("name", "cell", "layers"),
    [*[(n, "lstm", 2) for n in ("rtrl", "snap-1", "snap-2", "uoro")], ("kf-rtrl", "lstm", 1)],
)
def test_float32_flows_through(name: str, cell: str, layers: int) -> None:
    """A float32 model gets float32 gradients, dL/dh_0 and carried state (nothing upcasts)."""
    model = RNN(3, 4, 2, cell=cell, num_layers=layers, dtype=np.float32)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 2, 3)).astype(np.float32), rng.integers(0, 2, size=(3, 2))
    alg = online.make(name, model, batch=2)
    _, grads = alg.run(x, y)
    assert all(v.dtype == np.float32 for v in grads.values())
    assert all(h.dtype == np.float32 for h in grads.h0)
    assert all(v.dtype == np.float32 for k, v in alg.state_dict().items() if k not in ("t", "rng"))


def test_snap1_on_the_reset_before_gru_keeps_its_structural_zeros() -> None:
    """The reset-before GRU declares the dense immediate Jacobian (a reset-gate row reaches
    every unit through W_n (r ⊙ h)); SnAp-1 keeps only its nonzero entries: a z- or n-gate
    row's parameters reach their own unit, a reset-gate row's every unit. So SnAp-1 is an
    approximation there (not RTRL, as it was while every declared row counted), and SnAp-2
    (a full pattern with a dense W) is RTRL again."""
    H, I = 4, 3
    model = RNN(I, H, 2, cell="gru_reset_before", seed=3)
    pattern = snap_patterns(model, 1)[0]  # (H, 3H·I + 3H·H + 3H + H)
    for name, width in (("V", I), ("W", H)):
        start = {"V": 0, "W": 3 * H * I}[name]
        for row in range(3 * H):
            reached = pattern[:, start + row * width : start + (row + 1) * width]
            if row < H:  # r: every unit
                assert reached.all(), (name, row)
            else:  # z, n: the row's own unit only
                unit = row % H
                assert reached[unit].all() and not np.delete(reached, unit, axis=0).any()
    rng = np.random.default_rng(5)
    B = 2
    x, y, mask = _data(rng, I, 2, 6, B, False, "softmax", True)
    h0 = _h0(rng, model, B)
    _, ref, _ = _sum_steps(online.make("rtrl", model, batch=B), x, y, mask, h0)
    _, snap1, _ = _sum_steps(online.make("snap-1", model, batch=B), x, y, mask, h0)
    _, snap2, _ = _sum_steps(online.make("snap-2", model, batch=B), x, y, mask, h0)
    assert _rel_err(snap1, ref) > 1e-3  # an approximation
    assert _rel_err(snap2, ref) < 1e-10
