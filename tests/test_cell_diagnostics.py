"""Lag contributions and state-Jacobian products for every cell, through its Jacobian products.

References: the full BPTT gradient (the lags must sum to it), the Elman closed forms in
bptt.diagnostics, and torch autograd of the unrolled steps for ∂s_t/∂s_{t−d}.
"""

from __future__ import annotations

import numpy as np
import pytest

from batches import max_relative_error, random_targets
from bptt import RNN, ElmanRNN, diagnostics
from bptt.cells import CELLS
from bptt.diagnostics.cells import lag_contributions, state_jacobian_norms

CELL_NAMES = sorted(CELLS)


def _problem(cell, rng, T=9, B=3, ids=False, head="softmax"):
    I, H, O = 4, 5, 3
    model = (
        ElmanRNN(I, H, O, output=head, seed=4)
        if cell == "elman"
        else RNN(I, H, O, cell=cell, output=head, seed=4)
    )
    for array in model.params.values():
        array *= 2.0
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    y = random_targets(rng, head, T, B, O, np.dtype(np.float64))
    parts = [0.5 * rng.standard_normal((B, H)) for _ in range(model.state_parts)]
    h0 = tuple(parts) if len(parts) > 1 else parts[0]
    mask = rng.random((T, B)) < 0.8
    return model, x, y, h0, mask


@pytest.mark.parametrize("max_lag", [None, 0, 3, 20])
@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_lags_sum_to_the_full_gradient(cell, ids, max_lag, rng):
    model, x, y, h0, mask = _problem(cell, rng, ids=ids, head="identity" if ids else "softmax")
    contrib = lag_contributions(model, x, y, h0, mask, max_lag=max_lag)
    loss, grads = model.loss_and_grads(x, y, h0, mask)
    assert contrib.loss == pytest.approx(loss, rel=1e-12)
    n = 9 if max_lag is None else max_lag + 2
    assert len(contrib.labels) == n
    for name, parts in contrib.parts.items():
        assert parts.shape[0] == n
        assert max_relative_error(parts.sum(axis=0), grads[name]) < 1e-10, name
    if max_lag == 20:  # lags ≥ T have no terms
        assert all(np.all(parts[9:] == 0) for parts in contrib.parts.values())
    norms = contrib.norms()
    assert set(norms) == {*contrib.parts, "total"}


def test_elman_matches_the_closed_form(rng):
    model, x, y, h0, mask = _problem("elman", rng)
    generic = lag_contributions(model, x, y, h0, mask, fast_path=False)
    closed = diagnostics.lag_contributions(model, x, y, h0, mask)
    for name in ("W", "V", "b_h"):
        assert max_relative_error(generic.parts[name], getattr(closed, name)) < 1e-12, name
    np.testing.assert_allclose(
        diagnostics.jacobian_report(model, x, h0, fast_path=False).log10_norms,
        state_jacobian_norms(model, x, h0).log10_norms,
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_lag_d_is_the_gradient_through_exactly_d_steps(cell, rng):
    """C[d] by brute force: the gradient of Σ_t L_t with the state detached except at t − d."""
    torch = pytest.importorskip("torch")
    from test_cells_gated import _torch_cell, _torch_step
    from torch_cells import cell_grads_from_torch, torch_from_cell_params

    T, B = 6, 2
    model, x, y, h0, _ = _problem(cell, rng, T=T, B=B)
    contrib = lag_contributions(model, x, y, h0)
    step = _torch_cell(model)
    U, b_y = torch.tensor(model.params["U"]), torch.tensor(model.params["b_y"])
    H = model.hidden_size
    s0 = np.concatenate(list(h0), axis=1) if isinstance(h0, tuple) else h0
    xt = torch.tensor(x)
    for d in range(T):
        step.zero_grad()
        # the state of every step as a leaf; loss L_t uses the parameters only at step t − d
        states = [torch.tensor(s0)]
        with torch.no_grad():
            for t in range(T):
                states.append(_torch_step(model, step, xt[t], states[-1]))
        total = 0.0
        for t in range(d + 1, T + 1):
            k = t - d  # the use of θ at step k, then d steps without θ's gradient
            s = _torch_step(model, step, xt[k - 1], states[k - 1])
            for i in range(k + 1, t + 1):
                s = _torch_step_frozen(model, step, xt[i - 1], s)
            z = s[:, :H] @ U.T + b_y
            total = (
                total
                + torch.nn.functional.cross_entropy(z, torch.as_tensor(y[t - 1]), reduction="sum")
                / B
            )
        total.backward()
        arrays = {
            k: getattr(step, k).grad.numpy()
            for k in torch_from_cell_params(model.cell, model.layers[0].take(model.params), H)
        }
        ref = cell_grads_from_torch(model.cell, arrays, H)
        for name, part in contrib.parts.items():
            assert max_relative_error(part[d], ref[name]) < 1e-10, (name, d)


def _torch_step_frozen(model, step, x_t, s_prev):
    """One step whose parameters carry no gradient (only s_prev does)."""
    import torch

    weights = {k: v.detach() for k, v in step.named_parameters()}
    H = model.hidden_size
    if model.state_parts == 1:
        return torch.func.functional_call(step, weights, (x_t, s_prev))
    h, c = torch.func.functional_call(step, weights, (x_t, (s_prev[:, :H], s_prev[:, H:])))
    return torch.cat([h, c], dim=1)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_state_jacobian_products_match_autograd(cell, rng):
    torch = pytest.importorskip("torch")
    from test_cells_gated import _torch_cell, _torch_step

    T, B = 5, 2
    model, x, _, h0, _ = _problem(cell, rng, T=T, B=B)
    report = state_jacobian_norms(model, x, h0)
    assert report.log10_norms.shape == (T + 1, B)
    step = _torch_cell(model)
    s0 = np.concatenate(list(h0), axis=1) if isinstance(h0, tuple) else h0
    xt = torch.tensor(x)
    states = [torch.tensor(s0)]
    with torch.no_grad():
        for t in range(T):
            states.append(_torch_step(model, step, xt[t], states[-1]))
    for d in range(T + 1):
        for b in range(B):

            def unroll(s, b=b, d=d):
                for i in range(T - d, T):
                    s = _torch_step(model, step, xt[i, b : b + 1], s)
                return s

            jac = torch.autograd.functional.jacobian(unroll, states[T - d][b : b + 1])
            S = jac.shape[1]
            norm = np.linalg.norm(jac.detach().numpy().reshape(S, S), ord=2)
            assert report.log10_norms[d, b] == pytest.approx(np.log10(norm), abs=1e-10)


def test_deep_models_need_a_layer(rng):
    model = RNN(3, 4, 2, cell="gru", num_layers=2)
    with pytest.raises(ValueError, match="pass layer=k"):
        lag_contributions(model, np.zeros((3, 1, 3)), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match="layer must be"):
        lag_contributions(model, np.zeros((3, 1, 3)), np.zeros((3, 1), dtype=int), layer=2)
    with pytest.raises(ValueError, match="origin"):
        state_jacobian_norms(RNN(3, 4, 2, cell="lstm"), np.zeros((3, 1, 3)), origin=7)
