"""Initialisation schemes: shapes, dtypes, the defining property of each."""

from __future__ import annotations

import numpy as np
import pytest

from bptt import ElmanRNN
from bptt.init import init_params, initialise, scale_spectral_radius, spectral_radius


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scheme", ["uniform", "glorot", "orthogonal", "identity"])
def test_shapes_and_dtype(scheme, dtype) -> None:
    model = ElmanRNN(3, 7, 5, dtype=dtype)
    params = init_params(model, scheme, seed=1)
    for name, arr in params.items():
        assert arr.shape == getattr(model.params, name).shape and arr.dtype == dtype
    params.check_shapes(model.param_shapes(), np.dtype(dtype))


def test_uniform_reproduces_the_model_default() -> None:
    model = ElmanRNN(3, 7, 5, seed=4)
    for a, b in zip(
        init_params(model, "uniform", seed=4).arrays(), model.params.arrays(), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_orthogonal_w_is_orthogonal() -> None:
    W = init_params(ElmanRNN(3, 16, 5), "orthogonal", seed=2).W
    np.testing.assert_allclose(W.T @ W, np.eye(16), atol=1e-12)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(W)), 1.0, atol=1e-10)


def test_identity_is_irnn() -> None:
    p = init_params(ElmanRNN(3, 6, 2), "identity", seed=0)
    np.testing.assert_array_equal(p.W, np.eye(6))
    assert not p.b_h.any() and not p.b_y.any()
    assert np.abs(p.V).max() < 0.01


def test_glorot_bound() -> None:
    p = init_params(ElmanRNN(30, 50, 20), "glorot", seed=0)
    assert np.abs(p.V).max() <= np.sqrt(6 / 80) and np.abs(p.V).max() > 0.9 * np.sqrt(6 / 80)
    assert np.abs(p.U).max() <= np.sqrt(6 / 70)


@pytest.mark.parametrize("scheme", ["uniform", "glorot", "orthogonal"])
def test_spectral_radius_scaling(scheme) -> None:
    model = ElmanRNN(3, 20, 4)
    p = init_params(model, scheme, seed=3, spectral_radius=1.1)
    assert spectral_radius(p.W) == pytest.approx(1.1, rel=1e-10)
    initialise(model, scheme, seed=3, spectral_radius=0.5)
    assert spectral_radius(model.params.W) == pytest.approx(0.5, rel=1e-10)


def test_bad_arguments() -> None:
    model = ElmanRNN(3, 4, 2)
    with pytest.raises(ValueError, match="init must be one of"):
        init_params(model, "he")
    with pytest.raises(ValueError, match="spectral radius must be a positive"):
        scale_spectral_radius(model.params, -1.0)
    zero = model.params.copy()
    zero.W[...] = 0
    with pytest.raises(ValueError, match="spectral radius 0"):
        scale_spectral_radius(zero, 1.0)
