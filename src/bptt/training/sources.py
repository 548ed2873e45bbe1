"""What the trainer trains on: data sources behind one interface, :class:`DataSource`.

A source only serves data: ``next_batch() -> (Batch(x, y, mask), restart)``, where ``restart``
says the batch starts new streams (the algorithm's carried state is then reset). What the
gradient of a batch is belongs to the algorithm (:mod:`bptt.algorithms`):

    estimate = algorithm.gradient(*source.next_batch())

    CharStreamSource   charlm: B parallel streams over a text, windows of T characters;
                       ``restart`` at each new epoch
    TaskSource         a sequence task (:mod:`bptt.data`): a fresh batch of B sequences every
                       step (``restart``), drawn from the source's own RNG; or, for a streaming
                       algorithm and a task that streams (lagged), its B streams continued

For a streaming algorithm (the online family) a source is built with ``steps=N``
(``--update-every``): it serves N steps of its streams at a time, continuing across windows and
cut short where the next window starts new streams, so a batch never spans a restart.

Each source owns its state for checkpoint and resume: the data position (epoch and window),
the RNG, a continuing task's stream carry, the position within the current window. The trainer
(:mod:`bptt.training.loop`) calls only the interface; :func:`make_source` builds the source
``config.task`` names, :func:`make_task` the sequence task.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..data import registry
from ..data.tasks import Batch, SequenceTask
from ..data.text import CharCorpus, CharVocab, stream_batches, windows_per_epoch
from ..model import RNN
from ..validation import check_positive_int
from .config import DEFAULT_SEQ_LEN, TrainConfig
from .evaluation import evaluate_task, evaluate_text, file_fingerprint


def content_fingerprint(data: bytes) -> dict[str, Any]:
    """{"sha256": hex digest, "bytes": size} of a data file's content (checked on resume)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class DataSource(ABC):
    """The trainer's view of its data: sizes, one training batch at a time with whether it
    starts new streams, held-out evaluation, and the state a checkpoint keeps.

    Attributes:
        task: the ``--task`` name.
        input_size, output_size, output: what the model must take and give (``output``: the
            head, ``softmax``, ``identity`` or ``sigmoid``).
        vocab: the character vocabulary (charlm), else None.
        rng: draws the training batches; saved and restored with the checkpoint.
        fingerprint: the content (SHA-256, size) of the data file, or None; checked on resume.
        data_option: the option that names that file (``--text``, ``--csv``).
        metric_key, metric_name: the evaluation number early stopping and the summary follow.
        higher_is_better: whether a larger ``metric_key`` is better.
        dense_input: the inputs are floats (not token ids), for the memory estimate.
        eval_batch: the largest batch an evaluation runs, for the memory estimate.
        steps: None: :meth:`next_batch` serves whole windows (or fresh batches); N: N steps of
            unbroken streams at a time, for a streaming (online) algorithm.
    """

    task: str
    input_size: int
    output_size: int
    output: str
    vocab: CharVocab | None = None
    fingerprint: dict[str, Any] | None = None
    data_option: str
    metric_key: str
    metric_name: str
    higher_is_better = False
    dense_input = True
    eval_batch: int

    def __init__(self, config: TrainConfig, steps: int | None = None) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.model: RNN | None = None
        self.steps = steps
        # the window being served ``steps`` at a time, and the position in it
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._pos = 0
        self._restart = False  # the window starts new streams

    def attach(self, model: RNN) -> None:
        """The model whose dtype the batches take and whose loss the evaluation reports."""
        self.model = model

    def _model(self) -> RNN:
        if self.model is None:
            raise RuntimeError("attach(model) the source before drawing from it")
        return self.model

    @abstractmethod
    def describe(self) -> str:
        """One line on the data, printed at the start of a run."""

    @abstractmethod
    def next_window(self) -> tuple[Batch, bool]:
        """The next window of the data: x (T, B, I) or ids (T, B), y, mask (T, B) or None; and
        whether it starts new streams (the carried state is reset before it)."""

    def next_batch(self) -> tuple[Batch, bool]:
        """The next training batch and whether it starts new streams.

        With ``steps`` None, the next window. With ``steps=N``, the next N steps of the B
        streams, across windows that continue them; a window that starts new streams ends the
        batch before it (the batch is then shorter), so ``restart`` holds for the batch's first
        step only.
        """
        if self.steps is None:
            return self.next_window()
        pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        restart, left = False, self.steps
        while left > 0:
            if self._x is None or self._pos >= self._x.shape[0]:
                (self._x, self._y, self._mask), self._restart = self.next_window()
                self._pos = 0
            if pieces and self._pos == 0 and self._restart:
                break  # new streams start here: they begin the next batch
            assert self._y is not None
            if not pieces:
                restart = self._restart and self._pos == 0
            t0 = self._pos
            t1 = min(self._x.shape[0], t0 + left)
            self._pos, left = t1, left - (t1 - t0)
            mask = None if self._mask is None else self._mask[t0:t1]
            pieces.append((self._x[t0:t1], self._y[t0:t1], mask))
        return _join(pieces), restart

    @abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics of the model (``val_…`` keys, and ``baseline_…`` for tasks)."""

    def score(self, metrics: dict[str, Any]) -> float:
        """The number early stopping follows, from :meth:`evaluate`'s metrics."""
        return float(metrics[self.metric_key])

    def data_state(self) -> dict[str, Any]:
        """JSON-able state for the checkpoint (data position, file fingerprint, …)."""
        return {} if self.fingerprint is None else {"source": self.fingerprint}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The arrays for the checkpoint: with ``steps``, the window being served and the
        position in it (``stream.x``, ``stream.y``, ``stream.mask``, ``stream.pos``,
        ``stream.restart``); a source's own (a task's stream carry)."""
        if self.steps is None:
            return {}
        out = {
            "stream.pos": np.array([self._pos], dtype=np.int64),
            "stream.restart": np.array([self._restart], dtype=np.int64),
        }
        for key in ("x", "y", "mask"):
            value = getattr(self, f"_{key}")
            if value is not None:
                out[f"stream.{key}"] = np.ascontiguousarray(value)
        return out

    def restore(
        self, data_state: dict[str, Any], arrays: dict[str, np.ndarray], rng_state: Any
    ) -> None:
        """Continue from a checkpoint's :meth:`data_state`, :meth:`state_arrays` and RNG.

        Raises:
            ValueError: state that does not fit this data or model.
        """
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state
        if self.steps is not None:
            for key in ("x", "y", "mask"):
                value = arrays.get(f"stream.{key}")
                setattr(self, f"_{key}", None if value is None else np.array(value))
            self._pos = int(np.asarray(arrays.get("stream.pos", 0)).reshape(-1)[0])
            self._restart = bool(np.asarray(arrays.get("stream.restart", 0)).reshape(-1)[0])


def _join(pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> Batch:
    """Consecutive runs of the same streams as one batch (a missing mask: all ones)."""
    if len(pieces) == 1:
        return Batch(*pieces[0])
    x = np.concatenate([p[0] for p in pieces])
    y = np.concatenate([p[1] for p in pieces])
    masks = [p[2] for p in pieces]
    like = next((m for m in masks if m is not None), None)
    if like is None:
        return Batch(x, y, None)
    full = [
        np.ones(p[0].shape[:2], like.dtype) if m is None else m
        for p, m in zip(pieces, masks, strict=True)
    ]
    return Batch(x, y, np.concatenate(full))


class CharStreamSource(DataSource):
    """charlm: B parallel streams over the training split, windows of T characters; a new
    epoch restarts the streams."""

    task = "charlm"
    output = "softmax"
    data_option = "--text"
    metric_key = "val_loss"
    metric_name = "validation loss (nats/char)"
    dense_input = False

    def __init__(
        self, config: TrainConfig, vocab: CharVocab | None = None, steps: int | None = None
    ) -> None:
        super().__init__(config, steps)
        if config.text is None:
            corpus = CharCorpus.builtin(vocab)
        else:
            corpus = CharCorpus.from_file(config.text, vocab)
        self.corpus = corpus
        self.vocab = corpus.vocab
        self.input_size = self.output_size = corpus.vocab.size
        self.train_ids, self.val_ids = corpus.split(
            config.val_fraction, seq_len=config.seq_len, batch=config.batch
        )
        self.batch, self.seq_len = config.batch, config.seq_len
        self.eval_batch = config.batch
        self.epoch, self.window = 0, 0
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        self.fingerprint = content_fingerprint(corpus.text.encode("utf-8"))

    def describe(self) -> str:
        c = self.corpus
        return (
            f"corpus {c.source}: {len(c):,} chars, vocabulary {c.vocab.size}, "
            f"train {len(self.train_ids):,} / val {len(self.val_ids):,}"
        )

    def next_window(self) -> tuple[Batch, bool]:
        """The next (T, B) window; it restarts the streams at a new epoch."""
        new_epoch = False
        if self._it is None:
            self._it = stream_batches(self.train_ids, self.batch, self.seq_len, start=self.window)
        try:
            x, y = next(self._it)
        except StopIteration:
            self.epoch, self.window = self.epoch + 1, 0
            self._it = stream_batches(self.train_ids, self.batch, self.seq_len, start=0)
            x, y = next(self._it)
            new_epoch = True
        self.window += 1
        return Batch(x, y, None), new_epoch

    def evaluate(self) -> dict[str, Any]:
        cfg = self.config
        return evaluate_text(self._model(), self.val_ids, cfg.batch, cfg.seq_len, cfg.eval_windows)

    def data_state(self) -> dict[str, Any]:
        """The stream position and the text's fingerprint."""
        return {"epoch": self.epoch, "window": self.window, "source": self.fingerprint}

    def restore(
        self, data_state: dict[str, Any], arrays: dict[str, np.ndarray], rng_state: Any
    ) -> None:
        super().restore(data_state, arrays, rng_state)
        epoch, window = int(data_state.get("epoch", 0)), int(data_state.get("window", 0))
        n = windows_per_epoch(self.train_ids, self.batch, self.seq_len)
        if not 0 <= window <= n:
            raise ValueError(
                f"the checkpoint's data position (epoch {epoch}, window {window}) lies beyond "
                f"the {n} windows per epoch of this text (--text changed?)"
            )
        self.epoch, self.window = epoch, window
        self._it = None


