"""bptt.interop.from_onnx against ONNX's own RNN/GRU/LSTM operators on random weights.

The graphs are built here by hand (onnx.helper) with independent random W, R, B per gate, so a
gate-order or bias error shows; they run in ONNX's reference evaluator (both dtypes) and, in
float32, in onnxruntime. Also: exact round trips of ``bptt export``, what ``torch.onnx.export``
writes for nn.RNN/GRU/LSTM + nn.Linear, ``--init-from model.onnx`` and the refusals.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from bptt import RNN  # noqa: E402
from bptt.cells import CELLS  # noqa: E402
from bptt.checkpoint import load_checkpoint  # noqa: E402
from bptt.cli import main  # noqa: E402
from bptt.interop import InteropError, export_onnx, from_onnx, onnx_model  # noqa: E402

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
# float32: 1e-6 (the bound); float64: 1e-12
TOL = {np.float32: 1e-6, np.float64: 1e-12}


def op_graph(
    op, rng, dtype, *, I=3, H=4, direction="forward", layout=0, initial=False, head=None, **attrs
):
    """One ONNX recurrent operator with random weights (spread so the gates saturate
    sometimes), optionally initial-state inputs and a MatMul + Add (+ Softmax) head."""
    D = 2 if direction == "bidirectional" else 1
    k = GATES[op]
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    arrays = {
        "W": rng.standard_normal((D, k * H, I)),
        "R": rng.standard_normal((D, k * H, H)) * 0.8,
        "B": rng.standard_normal((D, 2 * k * H)),
    }
    inits = [numpy_helper.from_array(a.astype(dtype), n) for n, a in arrays.items()]
    seq = ["B", "T"] if layout else ["T", "B"]
    state = ["B", D, H] if layout else [D, "B", H]
    inputs = [helper.make_tensor_value_info("x", elem, [*seq, I])]
    op_in = ["x", "W", "R", "B", ""]
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    if initial:
        for part in ["h0"] + (["c0"] if op == "LSTM" else []):
            inputs.append(helper.make_tensor_value_info(part, elem, state))
            op_in.append(part)
    nodes = [
        helper.make_node(op, op_in, outs, hidden_size=H, direction=direction, layout=layout,
                         **attrs)
    ]  # fmt: skip
    outputs = [helper.make_tensor_value_info(n, elem, None) for n in outs]
    if head is not None:  # Y → (T, B, D·H) → MatMul + Add (+ Softmax)
        perm = [0, 1, 2, 3] if layout else [0, 2, 1, 3]  # (B, T, D, H) or (T, B, D, H)
        nodes.append(helper.make_node("Transpose", ["Y"], ["Yt"], perm=perm))
        flat = numpy_helper.from_array(np.array([0, 0, D * H], dtype=np.int64), "flat")
        M = numpy_helper.from_array(rng.standard_normal((D * H, 2)).astype(dtype), "M")
        c = numpy_helper.from_array(rng.standard_normal(2).astype(dtype), "c")
        inits += [flat, M, c]
        nodes.append(helper.make_node("Reshape", ["Yt", "flat"], ["top"]))
        nodes.append(helper.make_node("MatMul", ["top", "M"], ["zM"]))
        nodes.append(helper.make_node("Add", ["zM", "c"], ["z"]))
        last = "z"
        if head == "softmax":
            nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=-1))
            last = "y"
        outputs = [helper.make_tensor_value_info(last, elem, None), *outputs[1:]]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 9
    return model


def _feeds(op, rng, dtype, layout, D, T=6, B=2, I=3, H=4, initial=False):
    x = rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(dtype)
    feeds = {"x": x}
    if initial:
        for part in ["h0"] + (["c0"] if op == "LSTM" else []):
            feeds[part] = (0.7 * rng.standard_normal((B, D, H) if layout else (D, B, H))).astype(
                dtype
            )
    return feeds


CASES = [  # (op, attrs, direction)
    ("RNN", {}, "forward"),
    ("RNN", {"activations": ["Tanh", "Tanh"]}, "bidirectional"),
    ("GRU", {"linear_before_reset": 1}, "forward"),
    ("GRU", {"linear_before_reset": 0}, "forward"),
    ("GRU", {}, "bidirectional"),  # linear_before_reset defaults to 0
    ("GRU", {"linear_before_reset": 1}, "bidirectional"),
    ("LSTM", {}, "forward"),
    ("LSTM", {}, "bidirectional"),
    ("GRU", {"linear_before_reset": 1}, "reverse"),
    ("LSTM", {}, "reverse"),
]


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("op", "attrs", "direction"), CASES)
def test_operator_on_random_weights_matches_the_reference(op, attrs, direction, dtype, layout,
                                                          initial, rng):  # fmt: skip
    proto = op_graph(op, rng, dtype, direction=direction, layout=layout, initial=initial, **attrs)
    rev = direction == "reverse"
    model = from_onnx(proto, allow_reverse=rev)
    expected_cell = {"RNN": "elman", "LSTM": "lstm"}.get(op) or (
        "gru" if attrs.get("linear_before_reset") else "gru_reset_before"
    )
    assert model.cell == expected_cell and model.dtype == dtype
    D = 2 if direction == "bidirectional" else 1
    feeds = _feeds(op, rng, dtype, layout, D, initial=initial)
    outs = ReferenceEvaluator(proto).run(None, feeds)
    Y = outs[0].transpose(1, 2, 0, 3) if layout else outs[0]  # (B, T, D, H) → (T, D, B, H)
    x = feeds["x"].swapaxes(0, 1) if layout else feeds["x"]  # (T, B, I)
    h0 = None
    if initial:
        parts = [
            feeds[p].swapaxes(0, 1) if layout else feeds[p] for p in ("h0", "c0") if p in feeds
        ]
        parts = [p[0] if model.simple else p for p in parts]  # (B, H) or (D, B, H)
        h0 = tuple(parts) if op == "LSTM" else parts[0]
    T, B, H = x.shape[0], x.shape[1], 4
    if rev:  # the forward model of the reversed sequence
        ours, final = model.logits(x[::-1], h0)
        ours = ours[::-1]
    else:
        ours, final = model.logits(x, h0)  # identity head U = I: z = top states (T, B, D·H)
    assert ours.dtype == dtype
    want = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    np.testing.assert_allclose(ours, want, rtol=0, atol=TOL[dtype])
    finals = final if isinstance(final, tuple) else (final,)
    for got, ref in zip(finals, outs[1:], strict=True):
        ref = ref.swapaxes(0, 1) if layout else ref  # (D, B, H)
        got = got[None] if model.simple else got
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype])
    if dtype == np.float32 and layout == 0:  # onnxruntime runs it too (it has no layout 1)
        runtime = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
        np.testing.assert_allclose(runtime[0], outs[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_rnn_activations_onnxruntime(activation, rng):
    """ONNX's reference RNN implements only Tanh/Affine: Relu and Sigmoid against onnxruntime."""
    proto = op_graph("RNN", rng, np.float32, activations=[activation])
    model = from_onnx(proto)
    assert model.hidden_activation == activation.lower()
    feeds = _feeds("RNN", rng, np.float32, 0, 1)
    Y = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(model.logits(feeds["x"])[0], Y[:, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("head", ["softmax", "logits"])
@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_head_matmul_add_softmax(op, head, rng):
    proto = op_graph(op, rng, np.float64, direction="bidirectional", layout=1,
                     head=None if head == "logits" else head)  # fmt: skip
    if head == "logits":  # a logits head (no Softmax): the model's loss chosen by the caller
        proto = op_graph(op, rng, np.float64, direction="bidirectional", head="z")
    model = from_onnx(proto, output="softmax" if head == "logits" else None)
    assert model.output == "softmax" and model.output_size == 2
    layout = 0 if head == "logits" else 1
    feeds = _feeds(op, rng, np.float64, layout, 2)
    got = ReferenceEvaluator(proto).run(None, feeds)[0]
    x = feeds["x"].swapaxes(0, 1) if layout else feeds["x"]
    ours = model.logits(x)[0] if head == "logits" else model.predict(x)[0]
    np.testing.assert_allclose(ours, got.swapaxes(0, 1) if layout else got, rtol=0, atol=1e-12)


def test_stacked_operators_with_layout_nodes(rng):
    """Two GRU operators joined by Transpose/Reshape as bptt export writes them, made by hand."""
    first = op_graph("GRU", rng, np.float64, direction="bidirectional", linear_before_reset=0)
    second = op_graph("GRU", rng, np.float64, I=8, direction="bidirectional",
                      linear_before_reset=0, head="softmax")  # fmt: skip
    g1, g2 = first.graph, second.graph
    for init in g2.initializer:
        init.name = "s_" + init.name
    for node in g2.node:
        node.input[:] = ["s_" + n if n and n not in ("x",) else n for n in node.input]
        node.output[:] = ["s_" + n for n in node.output]
    g2.node[0].input[0] = "x1"
    joins = [
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "flat"], ["x1"]),
    ]
    flat = numpy_helper.from_array(np.array([0, 0, 8], dtype=np.int64), "flat")
    graph = helper.make_graph(
        list(g1.node) + joins + list(g2.node), "stack", list(g1.input),
        [helper.make_tensor_value_info("s_y", TensorProto.DOUBLE, None)],
        initializer=[*g1.initializer, flat, *g2.initializer],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model = from_onnx(proto)
    assert (model.cell, model.num_layers, model.bidirectional) == ("gru_reset_before", 2, True)
    x = rng.standard_normal((5, 3, 3))
    got = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.predict(x)[0], got, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(
    ("layers", "bi", "ids", "initial"),
    [(1, False, False, False), (2, True, True, True), (3, False, False, True)],
)
def test_bptt_export_round_trips_exactly(cell, layers, bi, ids, initial):
    for dtype in (np.float32, np.float64):
        model = RNN(4, 3, 2, cell=cell, num_layers=layers, bidirectional=bi, dtype=dtype, seed=7,
                    output="sigmoid")  # fmt: skip
        back = from_onnx(onnx_model(model, ids=ids, initial_state=initial))
        assert back.structure() == model.structure()
        assert list(back.params) == list(model.params)
        for name, array in model.params.items():
            np.testing.assert_array_equal(back.params[name], array, err_msg=name)


def _torch_export(module, x):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch = pytest.importorskip("torch")
        torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "d0", 1: "d1"}})  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
        ("GRU", {"bidirectional": True}),
        ("GRU", {"batch_first": True, "num_layers": 2}),
        ("LSTM", {"num_layers": 2, "bidirectional": True}),
        ("LSTM", {"batch_first": True}),
    ],
)
def test_reads_torch_onnx_export(kind, kwargs, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(int(rng.integers(1 << 30)))
    rnn = getattr(torch.nn, kind)(3, 4, **kwargs)
    D = 2 if kwargs.get("bidirectional") else 1
    head = torch.nn.Linear(D * 4, 2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    batch_first = kwargs.get("batch_first", False)
    x = torch.randn(3, 5, 3) if batch_first else torch.randn(5, 3, 3)
    proto = _torch_export(Net(), x)
    model = from_onnx(proto)
    assert model.cell == {"RNN": "elman", "GRU": "gru", "LSTM": "lstm"}[kind]
    x_tm = rng.standard_normal((7, 2, 3)).astype(np.float32)  # other T and B than exported
    with torch.no_grad():
        xt = torch.from_numpy(x_tm.swapaxes(0, 1).copy() if batch_first else x_tm)
        want = Net()(xt).numpy()
    want = want.swapaxes(0, 1) if batch_first else want
    np.testing.assert_allclose(model.logits(x_tm)[0], want, rtol=0, atol=1e-5)


def test_init_from_onnx(tmp_path, capsys):
    common = ["--task", "adding", "--seq-len", "5", "--hidden", "4", "--batch", "4",
              "--eval-size", "8", "--no-plot", "--no-progress", "--dtype", "float64",
              "--cell", "gru_reset_before"]  # fmt: skip
    src = RNN(2, 4, 1, cell="gru_reset_before", output="identity", seed=3)
    export_onnx(src, tmp_path / "m.onnx")
    args = ["train", *common, "--steps", "1", "--lr", "0", "--eval-every", "1"]
    assert main([*args, "--init-from", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "r")]) == 0
    started = load_checkpoint(tmp_path / "r").model
    for name, array in src.params.items():
        np.testing.assert_array_equal(started.params[name], array)
    capsys.readouterr()
    wrong = RNN(2, 4, 1, cell="gru", output="identity", seed=3)  # the other GRU convention
    export_onnx(wrong, tmp_path / "w.onnx")
    assert main([*args, "--init-from", str(tmp_path / "w.onnx"), "--out", str(tmp_path / "b")]) == 2
    assert "differs in ['cell']" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


# -- refusals ----------------------------------------------------------------------------------


def test_refuses_what_bptt_cannot_express(rng):
    dt = np.float64
    with pytest.raises(InteropError, match="attribute 'clip'"):
        from_onnx(op_graph("LSTM", rng, dt, clip=3.0))
    with pytest.raises(InteropError, match="input_forget"):
        from_onnx(op_graph("LSTM", rng, dt, input_forget=1))
    with pytest.raises(InteropError, match=r"activations=\['Tanh', 'Tanh'\]"):
        from_onnx(op_graph("GRU", rng, dt, activations=["Tanh", "Tanh"]))
    with pytest.raises(InteropError, match="direction 'reverse' alone"):
        from_onnx(op_graph("RNN", rng, dt, direction="reverse"))
    with pytest.raises(InteropError, match="activation_alpha"):
        from_onnx(op_graph("RNN", rng, dt, activations=["Affine"], activation_alpha=[2.0]))
    # peepholes: a non-zero P is refused, a zero P is the plain LSTM
    proto = op_graph("LSTM", rng, dt)
    node = proto.graph.node[0]
    node.input[:] = [*node.input, "", "", "P"]
    proto.graph.initializer.append(numpy_helper.from_array(rng.standard_normal((1, 12)), "P"))
    with pytest.raises(InteropError, match=r"input P .peephole weights. is non-zero"):
        from_onnx(proto)
    proto.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.zeros((1, 12)), "P"))
    assert from_onnx(proto).cell == "lstm"
    # sequence_lens, an unknown operator, a value-changing node that is not layout
    proto = op_graph("RNN", rng, dt)
    proto.graph.node[0].input[4] = "lens"
    proto.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["B"]))
    with pytest.raises(InteropError, match="sequence_lens"):
        from_onnx(proto)
    proto = op_graph("RNN", rng, dt)
    proto.graph.node.append(helper.make_node("Mul", ["Y", "Y"], ["Y2"], name="square"))
    with pytest.raises(InteropError, match=r"node 'square' .Mul.: operator Mul is not supported"):
        from_onnx(proto)
    proto = op_graph("RNN", rng, dt)  # Y reversed in time by a Slice: layout-only nodes lie
    for name, value in {"st": [-1], "en": [-(2**62)], "ax": [0], "sp": [-1]}.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.array(value), name))
    proto.graph.node.append(helper.make_node("Slice", ["Y", "st", "en", "ax", "sp"], ["Yr"]))
    proto.graph.output[0].name = "Yr"
    with pytest.raises(InteropError, match="does not reproduce the graph's output"):
        from_onnx(proto)
    with pytest.raises(InteropError, match="not a readable ONNX model"):
        from_onnx(__file__)
    with pytest.raises(TypeError, match="path_or_model"):
        from_onnx(3)


