"""Every registered cell against PyTorch's module in float64, finite differences, checkpointing,
truncated BPTT's brute-force definition and its one-step Jacobian-vector products.

Parametrised over :data:`bptt.cells.CELLS`, so a newly registered cell is covered (and fails
until tests/torch_cells.py knows how its weights map to ``torch.nn``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from batches import max_relative_error, random_targets  # noqa: E402
from bptt import RNN, _kernels  # noqa: E402
from bptt.algorithms.truncated import TruncatedBPTT, tbptt_gradients  # noqa: E402
from bptt.cells import (  # noqa: E402
    CELLS,
    StepArgs,
    _gated_kernels,
)
from torch_cells import (  # noqa: E402
    STEP_MODULES,
    cell_grads_from_torch,
    grads_from_torch,
    load_from_torch,
    torch_from_cell_params,
    torch_module,
)
from torch_reference import step_losses  # noqa: E402

CELL_NAMES = sorted(CELLS)
# as configured (the NumPy loops at these sizes), and where available the batch-sharded
# compiled loops for every step (2 shards)
BACKENDS = ["auto"] + (["sharded"] if _gated_kernels._load() is not None else [])

# (num_layers, bidirectional, head, ids, mask, h0, upstream dh_last)
CONFIGS = [
    (1, False, "softmax", True, True, True, True),
    (1, False, "identity", False, False, False, False),
    (2, True, "sigmoid", False, True, True, True),
    (3, False, "softmax", False, True, True, False),
    (2, False, "identity", True, False, True, True),
    (1, True, "softmax", True, True, False, True),
    (2, True, "identity", True, True, True, False),
]


def _public(model: RNN, arrays: list[np.ndarray]) -> object:
    """(L·D, B, H) arrays (one per state part) in the model's public layout."""
    parts = [a[0] if model.simple else a for a in arrays]
    return tuple(parts) if model.state_parts > 1 else parts[0]


def _as_stack(model: RNN, state: object) -> list[np.ndarray]:
    parts = list(state) if isinstance(state, tuple) else [state]
    return [np.asarray(p)[None] if model.simple else np.asarray(p) for p in parts]