class TaskSource(DataSource):
    """A sequence task: a fresh batch of B sequences per step from the source's RNG, each
    starting new streams.

    For a streaming algorithm (``steps`` given), a task with ``stream`` (lagged) continues its
    B streams from window to window (the carry is saved as ``stream.carry``).
    """

    def __init__(self, config: TrainConfig, task: SequenceTask, steps: int | None = None) -> None:
        super().__init__(config, steps)
        self.sequence_task = task
        self.task = config.task
        self.spec = registry.get(config.task)
        self.data_option = self.spec.data_option or "--csv"
        self.input_size, self.output_size = task.input_size, task.output_size
        self.output = task.output
        self.metric_key = f"val_{task.metric}"
        self.metric_name = f"validation {task.metric}"
        self.higher_is_better = task.higher_is_better
        self.eval_batch = max(config.batch, min(256, config.eval_size))
        self.carry: np.ndarray | None = None
        path = self.spec.data_path(config)
        if path is not None:  # text (csv) or an .npz's raw bytes: checked on resume
            assert self.spec.data_option is not None
            self.fingerprint = file_fingerprint(path, self.spec.data_option[2:])

    def describe(self) -> str:
        return f"task {self.sequence_task!r}"

    def next_window(self) -> tuple[Batch, bool]:
        model, task = self._model(), self.sequence_task
        if self.steps is not None and hasattr(task, "stream"):
            batch, self.carry = task.stream(self.rng, self.config.batch, model.dtype, self.carry)
            return batch, False
        return task.sample(self.rng, self.config.batch, model.dtype), True

    def evaluate(self) -> dict[str, Any]:
        cfg = self.config
        return evaluate_task(self._model(), self.sequence_task, cfg.eval_size, cfg.batch, cfg.seed)

    def data_state(self) -> dict[str, Any]:
        """The data file's fingerprint and what the task keeps of its data (csv: the columns
        and the training rows' μ, σ, so ``bptt predict`` standardises new rows as training
        did)."""
        return super().data_state() | self.spec.data_state(self.sequence_task)

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = super().state_arrays()
        if self.carry is not None:
            out["stream.carry"] = np.ascontiguousarray(self.carry)
        return out

    def restore(
        self, data_state: dict[str, Any], arrays: dict[str, np.ndarray], rng_state: Any
    ) -> None:
        super().restore(data_state, arrays, rng_state)
        carry = arrays.get("stream.carry")
        self.carry = None if carry is None else np.array(carry)


