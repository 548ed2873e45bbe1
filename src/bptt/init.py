"""Weight initialisations for the Elman RNN.

    uniform       every array ~ U(−1/√H, 1/√H)                (PyTorch's nn.RNN default)
    glorot        U, V, W ~ U(−a, a),  a = √(6 / (fan_in + fan_out)),  biases 0
    orthogonal    W = Q from the QR of a Gaussian matrix (sign-fixed), V, U Glorot, biases 0
    identity      W = I (IRNN, Le, Jaitly & Hinton 2015), V, U ~ N(0, 0.001²), biases 0
    W ← W · ρ / max|eig(W)|                                      (scale to spectral radius ρ)

Each function returns a new :class:`~bptt.params.Params`; assign it with
``model.params = init_params(model, "orthogonal", seed=0)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .model import ElmanRNN, init_uniform
from .params import Params

INITS: tuple[str, ...] = ("uniform", "glorot", "orthogonal", "identity")


def glorot_uniform(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """W ~ U(−a, a) with a = √(6 / (fan_in + fan_out)) (Glorot & Bengio 2010); float64."""
    fan_out, fan_in = shape
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def orthogonal(n: int, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """Q of A = QR with A ~ N(0, 1)^(n×n), columns sign-fixed so that diag(R) > 0 (Saxe et al.).

    Returns an (n, n) float64 matrix with Qᵀ Q = gain² I.
    """
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q *= np.sign(np.diag(r))  # unique Q: Haar-distributed rather than QR-convention-biased
    return gain * q


def spectral_radius(W: np.ndarray) -> float:
    """ρ(W) = max |λ_i(W)|, computed in float64."""
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(W, dtype=np.float64)))))


def scale_spectral_radius(params: Params, radius: float) -> Params:
    """A copy of ``params`` with W ← W · radius / ρ(W), so that ρ(W) = radius.

    Raises:
        ValueError: radius is not a positive finite number, or ρ(W) = 0.
    """
    if not (isinstance(radius, (int, float)) and np.isfinite(radius) and radius > 0):
        raise ValueError(f"spectral radius must be a positive finite number, got {radius!r}")
    rho = spectral_radius(params.W)
    if rho == 0.0:
        raise ValueError("cannot scale W to a spectral radius: W has spectral radius 0")
    out = params.copy()
    out.W = (params.W.astype(np.float64) * (radius / rho)).astype(params.dtype)
    return out


def _glorot_params(I: int, H: int, O: int, rng: np.random.Generator, W: np.ndarray) -> Params:
    return Params(
        U=glorot_uniform((O, H), rng),
        V=glorot_uniform((H, I), rng),
        W=W,
        b_h=np.zeros(H),
        b_y=np.zeros(O),
    )


def _init_glorot(I: int, H: int, O: int, rng: np.random.Generator) -> Params:
    W = glorot_uniform((H, H), rng)
    return _glorot_params(I, H, O, rng, W)


def _init_orthogonal(I: int, H: int, O: int, rng: np.random.Generator) -> Params:
    W = orthogonal(H, rng)
    return _glorot_params(I, H, O, rng, W)


def _init_identity(I: int, H: int, O: int, rng: np.random.Generator) -> Params:
    """IRNN: W = I, b = 0, input and output weights ~ N(0, 0.001²) (Le et al. 2015, §3)."""
    return Params(
        U=0.001 * rng.standard_normal((O, H)),
        V=0.001 * rng.standard_normal((H, I)),
        W=np.eye(H),
        b_h=np.zeros(H),
        b_y=np.zeros(O),
    )


_FACTORIES: dict[str, Callable[[int, int, int, np.random.Generator], Params]] = {
    "glorot": _init_glorot,
    "orthogonal": _init_orthogonal,
    "identity": _init_identity,
}


def init_params(
    model: ElmanRNN,
    scheme: str = "uniform",
    *,
    seed: int | None = 0,
    spectral_radius: float | None = None,
) -> Params:
    """New parameters for ``model`` drawn by ``scheme``, optionally with ρ(W) rescaled.

    ``uniform`` with the same seed reproduces ``ElmanRNN(..., seed=seed)`` exactly.

    Args:
        model: supplies (I, H, O) and the dtype.
        scheme: one of :data:`INITS`.
        seed: seeds a fresh ``np.random.default_rng``.
        spectral_radius: if given, scale W so that max |eig(W)| equals it.

    Raises:
        ValueError: an unknown scheme or a bad spectral radius.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
    rng = np.random.default_rng(seed)
    I, H, O = model.input_size, model.hidden_size, model.output_size
    if scheme == "uniform":
        params = init_uniform(I, H, O, rng, model.dtype)
    else:
        params = _FACTORIES[scheme](I, H, O, rng).map(lambda a: a.astype(model.dtype))
    if spectral_radius is not None:
        params = scale_spectral_radius(params, spectral_radius)
    return params


def initialise(
    model: ElmanRNN,
    scheme: str = "uniform",
    *,
    seed: int | None = 0,
    spectral_radius: float | None = None,
) -> ElmanRNN:
    """Set ``model.params`` to :func:`init_params` (same arguments) and return the model."""
    model.params = init_params(model, scheme, seed=seed, spectral_radius=spectral_radius)
    return model
