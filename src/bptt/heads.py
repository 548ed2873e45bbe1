"""Output heads: the affine layer z = U h + b_y, and f_y with its loss (canonical link/loss
pairs, so dL/dz = ŷ − y).

    z_t = U h_t + b_y                     (:func:`output_forward`, every step at once)
    dL/dU = Σ_t dL/dz_t h_t^T   dL/db_y = Σ_t dL/dz_t   ∂L/∂h_t = U^T dL/dz_t
                                          (:func:`output_backward`)

h_t is the head's input, the top layer's states (K = D·H features). With z_t (T, B, O) and a
per-step weight w_tb = mask_tb / B:

    softmax   ŷ = softmax(z)     L_tb = −log ŷ_tb[y_tb]                  y: class ids (T, B)
    sigmoid   ŷ = σ(z)           L_tb = −Σ_o y log ŷ + (1−y) log(1−ŷ)    y: (T, B, O) in [0, 1]
    identity  ŷ = z              L_tb = ½ ‖ŷ − y‖²                        y: (T, B, O) floats

    L = Σ_t Σ_b w_tb L_tb          dL/dz_tb = w_tb (ŷ_tb − y_tb)

Each head computes the loss and dL/dz in one pass over z (``loss_and_dz``) and is also
usable piece by piece (``predict``, ``step_losses``) for evaluation and teaching.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from . import _kernels, _workspace

# -- the affine layer z = U h + b_y -------------------------------------------------------


def output_forward(params: Mapping[str, np.ndarray], top: np.ndarray) -> np.ndarray:
    """z_t = U h_t + b_y for t = 1..T as one product: top (T, B, K) → (T, B, O).

    ``top`` is the head's input, the top layer's states h_1..h_T (K = D·H).
    """
    T, B, K = top.shape
    O = params["U"].shape[0]
    z = _kernels.matmul(
        top.reshape(T * B, K), params["U"].T, out=_workspace.empty((T * B, O), top.dtype)
    )
    z += params["b_y"]
    return z.reshape(T, B, -1)


def output_backward(
    dz: np.ndarray, top: np.ndarray, params: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dL/dU = Σ_t dz_t h_t^T, dL/db_y = Σ_t dz_t, ∂L/∂h_t = U^T dz_t (all steps at once).

    Args:
        dz: (T, B, O) dL/dz_t. top: (T, B, K) the head's input h_1..h_T.

    Returns:
        dU (O, K), db_y (O,), dh (T, B, K).
    """
    T, B, O = dz.shape
    K = top.shape[2]
    dz_rows = dz.reshape(T * B, O)
    dU = _kernels.matmul_tn(dz_rows, top.reshape(T * B, K))  # (O, K)
    dh = _kernels.matmul(dz_rows, params["U"], out=_workspace.empty((T * B, K), dz.dtype))
    dh = dh.reshape(T, B, K)
    db_y = _kernels.column_sums(dz_rows)
    return dU, db_y, dh


# -- f_y and its loss ----------------------------------------------------------------------


def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z) without overflow."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


