"""Weight initialisations, by each parameter's role (output U, input V…, recurrent W…, bias).

    uniform       every array ~ U(−1/√H, 1/√H)                (PyTorch's nn.RNN default)
    glorot        U, V, W ~ U(−a, a),  a = √(6 / (fan_in + fan_out)),  biases 0
    orthogonal    W = Q from the QR of a Gaussian matrix (sign-fixed), V, U Glorot, biases 0
    identity      W = I (IRNN, Le, Jaitly & Hinton 2015), V, U ~ N(0, 0.001²), biases 0
    W ← W · ρ / max|eig(W)|                                      (scale to spectral radius ρ)

A gated cell's recurrent matrix stacks one (H, H) block per gate; orthogonal, identity and the
spectral radius act on each block.

Each function returns a new :class:`~bptt.params.Params`; assign it with
``model.params = init_params(model, "orthogonal", seed=0)``.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from .model import RNN
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


def _blocks(W: np.ndarray) -> list[np.ndarray]:
    """The (H, H) blocks of a recurrent matrix (kH, H): one per gate, views into W."""
    H = W.shape[1]
    return [W[g * H : (g + 1) * H] for g in range(W.shape[0] // H)]


def _recurrent_names(params: Params, roles: dict[str, str]) -> list[str]:
    return [name for name in params if roles.get(name) == "recurrent"]


def scale_spectral_radius(
    params: Params, radius: float, roles: dict[str, str] | None = None
) -> Params:
    """A copy of ``params`` with each recurrent (H, H) block W ← W · radius / ρ(W).

    Args:
        params: the weights.
        radius: the spectral radius ρ each block gets.
        roles: parameter name → role (``model.param_roles()``); None means the one Elman
            layer's ``W``.

    Raises:
        ValueError: radius is not a positive finite number, or a block has ρ(W) = 0.
    """
    if not (isinstance(radius, (int, float)) and np.isfinite(radius) and radius > 0):
        raise ValueError(f"spectral radius must be a positive finite number, got {radius!r}")
    out = params.copy()
    for name in _recurrent_names(out, roles or {"W": "recurrent"}):
        scaled = out[name].astype(np.float64)
        for block in _blocks(scaled):
            rho = spectral_radius(block)
            if rho == 0.0:
                raise ValueError(
                    f"cannot scale {name} to a spectral radius: it has spectral radius 0"
                )
            block *= radius / rho
        out[name] = scaled.astype(params.dtype)
    return out


def _draw(scheme: str, model: RNN, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float64 arrays for every parameter by ``scheme`` (not ``uniform``).

    Recurrent matrices are drawn first, then U, then the input matrices (the first version's
    order for one Elman layer, so a seed gives the weights it always gave).
    """
    shapes = model.param_shapes()
    roles = model.param_roles()
    out: dict[str, np.ndarray] = {}
    H = model.hidden_size
    if scheme == "identity":  # IRNN (Le et al. 2015, §3): W = I, weights ~ N(0, 0.001²), b = 0
        for name in [n for n in shapes if roles[n] == "recurrent"]:
            out[name] = np.tile(np.eye(H), (shapes[name][0] // H, 1))
        for name in [n for n in shapes if roles[n] in ("output", "input")]:
            out[name] = 0.001 * rng.standard_normal(shapes[name])
    else:
        for name in [n for n in shapes if roles[n] == "recurrent"]:
            W = np.empty(shapes[name])
            for block in _blocks(W):
                block[...] = (
                    orthogonal(H, rng) if scheme == "orthogonal" else glorot_uniform((H, H), rng)
                )
            out[name] = W
        for name in [n for n in shapes if roles[n] in ("output", "input")]:
            out[name] = glorot_uniform(shapes[name], rng)  # type: ignore[arg-type]
    for name in shapes:
        if roles[name] == "bias":
            out[name] = np.zeros(shapes[name])
    return {name: out[name] for name in shapes}


def init_params(
    model: RNN,
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
    if scheme == "uniform":
        params = model.init_params(rng)
    else:
        params = Params(_draw(scheme, model, rng)).map(lambda a: a.astype(model.dtype))
    if spectral_radius is not None:
        params = scale_spectral_radius(params, spectral_radius, model.param_roles())
    return params


ModelT = TypeVar("ModelT", bound=RNN)


def initialise(
    model: ModelT,
    scheme: str = "uniform",
    *,
    seed: int | None = 0,
    spectral_radius: float | None = None,
) -> ModelT:
    """Set ``model.params`` to :func:`init_params` (same arguments) and return the model."""
    model.params = init_params(model, scheme, seed=seed, spectral_radius=spectral_radius)
    return model
