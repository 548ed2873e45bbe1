"""Deep and bidirectional models against torch.nn.RNN + nn.Linear autograd in float64.

The torch modules draw their own weights (torch.manual_seed); ``from_torch`` builds the bptt
model, and ``state_dict(model, grads)`` names each gradient as torch does, so every
``.grad`` of the torch parameters is compared with the hand-written BPTT. The objective has a
random upstream signal on the final state as well (⟨h_n, dh_last⟩).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from batches import max_relative_error, random_targets  # noqa: E402
from bptt import ElmanRNN  # noqa: E402
from bptt.interop import from_torch, state_dict, to_torch  # noqa: E402

HEADS = ["softmax", "sigmoid", "identity"]


def torch_objective(rnn, head, output, x, y, h0, mask, dh_last):
    """L + ⟨h_n, dh_last⟩ with L = (1/B) Σ_t Σ_b m_tb L_tb, on torch's own modules."""
    T, B = x.shape[:2]
    if x.ndim == 2:
        x_t = F.one_hot(torch.as_tensor(x), rnn.input_size).double()
    else:
        x_t = torch.tensor(x)
    out, h_n = rnn(x_t, h0)
    z = head(out)  # (T, B, O)
    if output == "softmax":
        losses = F.cross_entropy(
            z.reshape(T * B, -1), torch.as_tensor(y).reshape(-1), reduction="none"
        )
    elif output == "sigmoid":
        losses = F.binary_cross_entropy_with_logits(z, torch.tensor(y), reduction="none").sum(-1)
    else:
        losses = 0.5 * ((z - torch.tensor(y)) ** 2).sum(-1)
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask.astype(float))
    loss = (m.reshape(-1) * losses.reshape(-1)).sum() / B
    return loss, loss + (h_n * torch.tensor(dh_last)).sum()


CONFIGS = list(itertools.product([1, 2, 3], [False, True], ["tanh", "relu"], HEADS, [False, True]))


@pytest.mark.parametrize(("layers", "bidirectional", "act", "head", "ids"), CONFIGS)
def test_deep_gradients_match_torch(layers, bidirectional, act, head, ids, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    T, B, I, H, O = int(rng.integers(1, 9)), int(rng.integers(1, 4)), 4, 5, 3
    D = 2 if bidirectional else 1
    rnn = torch.nn.RNN(I, H, layers, nonlinearity=act, bidirectional=bidirectional).double()
    lin = torch.nn.Linear(D * H, O).double()
    model = from_torch(rnn, lin, output=head)
    assert (model.num_layers, model.bidirectional, model.dtype) == (
        layers,
        bidirectional,
        np.float64,
    )
    x = rng.integers(0, I, size=(T, B)) if ids else rng.standard_normal((T, B, I))
    y = random_targets(rng, head, T, B, O, np.dtype(np.float64))
    h0 = 0.5 * rng.standard_normal((layers * D, B, H))
    mask = rng.random((T, B)) < 0.7
    dh_last = rng.standard_normal((layers * D, B, H))
    h0_t = torch.tensor(h0, requires_grad=True)
    loss_t, objective = torch_objective(rnn, lin, head, x, y, h0_t, mask, dh_last)
    objective.backward()
    loss_ref = float(loss_t.detach())

    simple = layers == 1 and not bidirectional  # then states are (B, H), not (1, B, H)
    squeeze = (lambda a: a[0]) if simple else (lambda a: a)
    result = model.forward_backward(x, y, squeeze(h0), mask, dh_last=squeeze(dh_last))
    assert abs(result.loss - loss_ref) <= 1e-10 * max(abs(loss_ref), 1e-300)
    named = state_dict(model, result.grads)
    reference = {f"rnn.{k}": v.grad for k, v in rnn.named_parameters()}
    reference |= {f"head.{k}": v.grad for k, v in lin.named_parameters()}
    assert named.keys() == reference.keys()
    for name, grad in reference.items():
        assert named[name].shape == tuple(grad.shape), name
        assert max_relative_error(named[name], grad.numpy()) < 1e-8, name
    assert result.grads.h0.shape == squeeze(h0).shape
    assert max_relative_error(result.grads.h0, squeeze(h0_t.grad.numpy())) < 1e-8
    with torch.no_grad():
        _, h_n = rnn(torch.tensor(np.eye(I)[x] if ids else x), torch.tensor(h0))
    np.testing.assert_allclose(result.h_last, squeeze(h_n.numpy()), rtol=0, atol=1e-12)


def torch_loop(model, x, h0):
    """A hand-written torch loop over layers and directions for any hidden activation."""
    acts = {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "identity": lambda e: e,
    }
    f = acts[model.hidden_activation]
    p = {n: torch.tensor(a, requires_grad=True) for n, a in model.params.items()}
    layer_in = torch.tensor(np.eye(model.input_size)[x] if x.ndim == 2 else x)
    finals = []
    T = layer_in.shape[0]
    for layer in range(model.num_layers):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][: model.num_directions]):
            k = layer * model.num_directions + d
            V, W, b = (p[f"{n}_l{layer}{sfx}"] for n in ("V", "W", "b_h"))
            h = h0[k]
            hs = [None] * T
            for t in range(T - 1, -1, -1) if d else range(T):
                h = f(layer_in[t] @ V.T + h @ W.T + b)
                hs[t] = h
            outs.append(torch.stack(hs))
            finals.append(h)
        layer_in = torch.cat(outs, dim=-1)
    return p, layer_in @ p["U"].T + p["b_y"], torch.stack(finals)


