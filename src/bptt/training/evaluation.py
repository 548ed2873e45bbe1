"""Held-out evaluation: a character model on its validation text, a task on its
validation sequences (used by the trainer, ``bptt eval`` and ``bptt sweep``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data.tasks import SequenceTask
from ..data.text import require_length, stream_batches
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
