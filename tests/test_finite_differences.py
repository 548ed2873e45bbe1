"""Directional finite differences in float64, no torch needed.

⟨∇L, d⟩ against (L(θ + εd) − L(θ − εd)) / 2ε along random directions d; the central
difference has error O(ε²) ≈ 1e-12 relative, rounding adds about 1e-16 / ε ≈ 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

from batches import random_problem
from bptt import PARAM_NAMES
from bptt.gradcheck import directional_derivative, gradcheck

ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity"]
HEADS = ["softmax", "sigmoid", "identity"]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_directional_derivatives(act, head, rng):
    prob = random_problem(rng, activation=act, head=head, ids=act == "sigmoid", T=10, B=3)
    _, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, prob.mask)
    for name in PARAM_NAMES:
        for _ in range(3):
            d = rng.standard_normal(getattr(grads, name).shape)
            analytic = float(np.vdot(getattr(grads, name), d))
            numeric = directional_derivative(
                prob.model, name, d, prob.x, prob.y, prob.h0, prob.mask, eps=1e-5
            )
            assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), name


def test_gradient_wrt_h0(rng):
    prob = random_problem(rng, head="identity", T=8, B=2)
    _, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, prob.mask)
    d = rng.standard_normal(prob.h0.shape)
    eps = 1e-5
    numeric = (
        prob.model.loss(prob.x, prob.y, prob.h0 + eps * d, prob.mask)
        - prob.model.loss(prob.x, prob.y, prob.h0 - eps * d, prob.mask)
    ) / (2 * eps)
    assert abs(np.vdot(grads.h0, d) - numeric) <= 1e-6 * abs(numeric)


def test_gradcheck_report_passes_and_catches_a_wrong_gradient(rng, monkeypatch):
    prob = random_problem(rng, T=6, B=2)
    report = gradcheck(prob.model, prob.x, prob.y, prob.h0, prob.mask)
    assert report.passed, report.format()

    # Break the backward (drop the carry through time): gradcheck must notice.
    import bptt.cells.elman as elman

    original = elman.recurrent_backward

    def truncated(dh, cache, params, activation, dh_last=None):
        dh *= activation.grad_from_output(cache.hs[1:])
        dV, db_h = elman.input_projection_backward(dh, cache.x, params["V"].shape[1])
        H = dh.shape[2]
        dW = dh.reshape(-1, H).T @ cache.hs[:-1].reshape(-1, H)
        return dV, dW, db_h, dh[0] @ params["W"]

    monkeypatch.setattr("bptt.cells.elman.recurrent_backward", truncated)
    broken = gradcheck(prob.model, prob.x, prob.y, prob.h0, prob.mask)
    assert not broken.passed
    assert broken.finite_differences["W"] > 1e-3
    monkeypatch.setattr("bptt.cells.elman.recurrent_backward", original)
