"""TBPTT(k1, k2) against full BPTT and against a brute-force torch autograd of the definition."""

from __future__ import annotations

import numpy as np
import pytest

from bptt import ElmanRNN
from bptt.algorithms.truncated import TruncatedBPTT, tbptt_gradients

torch = pytest.importorskip("torch")

I, H, O, B, T = 5, 6, 5, 3, 13


def _problem(rng: np.random.Generator, with_mask: bool = False):
    model = ElmanRNN(I, H, O, seed=int(rng.integers(1 << 30)))
    x = rng.integers(0, I, size=(T, B))
    y = rng.integers(0, O, size=(T, B))
    mask = (rng.random((T, B)) < 0.7).astype(np.float64) if with_mask else None
    return model, x, y, mask


def _brute_force(model, x, y, k1, k2, mask=None):
    """Σ over update points e = k1, 2k1, …, T of ∂/∂θ Σ_{τ∈(s, e]} L_τ, h_{s−(k2−k1)} detached.

    s = e − k1 for whole chunks (so the horizon is e − k2); a last shorter chunk of T − s
    steps is backpropagated through its own steps plus the k2 − k1 before them.

    Written independently of bptt: the forward is re-run in torch for every update, the state
    at the horizon is detached, and autograd accumulates the gradients of all updates.
    """
    p = {n: torch.tensor(a, requires_grad=True) for n, a in model.params.items()}
    xt, yt = torch.tensor(x), torch.tensor(y)
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask)
    total_loss = 0.0
    for e in range(k1, T + k1, k1):
        e = min(e, T)
        s = (e - 1) // k1 * k1  # first new step of this update
        w = max(0, s - (k2 - k1))  # the horizon: h_w is a constant
        h = torch.zeros(B, H, dtype=torch.float64)
        for t in range(e):
            if t == w:
                h = h.detach()
            h = torch.tanh(p["V"][:, xt[t]].T + h @ p["W"].T + p["b_h"])
            if t >= s:
                z = h @ p["U"].T + p["b_y"]
                lt = torch.nn.functional.cross_entropy(z, yt[t], reduction="none")  # (B,)
                loss = (lt * m[t]).sum() / B
                loss.backward(retain_graph=True)
                total_loss += float(loss.detach())
    return total_loss, {n: t.grad.numpy() for n, t in p.items()}


@pytest.mark.parametrize(("k1", "k2"), [(1, 1), (3, 3), (2, 5), (4, 7), (1, 4), (5, 6), (6, 13)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_tbptt_matches_brute_force(k1, k2, with_mask, rng) -> None:
    model, x, y, mask = _problem(rng, with_mask)
    loss, grads = tbptt_gradients(model, x, y, k1, k2, mask)
    ref_loss, ref = _brute_force(model, x, y, k1, k2, mask)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name, arr in grads.items():
        assert arr.shape == getattr(model.params, name).shape and arr.dtype == np.float64
        np.testing.assert_allclose(arr, ref[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(("k1", "k2"), [(13, 13), (4, 16), (5, 20), (1, 13), (3, 40), (13, 30)])
def test_k2_at_least_T_equals_full_bptt(k1, k2, rng) -> None:
    # every update's window reaches h_0 when k2 >= k1 * ceil(T / k1) (>= T)
    model, x, y, _ = _problem(rng)
    full_loss, full = model.loss_and_grads(x, y)
    loss, grads = tbptt_gradients(model, x, y, k1, k2)
    assert loss == pytest.approx(full_loss, rel=1e-12)
    for name in ("U", "V", "W", "b_h", "b_y", "h0"):
        np.testing.assert_allclose(
            getattr(grads, name), getattr(full, name), rtol=1e-10, atol=1e-13, err_msg=name
        )


def test_chunked_carries_hidden_state_across_windows(rng) -> None:
    model, x, y, _ = _problem(rng)
    runner = TruncatedBPTT(model, 4)
    h = None
    for start in range(0, T, 4):
        res = runner.step(x[start : start + 4], y[start : start + 4])
        ref = model.forward_backward(x[start : start + 4], y[start : start + 4], h)
        h = ref.h_last
        assert res.loss == ref.loss
        np.testing.assert_array_equal(res.grads.W, ref.grads.W)
    np.testing.assert_allclose(h, model.hidden_states(x)[-1], rtol=1e-12)


def test_state_round_trip_continues_identically(rng) -> None:
    model, x, y, _ = _problem(rng)
    a, b = TruncatedBPTT(model, 3, 7), TruncatedBPTT(model, 3, 7)
    for start in (0, 3):
        a.step(x[start : start + 3], y[start : start + 3])
        b.step(x[start : start + 3], y[start : start + 3])
    c = TruncatedBPTT(model, 3, 7)
    c.load_state_arrays({k: v.copy() for k, v in b.state_arrays().items()})
    ra, rc = a.step(x[6:9], y[6:9]), c.step(x[6:9], y[6:9])
    assert ra.loss == rc.loss
    np.testing.assert_array_equal(ra.grads.W, rc.grads.W)


def test_rejects_k2_below_k1() -> None:
    with pytest.raises(ValueError, match="k2 >= k1"):
        TruncatedBPTT(ElmanRNN(2, 3, 2), 5, 3)
