"""bptt export (ONNX, torch state dict) and bptt train --init-from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bptt import ElmanRNN
from bptt.checkpoint import load_checkpoint
from bptt.cli import main
from bptt.interop import InteropError, load_torch_state, onnx_model, save_torch_state

ort = pytest.importorskip("onnxruntime")
onnx_reference = pytest.importorskip("onnx.reference")

CASES = [  # (layers, bidirectional, ids, activation, head)
    (1, False, False, "tanh", "softmax"),
    (1, False, True, "tanh", "identity"),
    (2, False, True, "relu", "softmax"),
    (2, True, False, "tanh", "sigmoid"),
    (3, True, True, "sigmoid", "identity"),
    (2, False, False, "identity", "identity"),
]


def run_onnx(proto, feeds, dtype):
    """onnxruntime's CPU RNN kernels are float32 only: float64 graphs run in ONNX's own
    reference evaluator (whose RNN implements tanh and identity)."""
    if dtype == np.float32:
        return ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
    return onnx_reference.ReferenceEvaluator(proto).run(None, feeds)


# float64 graphs run where ONNX's reference RNN implements the activation (tanh, identity)
DTYPE_CASES = [
    (*case, dtype)
    for case in CASES
    for dtype in (np.float32, np.float64)
    if dtype == np.float32 or case[3] in ("tanh", "identity")
]


@pytest.mark.parametrize(("layers", "bidirectional", "ids", "act", "head", "dtype"), DTYPE_CASES)
@pytest.mark.parametrize("initial_state", [False, True])
def test_onnx_graph_matches_predict(
    layers, bidirectional, ids, act, head, dtype, initial_state, rng
):
    model = ElmanRNN(
        5,
        4,
        3,
        hidden_activation=act,
        output=head,
        num_layers=layers,
        bidirectional=bidirectional,
        seed=int(rng.integers(1000)),
        dtype=dtype,
    )
    for array in model.params.values():
        array *= 2  # weights away from zero: the states are not all near the linear regime
    T, B = 7, 3
    x = rng.integers(0, 5, (T, B)) if ids else rng.standard_normal((T, B, 5)).astype(dtype)
    feeds = {"x": x.astype(np.int64) if ids else x}
    h0 = None
    if initial_state:
        shape = (B, 4) if model.simple else (layers * model.num_directions, B, 4)
        h0 = (0.5 * rng.standard_normal(shape)).astype(dtype)
        feeds["h0"] = h0
    y_hat, h_last = run_onnx(onnx_model(model, ids=ids, initial_state=initial_state), feeds, dtype)
    expected, _ = model.predict(x, h0)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert y_hat.shape == expected.shape and y_hat.dtype == dtype
    np.testing.assert_allclose(y_hat, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(h_last, model.final_state(x, h0), rtol=tol, atol=tol)


def test_torch_state_file_round_trip(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    model = ElmanRNN(4, 6, 3, num_layers=2, bidirectional=True, seed=5, dtype=np.float32)
    path = save_torch_state(model, tmp_path / "m.safetensors")
    # a PyTorch user loads it with their own modules
    rnn = torch.nn.RNN(4, 6, 2, bidirectional=True)
    head = torch.nn.Linear(12, 3)
    tensors = load_file(path)
    rnn.load_state_dict(
        {k.removeprefix("rnn."): v for k, v in tensors.items() if k.startswith("rnn.")}
    )
    head.load_state_dict(
        {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    )
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    with torch.no_grad():
        z = head(rnn(torch.tensor(x))[0]).numpy()
    np.testing.assert_allclose(model.logits(x)[0], z, rtol=1e-5, atol=1e-5)
    back = load_torch_state(path)
    for name, array in model.params.items():
        np.testing.assert_array_equal(back.params[name], array)


def test_torch_export_refuses_an_activation_torch_lacks(tmp_path):
    with pytest.raises(InteropError, match="nonlinearity 'tanh' or 'relu'"):
        save_torch_state(ElmanRNN(2, 3, 2, hidden_activation="identity"), tmp_path / "m.st")
    assert not (tmp_path / "m.st").exists()


def _train(tmp_path, name, *extra):
    out = tmp_path / name
    args = [
        "train",
        "--task",
        "adding",
        "--seq-len",
        "6",
        "--hidden",
        "5",
        "--batch",
        "4",
        "--steps",
        "3",
        "--eval-every",
        "3",
        "--eval-size",
        "8",
        "--out",
        str(out),
        "--no-plot",
        "--no-progress",
        "--dtype",
        "float64",
        *extra,
    ]
    assert main(args) == 0
    return out


def test_export_cli_and_init_from_round_trip(tmp_path, capsys):
    run = _train(tmp_path, "a", "--layers", "2")
    onnx_file = tmp_path / "m.onnx"
    torch_file = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--format", "onnx", "--out", str(onnx_file)]) == 0
    assert main(["export", str(run), "--format", "torch", "--out", str(torch_file)]) == 0
    trained = load_checkpoint(run).model
    x = np.random.default_rng(1).standard_normal((6, 2, 2))
    y_onnx, _ = onnx_reference.ReferenceEvaluator(str(onnx_file)).run(None, {"x": x})
    np.testing.assert_allclose(y_onnx, trained.predict(x)[0], rtol=1e-10, atol=1e-12)

    # --init-from a bptt run and from the torch file: step 0 of the new run is the old weights
    for source in (run, torch_file):
        new = _train(
            tmp_path,
            f"from_{source.name}",
            "--layers",
            "2",
            "--init-from",
            str(source),
            "--steps",
            "1",
            "--lr",
            "0",
        )
        started = load_checkpoint(new).model
        for name, array in trained.params.items():
            np.testing.assert_array_equal(started.params[name], array)
    capsys.readouterr()
    # shapes that do not fit the configuration: a clear error, exit 2, nothing written
    assert (
        main(
            [
                "train",
                "--task",
                "adding",
                "--hidden",
                "7",
                "--layers",
                "2",
                "--steps",
                "1",
                "--init-from",
                str(torch_file),
                "--out",
                str(tmp_path / "bad"),
                "--no-plot",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "bptt train: error: --init-from" in err and "needs (1, 7)" in err
    assert (
        main(
            [
                "train",
                "--task",
                "adding",
                "--hidden",
                "5",
                "--steps",
                "1",
                "--init-from",
                str(run),
                "--out",
                str(tmp_path / "bad2"),
                "--no-plot",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "differs in ['num_layers']" in capsys.readouterr().err
    meta = json.loads(
        __import__("safetensors").safe_open(str(torch_file), "numpy").metadata()["bptt"]
    )
    assert meta["module"] == "RNN" and meta["rnn"]["num_layers"] == 2
