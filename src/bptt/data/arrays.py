"""Your own arrays as a sequence task: N sequences of T steps held in memory.

The arrays are time-major, as the model expects, or batch-first (PyTorch's
``batch_first=True``) and transposed once on the way in:

    time-major   X (T, N, I) floats or (T, N) ids,  Y (T, N, O) floats or (T, N) class ids,
                 mask (T, N) of 0/1 or None
    batch-first  X (N, T, I) or (N, T),             Y (N, T, O) or (N, T),
                 mask (N, T)

The last ``⌈N · val_fraction⌉`` sequences are held out for validation (Keras'
``validation_split``: by position, so shuffle first if the order means something). Training
batches draw B of the training sequences without replacement (with replacement only when
B > N_train); every validation sequence is scored once per evaluation.

Metrics over the unmasked steps, as the built-in tasks (:mod:`bptt.data.tasks`):
identity head ``mse`` (units of Y squared), softmax ``accuracy`` and ``cross_entropy``
(nats), sigmoid ``accuracy`` (ŷ > ½ against y > ½) and ``mse``. Baseline: the memoryless
predictor fitted on the training targets (their mean; the class frequencies).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..resources import check_memory
from ..validation import check_dtype
from .errors import CorpusNotFoundError, DataError
from .tasks import (
    Batch,
    SequenceTask,
    _check_sample_args,
    score_predictions,
)

OUTPUTS = ("identity", "softmax", "sigmoid")


def _layout_error(X: np.ndarray, others: dict[str, np.ndarray]) -> str:
    """Both readings of the shapes, for an error message."""
    shapes = ", ".join(f"{k} {v.shape}" for k, v in others.items())
    tm = "; ".join(f"{k}: T={v.shape[0]}, N={v.shape[1]}" for k, v in {"X": X, **others}.items())
    bf = "; ".join(f"{k}: N={v.shape[0]}, T={v.shape[1]}" for k, v in {"X": X, **others}.items())
    return (
        f"X {X.shape} and {shapes} fit neither layout: time-major (batch_first=False) reads "
        f"{tm}; batch-first (batch_first=True) reads {bf}. X, Y and mask must share their "
        "first two dimensions in one of the two orders"
    )


def to_time_major(
    X: object, Y: object, mask: object = None, *, batch_first: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """X, Y, mask as time-major arrays (T, N, …), transposing batch-first ones.

    Raises:
        ValueError: an array with too few dimensions, or leading shapes that agree in neither
            layout (the message gives both readings); shapes that only fit the other layout
            (the message says which ``batch_first`` to pass).
        TypeError: ``batch_first`` not a bool.
    """
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    arrays = {"X": np.asarray(X), "Y": np.asarray(Y)}
    if mask is not None:
        arrays["mask"] = np.asarray(mask)
    for name, a in arrays.items():
        want = "(T, N)" if name == "mask" else "(T, N, features) or (T, N) ids"
        if a.ndim < 2 or a.ndim > 3 or (name == "mask" and a.ndim != 2):
            raise ValueError(
                f"{name} must be {want} (or batch-first), got shape {a.shape} ({a.ndim}-D)"
            )
        if a.size == 0:
            raise ValueError(f"{name} is empty (shape {a.shape})")
    lead = {name: a.shape[:2] for name, a in arrays.items()}
    same = len(set(lead.values())) == 1
    if not same:
        x = arrays.pop("X")
        raise ValueError(_layout_error(x, arrays))
    out = {
        name: np.ascontiguousarray(np.swapaxes(a, 0, 1)) if batch_first else a
        for name, a in arrays.items()
    }
    return out["X"], out["Y"], out.get("mask")


#: members an .npz may hold (X, Y, mask and a few more are read or ignored; more is refused)
MAX_NPZ_MEMBERS = 64


def declared_arrays(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each ``.npy`` member's shape and dtype as its header declares them, read from the
    first bytes of the member (nothing is decompressed beyond the header).

    Raises:
        DataError: not a zip archive (a bare ``.npy`` array, another format), too many
            members, a member that is not a readable ``.npy`` header, object arrays.
    """
    p = Path(path)
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as fh:
            magic = fh.read(6)
        what = "a single .npy array" if magic == b"\x93NUMPY" else "not a zip archive"
        raise DataError(
            f"{str(p)!r} is {what}, not an .npz with X and Y; save with "
            "np.savez(path, X=inputs, Y=targets[, mask=mask])"
        )
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise DataError(
                    f"{str(p)!r} holds {len(infos)} archive members; an .npz for bptt holds X, "
                    f"Y and optionally mask (at most {MAX_NPZ_MEMBERS} members are read)"
                )
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    major, _minor = np.lib.format.read_magic(fh)
                    if major == 1:
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                    else:
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                if dtype.hasobject:
                    raise DataError(
                        f"{str(p)!r}: {info.filename!r} holds Python objects (dtype {dtype}); "
                        "bptt reads numeric arrays only (no pickles)"
                    )
                out[info.filename.removesuffix(".npy")] = (tuple(shape), dtype)
    except DataError:
        raise
    except Exception as err:  # zipfile and NumPy header errors of many kinds
        raise DataError(f"cannot read {str(p)!r} as a NumPy .npz archive: {err}") from None
    return out


