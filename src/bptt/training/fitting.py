"""``bptt.fit``: your own NumPy arrays to a trained model, on the trainer of ``bptt train``.

    fit(model, X, Y, mask) = Trainer(TrainConfig(task="arrays", ...), task=ArrayTask(X, Y, mask),
                                     model=model).train()

so validation, the optimizers and schedules, clipping, early stopping, callbacks, checkpoints,
``metrics.jsonl``, ``loss.png`` and the progress bar are those of ``bptt train`` (every
:class:`~bptt.training.TrainConfig` field is a keyword). The model is trained in place; with
early stopping (``patience``) it ends holding the best evaluation's weights.

A library call is quiet and leaves no files: by default the run is kept in memory (``out=None``;
the log lines come back in :attr:`~bptt.training.TrainResult.history`) and its progress goes to
the ``bptt`` logger. ``out="runs/mine"`` keeps a run directory (checkpoint, ``config.json``,
``metrics.jsonl``, ``loss.png``; ``resume=True`` continues it); ``verbose=True`` prints the
progress (a bar on a terminal, plain periodic lines elsewhere).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..data.arrays import ArrayTask, to_time_major
from ..model import RNN
from .config import TrainConfig
from .distributed import train as run_training
from .loop import Callback, TrainResult


def fit(
    model: RNN,
    X: object,
    Y: object,
    mask: object = None,
    *,
    batch_first: bool = False,
    validation_data: tuple[Any, ...] | None = None,
    val_fraction: float = 0.1,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``model`` on N sequences held in arrays.

    Args:
        model: any :class:`~bptt.RNN` (Elman, GRU, LSTM; deep; bidirectional where the
            ``algorithm`` runs whole sequences), trained in place; its head sets the loss
            (identity: ½ squared error on float Y; softmax: cross-entropy on integer class
            ids; sigmoid: binary cross-entropy) and its sizes must fit X and Y.
        X: (T, N, I) floats of the model's dtype (cast if another float dtype) or (T, N)
            integer ids; (N, T, …) with ``batch_first=True``.
        Y: (T, N, O) floats or (T, N) class ids (a (T, N) float Y is read as O = 1).
        mask: None or (T, N) of 0/1: only steps with 1 count (variable lengths,
            many-to-one).
        batch_first: the arrays are (N, T, …), PyTorch's ``batch_first=True``.
        validation_data: (X_val, Y_val) or (X_val, Y_val, mask_val) in the same layout;
            default: hold out the last ``val_fraction`` of the sequences.
        out: None (the default) keeps the run in memory and writes nothing; a path keeps a run
            directory there (checkpoint, ``config.json``, ``metrics.jsonl``, ``loss.png``).
        resume: continue the run in ``out`` (pass the same arrays).
        callbacks: as :class:`~bptt.training.Trainer`.
        verbose: print the progress (data, model, evaluations, the summary; a progress bar on
            a terminal, plain periodic lines elsewhere). False (the default): the lines go to
            the ``bptt`` logger at INFO level.
        echo: where the progress lines go instead of ``print`` (implies ``verbose``).
        **options: any other :class:`~bptt.training.TrainConfig` field: ``steps``, ``batch``,
            ``optimizer``, ``lr``, ``schedule``, ``clip``, ``eval_every``, ``patience``,
            ``keep_best``, ``progress``, ``plot``, ``workers`` (N data-parallel Ray Train
            workers: docs/data-parallel.md), …

    Returns:
        The :class:`~bptt.training.TrainResult` (last evaluation's metrics, the log lines in
        ``history``, the checkpoint paths when ``out`` is given).

    Raises:
        ValueError: shapes that fit neither layout (the message gives both readings), a model
            whose sizes do not fit the arrays, or an option that is not a TrainConfig field
            or that fit sets itself.
    """
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be None or a directory path, got {type(out).__name__}")
    if resume and out is None:
        raise ValueError("resume=True continues a run directory: give its out= as well")
    if not isinstance(model, RNN):
        raise TypeError(
            "model must be a bptt.RNN (ElmanRNN, GRU, LSTM, deep or bidirectional), got "
            f"{type(model).__name__}"
        )
    own = {"task", "hidden", "activation", "dtype", "data", "text", "csv", "output", "seq_len"}
    own |= {"cell", "layers", "bidirectional"}
    clash = sorted(own & set(options))
    if clash:
        raise ValueError(f"fit sets {clash} from the model and the arrays; leave them out")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"fit got unknown option(s) {unknown}; TrainConfig fields: {sorted(known)}")
    X, Y, mask = _as_model_dtype(model, X, Y, mask)
    n_val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (X_val, Y_val) or (X_val, Y_val, mask_val)")
        xv, yv, mv = (*validation_data, None)[:3]
        xv, yv, mv = _as_model_dtype(model, xv, yv, mv)
        X, Y, mask = to_time_major(X, Y, mask, batch_first=batch_first)
        xv, yv, mv = to_time_major(xv, yv, mv, batch_first=batch_first)
        if (mask is None) != (mv is None):
            raise ValueError(
                "give a mask for both the training and the validation arrays, or neither"
            )
        if X.shape[0] != xv.shape[0] or X.shape[2:] != xv.shape[2:] or Y.shape[2:] != yv.shape[2:]:
            raise ValueError(
                f"validation arrays X {xv.shape}, Y {yv.shape} do not match the training "
                f"arrays X {X.shape}, Y {Y.shape} (time-major) in T or feature sizes"
            )
        n_val = xv.shape[1]
        X, Y = np.concatenate([X, xv], axis=1), np.concatenate([Y, yv], axis=1)
        mask = None if mask is None else np.concatenate([mask, mv], axis=1)
        batch_first = False
    task = ArrayTask(
        X,
        Y,
        mask,
        batch_first=batch_first,
        output=model.output,
        input_size=model.input_size,
        output_size=model.output_size,
        val_fraction=val_fraction,
        n_val=n_val,
    )
    _check_features(model, task)
    config = _python_worded(
        TrainConfig,
        task="arrays",
        hidden=model.hidden_size,
        activation=model.hidden_activation,
        cell=model.cell,
        layers=model.num_layers,
        bidirectional=model.bidirectional,
        dtype=model.dtype.name,
        output=model.output,
        seq_len=task.seq_len,
        batch_first=bool(batch_first),
        val_fraction=task.val_fraction,
        out=None if out is None else os.fspath(out),
        **options,
    )
    if echo is None and verbose:
        echo = print
    # workers=N (N > 1): N Ray Train workers, each on its share of every batch
    return run_training(
        config, resume=resume, callbacks=callbacks, echo=echo, task=task, model=model
    )


