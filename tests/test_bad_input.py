"""Bad input raises ValueError/TypeError naming the argument, expectation and value."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bptt import ElmanRNN


@pytest.fixture
def dense():
    return ElmanRNN(4, 5, 3, output="identity", dtype=np.float64)


@pytest.fixture
def tokens():
    return ElmanRNN(4, 5, 3, output="softmax", dtype=np.float32)


def good_dense(T=3, B=2):
    return np.zeros((T, B, 4)), np.zeros((T, B, 3))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"hidden_activation": "gelu"}, ValueError, r"hidden_activation .*'gelu'"),
        ({"output": "softplus"}, ValueError, r"output must be one of .*'softplus'"),
        ({"dtype": np.float16}, TypeError, r"dtype must be float32 or float64, got float16"),
        ({"dtype": np.int32}, TypeError, r"dtype must be float32 or float64"),
    ],
)
def test_constructor_rejects(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ElmanRNN(4, 5, 3, **kwargs)


@pytest.mark.parametrize(
    ("sizes", "error"),
    [
        ((0, 5, 3), ValueError),
        ((4, -1, 3), ValueError),
        ((4, 5, 2.5), TypeError),
        ((True, 5, 3), TypeError),
    ],
)
def test_constructor_rejects_sizes(sizes, error):
    with pytest.raises(error, match=r"(input|hidden|output)_size"):
        ElmanRNN(*sizes)


def test_wrong_rank_of_dense_input(dense):
    _, y = good_dense()
    with pytest.raises(
        ValueError,
        match=r"x of dense inputs must have shape \(T, B, I=4\), "
        r"got shape \(3, 4\)",
    ):
        dense.loss_and_grads(np.zeros((3, 4)), y)


def test_wrong_feature_size(dense):
    _, y = good_dense()
    with pytest.raises(ValueError, match=r"input_size=4 .* got shape \(3, 2, 7\)"):
        dense.loss_and_grads(np.zeros((3, 2, 7)), y)


def test_ids_out_of_range(tokens):
    y = np.zeros((3, 2), dtype=int)
    with pytest.raises(
        ValueError,
        match=r"token ids in \[0, 4\], expected 0 <= id < "
        r"input_size=4",
    ):
        tokens.loss_and_grads(np.array([[0, 1], [2, 3], [4, 0]]), y)
    with pytest.raises(ValueError, match=r"token ids in \[-1, 3\]"):
        tokens.loss_and_grads(np.array([[0, 1], [2, 3], [-1, 0]]), y)


def test_class_ids_out_of_range(tokens):
    with pytest.raises(ValueError, match=r"y holds class ids in \[0, 3\], .*output_size=3"):
        tokens.loss_and_grads(np.zeros((2, 2), dtype=int), np.array([[0, 1], [2, 3]]))


def test_float_class_targets(tokens):
    with pytest.raises(TypeError, match=r"y for the softmax head must be integer class ids"):
        tokens.loss_and_grads(np.zeros((2, 2), dtype=int), np.zeros((2, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_and_targets(dense, bad):
    x, y = good_dense()
    x[1, 0, 2] = bad
    with pytest.raises(ValueError, match=r"x contains 1 NaN or inf"):
        dense.loss_and_grads(x, y)
    x, y = good_dense()
    y[0, 1, 0] = bad
    with pytest.raises(ValueError, match=r"y contains NaN or inf"):
        dense.loss_and_grads(x, y)
    h0 = np.zeros((2, 5))
    h0[0, 0] = bad
    with pytest.raises(ValueError, match=r"h0 contains"):
        dense.loss_and_grads(*good_dense(), h0=h0)


@pytest.mark.parametrize(("T", "B"), [(0, 2), (3, 0)])
def test_empty_sequence_or_batch(dense, T, B):
    with pytest.raises(
        ValueError,
        match=rf"at least one step and one sequence, got T={T}, "
        rf"B={B}",
    ):
        dense.loss_and_grads(np.zeros((T, B, 4)), np.zeros((T, B, 3)))


def test_mismatched_dtypes(dense, tokens):
    x, y = good_dense()
    with pytest.raises(
        TypeError,
        match=r"x has dtype float32 but the model computes in "
        r"float64",
    ):
        dense.loss_and_grads(x.astype(np.float32), y)
    with pytest.raises(TypeError, match=r"y has dtype float32 .*float64"):
        dense.loss_and_grads(x, y.astype(np.float32))
    with pytest.raises(TypeError, match=r"h0 has dtype float64 .*float32"):
        tokens.loss_and_grads(
            np.zeros((3, 2), dtype=int), np.zeros((3, 2), dtype=int), h0=np.zeros((2, 5))
        )
    with pytest.raises(TypeError, match=r"x must be floats .* got dtype <U1"):
        dense.loss_and_grads(np.array([["a"]]), y)


def test_shapes_are_never_broadcast(dense):
    x, y = good_dense()
    with pytest.raises(
        ValueError,
        match=r"y for the identity head must have shape "
        r"\(T, B, O\) = \(3, 2, 3\), got \(3, 1, 3\)",
    ):
        dense.loss_and_grads(x, y[:, :1])
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\) = \(2, 5\), got \(5,\)"):
        dense.loss_and_grads(x, y, h0=np.zeros(5))
    with pytest.raises(
        ValueError,
        match=r"mask must have shape \(T, B\) = \(3, 2\), "
        r"got \(3,\)",
    ):
        dense.loss_and_grads(x, y, mask=np.ones(3))
    with pytest.raises(ValueError, match=r"dh_last must have shape \(B, H\) = \(2, 5\)"):
        dense.forward_backward(x, y, dh_last=np.zeros((1, 5)))


def test_mask_values(dense):
    x, y = good_dense()
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1"):
        dense.loss_and_grads(x, y, mask=np.full((3, 2), 0.5))


def test_sigmoid_targets_outside_unit_interval():
    model = ElmanRNN(4, 5, 3, output="sigmoid")
    with pytest.raises(ValueError, match=r"y for the sigmoid head must lie in \[0, 1\]"):
        model.loss_and_grads(np.zeros((2, 1, 4)), np.full((2, 1, 3), 2.0))


def test_params_replaced_with_wrong_shape_or_dtype(dense):
    x, y = good_dense()
    dense.params.W = np.zeros((5, 4))
    with pytest.raises(ValueError, match=re.escape("params.W must have shape (5, 5)")):
        dense.loss_and_grads(x, y)
    dense.params.W = np.zeros((5, 5), dtype=np.float32)
    with pytest.raises(
        TypeError, match=r"params.W must have the model's floating dtype float64, got float32"
    ):
        dense.loss_and_grads(x, y)


def test_bad_call_leaves_parameters_untouched(dense):
    before = dense.params.copy()
    x, y = good_dense()
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        dense.loss_and_grads(x, y)
    for name, array in dense.params.items():
        np.testing.assert_array_equal(array, getattr(before, name))
