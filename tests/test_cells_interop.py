"""bptt.interop for every registered cell: from_torch / state_dict(model, grads) against
nn.GRU/nn.LSTM (nn.RNN) autograd in float64, to_torch, and ONNX export (GRU, LSTM, RNN
operators) run in onnxruntime (float32) and ONNX's reference evaluator (float64)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx_reference = pytest.importorskip("onnx.reference")

from batches import max_relative_error, random_targets  # noqa: E402
from bptt import RNN  # noqa: E402
from bptt.cells import CELLS  # noqa: E402
from bptt.interop import from_torch, onnx_model, state_dict, to_torch  # noqa: E402
from torch_reference import step_losses  # noqa: E402

MODULES = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
# every registered cell with a torch.nn counterpart (gru_reset_before has none: PyTorch export
# refuses it, tests/test_interop_import.py)
CELL_NAMES = sorted(set(CELLS) - {"gru_reset_before"})

# (num_layers, bidirectional, head, ids, mask, h0)
CONFIGS = [
    (1, False, "softmax", True, True, True),
    (2, True, "sigmoid", False, True, True),
    (3, False, "identity", False, False, False),
    (2, False, "softmax", True, False, True),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_from_torch_and_state_dict_of_grads_match_autograd(cell, config, rng):
    L, bi, head, ids, use_mask, use_h0 = config
    T, B, I, H, O = 8, 3, 4, 5, 3
    torch.manual_seed(int(rng.integers(1 << 30)))
    rnn = MODULES[cell](I, H, num_layers=L, bidirectional=bi, dtype=torch.float64)
    D = 2 if bi else 1
    linear = torch.nn.Linear(D * H, O, dtype=torch.float64)
    with torch.no_grad():
        for w in [*rnn.parameters(), *linear.parameters()]:
            w.mul_(2.0)
    model = from_torch(rnn, linear, output=head)
    assert model.cell == cell and model.dtype == np.float64

    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    y = random_targets(rng, head, T, B, O, np.dtype(np.float64))
    mask = rng.random((T, B)) < 0.7 if use_mask else None
    parts = model.state_parts
    h0s = [0.5 * rng.standard_normal((L * D, B, H)) for _ in range(parts)]
    upstream = [rng.standard_normal((L * D, B, H)) for _ in range(parts)]  # random dL/ds_T

    xt = torch.nn.functional.one_hot(torch.as_tensor(x), I).double() if ids else torch.tensor(x)
    states = [torch.tensor(h, requires_grad=True) for h in h0s]
    if use_h0:
        out, final = rnn(xt, states[0] if parts == 1 else tuple(states))
    else:
        out, final = rnn(xt)
    z = linear(out)
    yt = torch.as_tensor(y) if head == "softmax" else torch.tensor(y)
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask * 1.0)
    loss = sum((m[t] * step_losses(z[t], yt[t], head)).sum() for t in range(T)) / B
    finals = list(final) if isinstance(final, tuple) else [final]
    objective = loss + sum(
        (f * torch.tensor(u)).sum() for f, u in zip(finals, upstream, strict=True)
    )
    objective.backward()

    def public(arrays):
        arrays = [a[0] if model.simple else a for a in arrays]
        return tuple(arrays) if parts > 1 else arrays[0]

    result = model.forward_backward(
        x, y, public(h0s) if use_h0 else None, mask, dh_last=public(upstream)
    )
    ref_loss = float(loss.detach())
    assert abs(result.loss - ref_loss) <= 1e-10 * abs(ref_loss)
    ours = state_dict(model, result.grads)
    theirs = {f"rnn.{k}": v.grad.numpy() for k, v in rnn.named_parameters()}
    theirs |= {"head.weight": linear.weight.grad.numpy(), "head.bias": linear.bias.grad.numpy()}
    assert set(ours) == set(theirs)
    for name, grad in theirs.items():
        assert max_relative_error(ours[name], grad) < 1e-8, name
    if use_h0:
        got = result.grads.h0 if parts > 1 else (result.grads.h0,)
        for g, s in zip(got, states, strict=True):
            g = g[None] if model.simple else g
            assert max_relative_error(g, s.grad.numpy()) < 1e-8


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_to_torch_computes_the_same_function(cell, rng):
    model = RNN(4, 5, 3, cell=cell, num_layers=2, bidirectional=True, seed=3)
    rnn, head = to_torch(model)
    assert type(rnn) is MODULES[cell]
    x = rng.standard_normal((6, 2, 4))
    with torch.no_grad():
        z = head(rnn(torch.tensor(x))[0]).numpy()
    np.testing.assert_allclose(model.logits(x)[0], z, rtol=1e-12, atol=1e-12)
    back = from_torch(rnn, head)
    for name, array in model.params.items():
        np.testing.assert_allclose(back.params[name], array, rtol=1e-15, atol=1e-15)


ONNX_CASES = [  # (layers, bidirectional, ids, head)
    (1, False, False, "softmax"),
    (1, False, True, "identity"),
    (2, True, False, "sigmoid"),
    (2, False, True, "softmax"),
]


@pytest.mark.parametrize("initial_state", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ONNX_CASES)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_onnx_graph_matches_predict(cell, case, dtype, initial_state, rng):
    layers, bi, ids, head = case
    model = RNN(5, 4, 3, cell=cell, num_layers=layers, bidirectional=bi, output=head, seed=2,
                dtype=dtype)  # fmt: skip
    for array in model.params.values():
        array *= 2
    T, B = 7, 3
    x = rng.integers(0, 5, (T, B)) if ids else rng.standard_normal((T, B, 5)).astype(dtype)
    feeds = {"x": x.astype(np.int64) if ids else x}
    h0 = None
    if initial_state:
        shape = (B, 4) if model.simple else (layers * model.num_directions, B, 4)
        parts = [(0.5 * rng.standard_normal(shape)).astype(dtype) for _ in range(model.state_parts)]
        feeds["h0"] = parts[0]
        if cell == "lstm":
            feeds["c0"] = parts[1]
        h0 = tuple(parts) if cell == "lstm" else parts[0]
    proto = onnx_model(model, ids=ids, initial_state=initial_state)
    assert proto.graph.node[[n.op_type for n in proto.graph.node].index(cell.upper())]
    if dtype == np.float32:
        outputs = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
    else:
        outputs = onnx_reference.ReferenceEvaluator(proto).run(None, feeds)
    expected, _ = model.predict(x, h0)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(outputs[0], expected, rtol=tol, atol=tol)
    final = model.final_state(x, h0)
    for got, want in zip(outputs[1:], final if cell == "lstm" else (final,), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