def _torch_run(model, module, head, x, y, mask, h0s, upstream):
    """Loss, logits and gradients through nn.<Cell> + nn.Linear autograd, float64."""
    T, B = x.shape[:2]
    linear = torch.nn.Linear(model.num_directions * model.hidden_size, model.output_size)
    linear = linear.double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(model.params["U"]))
        linear.bias.copy_(torch.tensor(model.params["b_y"]))
    if x.ndim == 2:
        xt = torch.nn.functional.one_hot(torch.as_tensor(x), model.input_size).double()
    else:
        xt = torch.tensor(x)
    states = [torch.tensor(h, requires_grad=True) for h in h0s]
    out, final = module(xt, states[0] if len(states) == 1 else tuple(states))
    z = linear(out)  # (T, B, O)
    yt = torch.as_tensor(y) if head == "softmax" else torch.tensor(y)
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask * 1.0)
    loss = sum((m[t] * step_losses(z[t], yt[t], head)).sum() for t in range(T)) / B
    objective = loss
    finals = list(final) if isinstance(final, tuple) else [final]
    if upstream is not None:
        for f, u in zip(finals, upstream, strict=True):
            objective = objective + (f * torch.tensor(u)).sum()
    objective.backward()
    grads = grads_from_torch(model, module)
    grads["U"], grads["b_y"] = linear.weight.grad.numpy(), linear.bias.grad.numpy()
    return (
        float(loss.detach()),
        z.detach().numpy(),
        [f.detach().numpy() for f in finals],
        grads,
        [s.grad.numpy() for s in states],
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_matches_torch_module_and_linear(cell, config, backend, rng):
    with _kernels.backend(backend):
        _check_against_torch(cell, config, rng)


def _check_against_torch(cell, config, rng):
    L, bi, head, ids, use_mask, use_h0, use_upstream = config
    T, B, I, H, O = (int(v) for v in rng.integers([1, 1, 2, 2, 2], [12, 5, 6, 7, 5]))
    model = RNN(I, H, O, cell=cell, num_layers=L, bidirectional=bi, output=head, seed=1)
    module = torch_module(model, seed=int(rng.integers(1 << 30)))
    with torch.no_grad():  # spread the weights so the gates leave their linear region
        for w in module.parameters():
            w.mul_(2.0)
    load_from_torch(model, module)
    model.params["U"][...] = 2.0 * rng.standard_normal(model.params["U"].shape)
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    y = random_targets(rng, head, T, B, O, np.dtype(np.float64))
    mask = (rng.random((T, B)) < 0.7) if use_mask else None
    if mask is not None:
        mask[-1, 0] = True
    n = L * model.num_directions
    parts = model.state_parts
    h0s = [
        0.5 * rng.standard_normal((n, B, H)) if use_h0 else np.zeros((n, B, H))
        for _ in range(parts)
    ]
    upstream = [rng.standard_normal((n, B, H)) for _ in range(parts)] if use_upstream else None

    ref_loss, ref_z, ref_finals, ref, ref_h0 = _torch_run(
        model, module, head, x, y, mask, h0s, upstream
    )
    h0 = _public(model, h0s) if use_h0 else None
    dh_last = None if upstream is None else _public(model, upstream)
    z, final = model.logits(x, h0)
    np.testing.assert_allclose(z, ref_z, rtol=1e-12, atol=1e-12)
    for got, want in zip(_as_stack(model, final), ref_finals, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    result = model.forward_backward(x, y, h0, mask, dh_last=dh_last)
    assert abs(result.loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert list(result.grads) == list(model.params)
    for name in model.params:
        assert result.grads[name].shape == model.params[name].shape, name
        assert max_relative_error(result.grads[name], ref[name]) < 1e-8, name
    for got, want in zip(_as_stack(model, result.grads.h0), ref_h0, strict=True):
        assert max_relative_error(got, want) < 1e-8, "h0"


def _small_problem(cell, rng, *, L=2, bi=False, T=9, B=3, ids=False, head="identity"):
    I, H, O = 3, 4, 3
    model = RNN(I, H, O, cell=cell, num_layers=L, bidirectional=bi, output=head, seed=3)
    for array in model.params.values():
        array *= 2.0
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    y = random_targets(rng, head, T, B, O, np.dtype(np.float64))
    n = L * model.num_directions
    h0 = _public(model, [0.5 * rng.standard_normal((n, B, H)) for _ in range(model.state_parts)])
    mask = rng.random((T, B)) < 0.8
    return model, x, y, h0, mask


@pytest.mark.parametrize("bi", [False, True])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_directional_finite_differences(cell, bi, rng):
    """⟨∇L, d⟩ against (L(θ + εd) − L(θ − εd)) / 2ε for every parameter and each h0 part."""
    model, x, y, h0, mask = _small_problem(cell, rng, bi=bi, head="softmax")
    _, grads = model.loss_and_grads(x, y, h0, mask)
    eps = 1e-5
    for name, param in model.params.items():
        d = rng.standard_normal(param.shape)
        saved = param.copy()
        param += eps * d
        plus = model.loss(x, y, h0, mask)
        param[...] = saved - eps * d
        minus = model.loss(x, y, h0, mask)
        param[...] = saved
        numeric = (plus - minus) / (2 * eps)
        analytic = float(np.vdot(grads[name], d))
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), name
    h0_parts = list(h0) if isinstance(h0, tuple) else [h0]
    g_parts = list(grads.h0) if isinstance(grads.h0, tuple) else [grads.h0]
    for k, (part, g) in enumerate(zip(h0_parts, g_parts, strict=True)):
        d = rng.standard_normal(part.shape)

        def moved(sign: float, k: int = k, d: np.ndarray = d) -> object:
            shifted = [p + sign * eps * d if j == k else p for j, p in enumerate(h0_parts)]
            return tuple(shifted) if len(shifted) > 1 else shifted[0]

        numeric = (model.loss(x, y, moved(1.0), mask) - model.loss(x, y, moved(-1.0), mask)) / (
            2 * eps
        )
        analytic = float(np.vdot(g, d))
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), f"h0[{k}]"


@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_checkpointed_equals_full(cell, ids, rng):
    model, x, y, h0, mask = _small_problem(cell, rng, T=11, ids=ids, head="softmax")
    n = model.num_layers
    dh_last = _public(
        model, [rng.standard_normal((n, 3, model.hidden_size)) for _ in range(model.state_parts)]
    )
    full = model.forward_backward(x, y, h0, mask, dh_last=dh_last)
    for checkpoint in (True, 1, 4, 10):
        got = model.forward_backward(x, y, h0, mask, dh_last=dh_last, checkpoint=checkpoint)
        assert abs(got.loss - full.loss) <= 1e-12 * abs(full.loss)
        for name in model.params:
            assert max_relative_error(got.grads[name], full.grads[name]) < 1e-12, name
        for a, b in zip(
            _as_stack(model, got.grads.h0), _as_stack(model, full.grads.h0), strict=True
        ):
            assert max_relative_error(a, b) < 1e-12
        for a, b in zip(_as_stack(model, got.h_last), _as_stack(model, full.h_last), strict=True):
            np.testing.assert_array_equal(a, b)


def _torch_cell(model: RNN):
    """nn.RNNCell/GRUCell/LSTMCell with the one-layer model's weights (mapped by hand)."""
    kwargs = {"nonlinearity": model.hidden_activation} if model.cell == "elman" else {}
    step = STEP_MODULES[model.cell](
        model.input_size, model.hidden_size, dtype=torch.float64, **kwargs
    )
    layer = model.layers[0]
    mapped = torch_from_cell_params(model.cell, layer.take(model.params), model.hidden_size)
    with torch.no_grad():
        for key, array in mapped.items():
            getattr(step, key).copy_(torch.tensor(array))
    return step


def _torch_step(model, step, x_t, s_prev):
    """s_t = F(x_t, s_{t-1}) in torch: x_t (B, I) tensor, s_prev (B, S) tensor."""
    H = model.hidden_size
    if model.state_parts == 1:
        return step(x_t, s_prev)
    h, c = step(x_t, (s_prev[:, :H], s_prev[:, H:]))
    return torch.cat([h, c], dim=1)


def _brute_force_tbptt(model, x, y, k1, k2, mask):
    """Σ over update points e of ∂/∂θ Σ_{τ∈(s, e]} L_τ with s_{w} detached at the horizon w.

    As in tests/test_truncation.py, re-run in torch for every update with the model's one cell
    (nn.<Cell>Cell with the weights mapped by hand) and a Linear head.
    """
    T, B = x.shape[:2]
    step = _torch_cell(model)
    U = torch.tensor(model.params["U"], requires_grad=True)
    b_y = torch.tensor(model.params["b_y"], requires_grad=True)
    xt = torch.nn.functional.one_hot(torch.as_tensor(x), model.input_size).double()
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask * 1.0)
    S = model.state_parts * model.hidden_size
    total = 0.0
    for e in range(k1, T + k1, k1):
        e = min(e, T)
        s = (e - 1) // k1 * k1
        w = max(0, s - (k2 - k1))
        state = torch.zeros(B, S, dtype=torch.float64)
        for t in range(e):
            if t == w:
                state = state.detach()
            state = _torch_step(model, step, xt[t], state)
            if t >= s:
                z = state[:, : model.hidden_size] @ U.T + b_y
                lt = torch.nn.functional.cross_entropy(z, torch.as_tensor(y[t]), reduction="none")
                loss = (lt * m[t]).sum() / B
                loss.backward(retain_graph=True)
                total += float(loss.detach())
    arrays = {key: getattr(step, key).grad.numpy() for key in ("weight_ih", "weight_hh")}
    arrays |= {key: getattr(step, key).grad.numpy() for key in ("bias_ih", "bias_hh")}
    grads = cell_grads_from_torch(model.cell, arrays, model.hidden_size)
    grads |= {"U": U.grad.numpy(), "b_y": b_y.grad.numpy()}
    return total, grads