def make_task(config: TrainConfig) -> SequenceTask:
    """The :class:`~bptt.data.tasks.SequenceTask` that ``config.task`` names, built by its
    entry in the task registry (:mod:`bptt.data.registry`).

    Raises:
        ValueError: charlm or an unknown name; ``--task arrays`` without ``--data``.
    """
    return registry.get(config.task).build(config)


def make_source(
    config: TrainConfig,
    *,
    task: SequenceTask | None = None,
    vocab: CharVocab | None = None,
    steps: int | None = None,
) -> DataSource:
    """The source ``config.task`` names: character streams (charlm, in ``vocab`` when given,
    as on resume) or a sequence task (``task`` when given, as ``bptt.fit`` passes its arrays).
    ``steps``: serve N steps of unbroken streams at a time (a streaming algorithm's
    ``--update-every``); None: whole windows.

    Raises:
        ValueError: a ``--seq-len`` that a task of fixed length (copy, arrays) cannot honour.
    """
    if steps is not None:
        steps = check_positive_int("steps", steps)
    spec = registry.get(config.task)
    if spec.streams:
        return CharStreamSource(config, vocab, steps)
    task = spec.build(config) if task is None else task
    if spec.fixed_length and config.seq_len not in (DEFAULT_SEQ_LEN, task.seq_len):
        raise ValueError(spec.fixed_length_message(config, task.seq_len))
    return TaskSource(config, task, steps)
