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
from .data.arrays import load_npz_arrays, to_time_major
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
    X = data["X"]
    if X.dtype.kind == "f":
        X = X.astype(ckpt.model.dtype)
    x, _, _ = to_time_major(X, X, None, batch_first=batch_first)
    try:
        y_hat, _ = ckpt.model.predict(x)  # (T, N, O)
    except (ValueError, TypeError) as err:
        raise DataError(f"{str(path)!r}: X {X.shape} does not fit the model: {err}") from None
    scores: dict[str, Any] = {}
    if "Y" in data:
        # the run's task scores the file's Y on the steps its mask counts (all without one)
        try:
            _, y, mask = to_time_major(X, data["Y"], data.get("mask"), batch_first=batch_first)
        except ValueError as err:
            raise DataError(f"{str(path)!r}: {err}") from None
        scores = registry.get(ckpt.task).score(y_hat, y, mask, ckpt.model.output)
    out = np.swapaxes(y_hat, 0, 1) if batch_first else y_hat
    return np.ascontiguousarray(out), scores


def write_npz(path: str | os.PathLike[str], y_hat: np.ndarray) -> Path:
    """``np.savez(path, Y_hat=y_hat)``, atomically."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.savez(f, Y_hat=y_hat)
    return target


def write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_text(Path(path), text)
