"""Held-out evaluation: a character model on its validation text, a task on its
validation sequences (used by the trainer, ``bptt eval`` and ``bptt sweep``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data.errors import CorpusNotFoundError
from ..data.tasks import SequenceTask
from ..data.text import read_text_file, require_length, stream_batches
from ..model import RNN


def evaluate_text(
    model: RNN, ids: np.ndarray, batch: int, seq_len: int, max_windows: int = 0
) -> dict[str, Any]:
    """Mean cross-entropy per character over B streams of ``ids``, hidden state carried.

        val_loss = (1/N) Σ −log p(c_{n+1} | c_1..c_n)   (nats/char)
        bits/char = val_loss / ln 2;   perplexity = exp(val_loss)

    Args:
        max_windows: evaluate at most this many (T, B) windows (0: every one).
    """
    require_length(ids, seq_len, batch, "the evaluation text")
    h = None
    total, count, hits = 0.0, 0, 0
    for k, (x, y) in enumerate(stream_batches(ids, batch, seq_len)):
        if max_windows and k >= max_windows:
            break
        z, h = model.logits(x, h)  # (T, B, O), and the state carried to the next window
        losses = model.head.step_losses(z, y)  # (T, B)
        total += float(np.sum(losses, dtype=np.float64))
        hits += int(np.count_nonzero(z.argmax(axis=-1) == y))
        count += losses.size
    loss = total / count
    return {
        "val_loss": loss,
        "val_bpc": loss / math.log(2.0),
        "val_ppl": math.exp(min(loss, 700.0)),
        "val_accuracy": hits / count,
        "val_chars": count,
    }


def evaluate_task(
    model: RNN, task: SequenceTask, size: int, batch: int, seed: int
) -> dict[str, Any]:
    """The task's metrics and loss on ``size`` validation sequences (the same ones every time:
    drawn from a generator seeded with ``seed``), with the baseline's beside them. A task with
    a fixed validation set (``val_batches``: your own arrays) is scored on each of its
    sequences once instead."""
    rng = np.random.default_rng([seed, 7919])
    sums: dict[str, float] = {}
    n = 0
    fixed = getattr(task, "val_batches", None)
    batches = None if fixed is None else iter(fixed(max(batch, 256), model.dtype))
    while batches is not None or n < size:
        if batches is not None:
            data = next(batches, None)
            if data is None:
                break
            b = data.y.shape[1]
        else:
            b = min(max(batch, 256), size - n)
            data = task.sample(rng, b, model.dtype, split="val")
        y_hat, _ = model.predict(data.x)
        scores = {f"val_{k}": v for k, v in task.evaluate(y_hat, data).items()}
        scores |= {f"baseline_{k}": v for k, v in task.baseline(data).items()}
        counted = data.y.shape[0] * b if data.mask is None else float(np.sum(data.mask))
        # mean loss per counted step, as the training loss
        scores["val_loss"] = model.loss(data.x, data.y, None, data.mask) * b / counted
        for k, v in scores.items():
            sums[k] = sums.get(k, 0.0) + v * b
        n += b
    return {k: v / n for k, v in sums.items()} | {"val_sequences": n}


def format_eval(m: dict[str, Any]) -> str:
    parts = [f"step {m['step']}:"]
    for k, v in m.items():
        if k in ("step", "kind"):
            continue
        parts.append(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
    return " ".join(parts)


# -- the data a run was trained on, wherever it lies now ------------------------------------

#: the TrainConfig field that names each task's data file (tasks not listed read no file)
DATA_FIELDS = {"charlm": "text", "csv": "csv", "arrays": "data"}
#: the fields that hold paths, stored absolute in a run's configuration
PATH_FIELDS = ("text", "csv", "data", "init_from")


def file_fingerprint(path: str | os.PathLike[str], field_name: str) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of a data file's content as a run's checkpoint keeps it: the
    UTF-8 text (charlm ``text``, ``csv``; a byte-order mark dropped) or the raw bytes (an
    ``.npz``), read a block at a time.

    Raises:
        CorpusNotFoundError, DataError: a missing file, or text that is not UTF-8.
    """
    if field_name in ("text", "csv"):
        data = read_text_file(path).encode("utf-8")
        return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    p = Path(path)
    if not p.is_file():
        raise CorpusNotFoundError(f"data file {str(p)!r} does not exist or is not a file")
    h, size = hashlib.sha256(), 0
    with open(p, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "bytes": size}


def absolute_paths(config: Any) -> Any:
    """``config`` with its data and weight paths absolute (a run directory's configuration
    then names the same files from wherever it is read); the same object when they are."""
    changes = {
        name: os.path.abspath(value)
        for name in PATH_FIELDS
        if isinstance(value := getattr(config, name), str) and not os.path.isabs(value)
    }
    return dataclasses.replace(config, **changes) if changes else config


def _show(fp: Any) -> str:
    if not isinstance(fp, dict):
        return "not recorded"
    return f"{fp.get('bytes')} bytes, sha256 {str(fp.get('sha256'))[:12]}…"


def locate_run_data(
    config: Any,
    data_state: Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    override: str | None = None,
) -> Any:
    """``config`` with its data file (``text``, ``csv`` or ``data``) the one whose content is
    the checkpoint's: ``override`` (``bptt eval --data``) when given, else the path the
    configuration names (a relative one looked up in the current directory, then in the run
    directory). A file is used only when its SHA-256 and size are those the checkpoint keeps,
    so a forged or stale configuration cannot make bptt read (or print from) another file.

    Raises:
        ValueError: no such file, another content, or a checkpoint that keeps no digest
            (then ``--data`` names the file); nothing of the file's content is echoed.
    """
    name = DATA_FIELDS.get(config.task)
    if name is None:
        if override is not None:
            raise ValueError(
                f"--data applies to runs trained on a data file (charlm --text, csv, arrays), "
                f"not --task {config.task}"
            )
        return config
    saved = data_state.get("source")
    stored = getattr(config, name)
    if override is not None:
        candidates = [Path(override)]
    elif stored is None:
        return config  # the built-in corpus: its content is compared once it is built
    else:
        p = Path(stored)
        candidates = [p] if p.is_absolute() else [Path.cwd() / p, Path(run_dir) / p]
    if saved is None and override is None:
        raise ValueError(
            f"the checkpoint keeps no digest of its --{name} file (written by an older bptt), "
            f"so the path in its configuration is not trusted; pass --data FILE to name it"
        )
    seen = None
    for candidate in candidates:
        if not candidate.is_file():
            continue
        seen = file_fingerprint(candidate, name)
        if saved is None or seen == saved:
            return dataclasses.replace(config, **{name: str(candidate.absolute())})
    where = override if override is not None else stored
    found = "does not exist" if seen is None else f"holds {_show(seen)}"
    raise ValueError(
        f"--{'data' if override is not None else name} {where!r} is not the data the checkpoint "
        f"was trained on: it {found}, the checkpoint's was {_show(saved)}"
        + ("" if override is not None else "; pass --data FILE to name the run's data")
    )