class Head(ABC):
    """An output nonlinearity f_y paired with its canonical loss."""

    name: str
    targets_are_ids: bool = False

    @abstractmethod
    def predict(self, z: np.ndarray) -> np.ndarray:
        """ŷ = f_y(z) for logits z (..., O)."""

    @abstractmethod
    def step_losses(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """L_tb for logits z (T, B, O) and targets y; returns (T, B)."""

    def loss_and_dz(
        self, z: np.ndarray, y: np.ndarray, weight: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """L = Σ w_tb L_tb and dL/dz = w (ŷ − y), reusing ``z``'s memory for dL/dz.

        Args:
            z: (T, B, O) logits; overwritten.
            y: targets, validated by :meth:`check_targets`.
            weight: (T, B) per-step weights w_tb = mask_tb / B.
        """
        loss = float(np.sum(weight * self.step_losses(z, y), dtype=np.float64))
        dz = self.predict(z)
        dz -= y
        dz *= weight[..., None]
        return loss, dz

    @abstractmethod
    def check_targets(
        self, y: object, shape_tb: tuple[int, int], n_out: int, dtype: np.dtype
    ) -> np.ndarray:
        """Validate targets and return them as an array ready for the loss."""


class SoftmaxCrossEntropy(Head):
    """ŷ = softmax(z), L = −log ŷ[y] on integer class ids."""

    name = "softmax"
    targets_are_ids = True

    def predict(self, z: np.ndarray) -> np.ndarray:
        p = z - z.max(axis=-1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=-1, keepdims=True)
        return p

    def step_losses(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        z_max = z.max(axis=-1)  # (T, B)
        log_norm = np.log(np.exp(z - z_max[..., None]).sum(axis=-1)) + z_max
        z_target = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
        return log_norm - z_target

    def loss_and_dz(
        self, z: np.ndarray, y: np.ndarray, weight: np.ndarray
    ) -> tuple[float, np.ndarray]:
        # One pass: shift, exponentiate in place, normalise; ŷ − onehot(y) at the target.
        steps, batch = y.shape
        at_target = (np.arange(steps)[:, None], np.arange(batch)[None, :], y)
        z_target = z[at_target]  # (T, B) (plain indexing: take_along_axis costs ~10 µs a call)
        z_max = z.max(axis=-1)  # (T, B)
        z -= z_max[..., None]
        np.exp(z, out=z)
        norm = z.sum(axis=-1)  # (T, B)
        step_loss = np.log(norm) + z_max - z_target  # (T, B)
        loss = float(np.sum(weight * step_loss, dtype=np.float64))
        z *= (weight / norm)[..., None]
        z[at_target] -= weight
        return loss, z

    def check_targets(
        self, y: object, shape_tb: tuple[int, int], n_out: int, dtype: np.dtype
    ) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(
                f"y for the softmax head must be integer class ids of shape {shape_tb}, "
                f"got dtype {y.dtype}"
            )
        if y.shape != shape_tb:
            raise ValueError(f"y must have shape (T, B) = {shape_tb} of class ids, got {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= n_out):
            raise ValueError(
                f"y holds class ids in [{y.min()}, {y.max()}], expected 0 <= id < "
                f"output_size={n_out}"
            )
        return y.astype(np.intp, copy=False)


def _check_float_targets(
    y: object, shape_tb: tuple[int, int], n_out: int, dtype: np.dtype, head: str
) -> np.ndarray:
    y = np.asarray(y)
    expected = (*shape_tb, n_out)
    if y.shape != expected:
        raise ValueError(
            f"y for the {head} head must have shape (T, B, O) = {expected}, got {y.shape}"
        )
    if y.dtype.kind == "f" and y.dtype != dtype:
        raise TypeError(
            f"y has dtype {y.dtype} but the model computes in {dtype}; "
            f"convert with y.astype(np.{dtype})"
        )
    if y.dtype.kind not in "fiub":
        raise TypeError(f"y for the {head} head must be numeric, got dtype {y.dtype}")
    y = y.astype(dtype, copy=False)
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or inf")
    return y


class SigmoidBinaryCrossEntropy(Head):
    """ŷ = σ(z), L = Σ_o −y log ŷ − (1 − y) log(1 − ŷ) on targets in [0, 1]."""

    name = "sigmoid"

    def predict(self, z: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def step_losses(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        # −y log σ(z) − (1−y) log(1−σ(z)) = softplus(z) − y z
        return (_softplus(z) - y * z).sum(axis=-1)

    def check_targets(
        self, y: object, shape_tb: tuple[int, int], n_out: int, dtype: np.dtype
    ) -> np.ndarray:
        y = _check_float_targets(y, shape_tb, n_out, dtype, "sigmoid")
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"y for the sigmoid head must lie in [0, 1], got values in [{y.min()}, {y.max()}]"
            )
        return y


class IdentitySquaredError(Head):
    """ŷ = z, L = ½ ‖ŷ − y‖²."""

    name = "identity"

    def predict(self, z: np.ndarray) -> np.ndarray:
        return z.copy()

    def step_losses(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        diff = z - y
        return 0.5 * np.einsum("tbo,tbo->tb", diff, diff)

    def loss_and_dz(
        self, z: np.ndarray, y: np.ndarray, weight: np.ndarray
    ) -> tuple[float, np.ndarray]:
        z -= y
        loss = 0.5 * float(np.einsum("tb,tbo,tbo->", weight, z, z, dtype=np.float64))
        z *= weight[..., None]
        return loss, z

    def check_targets(
        self, y: object, shape_tb: tuple[int, int], n_out: int, dtype: np.dtype
    ) -> np.ndarray:
        return _check_float_targets(y, shape_tb, n_out, dtype, "identity")


HEADS: dict[str, type[Head]] = {
    "softmax": SoftmaxCrossEntropy,
    "sigmoid": SigmoidBinaryCrossEntropy,
    "identity": IdentitySquaredError,
}


def get_head(name: str) -> Head:
    """Look up an output head by name.

    Raises:
        ValueError: ``name`` is not one of :data:`HEADS`.
    """
    if not isinstance(name, str) or name not in HEADS:
        raise ValueError(f"output must be one of {sorted(HEADS)}, got {name!r}")
    return HEADS[name]()