def check_npz_memory(path: str | os.PathLike[str], names: tuple[str, ...]) -> None:
    """The declared sizes of the members ``names`` through the memory estimate, before they
    are decompressed (a few MB of deflated zeros can declare many GB)."""
    declared = declared_arrays(path)
    total = 0
    parts = []
    for name in names:
        if name in declared:
            shape, dtype = declared[name]
            size = math.prod(shape) * dtype.itemsize
            # read, converted to float64 (Y) or the model's dtype, and transposed: ~3 copies
            total += 3 * max(size, math.prod(shape) * 8)
            parts.append(f"{name} {shape} {dtype}")
    check_memory(
        total,
        f"the arrays of {str(Path(path))!r} ({', '.join(parts)})",
        "use a smaller file, or fewer or shorter sequences",
    )


def load_npz_arrays(
    path: str | os.PathLike[str], need: tuple[str, ...] = ("X", "Y")
) -> dict[str, np.ndarray]:
    """X, Y (and mask, when present) from a NumPy ``.npz`` file (``np.savez(path, X=..., Y=...)``).

    The members' declared sizes go through the memory estimate (:mod:`bptt.resources`)
    before anything is decompressed.

    Raises:
        CorpusNotFoundError: no such file.
        DataError: not an .npz archive, or without X and Y (the keys it has are listed).
        ResourceError: the declared arrays need more memory than the machine has.
    """
    p = Path(path)
    if not p.is_file():
        raise CorpusNotFoundError(f"array file {str(p)!r} does not exist")
    keys = list(declared_arrays(p))
    missing = [k for k in need if k not in keys]
    if missing:
        raise DataError(
            f"{str(p)!r} has no array(s) {missing}; it holds {keys[:20]}. Save with "
            "np.savez(path, X=inputs, Y=targets[, mask=mask])"
        )
    wanted = tuple(k for k in ("X", "Y", "mask") if k in keys)
    check_npz_memory(p, wanted)
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: np.array(data[k]) for k in wanted}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read {str(p)!r} as a NumPy .npz archive: {err}") from None