def test_pytorch_export_refuses_the_reset_before_gru(tmp_path):
    from bptt.interop import save_torch_state, to_torch

    model = RNN(2, 3, 1, cell="gru_reset_before")
    with pytest.raises(InteropError, match=r"no torch\.nn counterpart"):
        to_torch(model)
    with pytest.raises(InteropError, match="linear_before_reset=0"):
        save_torch_state(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    proto = onnx_model(model)
    gru = next(n for n in proto.graph.node if n.op_type == "GRU")
    assert (
        helper.get_attribute_value(
            next(a for a in gru.attribute if a.name == "linear_before_reset")
        )
        == 0
    )


def test_reads_torch_onnx_export_with_initial_states(rng):
    """(x, h0, c0) graph inputs; torch slices h0/c0 per layer inside the graph."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(int(rng.integers(1 << 30)))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x, h0, c0):
            return self.head(self.rnn(x, (h0, c0))[0])

    net = Net()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(5, 2, 3), torch.randn(4, 2, 4), torch.randn(4, 2, 4)),
            buffer,
            dynamo=False,
            input_names=["x", "h0", "c0"],
            dynamic_axes={"x": {0: "T", 1: "B"}, "h0": {1: "B"}, "c0": {1: "B"}},
        )
    model = from_onnx(onnx.load_from_string(buffer.getvalue()))
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    h0, c0 = (rng.standard_normal((4, 3, 4)).astype(np.float32) for _ in range(2))
    with torch.no_grad():
        want = net(*(torch.from_numpy(a) for a in (x, h0, c0))).numpy()
    np.testing.assert_allclose(model.logits(x, (h0, c0))[0], want, rtol=0, atol=1e-5)
