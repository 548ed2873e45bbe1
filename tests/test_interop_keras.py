"""bptt.interop.from_keras / to_keras against Keras's own ``predict`` (Keras 3, JAX backend).

Every Keras weight (biases included, which Keras initialises to zero) is drawn at random, so a
gate-order or bias mix-up shows. Skipped, with the reason, where Keras or JAX is missing.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3's default backend is TensorFlow
keras = pytest.importorskip("keras", reason="Keras interop tests need keras and jax (bptt[test])")

from bptt import RNN  # noqa: E402
from bptt.interop import InteropError, from_keras, to_keras  # noqa: E402

L = keras.layers


def _randomise(net, rng, scale=0.8):
    for layer in net.layers:
        layer.set_weights(
            [(scale * rng.standard_normal(w.shape)).astype(w.dtype) for w in layer.get_weights()]
        )
    return net


def _rnn(kind, units, **options):
    if kind == "SimpleRNN":
        return L.SimpleRNN(units, return_sequences=True, **options)
    if kind == "LSTM":
        return L.LSTM(units, return_sequences=True, **options)
    return L.GRU(units, return_sequences=True, reset_after=kind == "GRU", **options)


def _keras_vs_bptt(net, model, rng, dtype=np.float32, T=6, B=3):
    x = rng.standard_normal((B, T, model.input_size)).astype(dtype)  # Keras: batch-major
    want = np.asarray(net.predict(x, verbose=0))
    got = model.predict(x.swapaxes(0, 1))[0].swapaxes(0, 1)  # bptt: time-major
    return got, want


KINDS = ["SimpleRNN", "GRU", "GRU_reset_before", "LSTM"]
CELL = {"SimpleRNN": "elman", "GRU": "gru", "GRU_reset_before": "gru_reset_before",
        "LSTM": "lstm"}  # fmt: skip


@pytest.mark.slow  # each Keras predict compiles its graph (~1 s)
@pytest.mark.parametrize(
    ("layers", "bidirectional", "head"),
    [(2, True, "softmax"), (2, False, "linear"), (1, True, "sigmoid")],
)
@pytest.mark.parametrize("kind", KINDS)
def test_from_keras_matches_predict(kind, layers, bidirectional, head, rng):
    stack = [keras.Input((None, 3))]
    for _ in range(layers):
        layer = _rnn(kind, 4)
        stack.append(L.Bidirectional(layer) if bidirectional else layer)
        stack.append(L.Dropout(0.5))  # the identity in predict
    if head is not None:
        stack.append(L.Dense(2, activation=head))
    net = _randomise(keras.Sequential(stack), rng)
    model = from_keras(net)
    assert model.cell == CELL[kind] and model.num_layers == layers
    assert model.bidirectional == bidirectional and model.dtype == np.float32
    got, want = _keras_vs_bptt(net, model, rng)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "linear"])
def test_simple_rnn_activations(activation, rng):
    net = _randomise(keras.Sequential([keras.Input((None, 2)), _rnn("SimpleRNN", 3,
                                       activation=activation)]), rng)  # fmt: skip
    model = from_keras(net)
    assert model.hidden_activation == ("identity" if activation == "linear" else activation)
    got, want = _keras_vs_bptt(net, model, rng)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_single_layer_and_last_step_output(kind, rng):
    """A layer alone; and return_sequences=False on top, whose Keras output is the model's
    last step. (float32 only: Keras 3 on JAX fails on float64 recurrent layers.)"""
    layer = _rnn(kind, 4)
    net = _randomise(keras.Sequential([keras.Input((None, 3)), layer]), rng)
    model = from_keras(layer)
    got, want = _keras_vs_bptt(net, model, rng)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    top = _rnn(kind, 4)
    top.return_sequences = False
    net = keras.Sequential([keras.Input((None, 3)), top, L.Dense(2)])
    model = from_keras(_randomise(net, rng))
    got, want = _keras_vs_bptt(net, model, rng)
    np.testing.assert_allclose(got[:, -1], want, rtol=2e-6, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["elman", "gru", "gru_reset_before", "lstm"])
def test_to_keras_round_trip(cell, rng):
    model = RNN(3, 4, 2, cell=cell, num_layers=2, bidirectional=True, output="softmax",
                dtype=np.float32, seed=4)  # fmt: skip
    net = to_keras(model)
    got, want = _keras_vs_bptt(net, model, rng)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    back = from_keras(net)
    assert back.structure() == model.structure()
    for name, array in model.params.items():
        np.testing.assert_array_equal(back.params[name], array, err_msg=name)


def test_refusals(rng):
    inp = keras.Input((None, 3))
    with pytest.raises(InteropError, match="merge_mode='sum'"):
        from_keras(keras.Sequential([inp, L.Bidirectional(_rnn("GRU", 4), merge_mode="sum")]))
    with pytest.raises(InteropError, match="mix cells"):
        from_keras(keras.Sequential([inp, _rnn("GRU", 4), _rnn("LSTM", 4)]))
    with pytest.raises(InteropError, match="units or directions"):
        from_keras(keras.Sequential([inp, _rnn("GRU", 4), _rnn("GRU", 5)]))
    with pytest.raises(InteropError, match="recurrent_activation='hard_sigmoid'"):
        from_keras(keras.Sequential([inp, _rnn("LSTM", 4, recurrent_activation="hard_sigmoid")]))
    with pytest.raises(InteropError, match="go_backwards=True"):
        from_keras(keras.Sequential([inp, _rnn("GRU", 4, go_backwards=True)]))
    with pytest.raises(InteropError, match=r"\(Conv1D\) .position 0. is not supported"):
        from_keras(keras.Sequential([inp, L.Conv1D(4, 2), _rnn("GRU", 4)]))
    with pytest.raises(InteropError, match="activation 'relu'"):
        from_keras(keras.Sequential([inp, _rnn("GRU", 4), L.Dense(2, activation="relu")]))
    with pytest.raises(InteropError, match="the Dense layer applies softmax"):
        from_keras(keras.Sequential([inp, _rnn("GRU", 4), L.Dense(2, activation="softmax")]),
                   output="sigmoid")  # fmt: skip
    with pytest.raises(InteropError, match="has no weights yet"):
        from_keras(_rnn("LSTM", 4))