def cast_finite(name: str, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A float array cast to ``dtype`` (other kinds as they are), without NumPy's overflow
    warning: a value beyond ``dtype``'s range, NaN or inf is a :class:`DataError`."""
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(dtype)
    if not np.isfinite(out).all():
        where = "NaN or inf" if not np.isfinite(a).all() else f"values beyond {dtype}'s range"
        raise DataError(f"{name} holds {where}; the model computes in {dtype}")
    return out


def infer_output(Y: np.ndarray) -> str:
    """The head for targets Y: integer class ids → softmax, floats → identity."""
    return "softmax" if Y.dtype.kind in "iu" else "identity"


class ArrayTask(SequenceTask):
    """In-memory sequences (see the module docstring).

    Args:
        X, Y, mask: the arrays, in either layout.
        batch_first: the layout of the arrays given.
        output: the model head (default: from Y's dtype, :func:`infer_output`).
        input_size: I; default X's last dimension, or max id + 1 for integer X.
        output_size: O; default Y's last dimension, or max class id + 1 for integer Y.
        val_fraction: share of sequences, at the end, held out for validation, in (0, 1).
        n_val: hold out exactly the last ``n_val`` sequences instead (``bptt.fit`` with
            ``validation_data`` appends them to the training ones).

    Raises:
        ValueError/TypeError: shapes, values or dtypes that do not fit the head.
    """

    name = "arrays"
    output = "identity"
    metric = "mse"

    def __init__(
        self,
        X: object,
        Y: object,
        mask: object = None,
        *,
        batch_first: bool = False,
        output: str | None = None,
        input_size: int | None = None,
        output_size: int | None = None,
        val_fraction: float = 0.1,
        n_val: int | None = None,
    ) -> None:
        x, y, m = to_time_major(X, Y, mask, batch_first=batch_first)
        self.batch_first = bool(batch_first)
        if output is None:
            output = infer_output(y)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.output = output  # type: ignore[misc]
        self.metric = "accuracy" if output in ("softmax", "sigmoid") else "mse"  # type: ignore[misc]
        if x.ndim == 2:
            if x.dtype.kind not in "iu":
                raise TypeError(f"2-D X must be integer token ids, got dtype {x.dtype}")
            self.input_size = int(x.max()) + 1 if input_size is None else int(input_size)
        else:
            if x.dtype.kind != "f":
                raise TypeError(f"3-D X must be floats (T, N, I), got dtype {x.dtype}")
            self.input_size = x.shape[2] if input_size is None else int(input_size)
        if output == "softmax":
            if y.ndim != 2 or y.dtype.kind not in "iu":
                raise ValueError(
                    f"softmax targets Y must be integer class ids (T, N), got shape {y.shape} "
                    f"dtype {y.dtype}"
                )
            self.output_size = int(y.max()) + 1 if output_size is None else int(output_size)
        else:
            if y.ndim == 2:
                y = y[..., None]
            if y.dtype.kind not in "fiu":
                raise TypeError(f"Y must be numeric, got dtype {y.dtype}")
            y = y.astype(np.float64)
            self.output_size = y.shape[2] if output_size is None else int(output_size)
        if m is not None:
            m = m.astype(np.float64)
            if not np.isin(m, (0.0, 1.0)).all():
                raise ValueError("mask must hold only 0 and 1")
        N = x.shape[1]
        if n_val is None:
            if not 0.0 < val_fraction < 1.0:
                raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
            n_val = int(np.ceil(N * val_fraction))
        self.val_fraction = n_val / N
        if not 1 <= n_val < N:
            raise ValueError(
                f"{N} sequence(s) with {n_val} held out for validation leave "
                f"{N - n_val} for training; both need at least one"
            )
        self.n_train, self.n_val = N - n_val, n_val
        self.seq_len = x.shape[0]
        self.x, self.y, self.mask = x, y, m  # (T, N, …), (T, N, …), (T, N) | None
        counted = np.ones(x.shape[:2]) if m is None else m  # (T, N)
        train_w = counted[:, : self.n_train]  # (T, N_train)
        if train_w.sum() == 0:
            raise ValueError("the mask selects no step of the training sequences")
        y_tr = y[:, : self.n_train]
        if output == "softmax":
            freq = np.bincount(y_tr[train_w > 0].ravel(), minlength=self.output_size).astype(
                np.float64
            )
            self._prior = freq / freq.sum()  # (O,) class frequencies
        else:
            self._prior = (y_tr * train_w[..., None]).sum(axis=(0, 1)) / train_w.sum()  # (O,)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "output": self.output, "val_fraction": self.val_fraction}

    def __repr__(self) -> str:
        kind = "ids" if self.x.ndim == 2 else f"{self.x.shape[2]} floats"
        return (
            f"arrays: {self.n_train} training + {self.n_val} validation sequences of T = "
            f"{self.seq_len} steps ({kind} in, {self.output} head, metric {self.metric})"
        )

    def _take(self, idx: np.ndarray, dtype: np.dtype) -> Batch:
        x = cast_finite("X", self.x[:, idx], dtype)
        y = cast_finite("Y", self.y[:, idx], dtype)
        mask = None if self.mask is None else self.mask[:, idx].astype(dtype)
        return Batch(x, y, mask)

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        dt = _check_sample_args(rng, batch, dtype, split)
        if split == "train":
            n, offset = self.n_train, 0
        else:
            n, offset = self.n_val, self.n_train
        idx = rng.choice(n, size=batch, replace=batch > n) + offset  # (B,)
        return self._take(idx, dt)

    def val_batches(self, batch: int, dtype: DTypeLike) -> Iterator[Batch]:
        """Every validation sequence once, in batches of at most ``batch``."""
        dt = check_dtype(dtype)
        for start in range(self.n_train, self.n_train + self.n_val, batch):
            stop = min(start + batch, self.n_train + self.n_val)
            yield self._take(np.arange(start, stop), dt)

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        return score_predictions(y_hat, batch.y, batch.mask, self.output)

    def baseline(self, batch: Batch) -> dict[str, float]:
        """Scores of the memoryless prediction: the training targets' mean (class frequencies)."""
        T, B = batch.y.shape[:2]
        y_hat = np.broadcast_to(self._prior, (T, B, self.output_size))
        return self.evaluate(y_hat, batch)


def array_task_from_npz(
    path: str | os.PathLike[str],
    *,
    batch_first: bool = False,
    output: str = "auto",
    val_fraction: float = 0.1,
) -> ArrayTask:
    """An :class:`ArrayTask` from ``np.savez(path, X=..., Y=...[, mask=...])``."""
    data = load_npz_arrays(path)
    try:
        return ArrayTask(
            data["X"],
            data["Y"],
            data.get("mask"),
            batch_first=batch_first,
            output=None if output == "auto" else output,
            val_fraction=val_fraction,
        )
    except (ValueError, TypeError) as err:
        raise DataError(f"{str(path)!r}: {err}") from None