@pytest.mark.parametrize(("k1", "k2"), [(1, 1), (3, 3), (2, 5), (4, 7), (6, 13)])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_tbptt_matches_brute_force(cell, k1, k2, rng):
    T, B, I, H, O = 13, 3, 5, 4, 5
    model = RNN(I, H, O, cell=cell, seed=int(rng.integers(1 << 30)))
    x = rng.integers(0, I, (T, B))
    y = rng.integers(0, O, (T, B))
    mask = rng.random((T, B)) < 0.7
    loss, grads = tbptt_gradients(model, x, y, k1, k2, mask)
    ref_loss, ref = _brute_force_tbptt(model, x, y, k1, k2, mask)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    for name in model.params:
        assert max_relative_error(grads[name], ref[name]) < 1e-8, name


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_tbptt_carried_state_round_trips(cell, rng):
    """The carried state (a tuple for the LSTM) survives state_arrays/load_state_arrays."""
    model = RNN(5, 4, 5, cell=cell, seed=2)
    runner = TruncatedBPTT(model, 3, 5)
    x, y = rng.integers(0, 5, (3, 2)), rng.integers(0, 5, (3, 2))
    runner.step(x, y)
    runner.step(x, y)
    other = TruncatedBPTT(model, 3, 5)
    other.load_state_arrays(runner.state_arrays())
    a, b = runner.step(x, y), other.step(x, y)
    assert a.loss == b.loss
    for name in model.params:
        np.testing.assert_array_equal(a.grads[name], b.grads[name])


# -- one step and its Jacobian-vector products, against torch.func ---------------------------


