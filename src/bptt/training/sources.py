"""What the trainer trains on: data sources behind one interface, :class:`DataSource`.

    CharStreamSource   charlm: B parallel streams over a text, windows of T characters, the
                       hidden state carried from window to window; each window's gradient by
                       truncated BPTT(k1 = T, k2) (:class:`bptt.algorithms.truncated.TruncatedBPTT`)
    TaskSource         a sequence task (:mod:`bptt.data`): a fresh batch of B sequences every
                       step, drawn from the source's own RNG; each batch's gradient by full BPTT

Each source owns its state for checkpoint and resume: the data position (epoch and window),
the carried hidden state and TBPTT buffer, the RNG, a continuing task's stream carry. The
trainer (:mod:`bptt.training.loop`) calls only the interface; :func:`make_source` builds the
source ``config.task`` names, :func:`make_task` the sequence task.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..algorithms.truncated import TruncatedBPTT
from ..data.arrays import array_task_from_npz
from ..data.tasks import Batch, CsvTask, SequenceTask, get_task
from ..data.text import CharCorpus, CharVocab, read_text_file, stream_batches, windows_per_epoch
from ..model import RNN, BPTTResult
from .config import DEFAULT_SEQ_LEN, TrainConfig
from .evaluation import evaluate_task, evaluate_text


def content_fingerprint(data: bytes) -> dict[str, Any]:
    """{"sha256": hex digest, "bytes": size} of a data file's content (checked on resume)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class DataSource(ABC):
    """The trainer's view of its data: sizes, one training window at a time, a stream for
    the online algorithms, held-out evaluation, and the state a checkpoint keeps.

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

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.model: RNN | None = None

    def attach(self, model: RNN) -> None:
        """The model whose gradients and carried state this source computes."""
        self.model = model

    def _model(self) -> RNN:
        if self.model is None:
            raise RuntimeError("attach(model) the source before drawing from it")
        return self.model

    @abstractmethod
    def describe(self) -> str:
        """One line on the data, printed at the start of a run."""

    @abstractmethod
    def next_batch(self) -> tuple[Batch, Any]:
        """The next training batch: x (T, B, I) or ids (T, B), y, mask (T, B) or None; and the
        state just before x when the source knows it (carried streams with k1 = k2; else
        None), which the gradient profiler starts from."""

    @abstractmethod
    def gradient(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> BPTTResult:
        """The loss (summed over steps, mean over the batch) and dL/dθ of the batch just drawn,
        under the model's current weights; the carried state, if any, moves past it."""

    @abstractmethod
    def next_chunk(self) -> tuple[Batch, bool]:
        """The next (T, B) chunk of B streams for an online algorithm, and whether it starts
        new streams (the algorithm's state is then reset before its first step)."""

    @abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics of the model (``val_…`` keys, and ``baseline_…`` for tasks)."""

    def score(self, metrics: dict[str, Any]) -> float:
        """The number early stopping follows, from :meth:`evaluate`'s metrics."""
        return float(metrics[self.metric_key])

    def reset_if_not_finite(self) -> None:  # noqa: B027 (no carried state: nothing to do)
        """Start the carried state afresh if it is no longer finite (after a divergent step)."""

    def data_state(self) -> dict[str, Any]:
        """JSON-able state for the checkpoint (data position, file fingerprint, …)."""
        return {} if self.fingerprint is None else {"source": self.fingerprint}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The carried arrays for the checkpoint (hidden state, buffers, stream carry)."""
        return {}

    def restore(
        self, data_state: dict[str, Any], arrays: dict[str, np.ndarray], rng_state: Any
    ) -> None:
        """Continue from a checkpoint's :meth:`data_state`, :meth:`state_arrays` and RNG.

        Raises:
            ValueError: state that does not fit this data or model.
        """
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state


class CharStreamSource(DataSource):
    """charlm: B parallel streams over the training split, windows of T characters, the hidden
    state carried across windows and reset at each new epoch; TBPTT(k1 = T, k2) gradients."""

    task = "charlm"
    output = "softmax"
    data_option = "--text"
    metric_key = "val_loss"
    metric_name = "validation loss (nats/char)"
    dense_input = False

    def __init__(self, config: TrainConfig, vocab: CharVocab | None = None) -> None:
        super().__init__(config)
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
        self.runner: TruncatedBPTT | None = None

    def attach(self, model: RNN) -> None:
        super().attach(model)
        k1 = self.config.seq_len
        self.runner = TruncatedBPTT(model, k1, self.config.k2 or k1, self.config.memory_budget)

    def _runner(self) -> TruncatedBPTT:
        if self.runner is None:
            raise RuntimeError("attach(model) the source before drawing from it")
        return self.runner

    def describe(self) -> str:
        c = self.corpus
        return (
            f"corpus {c.source}: {len(c):,} chars, vocabulary {c.vocab.size}, "
            f"train {len(self.train_ids):,} / val {len(self.val_ids):,}"
        )

    def _next_ids(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(x, y, new_epoch): the next (T, B) window; new_epoch: the streams start over."""
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
        return x, y, new_epoch

    def next_batch(self) -> tuple[Batch, Any]:
        runner = self._runner()
        x, y, new_epoch = self._next_ids()
        if new_epoch:
            runner.reset()
        return Batch(x, y, None), runner.window_start_state

    def gradient(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> BPTTResult:
        """TBPTT(k1, k2) from the carried state, which then moves on (or starts afresh if
        the window left it non-finite)."""
        runner = self._runner()
        with np.errstate(over="ignore", invalid="ignore"):
            res = runner.step(x, y, mask)
        runner.reset_if_not_finite()
        return res

    def next_chunk(self) -> tuple[Batch, bool]:
        x, y, new_epoch = self._next_ids()
        return Batch(x, y, None), new_epoch

    def evaluate(self) -> dict[str, Any]:
        cfg = self.config
        return evaluate_text(self._model(), self.val_ids, cfg.batch, cfg.seq_len, cfg.eval_windows)

    def reset_if_not_finite(self) -> None:
        self._runner().reset_if_not_finite()

    def data_state(self) -> dict[str, Any]:
        """The stream position and the text's fingerprint."""
        return {"epoch": self.epoch, "window": self.window, "source": self.fingerprint}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """TBPTT's carried state and buffer (``tbptt.…``)."""
        return self._runner().state_arrays()

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
        runner = self._runner()
        runner.load_state_arrays(arrays)
        h = runner.h_start
        if h is not None:  # shaped as the model's states, (B, H) or (L, B, H), or a tuple
            self._model().split_state(h, self.batch, "the checkpoint's carried state")


class TaskSource(DataSource):
    """A sequence task: a fresh batch of B sequences per step from the source's RNG, full BPTT.

    For the online algorithms, a task with ``stream`` (lagged) continues its B streams from
    chunk to chunk (the carry is saved as ``stream.carry``); any other task gives one batch of
    sequences after another, each starting new streams.
    """

    data_option = "--csv"  # the one task read from a file whose content a resume checks

    def __init__(self, config: TrainConfig, task: SequenceTask) -> None:
        super().__init__(config)
        self.sequence_task = task
        self.task = config.task
        self.input_size, self.output_size = task.input_size, task.output_size
        self.output = task.output
        self.metric_key = f"val_{task.metric}"
        self.metric_name = f"validation {task.metric}"
        self.higher_is_better = task.higher_is_better
        self.eval_batch = max(config.batch, min(256, config.eval_size))
        self.carry: np.ndarray | None = None
        if config.task == "csv" and config.csv is not None:
            self.fingerprint = content_fingerprint(read_text_file(config.csv).encode("utf-8"))

    def describe(self) -> str:
        return f"task {self.sequence_task!r}"

    def next_batch(self) -> tuple[Batch, Any]:
        return self.sequence_task.sample(self.rng, self.config.batch, self._model().dtype), None

    def gradient(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> BPTTResult:
        """Full BPTT over the batch's sequences, each from h_0 = 0."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._model().forward_backward(
                x, y, None, mask, memory_budget=self.config.memory_budget
            )

    def next_chunk(self) -> tuple[Batch, bool]:
        model, task = self._model(), self.sequence_task
        if hasattr(task, "stream"):
            batch, self.carry = task.stream(self.rng, self.config.batch, model.dtype, self.carry)
            return batch, False
        return task.sample(self.rng, self.config.batch, model.dtype), True

    def evaluate(self) -> dict[str, Any]:
        cfg = self.config
        return evaluate_task(self._model(), self.sequence_task, cfg.eval_size, cfg.batch, cfg.seed)

    def data_state(self) -> dict[str, Any]:
        """The data file's fingerprint; csv: also the columns and the training rows' μ, σ (so
        ``bptt predict`` standardises new rows as training did)."""
        state = super().data_state()
        task = self.sequence_task
        if isinstance(task, CsvTask):
            state |= {
                "columns": list(task.columns),
                "mean": [float(v) for v in task.mean],
                "std": [float(v) for v in task.std],
            }
        return state

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {} if self.carry is None else {"stream.carry": np.ascontiguousarray(self.carry)}

    def restore(
        self, data_state: dict[str, Any], arrays: dict[str, np.ndarray], rng_state: Any
    ) -> None:
        super().restore(data_state, arrays, rng_state)
        carry = arrays.get("stream.carry")
        self.carry = None if carry is None else np.array(carry)


class StepStream:
    """An online algorithm's cursor: B streams, runs of steps at a time, over the source's chunks.

    Its state (the current chunk and the position in it) is saved as ``stream.…`` arrays.
    """

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.pos = 0
        self.restart = False  # the chunk starts new streams

    def take(self, steps: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]]:
        """The next ``steps`` steps as runs of consecutive steps, ``(xs, ys, masks, restart)``
        each within one chunk: what :meth:`next` would give one at a time, for
        :meth:`bptt.online.OnlineAlgorithm.run`. ``restart``: reset before the run."""
        left = steps
        while left > 0:
            if self.x is None or self.pos >= self.x.shape[0]:
                (self.x, self.y, self.mask), self.restart = self.source.next_chunk()
                self.pos = 0
            assert self.x is not None and self.y is not None
            t0 = self.pos
            t1 = min(self.x.shape[0], t0 + left)
            self.pos = t1
            left -= t1 - t0
            mask = None if self.mask is None else self.mask[t0:t1]
            yield self.x[t0:t1], self.y[t0:t1], mask, self.restart and t0 == 0

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "stream.pos": np.array([self.pos], dtype=np.int64),
            "stream.restart": np.array([self.restart], dtype=np.int64),
        }
        for key in ("x", "y", "mask"):
            value = getattr(self, key)
            if value is not None:
                out[f"stream.{key}"] = np.ascontiguousarray(value)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for key in ("x", "y", "mask"):
            value = arrays.get(f"stream.{key}")
            setattr(self, key, None if value is None else np.array(value))
        self.pos = int(np.asarray(arrays.get("stream.pos", 0)).reshape(-1)[0])
        self.restart = bool(np.asarray(arrays.get("stream.restart", 0)).reshape(-1)[0])


def make_task(config: TrainConfig) -> SequenceTask:
    """The :class:`~bptt.data.tasks.SequenceTask` named by ``config.task`` (not charlm).

    Raises:
        ValueError: charlm or an unknown name; ``--task arrays`` without ``--data``.
    """
    if config.task == "adding":
        return get_task("adding", seq_len=config.seq_len)
    if config.task == "copy":
        return get_task(
            "copy", n_symbols=config.n_symbols, copy_len=config.copy_len, delay=config.delay
        )
    if config.task == "sine":
        return get_task(
            "sine",
            seq_len=config.seq_len,
            noise=config.noise,
            horizon=config.horizon,
            last_only=config.last_only,
        )
    if config.task == "order":
        return get_task("order", seq_len=config.seq_len)
    if config.task == "lagged":
        return get_task("lagged", seq_len=config.seq_len, lag1=config.lag1, lag2=config.lag2)
    if config.task == "csv":
        return get_task(
            "csv",
            path=config.csv,
            columns=config.columns,
            window=config.seq_len,
            horizon=config.horizon,
            last_only=config.last_only,
        )
    if config.task == "arrays":
        if config.data is None:
            raise ValueError(
                "--task arrays needs --data FILE.npz (np.savez(FILE, X=..., Y=...)); "
                "from Python, bptt.fit(model, X, Y) takes the arrays themselves"
            )
        return array_task_from_npz(
            config.data,
            batch_first=config.batch_first,
            output=config.output,
            val_fraction=config.val_fraction,
        )
    raise ValueError(f"not a sequence task: {config.task!r}")


def make_source(
    config: TrainConfig, *, task: SequenceTask | None = None, vocab: CharVocab | None = None
) -> DataSource:
    """The source ``config.task`` names: character streams (charlm, in ``vocab`` when given,
    as on resume) or a sequence task (``task`` when given, as ``bptt.fit`` passes its arrays).

    Raises:
        ValueError: a ``--seq-len`` that a task of fixed length (copy, arrays) cannot honour.
    """
    if config.task == "charlm":
        return CharStreamSource(config, vocab)
    task = make_task(config) if task is None else task
    if config.task in ("copy", "arrays") and config.seq_len not in (
        DEFAULT_SEQ_LEN,
        task.seq_len,
    ):
        raise ValueError(
            f"--seq-len {config.seq_len}: the {config.task} task's sequences have "
            f"T = {task.seq_len} steps, fixed by the task; leave --seq-len out"
        )
    return TaskSource(config, task)
