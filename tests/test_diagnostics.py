"""Gradient-flow diagnostics against independent computations.

References: ``model.loss_and_grads`` (the fast sweep), the literal seed formula's terms grouped
by lag, PyTorch autograd in float64 (hidden-state gradients, truncated gradients built with
detach), and explicit products of the step Jacobians.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import bptt
from bptt.algorithms.seed_formula import seed_terms, step_jacobians
from bptt.diagnostics import (
    hidden_state_gradients,
    jacobian_report,
    lag_contributions,
    truncation_bias,
)

ACTS = ("tanh", "relu", "sigmoid", "identity")
HEADS = ("softmax", "sigmoid", "identity")
I, H, O, T, B = 3, 4, 3, 6, 2


def tol(dtype: np.dtype, scale: float = 1.0) -> float:
    """Absolute tolerance: a few hundred roundings of the reference's magnitude."""
    return 300 * float(np.finfo(dtype).eps) * max(scale, 1e-30)


def make_case(
    rng: np.random.Generator,
    act: str,
    head: str,
    ids: bool,
    dtype: type = np.float64,
    seq_len: int = T,
) -> tuple[bptt.ElmanRNN, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A model with larger-than-default weights (so long lags matter), x, y, h0, mask."""
    model = bptt.ElmanRNN(I, H, O, hidden_activation=act, output=head, seed=3, dtype=dtype)
    model.params = model.params.map(lambda a: (2.0 * a).astype(dtype))
    if act == "relu":  # keep most units on, so every lag carries signal
        model.params.b_h = np.abs(model.params.b_h) + dtype(0.3)
    shape_tb = (seq_len, B)
    x = rng.integers(0, I, size=shape_tb) if ids else rng.standard_normal((*shape_tb, I))
    if not ids:
        x = x.astype(dtype)
    if head == "softmax":
        y = rng.integers(0, O, size=shape_tb)
    elif head == "sigmoid":
        y = rng.random((*shape_tb, O)).astype(dtype)
    else:
        y = rng.standard_normal((*shape_tb, O)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    mask = (rng.random(shape_tb) < 0.7).astype(dtype)
    mask[-1] = 1.0
    return model, x, y, h0, mask


# -- a float64 PyTorch reference ---------------------------------------------------------

TORCH_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda e: e,
}


def torch_params(model: bptt.ElmanRNN) -> dict[str, torch.Tensor]:
    return {
        name: torch.tensor(a, dtype=torch.float64, requires_grad=True)
        for name, a in model.params.items()
    }


def torch_step(
    p: dict[str, torch.Tensor], act: str, x_t: np.ndarray, h: torch.Tensor
) -> torch.Tensor:
    """h_t = f(V x_t + W h_{t-1} + b_h) for one step (ids gather columns of V)."""
    if x_t.ndim == 1:
        vx = p["V"].T[torch.as_tensor(x_t)]
    else:
        vx = torch.as_tensor(x_t, dtype=torch.float64) @ p["V"].T
    return TORCH_ACTS[act](vx + h @ p["W"].T + p["b_h"])


def torch_step_loss(
    p: dict[str, torch.Tensor], head: str, h: torch.Tensor, y_t: np.ndarray, w_t: np.ndarray
) -> torch.Tensor:
    """Σ_b w_tb L(ŷ_tb, y_tb) for one step."""
    z = h @ p["U"].T + p["b_y"]
    w = torch.as_tensor(w_t, dtype=torch.float64)
    if head == "softmax":
        per = torch.nn.functional.cross_entropy(z, torch.as_tensor(y_t), reduction="none")
    elif head == "sigmoid":
        per = torch.nn.functional.binary_cross_entropy_with_logits(
            z, torch.as_tensor(y_t, dtype=torch.float64), reduction="none"
        ).sum(-1)
    else:
        per = 0.5 * ((z - torch.as_tensor(y_t, dtype=torch.float64)) ** 2).sum(-1)
    return (w * per).sum()


# -- per-lag contributions ---------------------------------------------------------------


def grouped_seed_terms(model, x, y, h0, mask) -> dict[str, np.ndarray]:
    """The literal seed formula's terms (t, k), summed per lag t − k."""
    out = {
        "W": np.zeros((T, H, H)),
        "V": np.zeros((T, H, I)),
        "b_h": np.zeros((T, H)),
    }
    for term in seed_terms(model, x, y, h0, mask):
        for name in out:
            out[name][term.lag] += getattr(term, name)
    return out


@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("act", ACTS)
def test_lag_contributions_match_seed_terms_and_full_gradient(rng, act, head, ids):
    model, x, y, h0, mask = make_case(rng, act, head, ids)
    contrib = lag_contributions(model, x, y, h0, mask)
    loss, grads = model.loss_and_grads(x, y, h0, mask)
    seed = grouped_seed_terms(model, x, y, h0, mask)
    assert contrib.seq_len == T and contrib.max_lag is None and not contrib.has_remainder
    assert contrib.loss == pytest.approx(loss, rel=1e-12)
    for name, shape in (("W", (T, H, H)), ("V", (T, H, I)), ("b_h", (T, H))):
        part = getattr(contrib, name)
        assert part.shape == shape and part.dtype == np.float64
        scale = float(np.abs(seed[name]).max())
        np.testing.assert_allclose(part, seed[name], rtol=0, atol=tol(part.dtype, scale))
        full = getattr(grads, name)
        np.testing.assert_allclose(part.sum(0), full, rtol=0, atol=tol(part.dtype, scale))
    # every lag carries signal here, so the comparison is not between zeros
    assert np.all(contrib.norms()["W"][: T - 1] > 0)


@pytest.mark.parametrize("act", ACTS)
def test_lag_contributions_float32_sum_to_float32_gradient(rng, act):
    model, x, y, h0, mask = make_case(rng, act, "identity", False, dtype=np.float32)
    contrib = lag_contributions(model, x, y, h0, mask)
    _, grads = model.loss_and_grads(x, y, h0, mask)
    assert contrib.W.dtype == np.float32 and contrib.V.dtype == np.float32
    for name in ("W", "V", "b_h"):
        full = getattr(grads, name)
        np.testing.assert_allclose(
            getattr(contrib, name).sum(0), full, rtol=0, atol=tol(np.float32, np.abs(full).max())
        )


@pytest.mark.parametrize("max_lag", [0, 1, T - 2, T - 1, T, T + 3])
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
def test_max_lag_keeps_lags_and_lumps_the_rest(rng, max_lag, ids):
    model, x, y, h0, mask = make_case(rng, "tanh", "softmax", ids)
    seed = grouped_seed_terms(model, x, y, h0, mask)  # (T, ...) per lag 0..T−1
    _, grads = model.loss_and_grads(x, y, h0, mask)
    contrib = lag_contributions(model, x, y, h0, mask, max_lag=max_lag)
    L = max_lag + 2
    assert contrib.W.shape == (L, H, H) and contrib.V.shape == (L, H, I)
    assert contrib.b_h.shape == (L, H)
    assert contrib.has_remainder and contrib.n_exact == max_lag + 1
    assert contrib.labels[-1] == f"≥{max_lag + 1}"
    kept = min(max_lag, T - 1) + 1
    for name in ("W", "V", "b_h"):
        part, ref = getattr(contrib, name), seed[name]
        atol = tol(np.float64, float(np.abs(ref).max()))
        np.testing.assert_allclose(part[:kept], ref[:kept], rtol=0, atol=atol)
        assert np.all(part[kept : max_lag + 1] == 0)  # lags ≥ T have no terms at all
        np.testing.assert_allclose(part[-1], ref[max_lag + 1 :].sum(0), rtol=0, atol=atol)
        np.testing.assert_allclose(part.sum(0), getattr(grads, name), rtol=0, atol=atol)


def test_norms_are_frobenius_norms_per_lag(rng):
    model, x, y, h0, mask = make_case(rng, "tanh", "softmax", False)
    contrib = lag_contributions(model, x, y, h0, mask, max_lag=2)
    norms = contrib.norms()
    assert set(norms) == {"W", "V", "b_h", "total"}
    for d in range(4):
        assert norms["W"][d] == pytest.approx(np.linalg.norm(contrib.W[d]), rel=1e-12)
        assert norms["V"][d] == pytest.approx(np.linalg.norm(contrib.V[d]), rel=1e-12)
        stacked = np.concatenate([contrib.W[d].ravel(), contrib.V[d].ravel(), contrib.b_h[d]])
        assert norms["total"][d] == pytest.approx(np.linalg.norm(stacked), rel=1e-12)


@pytest.mark.parametrize(
    ("max_lag", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_max_lag_is_named(rng, max_lag, error):
    model, x, y, h0, mask = make_case(rng, "tanh", "softmax", False)
    with pytest.raises(error, match="max_lag"):
        lag_contributions(model, x, y, h0, mask, max_lag=max_lag)


def test_bad_inputs_are_named(rng):
    model, x, y, h0, mask = make_case(rng, "tanh", "softmax", False)
    with pytest.raises(TypeError, match="ElmanRNN"):
        lag_contributions("model", x, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="h0"):
        lag_contributions(model, x, y, h0[:1])
    with pytest.raises(ValueError, match="mask"):
        hidden_state_gradients(model, x, y, h0, mask[:2])
    with pytest.raises(TypeError, match="x has dtype"):
        truncation_bias(model, x.astype(np.float32), y)


# -- hidden-state gradients --------------------------------------------------------------


@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("act", ACTS)
def test_hidden_state_gradients_match_torch(rng, act, head, ids):
    model, x, y, h0, mask = make_case(rng, act, head, ids)
    hidden = hidden_state_gradients(model, x, y, h0, mask)
    p = torch_params(model)
    h = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    states = [h]
    loss = torch.zeros((), dtype=torch.float64)
    for t in range(T):
        h = torch_step(p, act, x[t], h)
        h.retain_grad()
        states.append(h)
        loss = loss + torch_step_loss(p, head, h, y[t], mask[t] / B)
    loss.backward()
    ref = np.stack([s.grad.numpy() for s in states])  # (T+1, B, H)
    assert hidden.dh.shape == (T + 1, B, H) and hidden.delta.shape == (T, B, H)
    np.testing.assert_allclose(hidden.dh, ref, rtol=0, atol=tol(np.float64, np.abs(ref).max()))
    _, grads = model.loss_and_grads(x, y, h0, mask)
    np.testing.assert_allclose(hidden.dh[0], grads.h0, rtol=0, atol=tol(np.float64, 1.0))
    per_seq = np.linalg.norm(ref, axis=2)  # (T+1, B)
    np.testing.assert_allclose(hidden.norms(None), per_seq, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(hidden.norms("mean"), per_seq.mean(1), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(hidden.norms("max"), per_seq.max(1), rtol=1e-10, atol=1e-300)
    with pytest.raises(ValueError, match="reduce"):
        hidden.norms("sum")


# -- Jacobian products -------------------------------------------------------------------


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def explicit_product_norms(model, x, h0, origin) -> np.ndarray:
    """‖J_t ⋯ J_{t−d+1}‖₂ from the seed module's explicit step Jacobians; (t+1, B)."""
    jac = step_jacobians(model, x, h0)  # (T, B, H, H)
    product = np.broadcast_to(np.eye(H), (x.shape[1], H, H)).copy()
    out = [np.ones(x.shape[1])]
    for d in range(1, origin + 1):
        product = product @ jac[origin - d]
        out.append(np.linalg.norm(product, ord=2, axis=(1, 2)))
    return np.array(out)


@pytest.mark.parametrize("act", ACTS)
def test_jacobian_norms_match_explicit_products(rng, act):
    model, x, _, h0, _ = make_case(rng, act, "softmax", False)
    for origin in (None, 3):
        rep = jacobian_report(model, x, h0, origin=origin)
        t = T if origin is None else origin
        ref = explicit_product_norms(model, x, h0, t)  # (t+1, B)
        assert rep.origin == t and rep.log10_norms.shape == (t + 1, B)
        np.testing.assert_allclose(10.0**rep.log10_norms, ref, rtol=1e-9)
        np.testing.assert_allclose(rep.norm_mean, ref.mean(1), rtol=1e-9)
        np.testing.assert_allclose(rep.norm_max, ref.max(1), rtol=1e-9)
    rep = jacobian_report(model, x, h0, max_lag=2)
    assert rep.log10_norms.shape == (3, B)
    np.testing.assert_allclose(rep.singular_values, np.linalg.svd(model.params.W)[1])
    assert rep.spectral_radius == pytest.approx(np.abs(np.linalg.eigvals(model.params.W)).max())
    assert rep.gamma == model.activation.bound


@pytest.mark.parametrize(("act", "scale"), [("tanh", 0.6), ("sigmoid", 2.5), ("relu", 0.7)])
def test_small_spectral_norm_gives_geometric_shrinking(rng, act, scale):
    model, x, _, h0, _ = make_case(rng, act, "softmax", False, seq_len=12)
    model.params.W = scale * orthogonal(rng, H)  # σ_max = scale, γ·σ_max < 1
    rep = jacobian_report(model, x, h0)
    rate = rep.step_bound
    assert rate == pytest.approx(model.activation.bound * scale) and rate < 1
    assert rep.vanishing_guaranteed
    assert "sufficient condition for vanishing gradients holds" in rep.statement()
    lags = rep.lags
    norms = 10.0**rep.log10_norms  # (L, B)
    assert np.all(norms <= rate ** lags[:, None] * (1 + 1e-12))  # ‖Π‖ ≤ (γ σ_max)^d
    assert np.all(norms[1:] <= rate * norms[:-1] * (1 + 1e-12))  # shrinks at every step
    assert rep.rate() < rate


def test_large_spectral_norm_gives_growth(rng):
    model, x, _, h0, _ = make_case(rng, "identity", "identity", False, seq_len=12)
    model.params.W = 1.5 * orthogonal(rng, H)
    rep = jacobian_report(model, x, h0)
    # identity activation: Π = (1.5 Q)^d, every singular value exactly 1.5^d
    np.testing.assert_allclose(rep.norm_mean, 1.5 ** rep.lags.astype(float), rtol=1e-10)
    assert not rep.vanishing_guaranteed and not rep.at_boundary
    assert "does not hold" in rep.statement()
    assert rep.rate() == pytest.approx(1.5, rel=1e-9)
    # relu with every unit on (positive inputs and states) grows just the same
    relu = bptt.ElmanRNN(I, H, O, hidden_activation="relu", seed=0)
    relu.params.W = 1.5 * np.eye(H)
    xp = np.abs(x) + 0.1
    rep = jacobian_report(relu, xp)
    np.testing.assert_allclose(rep.norm_max, 1.5 ** rep.lags.astype(float), rtol=1e-10)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_orthogonal_w_is_on_the_boundary(rng, act):
    model, x, _, h0, _ = make_case(rng, act, "softmax", False)
    model.params.W = orthogonal(rng, H)  # σ_max = 1 up to rounding, γ = 1
    rep = jacobian_report(model, x, h0)
    assert rep.at_boundary and not rep.vanishing_guaranteed
    assert "boundary" in rep.statement()
    assert np.all(rep.norm_max <= 1 + 1e-12)  # cannot grow


def test_jacobian_products_neither_overflow_nor_underflow():
    model = bptt.ElmanRNN(2, 3, 1, hidden_activation="identity", output="identity", seed=0)
    model.params.W = 1.5 * np.eye(3)
    model.params.b_h[:] = 0.0
    x = np.zeros((1800, 1, 2))  # h stays 0; 1.5^1800 ≈ 10^317 is beyond float64
    rep = jacobian_report(model, x)
    assert rep.log10_norms[-1, 0] == pytest.approx(1800 * np.log10(1.5), rel=1e-9)
    assert np.isinf(rep.norm_max[-1]) and np.isfinite(rep.norm_max[400])
    # relu with every unit off: the product is exactly zero, log-norm −inf, no error raised
    dead = bptt.ElmanRNN(2, 3, 1, hidden_activation="relu", output="identity", seed=0)
    dead.params.b_h[:] = -5.0
    rep = jacobian_report(dead, np.zeros((5, 2, 2)))
    assert np.all(rep.norm_max[1:] == 0) and rep.norm_max[0] == 1


def test_jacobian_bad_origin(rng):
    model, x, _, h0, _ = make_case(rng, "tanh", "softmax", False)
    for origin in (0, T + 1, 2.0):
        with pytest.raises(ValueError, match="origin"):
            jacobian_report(model, x, h0, origin=origin)  # type: ignore[arg-type]


# -- truncation bias ---------------------------------------------------------------------


def torch_truncated_gradient(model, act, head, x, y, h0, mask, k2) -> dict[str, np.ndarray]:
    """Σ_t dL_t/dθ with the graph cut k2 steps before t (h_{t−k2} detached): a direct loop."""
    p = torch_params(model)
    with torch.no_grad():
        states = [torch.as_tensor(h0)]
        for t in range(T):
            states.append(torch_step(p, act, x[t], states[-1]))
    for t in range(1, T + 1):
        start = max(0, t - k2)
        h = states[start].detach()  # value from the full forward, no gradient behind it
        for i in range(start + 1, t + 1):
            h = torch_step(p, act, x[i - 1], h)
        torch_step_loss(p, head, h, y[t - 1], mask[t - 1] / B).backward()
    return {name: p[name].grad.numpy() for name in ("W", "V", "b_h")}


def flat(g: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([g[n].ravel() for n in ("W", "V", "b_h")])


@pytest.mark.parametrize(
    ("act", "head", "ids"),
    [("tanh", "softmax", False), ("relu", "identity", True), ("sigmoid", "sigmoid", False)],
)
def test_truncated_gradient_is_sum_of_short_lags_and_bias_matches_torch(rng, act, head, ids):
    model, x, y, h0, mask = make_case(rng, act, head, ids)
    contrib = lag_contributions(model, x, y, h0, mask)
    tb = truncation_bias(model, x, y, h0, mask)
    _, grads = model.loss_and_grads(x, y, h0, mask)
    full = flat({n: getattr(grads, n) for n in ("W", "V", "b_h")})
    assert tb.k2.tolist() == list(range(1, T + 1))
    for k2 in range(1, T + 1):
        ref = torch_truncated_gradient(model, act, head, x, y, h0, mask, k2)
        for name in ("W", "V", "b_h"):
            ours = getattr(contrib, name)[:k2].sum(0)
            np.testing.assert_allclose(ours, ref[name], rtol=0, atol=tol(np.float64, 1.0))
        g = flat(ref)
        cos = g @ full / (np.linalg.norm(g) * np.linalg.norm(full))
        rel = np.linalg.norm(g - full) / np.linalg.norm(full)
        assert tb.cosine["all"][k2 - 1] == pytest.approx(cos, rel=1e-9, abs=1e-12)
        assert tb.rel_error["all"][k2 - 1] == pytest.approx(rel, rel=1e-7, abs=1e-13)
        w_rel = np.linalg.norm(ref["W"] - grads.W) / np.linalg.norm(grads.W)
        assert tb.rel_error["W"][k2 - 1] == pytest.approx(w_rel, rel=1e-7, abs=1e-13)
    assert tb.rel_error["all"][0] > 1e-3  # truncation to one step is visibly biased here


@pytest.mark.parametrize("act", ACTS)
def test_truncation_bias_is_zero_at_full_length(rng, act):
    model, x, y, h0, mask = make_case(rng, act, "softmax", True)
    tb = truncation_bias(model, x, y, h0, mask)
    for name in ("W", "V", "b_h", "all"):
        assert tb.rel_error[name][-1] <= 100 * np.finfo(np.float64).eps
        assert tb.cosine[name][-1] == pytest.approx(1.0, abs=1e-12)
