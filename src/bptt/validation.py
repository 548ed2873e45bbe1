"""Input checks shared by every entry point: name the argument, the expectation, the value.

Nothing is broadcast silently and nothing is cast between floating dtypes: a float64 array
fed to a float32 model is an error, not a hidden copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype: object) -> np.dtype:
    """Resolve a model dtype; only float32 and float64 are supported.

    Raises:
        TypeError: anything else.
    """
    try:
        resolved = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {resolved}")
    return resolved


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or inf value(s)")


def check_float_array(
    name: str, value: object, shape: tuple[int, ...], dtype: np.dtype, shape_doc: str
) -> np.ndarray:
    """A finite floating array of exactly ``shape`` and ``dtype``."""
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape_doc} = {shape}, got {array.shape}")
    if array.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {array.dtype} but the model computes in {dtype}; "
            f"convert with {name}.astype(np.{dtype})"
        )
    _check_finite(name, array)
    return array


def check_inputs(x: object, n_in: int, dtype: np.dtype) -> np.ndarray:
    """Inputs are dense floats (T, B, I) of the model's dtype, or integer ids (T, B) in [0, I).

    Raises:
        ValueError: wrong rank or size, T = 0 or B = 0, ids out of range, NaN or inf.
        TypeError: wrong dtype.
    """
    array = np.asarray(x)
    if array.dtype.kind in "iu":
        if array.ndim != 2:
            raise ValueError(
                f"x of integer token ids must have shape (T, B), got shape {array.shape}"
            )
    elif array.dtype.kind == "f":
        if array.ndim != 3:
            raise ValueError(
                f"x of dense inputs must have shape (T, B, I={n_in}), got shape {array.shape}"
                + ("; for token ids pass an integer array (T, B)" if array.ndim == 2 else "")
            )
        if array.shape[2] != n_in:
            raise ValueError(
                f"x must have input_size={n_in} features in its last axis, got shape {array.shape}"
            )
        if array.dtype != dtype:
            raise TypeError(
                f"x has dtype {array.dtype} but the model computes in {dtype}; "
                f"convert with x.astype(np.{dtype})"
            )
    else:
        raise TypeError(
            f"x must be floats (T, B, I) or integer token ids (T, B), got dtype {array.dtype}"
        )
    T, B = array.shape[:2]
    if T == 0 or B == 0:
        raise ValueError(f"x must have at least one step and one sequence, got T={T}, B={B}")
    if array.ndim == 2:
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi >= n_in:
            raise ValueError(
                f"x holds token ids in [{lo}, {hi}], expected 0 <= id < input_size={n_in}"
            )
        return array.astype(np.intp, copy=False)
    _check_finite("x", array)
    return array


def check_mask(mask: object, shape_tb: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A (T, B) mask of 0/1 or bool, returned as the model's dtype."""
    array = np.asarray(mask)
    if array.shape != shape_tb:
        raise ValueError(f"mask must have shape (T, B) = {shape_tb}, got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"mask must be bool or 0/1 numbers, got dtype {array.dtype}")
    if array.dtype.kind != "b" and not np.isin(array, (0, 1)).all():
        raise ValueError("mask must hold only 0 and 1 (or bools)")
    return array.astype(dtype)


def check_max_lag(max_lag: object) -> int | None:
    """``max_lag`` of the lag diagnostics: None or an int ≥ 0.

    Raises:
        TypeError: not None and not an int. ValueError: negative.
    """
    if max_lag is None:
        return None
    if isinstance(max_lag, bool) or not isinstance(max_lag, (int, np.integer)):
        raise TypeError(
            f"max_lag must be None or a non-negative int, got {type(max_lag).__name__} {max_lag!r}"
        )
    if max_lag < 0:
        raise ValueError(f"max_lag must be None or a non-negative int, got {max_lag}")
    return int(max_lag)


def strict_initial_weights(path: str | os.PathLike[str], model: Any) -> Any:
    """``--init-from``: the weights of ``path`` for ``model``, which must match it exactly.

    A bptt checkpoint (run directory, file) must hold the model's structure (its loader
    refuses extra or missing arrays and non-finite weights); a torch-named state dict must
    hold exactly the model's names (no extra or missing layer, direction or key), floating
    point arrays only, all finite, and finite still in the model's dtype.

    Raises:
        ValueError: naming the file and what does not match (InteropError, CheckpointError).
    """
    from .checkpoint import FORMAT_NAME
    from .interop import InteropError, initial_weights, read_torch_state, state_dict

    p = Path(path)
    # a run directory, an .npz or an ONNX graph: their own loaders check the structure
    if not (p.is_dir() or p.suffix in (".npz", ".onnx")):
        if not p.is_file():
            raise InteropError(f"--init-from {str(p)!r} does not exist")
        meta, tensors = read_torch_state(p)
        if meta.get("format") != FORMAT_NAME:
            want = set(state_dict(model))
            extra, missing = sorted(set(tensors) - want), sorted(want - set(tensors))
            if extra or missing:
                raise InteropError(
                    f"--init-from {str(p)!r} does not match the model {model!r}: "
                    + (f"extra key(s) {extra[:6]}" if extra else "")
                    + ("; " if extra and missing else "")
                    + (f"missing key(s) {missing[:6]}" if missing else "")
                )
            for name, array in tensors.items():
                if array.dtype.kind != "f":
                    raise InteropError(
                        f"--init-from {str(p)!r}: {name} has dtype {array.dtype}; weights must "
                        "be floating point"
                    )
                _check_finite(f"--init-from {str(p)!r}: {name}", array)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
        weights = initial_weights(p, model)
    for name, array in weights.items():
        if not np.isfinite(array).all():
            raise InteropError(
                f"--init-from {str(p)!r}: {name} is not finite in the model's dtype "
                f"{array.dtype} (a weight beyond its range)"
            )
    return weights


#: the largest values of options that scale data or weights cast to float32 (beyond them an
#: overflow, not a learning problem): checked as a command-line value is
FLOAT_OPTION_LIMITS = {"spectral_radius": 100.0, "noise": 1e6}


def check_config(config: Any) -> None:
    """Bounds of a :class:`~bptt.training.TrainConfig` beyond its types and signs: options
    that scale data or weights (``spectral_radius`` ≤ 100, ``noise`` ≤ 10⁶, every float within
    float32's range) and every size through the memory estimate
    (:func:`bptt.resources.check_config`); and ``BPTT_TUNE`` (:mod:`bptt.tuning`).

    Raises:
        ValueError: naming the option, the bound and the value.
    """
    from .resources import check_config as check_config_memory

    f32_max = float(np.finfo(np.float32).max)
    for name, value in vars(config).items():
        if isinstance(value, float) and abs(value) > f32_max:
            raise ValueError(
                f"--{name.replace('_', '-')} must lie within float32's range (|x| <= "
                f"{f32_max:.3g}), got {value}"
            )
    for name, limit in FLOAT_OPTION_LIMITS.items():
        if getattr(config, name) > limit:
            raise ValueError(
                f"--{name.replace('_', '-')} must be <= {limit:g}, got {getattr(config, name)}"
            )
    check_config_memory(config)
    from .tuning import mode as tuning_mode  # the environment the loops will read

    tuning_mode()  # BPTT_TUNE holds an accepted word (refused before any file is written)
