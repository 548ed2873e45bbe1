"""PyTorch's state layout (L·D, B, H) for one-layer models too: (1, B, H) initial states and
final-state gradients, for every cell, checked against PyTorch's own modules fed the same
(1, B, H) tensors."""

from __future__ import annotations

import numpy as np
import pytest

import bptt

T, B, I, H, O = 6, 3, 4, 5, 4


def _model(cell: str) -> bptt.RNN:
    return bptt.RNN(I, H, O, cell=cell, output="identity", seed=1, dtype=np.float64)


def _states(cell: str, rng: np.random.Generator) -> object:
    if cell == "lstm":
        return (rng.standard_normal((1, B, H)), rng.standard_normal((1, B, H)))
    return rng.standard_normal((1, B, H))


def _squeeze(state: object) -> object:
    return tuple(s[0] for s in state) if isinstance(state, tuple) else state[0]  # type: ignore[index]


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_one_layer_takes_pytorch_state_layout(cell: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = _model(cell)
    x = rng.standard_normal((T, B, I))
    y = rng.standard_normal((T, B, O))
    h0 = _states(cell, rng)  # (1, B, H), or a pair of them
    dh_last = _states(cell, rng)  # a random upstream gradient on the final state
    res = model.forward_backward(x, y, h0, dh_last=dh_last)
    # the same model in PyTorch, fed the same (1, B, H) tensors
    rnn, head = bptt.interop.to_torch(model)
    rnn, head = rnn.double(), head.double()
    xt = torch.tensor(x)
    if cell == "lstm":
        h0t = tuple(torch.tensor(s, requires_grad=True) for s in h0)  # type: ignore[union-attr]
    else:
        h0t = torch.tensor(h0, requires_grad=True)
    out, hT = rnn(xt, h0t)
    loss = 0.5 * ((head(out) - torch.tensor(y)) ** 2).sum() / B
    if cell == "lstm":
        loss = loss + sum((a * torch.tensor(g)).sum() for a, g in zip(hT, dh_last, strict=True))  # type: ignore[arg-type]
    else:
        loss = loss + (hT * torch.tensor(dh_last)).sum()
    loss.backward()
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.loss, loss.item() - _dot(res.h_last, dh_last), **tol)
    if cell == "lstm":
        for mine, theirs in zip(res.grads.h0, h0t, strict=True):
            np.testing.assert_allclose(mine, theirs.grad.numpy()[0], **tol)
    else:
        np.testing.assert_allclose(res.grads.h0, h0t.grad.numpy()[0], **tol)
    # and exactly what the (B, H) form gives
    again = model.forward_backward(x, y, _squeeze(h0), dh_last=_squeeze(dh_last))
    assert again.loss == res.loss
    for name in model.params:
        np.testing.assert_array_equal(again.grads[name], res.grads[name])
    y_hat, _ = model.predict(x, h0)
    np.testing.assert_array_equal(y_hat, model.predict(x, _squeeze(h0))[0])


def _dot(h_last: object, dh_last: object) -> float:
    if isinstance(h_last, tuple):
        return sum(float(np.sum(a * b[0])) for a, b in zip(h_last, dh_last, strict=True))  # type: ignore[arg-type]
    return float(np.sum(h_last * dh_last[0]))  # type: ignore[index, operator]


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_wrong_state_shapes_are_still_refused(cell: str) -> None:
    model = _model(cell)
    x = np.zeros((T, B, I))
    bad = np.zeros((2, B, H))
    with pytest.raises(ValueError, match=r"must have shape \(B, H\) = \(3, 5\), got \(2, 3, 5\)"):
        model.loss_and_grads(x, np.zeros((T, B, O)), (bad, bad) if cell == "lstm" else bad)
