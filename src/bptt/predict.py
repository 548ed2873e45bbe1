"""``bptt predict``: a regression run's forecasts for new data (as ``sample`` is for text).

CSV:  z̃_r = (z_r − μ_train) / σ_train  →  ŷ_r = model(z̃_0 … z̃_r)  →  ŷ_r σ_train + μ_train,
      the forecast of row r + h from rows 0 … r (one sequence, h_0 = 0)
.npz: Ŷ = model.predict(X) for X in the run's layout (ids or floats), saved as ``Y_hat``;
      scored against the file's Y on the steps its mask counts (the run's task scores it)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .checkpoint import Checkpoint
from .data import registry
from .data.arrays import cast_finite, load_npz_arrays, to_time_major
from .data.errors import DataError


def predict_csv(
    ckpt: Checkpoint, path: str | os.PathLike[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(column names, inputs (R, C), forecasts (R, O)) in the units of the file.

    A ``csv`` run reads its own columns and standardises with its training statistics (kept in
    the checkpoint); another run with dense inputs (``sine``, ``arrays``) reads the file's
    numeric columns as they are, which must number ``input_size``.

    Raises:
        ValueError: a run whose inputs are token ids, or a column count that does not fit.
        CorpusNotFoundError, DataError: an unreadable CSV (file, line and column named).
    """
    model = ckpt.model
    spec = registry.get(ckpt.task)
    if ckpt.vocab is not None:
        spec = registry.get("charlm")  # a vocabulary: token ids, whatever the name says
    names, raw, scale = spec.csv_inputs(ckpt.data_state, path)
    mean, std = scale if scale is not None else (np.zeros(raw.shape[1]), np.ones(raw.shape[1]))
    if raw.shape[1] != model.input_size:
        raise ValueError(
            f"{str(path)!r} has {raw.shape[1]} numeric column(s) {list(names)}; the model "
            f"takes {model.input_size} input(s) per step"
        )
    x = ((raw - mean) / std).astype(model.dtype)[:, None, :]  # (R, 1, C)
    y_hat, _ = model.predict(x)  # (R, 1, O)
    out = np.asarray(y_hat[:, 0, :], dtype=np.float64)  # (R, O)
    if scale is not None:  # back to the file's units
        out = out * std + mean
    return list(names), raw, out


def format_csv(names: list[str], raw: np.ndarray, pred: np.ndarray, horizon: int) -> str:
    """The inputs and, beside them, each row's forecast ``<name>_pred+h``."""
    out_names = names if pred.shape[1] == len(names) else [f"y{j}" for j in range(pred.shape[1])]
    header = [*names, *(f"{n}_pred+{horizon}" for n in out_names)]
    buf = io.StringIO()
    buf.write(",".join(header) + "\n")
    for r in range(raw.shape[0]):
        cells = [f"{v:.6g}" for v in raw[r]] + [f"{v:.6g}" for v in pred[r]]
        buf.write(",".join(cells) + "\n")
    return buf.getvalue()


def predict_npz(
    ckpt: Checkpoint, path: str | os.PathLike[str], batch_first: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """(Ŷ in the file's layout, scores against the file's Y when it has one, over the steps
    the file's ``mask`` counts).

    Raises:
        DataError: an unreadable file or one without X; shapes that do not fit the model.
    """
    data = load_npz_arrays(path, need=("X",))
    X = cast_finite("X", data["X"], ckpt.model.dtype)
    x, _, _ = to_time_major(X, X, None, batch_first=batch_first)
    try:
        y_hat, _ = ckpt.model.predict(x)  # (T, N, O)
    except (ValueError, TypeError) as err:
        raise DataError(f"{str(path)!r}: X {X.shape} does not fit the model: {err}") from None
    scores: dict[str, Any] = {}
    if "Y" in data:
        # Y of exactly the forecasts' shape (nothing broadcast), scored by the run's task on
        # the steps the file's mask counts (all without one)
        y = _check_targets(data["Y"], y_hat, ckpt.model.output, batch_first, path)
        mask = data.get("mask")
        if mask is not None:
            try:
                _, _, mask = to_time_major(X, data["Y"], mask, batch_first=batch_first)
            except ValueError as err:
                raise DataError(f"{str(path)!r}: {err}") from None
        with np.errstate(over="ignore", invalid="ignore"):
            scores = registry.get(ckpt.task).score(y_hat, y, mask, ckpt.model.output)
        if not all(np.isfinite(v) for v in scores.values()):
            raise DataError(f"{str(path)!r}: Y holds values beyond float range")
    out = np.swapaxes(y_hat, 0, 1) if batch_first else y_hat
    return np.ascontiguousarray(out), scores


def _check_targets(
    Y: np.ndarray, y_hat: np.ndarray, output: str, batch_first: bool, path: object
) -> np.ndarray:
    """The file's Y, time-major, of exactly the forecasts' shape (softmax: class ids (T, N);
    else (T, N, O), or (T, N) when O = 1): nothing broadcast.

    Raises:
        DataError: another shape, or a dtype that does not fit the head.
    """
    T, N, O = y_hat.shape
    layout = "(N, T" if batch_first else "(T, N"
    lead = (N, T) if batch_first else (T, N)
    if output == "softmax":
        want: tuple[tuple[int, ...], ...] = (lead,)
        doc = f"{layout}) = {lead} integer class ids"
    else:
        want = ((*lead, O), lead) if O == 1 else ((*lead, O),)
        doc = f"{layout}, O) = {(*lead, O)}" + (f" or {lead}" if O == 1 else "")
    if Y.shape not in want:
        raise DataError(f"{str(path)!r}: Y must have shape {doc} to score, got {Y.shape}")
    if output == "softmax" and Y.dtype.kind not in "iu":
        raise DataError(f"{str(path)!r}: Y must hold integer class ids, got dtype {Y.dtype}")
    if Y.dtype.kind not in "iuf":
        raise DataError(f"{str(path)!r}: Y must be numeric, got dtype {Y.dtype}")
    y = np.swapaxes(Y, 0, 1) if batch_first else Y
    return y if output == "softmax" or y.ndim == 3 else y[..., None]


def write_npz(path: str | os.PathLike[str], y_hat: np.ndarray) -> Path:
    """``np.savez(path, Y_hat=y_hat)``, atomically."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.savez(f, Y_hat=y_hat)
    return target


def write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_text(Path(path), text)
