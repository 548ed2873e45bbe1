"""The fast BPTT against the seed's literal double sum, term by term."""

from __future__ import annotations

import numpy as np
import pytest

from batches import max_relative_error, random_problem
from bptt import PARAM_NAMES
from bptt.algorithms.seed_formula import seed_gradients, seed_terms, step_jacobians

ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity"]
HEADS = ["softmax", "sigmoid", "identity"]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("ids", [False, True])
def test_fast_path_equals_seed_formula(act, head, ids, rng):
    prob = random_problem(rng, activation=act, head=head, ids=ids, T=8, B=3)
    _, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, prob.mask)
    oracle = seed_gradients(prob.model, prob.x, prob.y, prob.h0, prob.mask)
    for name in PARAM_NAMES:
        assert max_relative_error(getattr(grads, name), getattr(oracle, name)) < 1e-12, name


def test_each_t_sums_to_the_gradient_of_that_steps_loss(rng):
    """Σ_k term(t, k) = dL_t/dθ, where L_t is selected by a one-step mask."""
    prob = random_problem(rng, T=6, B=2, use_mask=False)
    terms = list(seed_terms(prob.model, prob.x, prob.y, prob.h0))
    assert [(term.t, term.k) for term in terms] == [
        (t, k) for t in range(1, 7) for k in range(t, 0, -1)
    ]
    for t in range(1, 7):
        only_t = np.zeros((6, 2), dtype=bool)
        only_t[t - 1] = True
        _, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, only_t)
        for name in ("W", "V", "b_h"):
            total = sum(getattr(term, name) for term in terms if term.t == t)
            assert max_relative_error(total, getattr(grads, name)) < 1e-12, (t, name)


def test_each_term_equals_autograd_through_that_steps_weights(rng):
    """term(t, k) is dL_t/dW_k when step k uses its own copy W_k of the weights."""
    torch = pytest.importorskip("torch")
    prob = random_problem(rng, activation="tanh", head="identity", T=5, B=2, use_mask=False)
    model, T = prob.model, 5
    params = {n: torch.tensor(a) for n, a in model.params.items()}
    W_k = [params["W"].clone().requires_grad_(True) for _ in range(T)]
    V_k = [params["V"].clone().requires_grad_(True) for _ in range(T)]
    b_k = [params["b_h"].clone().requires_grad_(True) for _ in range(T)]
    x, y = torch.tensor(prob.x), torch.tensor(prob.y)
    h = torch.tensor(prob.h0)
    step_losses = []
    for t in range(T):
        h = torch.tanh(x[t] @ V_k[t].T + h @ W_k[t].T + b_k[t])
        z = h @ params["U"].T + params["b_y"]
        step_losses.append(0.5 * ((z - y[t]) ** 2).sum() / 2)
    terms = {(s.t, s.k): s for s in seed_terms(model, prob.x, prob.y, prob.h0)}
    for t in range(1, T + 1):
        grads = torch.autograd.grad(
            step_losses[t - 1], W_k + V_k + b_k, allow_unused=True, retain_graph=True
        )
        for k in range(1, T + 1):
            dW, dV, db = grads[k - 1], grads[T + k - 1], grads[2 * T + k - 1]
            if k > t:
                assert dW is None or float(dW.abs().max()) == 0.0
                continue
            term = terms[(t, k)]
            assert max_relative_error(term.W, dW.numpy()) < 1e-10, (t, k)
            assert max_relative_error(term.V, dV.numpy()) < 1e-10, (t, k)
            assert max_relative_error(term.b_h, db.numpy()) < 1e-10, (t, k)


def test_step_jacobians_match_autograd(rng):
    torch = pytest.importorskip("torch")
    prob = random_problem(rng, activation="sigmoid", T=4, B=2)
    jac = step_jacobians(prob.model, prob.x, prob.h0)
    assert jac.shape == (4, 2, 6, 6)
    hs = prob.model.hidden_states(prob.x, prob.h0)
    p = {n: torch.tensor(a) for n, a in prob.model.params.items()}
    for t in range(1, 5):
        for b in range(2):

            def step(h_prev, t=t, b=b):
                x_t = torch.tensor(prob.x[t - 1, b])
                return torch.sigmoid(p["V"] @ x_t + p["W"] @ h_prev + p["b_h"])

            ref = torch.autograd.functional.jacobian(step, torch.tensor(hs[t - 1, b]))
            np.testing.assert_allclose(jac[t - 1, b], ref.numpy(), rtol=1e-12, atol=1e-14)