_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def _python_worded(make: Callable[..., TrainConfig], **fields: Any) -> TrainConfig:
    """``make(**fields)``, its errors naming keywords (``steps``) instead of the command
    line's flags (``--steps``)."""
    try:
        return make(**fields)
    except (TypeError, ValueError) as err:
        message = _FLAG.sub(lambda m: m.group(1).replace("-", "_"), str(err))
        raise type(err)(message) from None


def _as_model_dtype(
    model: RNN, X: object, Y: object, mask: object
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Float arrays in the model's dtype (ids and class ids stay integers)."""
    x, y = np.asarray(X), np.asarray(Y)
    if x.dtype.kind == "f":
        x = x.astype(model.dtype, copy=False)
    if y.dtype.kind == "f":
        y = y.astype(model.dtype, copy=False)
    return x, y, mask


def _check_features(model: RNN, task: ArrayTask) -> None:
    x, y = task.x, task.y
    if x.ndim == 3 and x.shape[2] != model.input_size:
        raise ValueError(
            f"X has {x.shape[2]} features per step but the model's input_size is "
            f"{model.input_size} (X time-major: {x.shape})"
        )
    if x.ndim == 2 and int(x.max()) >= model.input_size:
        raise ValueError(
            f"X holds token ids up to {int(x.max())}, beyond the model's input_size "
            f"{model.input_size}"
        )
    if model.output == "softmax":
        if int(y.max()) >= model.output_size:
            raise ValueError(
                f"Y holds class ids up to {int(y.max())}, beyond the model's output_size "
                f"{model.output_size}"
            )
    elif y.shape[2] != model.output_size:
        raise ValueError(
            f"Y has {y.shape[2]} values per step but the model's output_size is "
            f"{model.output_size} (Y time-major: {y.shape})"
        )
