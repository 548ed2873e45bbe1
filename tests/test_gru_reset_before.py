"""The gru_reset_before cell without torch: its forward against the equations written out here,
its backward and Jacobian products against central finite differences (float64, random
upstream signals). The torch reference (tests/torch_cells.py) covers it in test_cells_gated."""

from __future__ import annotations

import numpy as np
import pytest

from bptt.cells import StepArgs, get_cell


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def literal_forward(p, x, h0):
    """h_t from ONNX's GRU with linear_before_reset = 0, gates r, z, n, one step at a time."""
    H = h0.shape[1]
    V_r, V_z, V_n = np.split(p["V"], 3)
    W_r, W_z, W_n = np.split(p["W"], 3)
    b_r, b_z, b_n = np.split(p["b"], 3)
    h, out = h0, []
    for x_t in x:
        r = _sigmoid(x_t @ V_r.T + h @ W_r.T + b_r)
        z = _sigmoid(x_t @ V_z.T + h @ W_z.T + b_z)
        n = np.tanh(x_t @ V_n.T + (r * h) @ W_n.T + b_n)
        h = (1 - z) * n + z * h
        out.append(h)
    assert out[0].shape[1] == H
    return np.stack(out)


def _setup(rng, ids=False, T=5, B=3, I=4, H=3):
    cell = get_cell("gru_reset_before")(I, H)
    p = {k: 1.5 * rng.standard_normal(s) for k, s in cell.param_shapes().items()}
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    return cell, p, x, h0


@pytest.mark.parametrize("ids", [False, True])
def test_forward_is_the_equations(ids, rng):
    cell, p, x, h0 = _setup(rng, ids)
    dense = np.eye(cell.input_size)[x] if ids else x
    h, last, _ = cell.forward(p, x, h0)
    np.testing.assert_allclose(h, literal_forward(p, dense, h0), rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(last, h[-1])


def test_backward_against_finite_differences(rng):
    cell, p, x, h0 = _setup(rng)
    dh = rng.standard_normal((x.shape[0], x.shape[1], cell.hidden_size))  # random upstream
    ds_last = rng.standard_normal(h0.shape)

    def objective(p, x, h0):
        h = literal_forward(p, x, h0)
        return float(np.sum(dh * h) + np.sum(ds_last * h[-1]))

    _, _, cache = cell.forward(p, x, h0)
    grads = cell.backward(dh.copy(), cache, p, ds_last=ds_last)
    eps = 1e-6
    for name in p:
        d = rng.standard_normal(p[name].shape)
        plus = {**p, name: p[name] + eps * d}
        minus = {**p, name: p[name] - eps * d}
        fd = (objective(plus, x, h0) - objective(minus, x, h0)) / (2 * eps)
        assert np.sum(grads.params[name] * d) == pytest.approx(fd, rel=1e-7, abs=1e-9), name
    for got, arg in ((grads.dx, "x"), (grads.ds0, "h0")):
        d = rng.standard_normal(x.shape if arg == "x" else h0.shape)
        if arg == "x":
            fd = (objective(p, x + eps * d, h0) - objective(p, x - eps * d, h0)) / (2 * eps)
        else:
            fd = (objective(p, x, h0 + eps * d) - objective(p, x, h0 - eps * d)) / (2 * eps)
        assert np.sum(got * d) == pytest.approx(fd, rel=1e-7, abs=1e-9), arg


def test_step_products_against_finite_differences(rng):
    cell, p, x, h0 = _setup(rng)
    x_t = x[0]
    at = StepArgs(x=x_t, s_prev=h0, s=cell.step(p, x_t, h0))
    eps = 1e-6
    v, u = rng.standard_normal(h0.shape), rng.standard_normal(h0.shape)
    fd = (cell.step(p, x_t, h0 + eps * v) - cell.step(p, x_t, h0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(cell.jvp_state(p, at, v), fd, rtol=1e-7, atol=1e-9)
    # uᵀ J v both ways, and the full Jacobian's columns
    assert np.sum(cell.vjp_state(p, at, u) * v) == pytest.approx(np.sum(u * fd), rel=1e-7)
    J = cell.state_jacobian(p, at)  # (B, S, S)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", J, v), fd, rtol=1e-7, atol=1e-9)
    dp = {k: rng.standard_normal(a.shape) for k, a in p.items()}
    plus = cell.step({k: p[k] + eps * dp[k] for k in p}, x_t, h0)
    minus = cell.step({k: p[k] - eps * dp[k] for k in p}, x_t, h0)
    fd_p = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(cell.jvp_params(p, at, dp), fd_p, rtol=1e-7, atol=1e-9)
    vjp = cell.vjp_params(p, at, u)
    assert sum(np.sum(vjp[k] * dp[k]) for k in p) == pytest.approx(np.sum(u * fd_p), rel=1e-7)
