"""Hand-written BPTT against PyTorch autograd in float64, over many random configurations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from batches import max_relative_error, random_problem  # noqa: E402
from bptt import PARAM_NAMES, ElmanRNN  # noqa: E402
from torch_reference import torch_loss_and_grads  # noqa: E402

ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity"]
HEADS = ["softmax", "sigmoid", "identity"]

# Every activation × head × input kind, with and without mask/h0, at several lengths.
CONFIGS = [
    (act, head, ids, T, B, use_mask, use_h0)
    for (act, head, ids), (T, B, use_mask, use_h0) in itertools.product(
        itertools.product(ACTIVATIONS, HEADS, [False, True]),
        [(1, 1, False, False), (7, 3, True, True), (50, 2, True, False), (23, 4, False, True)],
    )
]


@pytest.mark.parametrize(("act", "head", "ids", "T", "B", "use_mask", "use_h0"), CONFIGS)
def test_loss_and_grads_match_autograd(act, head, ids, T, B, use_mask, use_h0, rng):
    weight_scale = 0.6 if act in ("relu", "identity") else 1.0  # keep long runs finite
    prob = random_problem(
        rng,
        activation=act,
        head=head,
        ids=ids,
        T=T,
        B=B,
        use_mask=use_mask,
        use_h0=use_h0,
        weight_scale=weight_scale,
    )
    loss, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, prob.mask)
    ref_loss, ref = torch_loss_and_grads(prob.model, prob.x, prob.y, prob.h0, prob.mask)

    assert isinstance(loss, float)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    for name in PARAM_NAMES:
        g = getattr(grads, name)
        assert g.shape == getattr(prob.model.params, name).shape
        assert g.dtype == np.float64
        assert max_relative_error(g, ref[name]) < 1e-8, name
    assert grads.h0.shape == (B, prob.model.hidden_size)
    assert max_relative_error(grads.h0, ref["h0"]) < 1e-8


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_incoming_gradient_on_last_hidden_state(act, rng):
    """dh_last is a random upstream signal on h_T: it must flow into every gradient."""
    prob = random_problem(rng, activation=act, head="identity", T=9, B=2)
    dh_last = rng.standard_normal((2, prob.model.hidden_size))
    result = prob.model.forward_backward(prob.x, prob.y, prob.h0, prob.mask, dh_last=dh_last)
    _, ref = torch_loss_and_grads(prob.model, prob.x, prob.y, prob.h0, prob.mask, dh_last)
    for name in (*PARAM_NAMES, "h0"):
        assert max_relative_error(getattr(result.grads, name), ref[name]) < 1e-8, name
    hs = prob.model.hidden_states(prob.x, prob.h0)
    np.testing.assert_array_equal(result.h_last, hs[-1])


def test_many_to_one_mask_only_last_step(rng):
    """Masking all but the last step trains from the final output only."""
    prob = random_problem(rng, head="identity", T=12, B=5, use_mask=False)
    mask = np.zeros((12, 5), dtype=bool)
    mask[-1] = True
    loss, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, mask)
    ref_loss, ref = torch_loss_and_grads(prob.model, prob.x, prob.y, prob.h0, mask)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert max_relative_error(grads.W, ref["W"]) < 1e-8


@pytest.mark.parametrize(
    ("act", "head", "ids"), [("tanh", "softmax", True), ("relu", "identity", False)]
)
def test_float32_agrees_with_float64_reference(act, head, ids, rng):
    prob = random_problem(rng, activation=act, head=head, ids=ids, T=20, B=4, dtype=np.float32)
    loss, grads = prob.model.loss_and_grads(prob.x, prob.y, prob.h0, prob.mask)
    ref_loss, ref = torch_loss_and_grads(prob.model, prob.x, prob.y, prob.h0, prob.mask)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    for name in PARAM_NAMES:
        g = getattr(grads, name)
        assert g.dtype == np.float32, name
        assert max_relative_error(g, ref[name]) < 1e-4, name


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_matches_torch_nn_rnn_and_linear(act, rng):
    """weight_ih = V, weight_hh = W, bias_ih + bias_hh = b_h, Linear(U, b_y)."""
    T, B, I, H, O = 17, 3, 5, 8, 4
    rnn = torch.nn.RNN(I, H, nonlinearity=act, dtype=torch.float64)
    head = torch.nn.Linear(H, O, dtype=torch.float64)
    model = ElmanRNN(I, H, O, hidden_activation=act, output="softmax")
    with torch.no_grad():
        model.params.V[...] = rnn.weight_ih_l0.numpy()
        model.params.W[...] = rnn.weight_hh_l0.numpy()
        model.params.b_h[...] = (rnn.bias_ih_l0 + rnn.bias_hh_l0).numpy()
        model.params.U[...] = head.weight.numpy()
        model.params.b_y[...] = head.bias.numpy()
    x = rng.standard_normal((T, B, I))
    y = rng.integers(0, O, size=(T, B))
    h0 = rng.standard_normal((B, H))

    out, _ = rnn(torch.tensor(x), torch.tensor(h0)[None])
    logits = head(out)
    torch_loss = (
        torch.nn.functional.cross_entropy(
            logits.reshape(T * B, O), torch.as_tensor(y).reshape(-1), reduction="sum"
        )
        / B
    )
    torch_loss.backward()
    torch_loss_value = float(torch_loss.detach())

    y_hat, hs = model.predict(x, h0)
    np.testing.assert_allclose(hs[1:], out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        y_hat, torch.softmax(logits, -1).detach().numpy(), rtol=1e-12, atol=1e-14
    )
    loss, grads = model.loss_and_grads(x, y, h0)
    assert abs(loss - torch_loss_value) <= 1e-10 * abs(torch_loss_value)
    pairs = {
        "V": rnn.weight_ih_l0.grad,
        "W": rnn.weight_hh_l0.grad,
        "b_h": rnn.bias_hh_l0.grad,
        "U": head.weight.grad,
        "b_y": head.bias.grad,
    }
    np.testing.assert_allclose(rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad)
    for name, ref in pairs.items():
        assert max_relative_error(getattr(grads, name), ref.numpy()) < 1e-8, name