@pytest.mark.parametrize("act", ["sigmoid", "identity"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_other_activations_against_a_torch_loop(act, bidirectional, rng):
    model = ElmanRNN(
        3,
        4,
        2,
        hidden_activation=act,
        output="identity",
        num_layers=2,
        bidirectional=bidirectional,
        seed=int(rng.integers(1000)),
    )
    T, B, D = 6, 2, model.num_directions
    x = rng.standard_normal((T, B, 3))
    y = rng.standard_normal((T, B, 2))
    h0 = rng.standard_normal((2 * D, B, 4))
    dh_last = rng.standard_normal((2 * D, B, 4))
    h0_t = torch.tensor(h0, requires_grad=True)
    p, z, h_n = torch_loop(model, x, h0_t)
    loss = 0.5 * ((z - torch.tensor(y)) ** 2).sum() / B
    (loss + (h_n * torch.tensor(dh_last)).sum()).backward()
    result = model.forward_backward(x, y, h0, dh_last=dh_last)
    assert abs(result.loss - float(loss.detach())) <= 1e-10 * float(loss.detach())
    for name, tensor in p.items():
        assert max_relative_error(result.grads[name], tensor.grad.numpy()) < 1e-8, name
    assert max_relative_error(result.grads.h0, h0_t.grad.numpy()) < 1e-8


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_torch_round_trip(bidirectional, dtype, rng):
    model = ElmanRNN(
        4,
        5,
        3,
        hidden_activation="relu",
        num_layers=2,
        bidirectional=bidirectional,
        seed=3,
        dtype=dtype,
    )
    rnn, lin = to_torch(model)
    x = rng.standard_normal((7, 2, 4)).astype(dtype)
    with torch.no_grad():
        out, h_n = rnn(torch.tensor(x))
        z_torch = lin(out).numpy()
    z, h_last = model.logits(x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(z, z_torch, rtol=tol, atol=tol)
    np.testing.assert_allclose(h_last, h_n.numpy(), rtol=tol, atol=tol)
    back = from_torch(rnn, lin, output="softmax")
    for name, array in model.params.items():
        np.testing.assert_array_equal(back.params[name], array)


def test_torch_biases_sum_into_b_h_and_gradients_go_to_both(rng):
    rnn = torch.nn.RNN(3, 4, 1).double()
    lin = torch.nn.Linear(4, 2).double()
    model = from_torch(rnn, lin, output="identity")
    expected = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy()
    np.testing.assert_array_equal(model.params.b_h, expected)
    _, grads = model.loss_and_grads(rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 2, 2)))
    named = state_dict(model, grads)
    np.testing.assert_array_equal(named["rnn.bias_ih_l0"], grads.b_h)
    np.testing.assert_array_equal(named["rnn.bias_hh_l0"], grads.b_h)
    weights = state_dict(model)
    np.testing.assert_array_equal(weights["rnn.bias_hh_l0"], 0.0)
    with pytest.raises(ValueError, match="kind='weights' or kind='gradients'"):
        state_dict(model, model.params.copy())


def test_interop_refusals():
    from bptt.interop import InteropError

    with pytest.raises(InteropError, match="nonlinearity 'tanh' or 'relu'"):
        to_torch(ElmanRNN(2, 3, 2, hidden_activation="sigmoid"))
    with pytest.raises(InteropError, match="in_features is 6"):
        from_torch(torch.nn.RNN(2, 3, bidirectional=False), torch.nn.Linear(6, 2))
    with pytest.raises(InteropError, match=r"needs one of torch\.nn"):
        from_torch(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