def _step_point(cell, ids, rng, B=3):
    I, H = 4, 5
    model = RNN(I, H, 2, cell=cell, seed=int(rng.integers(1 << 30)))
    for array in model.params.values():
        array *= 2.0
    layer = model.layers[0]
    p = layer.take(model.params)
    S = layer.cell.state_size
    x = rng.integers(0, I, B) if ids else rng.standard_normal((B, I))
    s_prev = rng.standard_normal((B, S))
    s = layer.cell.step(p, x, s_prev)
    return model, layer.cell, p, StepArgs(x=x, s_prev=s_prev, s=s)


def _functional_step(model, at):
    """(params dict of torch tensors in PyTorch's names, f(params, s_prev) → s_t)."""
    step = _torch_cell(model)
    x = (
        torch.nn.functional.one_hot(torch.as_tensor(at.x), model.input_size).double()
        if at.x.ndim == 1
        else torch.tensor(at.x)
    )
    weights = {k: v.detach().clone() for k, v in step.named_parameters()}

    def f(weights, s_prev):
        if model.state_parts == 1:
            return torch.func.functional_call(step, weights, (x, s_prev))
        H = model.hidden_size
        h, c = torch.func.functional_call(step, weights, (x, (s_prev[:, :H], s_prev[:, H:])))
        return torch.cat([h, c], dim=1)

    return weights, f


@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_step_and_jacobian_products_match_torch(cell, ids, rng):
    model, the_cell, p, at = _step_point(cell, ids, rng)
    H = model.hidden_size
    weights, f = _functional_step(model, at)
    s_prev = torch.tensor(at.s_prev)
    np.testing.assert_allclose(at.s, f(weights, s_prev).detach().numpy(), rtol=1e-12, atol=1e-13)

    # ∂s_t/∂s_{t-1} · v and uᵀ ∂s_t/∂s_{t-1}, and the full Jacobian
    v = rng.standard_normal(at.s_prev.shape)
    u = rng.standard_normal(at.s.shape)
    _, jv = torch.func.jvp(lambda s: f(weights, s), (s_prev,), (torch.tensor(v),))
    np.testing.assert_allclose(the_cell.jvp_state(p, at, v), jv.numpy(), rtol=1e-10, atol=1e-12)
    _, pullback = torch.func.vjp(lambda s: f(weights, s), s_prev)
    (uj,) = pullback(torch.tensor(u))
    np.testing.assert_allclose(the_cell.vjp_state(p, at, u), uj.numpy(), rtol=1e-10, atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda s: f(weights, s), s_prev).numpy()
    per_stream = np.stack([jac[b, :, b, :] for b in range(at.s.shape[0])])  # (B, S, S)
    np.testing.assert_allclose(the_cell.state_jacobian(p, at), per_stream, rtol=1e-10, atol=1e-12)

    # ∂s_t/∂θ · dθ and uᵀ ∂s_t/∂θ
    dp = {name: rng.standard_normal(a.shape) for name, a in p.items()}
    tangents = {k: torch.tensor(a) for k, a in torch_from_cell_params(model.cell, dp, H).items()}
    _, jp = torch.func.jvp(lambda w: f(w, s_prev), (weights,), (tangents,))
    np.testing.assert_allclose(the_cell.jvp_params(p, at, dp), jp.numpy(), rtol=1e-10, atol=1e-12)
    _, pullback_w = torch.func.vjp(lambda w: f(w, s_prev), weights)
    (gw,) = pullback_w(torch.tensor(u))
    ref = cell_grads_from_torch(model.cell, {k: t.numpy() for k, t in gw.items()}, H)
    got = the_cell.vjp_params(p, at, u)
    assert list(got) == list(p)
    for name in p:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_model_step_follows_the_sequence(cell, rng):
    """RNN.step one step at a time gives the logits and state of the whole-sequence forward."""
    model, x, _, h0, _ = _small_problem(cell, rng, T=6)
    z_seq, final_seq = model.logits(x, h0)
    state = h0
    for t in range(x.shape[0]):
        z_t, state = model.step(x[t], state)
        np.testing.assert_allclose(z_t, z_seq[t], rtol=1e-12, atol=1e-13)
    for a, b in zip(_as_stack(model, state), _as_stack(model, final_seq), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_refuse_an_activation_and_a_bad_state(cell):
    with pytest.raises(ValueError, match="fixed nonlinearities"):
        RNN(3, 4, 2, cell=cell, hidden_activation="relu")
    model = RNN(3, 4, 2, cell=cell)
    x = np.zeros((2, 1, 3))
    bad = np.zeros((1, 5))
    with pytest.raises(ValueError, match="h0"):
        model.logits(x, bad if cell == "gru" else (np.zeros((1, 4)), bad))
    if cell == "lstm":
        with pytest.raises(ValueError, match=r"tuple of 2 arrays \(h, c\)"):
            model.logits(x, np.zeros((1, 4)))
