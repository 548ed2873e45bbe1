"""The trainer: one typed :class:`TrainConfig`, the loop, evaluation, checkpoints and logs.

Each optimizer step s = 0 … steps − 1:

    x, y, mask  ← next window (charlm: B parallel streams, h carried) or a fresh task batch
    L, g        ← TBPTT(k1 = seq_len, k2) on the window (charlm), full BPTT (finite tasks)
    L̄, ḡ        ← L, g · B / Σ mask: the mean loss per counted step (per character), as
                  PyTorch's mean-reduced losses, so --lr and --clip transfer from there
    η_s         ← schedule(s);  g ← clip(g);  θ ← optimizer(θ, g, η_s) unless L or g is not finite

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per log line),
``checkpoint.safetensors`` (see ``docs/checkpoint-format.md``), ``loss.png`` and, with
``profile_every``, ``profile.json``. Resuming restores parameters, optimizer state, the data
position, the carried hidden state and the RNG, so N steps + resume to 2N equals 2N steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import time
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ._kernels import loop_blas_threads
from .activations import ACTIVATIONS
from .atomic import atomic_write_text
from .cells import CELLS
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from .init import INITS, init_params
from .interop import initial_weights
from .model import RNN, BPTTResult, build_model
from .optim import OPTIMIZERS, SCHEDULES, Schedule, guarded_step, make_optimizer
from .resources import check_memory, estimate_bytes
from .rundir import RunDirLock
from .truncation import TruncatedBPTT

TASK_NAMES: tuple[str, ...] = (
    "charlm",
    "adding",
    "copy",
    "sine",
    "order",
    "csv",
    "arrays",
    "lagged",
)
DEFAULT_SEQ_LEN = 50
TRAIN_ALGORITHMS: tuple[str, ...] = (
    "bptt",
    "tbptt",
    "rtrl",
    "uoro",
    "kf-rtrl",
    "snap-1",
    "snap-2",
    "rflo",
)
"""``bptt``: BPTT on windows (TBPTT(k1, k2) for charlm); the others run :mod:`bptt.online`."""


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with CLI help text (and optional ``choices``) in its metadata."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything that defines a training run; the CLI's ``bptt train`` options are its fields.

    Fields marked ``resumable`` may change when a run is resumed; all others must match the
    checkpoint's configuration exactly, except the data files (``content``): those are compared
    by the SHA-256 and size of their content, so a file rewritten in place is refused and the
    same file by another path is accepted.
    """

    # -- the task and its data
    task: str = _opt("charlm", "what to learn", choices=TASK_NAMES)
    text: str | None = _opt(
        None,
        "charlm: a UTF-8 text file (default: the built-in Python-stdlib corpus)",
        content=True,
    )
    val_fraction: float = _opt(
        0.1, "charlm/arrays: share of the text (of the sequences), at the end, held out"
    )
    csv: str | None = _opt(None, "csv: the CSV file with a header row", content=True)
    columns: str | None = _opt(None, "csv: comma-separated column names (default: numeric ones)")
    horizon: int = _opt(1, "csv/sine: forecast this many steps ahead")
    n_symbols: int = _opt(8, "copy: alphabet size K")
    copy_len: int = _opt(10, "copy: symbols to remember")
    delay: int = _opt(20, "copy: steps between the sequence and the recall marker")
    noise: float = _opt(0.1, "sine: observation noise σ")
    last_only: bool = _opt(False, "sine/csv: many-to-one, only the last step's forecast counts")
    lag1: int = _opt(3, "lagged: P(y_t = 1) rises by 1/2 when x at t - lag1 is 1")
    lag2: int = _opt(8, "lagged: and falls by 1/4 when x at t - lag2 is 1")
    data: str | None = _opt(None, "arrays: an .npz file with X, Y and optionally mask")
    batch_first: bool = _opt(False, "arrays: X, Y, mask are (N, T, ...) instead of (T, N, ...)")
    output: str = _opt(
        "auto",
        "arrays: the head (auto: softmax for integer Y, identity for float Y)",
        choices=("auto", "identity", "softmax", "sigmoid"),
    )
    # -- the model
    hidden: int = _opt(256, "H, hidden units (per layer and direction)")
    cell: str = _opt("elman", "recurrent cell", choices=tuple(CELLS))
    layers: int = _opt(1, "L, stacked recurrent layers")
    bidirectional: bool = _opt(
        False, "a forward and a reverse cell per layer (finite-sequence tasks only)"
    )
    init_from: str | None = _opt(
        None, "start from these weights: a bptt run/checkpoint or a torch-named state dict"
    )
    activation: str = _opt("tanh", "hidden activation f_h", choices=tuple(sorted(ACTIVATIONS)))
    init: str = _opt("uniform", "weight initialisation", choices=INITS)
    spectral_radius: float = _opt(0.0, "if > 0, scale W to this spectral radius at init")
    recurrent_density: float = _opt(
        1.0, "keep this fraction of W's entries (a fixed random sparsity mask; 1: dense)"
    )
    dtype: str = _opt("float32", "floating dtype", choices=("float32", "float64"))
    # -- truncation
    seq_len: int = _opt(
        DEFAULT_SEQ_LEN,
        "T: window length (charlm: k1, steps per update; tasks: sequence length; copy and "
        "arrays: fixed by the task)",
    )
    k2: int = _opt(0, "charlm: backpropagate through the last k2 >= seq_len steps (0: = seq_len)")
    batch: int = _opt(32, "B, sequences per batch (parallel streams for charlm)")
    # -- the gradient algorithm
    algorithm: str = _opt(
        "bptt",
        "bptt: BPTT on windows; the others are online (bptt.online), step by step on carried "
        "streams",
        choices=TRAIN_ALGORITHMS,
    )
    update_every: int = _opt(1, "online algorithms: an optimizer step every N stream steps")
    truncation: int = _opt(
        0, "--algorithm tbptt: each step's loss backpropagated through k steps (0: = seq-len)"
    )
    # -- optimisation
    steps: int = _opt(4000, "total optimizer steps of the run", resumable=True)
    optimizer: str = _opt("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = _opt(2e-3, "base learning rate")
    momentum: float = _opt(0.0, "sgd/rmsprop momentum")
    nesterov: bool = _opt(False, "sgd: Nesterov momentum")
    weight_decay: float = _opt(0.0, "L2 (adam, sgd, …) or decoupled (adamw) weight decay")
    beta1: float = _opt(0.9, "adam/adamw β1")
    beta2: float = _opt(0.999, "adam/adamw β2")
    schedule: str = _opt("constant", "learning-rate schedule", choices=SCHEDULES)
    warmup: int = _opt(0, "linear warm-up steps")
    lr_step_size: int = _opt(1000, "step schedule: multiply by lr-gamma every this many steps")
    lr_gamma: float = _opt(0.5, "step schedule factor")
    min_lr_ratio: float = _opt(0.0, "cosine schedule: final lr as a fraction of --lr")
    clip: float = _opt(5.0, "clip the global gradient norm to this (0: off)")
    clip_value: float = _opt(0.0, "clip each gradient entry to ±this (0: off)")
    max_bad_steps: int = _opt(
        10, "stop after this many consecutive non-finite steps", resumable=True
    )
    seed: int = _opt(0, "seeds the initialisation, the data and the sampling")
    # -- evaluation, logging, checkpoints
    out: str = _opt("runs/bptt", "run directory", resumable=True)
    eval_every: int = _opt(250, "evaluate on held-out data every this many steps", resumable=True)
    eval_windows: int = _opt(
        0, "charlm: evaluate on at most this many validation windows (0: all)", resumable=True
    )
    eval_size: int = _opt(1024, "tasks: held-out sequences per evaluation", resumable=True)
    patience: int = _opt(
        0,
        "early stopping: stop after this many evaluations without improvement (0: off)",
        resumable=True,
    )
    checkpoint_every: int = _opt(500, "save a checkpoint every this many steps", resumable=True)
    keep_best: bool = _opt(
        False,
        "also keep the best evaluation's weights in OUT/best (on with --patience)",
        resumable=True,
    )
    log_every: int = _opt(
        10, "append training loss to metrics.jsonl every this many steps", resumable=True
    )
    sample_every: int = _opt(
        500, "charlm: print a sample every this many steps (0: off)", resumable=True
    )
    sample_length: int = _opt(200, "charlm: characters per printed sample", resumable=True)
    progress: bool = _opt(True, "show a progress bar (needs tqdm)", resumable=True)
    plot: bool = _opt(True, "write loss.png at the end (needs matplotlib)", resumable=True)
    profile_every: int = _opt(
        0,
        "record a gradient profile every this many steps into profile.json (0: off)",
        resumable=True,
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check each field's type and range.

        Raises:
            ValueError/TypeError: naming the option, what was expected and what was given.
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _base_type(hints[f.name])
            if value is None and _is_optional(hints[f.name]):
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise TypeError(
                    f"--{_flag(f.name)} must be {kind.__name__}, got {type(value).__name__} "
                    f"{value!r}"
                )
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(
                    f"--{_flag(f.name)} must be one of {', '.join(choices)}, got {value!r}"
                )
            if kind is float and not math.isfinite(typing.cast(float, value)):
                raise ValueError(f"--{_flag(f.name)} must be finite, got {value}")
        positive = (
            "hidden",
            "seq_len",
            "batch",
            "steps",
            "eval_every",
            "checkpoint_every",
            "log_every",
            "max_bad_steps",
            "eval_size",
            "sample_length",
            "horizon",
            "n_symbols",
            "copy_len",
            "delay",
            "lr_step_size",
            "layers",
            "update_every",
            "lag1",
            "lag2",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        nonneg = (
            "lr",
            "momentum",
            "weight_decay",
            "clip",
            "clip_value",
            "warmup",
            "k2",
            "patience",
            "sample_every",
            "eval_windows",
            "profile_every",
            "noise",
            "spectral_radius",
            "min_lr_ratio",
            "seed",
            "truncation",
        )
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        # the learning rate may only fall: a step factor in (0, 1], a cosine floor in [0, 1]
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"--lr-gamma must lie in (0, 1], got {self.lr_gamma}")
        if self.min_lr_ratio > 1.0:
            raise ValueError(f"--min-lr-ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.k2 and self.k2 < self.seq_len:
            raise ValueError(f"--k2 must be 0 or >= --seq-len ({self.seq_len}), got {self.k2}")
        if not 0.0 < self.recurrent_density <= 1.0:
            raise ValueError(
                f"--recurrent-density must lie in (0, 1], got {self.recurrent_density}"
            )
        self._validate_algorithm()
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must lie in (0, 1), got {self.val_fraction}")
        if self.task == "csv" and self.csv is None:
            raise ValueError("--task csv needs --csv FILE")
        if self.bidirectional and self.task == "charlm":
            raise ValueError(
                "--bidirectional needs whole sequences, but --task charlm trains on carried "
                "streams with truncated BPTT, where the future is not available"
            )
        if self.task != "arrays":
            for name in ("data", "batch_first"):
                if getattr(self, name):
                    raise ValueError(f"--{_flag(name)} applies to --task arrays only")
            if self.output != "auto":
                raise ValueError("--output applies to --task arrays only")
        if self.task == "copy" and self.seq_len not in (
            DEFAULT_SEQ_LEN,
            self.delay + 2 * self.copy_len,
        ):
            raise ValueError(
                f"--seq-len {self.seq_len}: the copy task's length is fixed, T = --delay + "
                f"2 * --copy-len = {self.delay + 2 * self.copy_len}; set --delay and "
                "--copy-len instead"
            )
        if self.task != "charlm":
            for name in ("text", "k2"):
                if getattr(self, name):
                    raise ValueError(
                        f"--{_flag(name)} applies to --task charlm, not --task {self.task} "
                        "(finite sequences are trained by full BPTT)"
                    )

    def _validate_algorithm(self) -> None:
        if self.algorithm == "bptt":
            for name in ("truncation",):
                if getattr(self, name):
                    raise ValueError(f"--{_flag(name)} applies to --algorithm tbptt")
            return
        if self.bidirectional:
            raise ValueError(
                f"--algorithm {self.algorithm} runs step by step on carried streams, where a "
                "bidirectional layer's future is not available"
            )
        if self.profile_every:
            raise ValueError(
                "--profile-every records BPTT's per-lag gradient profile of each window; "
                f"it runs with --algorithm bptt, not {self.algorithm}"
            )
        if self.k2:
            raise ValueError(
                f"--k2 applies to --algorithm bptt; --algorithm {self.algorithm} updates every "
                "--update-every steps (tbptt: through --truncation steps)"
            )
        if self.algorithm != "tbptt" and (self.cell != "elman" or self.layers != 1):
            raise ValueError(
                f"--algorithm {self.algorithm} is implemented for one Elman layer, got --cell "
                f"{self.cell} --layers {self.layers} (--algorithm tbptt runs any cell and depth)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise (a config from a newer bptt).

        Raises:
            ValueError: unknown keys.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"configuration has unknown option(s) {unknown} (newer bptt?)")
        return cls(**data)

    def differences(self, other: TrainConfig) -> list[str]:
        """The non-resumable fields where ``other`` differs, as ``name: old -> new`` lines."""
        out = []
        for f in fields(self):
            if f.metadata.get("resumable") or f.metadata.get("content"):
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"--{_flag(f.name)}: {a!r} (checkpoint) -> {b!r} (now)")
        return out


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _is_optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _base_type(hint: Any) -> type:
    """``int | None`` → int; ``float`` → float."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.cast(type, args[0])
    return typing.cast(type, hint)


def config_fields() -> list[tuple[str, type, Any, bool, dict[str, Any]]]:
    """(name, base type, default, optional, metadata) of each :class:`TrainConfig` field."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else None
        out.append(
            (
                f.name,
                _base_type(hints[f.name]),
                default,
                _is_optional(hints[f.name]),
                dict(f.metadata),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Data sources
# ---------------------------------------------------------------------------------------------


def content_fingerprint(data: bytes) -> dict[str, Any]:
    """{"sha256": hex digest, "bytes": size} of a data file's content (checked on resume)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class TextData:
    """charlm: B parallel streams over the training split, windows of T characters."""

    def __init__(self, config: TrainConfig, vocab: Any = None) -> None:
        from .data.text import CharCorpus

        if config.text is None:
            corpus = CharCorpus.builtin(vocab)
        else:
            corpus = CharCorpus.from_file(config.text, vocab)
        self.corpus = corpus
        self.vocab = corpus.vocab
        self.train_ids, self.val_ids = corpus.split(
            config.val_fraction, seq_len=config.seq_len, batch=config.batch
        )
        self.batch, self.seq_len = config.batch, config.seq_len
        self.epoch, self.window = 0, 0
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        self.source = content_fingerprint(corpus.text.encode("utf-8"))

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "window": self.window, "source": self.source}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue at a saved position (see :meth:`state`).

        Raises:
            ValueError: the position lies beyond this text's windows.
        """
        from .data.text import windows_per_epoch

        epoch, window = int(state.get("epoch", 0)), int(state.get("window", 0))
        n = windows_per_epoch(self.train_ids, self.batch, self.seq_len)
        if not 0 <= window <= n:
            raise ValueError(
                f"the checkpoint's data position (epoch {epoch}, window {window}) lies beyond "
                f"the {n} windows per epoch of this text (--text changed?)"
            )
        self.epoch, self.window = epoch, window
        self._it = None

    def next(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(x, y, new_epoch): the next (T, B) window; new_epoch means reset the hidden state."""
        from .data.text import stream_batches

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


class StepStream:
    """What an online algorithm trains on: B streams, one step at a time, in chunks of T steps.

    charlm: the text's windows (a new epoch restarts the streams); a task with ``stream``
    (lagged): its continuing streams; any other task: one batch of sequences after another,
    the streams restarted (h = 0, influence 0) at the start of each batch.
    """

    def __init__(
        self, text: TextData | None, task: Any, rng: np.random.Generator, batch: int, dtype: Any
    ) -> None:
        self.text, self.task, self.rng = text, task, rng
        self.batch, self.dtype = batch, np.dtype(dtype)
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.carry: np.ndarray | None = None
        self.pos = 0
        self.restart = False  # the chunk starts new streams

    def _fetch(self) -> None:
        if self.text is not None:
            self.x, self.y, self.restart = self.text.next()
            self.mask = None
        elif hasattr(self.task, "stream"):
            batch, self.carry = self.task.stream(self.rng, self.batch, self.dtype, self.carry)
            self.x, self.y, self.mask = batch
            self.restart = False
        else:
            self.x, self.y, self.mask = self.task.sample(self.rng, self.batch, self.dtype)
            self.restart = True
        self.pos = 0

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
        """(x_t, y_t, mask_t, restart): one step; restart means reset the algorithm first."""
        if self.x is None or self.pos >= self.x.shape[0]:
            self._fetch()
        assert self.x is not None and self.y is not None
        t = self.pos
        self.pos += 1
        restart = self.restart and t == 0
        return self.x[t], self.y[t], None if self.mask is None else self.mask[t], restart

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "stream.pos": np.array([self.pos], dtype=np.int64),
            "stream.restart": np.array([self.restart], dtype=np.int64),
        }
        for key in ("x", "y", "mask", "carry"):
            value = getattr(self, key)
            if value is not None:
                out[f"stream.{key}"] = np.ascontiguousarray(value)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for key in ("x", "y", "mask", "carry"):
            value = arrays.get(f"stream.{key}")
            setattr(self, key, None if value is None else np.array(value))
        self.pos = int(np.asarray(arrays.get("stream.pos", 0)).reshape(-1)[0])
        self.restart = bool(np.asarray(arrays.get("stream.restart", 0)).reshape(-1)[0])


def make_task(config: TrainConfig) -> Any:
    """The :class:`~bptt.data.tasks.SequenceTask` named by ``config.task``."""
    from .data.tasks import get_task

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
        from .data.arrays import array_task_from_npz

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


# ---------------------------------------------------------------------------------------------
# Events and results
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainEvent:
    """Passed to callbacks: ``kind`` is ``step``, ``eval``, ``checkpoint`` or ``end``."""

    kind: str
    step: int
    metrics: dict[str, Any]
    trainer: Trainer


@dataclass
class TrainResult:
    """How a run ended: ``reason`` is ``done``, ``early_stop``, ``interrupted`` (SIGINT),
    ``terminated`` (SIGTERM), ``diverged`` or ``stopped`` (a callback asked)."""

    step: int
    reason: str
    metrics: dict[str, Any]
    checkpoint: Path | None
    best_checkpoint: Path | None = None  # OUT/best: the best evaluation's weights, if kept


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; a checkpoint of the last good state was saved."""


Callback = Callable[[TrainEvent], None]


def _check_model_fits(model: RNN, n_in: int, n_out: int, output: str, config: TrainConfig) -> None:
    """A model handed to the trainer must match the task and the configuration it records."""
    want = {
        "input_size": n_in,
        "output_size": n_out,
        "output": output,
        "hidden_size": config.hidden,
        "hidden_activation": config.activation,
        "dtype": np.dtype(config.dtype),
        "cell": config.cell,
        "num_layers": config.layers,
        "bidirectional": config.bidirectional,
    }
    wrong = [
        f"{k} {getattr(model, k)!r} (task/config: {v!r})"
        for k, v in want.items()
        if getattr(model, k) != v
    ]
    if wrong:
        raise ValueError("the model does not fit the data: " + "; ".join(wrong))


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Builds the model, data and optimizer from a :class:`TrainConfig` and runs the loop.

    Args:
        config: the run.
        resume: continue the run in ``config.out`` (its configuration must match, except the
            resumable fields such as ``steps``).
        callbacks: called with a :class:`TrainEvent` after each step, evaluation and checkpoint;
            call :meth:`request_stop` to end the run after the current step.
        echo: where progress text goes (samples, evaluations); None silences it.
        task: a ready :class:`~bptt.data.tasks.SequenceTask` to train on instead of the one
            ``config.task`` names (``bptt.fit`` passes its in-memory arrays this way).
        model: train this model (its own weights and structure) instead of building one from
            the configuration; its structure must fit the task and the configuration.
        start_from: begin from this checkpoint's state (weights, optimizer, step, data
            position, RNG) under ``config``, which may differ from the checkpoint's in any
            field that keeps the model's shape (population-based training's exploit step,
            ``bptt.sweep``). The run directory's own checkpoint, if any, is replaced at the
            next save.

    The run directory ``config.out`` is locked (:mod:`bptt.rundir`) from construction until
    :meth:`train` returns; a Trainer that is never trained holds it until it is collected.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, a checkpoint from another task or
            configuration or data, or a fresh run into a directory that already holds one.
        ValueError: a ``model`` that does not fit the task; a ``--seq-len`` that the task
            cannot honour.
        RunDirBusyError: another process (or Trainer) holds ``config.out``.
        ResourceError: the configuration needs more memory than the machine has.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
        echo: Callable[[str], None] | None = print,
        task: Any = None,
        model: RNN | None = None,
        start_from: Checkpoint | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.out = Path(config.out)
        self.callbacks = list(callbacks)
        self.echo = echo
        self._stop_reason = ""
        self.step = 0
        self.bad_steps = 0
        self.consecutive_bad = 0
        self.best: float | None = None
        self.evals_since_best = 0
        self.history: list[dict[str, Any]] = []
        self.profiler: Any = None
        self.best_step: int | None = None
        self.best_params: Any = None
        self._consistent = True  # False while a step is half done (data drawn, not applied)
        # the run directory is ours until train() ends (or this constructor fails)
        self._lock = RunDirLock(self.out)
        self._lock.acquire()
        try:
            self._setup(resume, task, model, start_from)
        except BaseException:
            self._lock.release(discard=True)  # a refused run leaves no folder behind
            raise

    def _setup(
        self, resume: bool, task: Any, model: RNN | None, start_from: Checkpoint | None
    ) -> None:
        config = self.config
        ckpt = self._existing_checkpoint(resume) if start_from is None else start_from
        dtype = np.dtype(config.dtype)
        self.text: TextData | None = None
        self.task: Any = None
        if config.task == "charlm":
            self.text = TextData(config, None if ckpt is None else ckpt.vocab)
            n_in = n_out = self.text.vocab.size
            output = "softmax"
        else:
            self.task = make_task(config) if task is None else task
            n_in, n_out, output = self.task.input_size, self.task.output_size, self.task.output
            fixed = config.task in ("copy", "arrays")
            if fixed and config.seq_len not in (DEFAULT_SEQ_LEN, self.task.seq_len):
                raise ValueError(
                    f"--seq-len {config.seq_len}: the {config.task} task's sequences have "
                    f"T = {self.task.seq_len} steps, fixed by the task; leave --seq-len out"
                )
        self._check_memory(n_in, n_out)
        self.source = self._source_fingerprint()
        if ckpt is not None:
            self._check_source(ckpt)
        if model is not None:
            _check_model_fits(model, n_in, n_out, output, config)
            self.model = model
        else:
            self.model = build_model(
                input_size=n_in,
                hidden_size=config.hidden,
                output_size=n_out,
                cell=config.cell,
                num_layers=config.layers,
                bidirectional=config.bidirectional,
                hidden_activation=config.activation,
                output=output,
                seed=config.seed,
                dtype=dtype,
            )
            self.model.params = init_params(
                self.model,
                config.init,
                seed=config.seed,
                spectral_radius=config.spectral_radius or None,
            )
            if config.init_from is not None and ckpt is None:
                self.model.params = initial_weights(config.init_from, self.model)
        if config.recurrent_density < 1.0:
            H = self.model.hidden_size
            mask_rng = np.random.default_rng([config.seed, 104729])  # fixed by the seed
            self.model.set_recurrent_mask(mask_rng.uniform(size=(H, H)) < config.recurrent_density)
        self.optimizer = make_optimizer(
            config.optimizer,
            config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
        )
        self.schedule = Schedule(
            config.schedule,
            config.lr,
            total_steps=config.steps,
            warmup=config.warmup,
            step_size=config.lr_step_size,
            gamma=config.lr_gamma,
            min_lr_ratio=config.min_lr_ratio,
        )
        self.runner = TruncatedBPTT(self.model, config.seq_len, config.k2 or config.seq_len)
        self.rng = np.random.default_rng(config.seed)  # task batches
        self.online: Any = None
        self.stream: StepStream | None = None
        if config.algorithm != "bptt":
            from .online import make

            options = (
                {"k": config.truncation or config.seq_len} if config.algorithm == "tbptt" else {}
            )
            self.online = make(
                config.algorithm, self.model, batch=config.batch, seed=config.seed, **options
            )
            self.stream = StepStream(self.text, self.task, self.rng, config.batch, dtype)
        if ckpt is not None:
            try:
                self._restore(ckpt)
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(
                    f"--resume: the checkpoint in {str(self.out)!r} cannot be restored: {err}"
                ) from None
        self._init_profiler(resume=ckpt is not None)

    def _check_memory(self, n_in: int, n_out: int) -> None:
        """Refuse a configuration whose estimated memory exceeds what the machine has."""
        cfg = self.config
        window = max(cfg.seq_len, cfg.k2)
        batch = cfg.batch if self.text is not None else max(cfg.batch, min(256, cfg.eval_size))
        sample = cfg.sample_length if self.text is not None and cfg.sample_every else 0
        need = estimate_bytes(
            n_in,
            cfg.hidden,
            n_out,
            window,
            batch,
            itemsize=np.dtype(cfg.dtype).itemsize,
            dense_input=self.text is None,
            sample=sample,
            layers=cfg.layers * (2 if cfg.bidirectional else 1),
        )
        if cfg.algorithm != "bptt":
            from .online import carried_bytes

            k = cfg.truncation or cfg.seq_len
            itemsize = np.dtype(cfg.dtype).itemsize
            need += carried_bytes(cfg.algorithm, cfg.batch, n_in, cfg.hidden, itemsize, k)
        check_memory(
            need,
            f"this configuration (I={n_in}, H={cfg.hidden}, O={n_out}, T={window}, B={batch}"
            + (f", --sample-length {sample}" if sample else "")
            + ")",
            "use a smaller --hidden, --seq-len, --k2, --batch"
            + (
                f" (--algorithm {cfg.algorithm} carries state per stream)"
                if cfg.algorithm != "bptt"
                else ""
            )
            + (", --sample-length" if sample else "")
            + (", --n-symbols" if cfg.task == "copy" else ""),
        )

    def _source_fingerprint(self) -> dict[str, Any] | None:
        """The content fingerprint of the run's data file (charlm text or csv), else None."""
        if self.text is not None:
            return self.text.source
        if self.config.task == "csv" and self.config.csv is not None:
            from .data.text import read_text_file

            return content_fingerprint(read_text_file(self.config.csv).encode("utf-8"))
        return None

    def _check_source(self, ckpt: Any) -> None:
        """--resume on the same data: same content (SHA-256 and size), whatever its path."""
        saved = ckpt.data_state.get("source")
        if saved == self.source:
            return
        option = "--text" if self.text is not None else "--csv"
        now = getattr(self.config, option[2:]) or "the built-in corpus"

        def show(fp: Any) -> str:
            return "none" if not fp else f"{fp['bytes']} bytes, sha256 {fp['sha256'][:12]}…"

        raise CheckpointError(
            f"--resume: {option} {now!r} is not the data the checkpoint in {str(self.out)!r} "
            f"was trained on: its content is {show(self.source)}, the checkpoint's was "
            f"{show(saved)}"
        )

    # -- set-up and resume ----------------------------------------------------------------

    def _existing_checkpoint(self, resume: bool) -> Any:
        have = any((self.out / n).is_file() for n in ("checkpoint.safetensors", "checkpoint.npz"))
        if not resume:
            if have:
                raise CheckpointError(
                    f"{str(self.out)!r} already holds a run; pass --resume to continue it, or "
                    "choose another --out"
                )
            return None
        if not have:
            raise CheckpointError(f"--resume: no checkpoint in {str(self.out)!r}")
        ckpt = load_checkpoint(self.out)
        if ckpt.task != self.config.task:
            raise CheckpointError(
                f"--resume: the checkpoint in {str(self.out)!r} is for task {ckpt.task!r}, "
                f"not {self.config.task!r}"
            )
        try:
            saved = TrainConfig.from_dict(ckpt.config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"--resume: unreadable configuration: {err}") from None
        diff = saved.differences(self.config)
        if diff:
            raise CheckpointError(
                "--resume with a changed configuration (only --steps and other run-control "
                "options may change):\n  " + "\n  ".join(diff)
            )
        return ckpt

    def _restore(self, ckpt: Any) -> None:
        if ckpt.model.structure() != self.model.structure():
            raise ValueError(
                f"the checkpoint's model is {ckpt.model!r}, the configuration gives {self.model!r}"
            )
        self.model.params = ckpt.model.params
        self.optimizer.load_state_dict(ckpt.optimizer_state, names=self.model.params)
        self.step = ckpt.step
        if ckpt.rng_state is not None:
            self.rng.bit_generator.state = ckpt.rng_state
        if self.text is not None:
            self.text.load_state(ckpt.data_state)
        self.runner.load_state_arrays(ckpt.arrays)
        h = self.runner.h_start
        if h is not None:  # shaped as the model's states, (B, H) or (L, B, H), or a tuple
            self.model.split_state(h, self.config.batch, "the checkpoint's carried state")
        if self.model.w_mask is not None:
            self.model.set_recurrent_mask(self.model.w_mask)
        if self.online is not None:
            assert self.stream is not None
            prefix = "online."
            self.online.load_state_dict(
                {k[len(prefix) :]: v for k, v in ckpt.arrays.items() if k.startswith(prefix)}
            )
            self.stream.load_state_arrays(ckpt.arrays)
        m = ckpt.metrics
        self.bad_steps = int(m.get("bad_steps", 0))
        self.consecutive_bad = int(m.get("consecutive_bad", 0))
        self.best = m.get("best")
        self.evals_since_best = int(m.get("evals_since_best", 0))
        self.best_step = m.get("best_step")
        if self.keeps_best and self.best_step is not None and (self.out / "best").is_dir():
            self.best_params = load_checkpoint(self.out / "best").model.params
        self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint (a crash between checkpoints)."""
        log = self.out / "metrics.jsonl"
        if not log.is_file():
            return
        kept = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue
        atomic_write_text(log, "".join(k + "\n" for k in kept))

    # -- one step --------------------------------------------------------------------------

    def _next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(x, y, mask, h0) of the next step; h0 is the carried state (charlm) or None."""
        if self.text is not None:
            x, y, new_epoch = self.text.next()
            if new_epoch:
                self.runner.reset()
            # the state just before x (known when k1 = k2; with k1 < k2 the runner keeps the
            # state before its buffer instead)
            chunked = self.runner.k2 == self.runner.k1
            return x, y, None, self.runner.h_start if chunked else None
        b = self.task.sample(self.rng, self.config.batch, self.model.dtype)
        return b.x, b.y, b.mask, None

    def _forward_backward(
        self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None
    ) -> BPTTResult:
        if self.text is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                res = self.runner.step(x, y, mask)
            if self.runner.h_start is not None and not np.isfinite(self.runner.h_start).all():
                self.runner.reset()
            return res
        with np.errstate(over="ignore", invalid="ignore"):
            return self.model.forward_backward(x, y, None, mask)

    def _online_step(self) -> tuple[BPTTResult, int, float]:
        """``update_every`` steps of the online algorithm: summed loss and gradient estimate,
        the number of stream steps and the number of counted (unmasked) ones."""
        assert self.online is not None and self.stream is not None
        B = self.config.batch
        total_loss, total, counted = 0.0, None, 0.0
        H, Q = self.model.hidden_size, self.model.input_size + self.model.hidden_size + 1
        with np.errstate(over="ignore", invalid="ignore"), loop_blas_threads(B * H * H * Q):
            for _ in range(self.config.update_every):
                x_t, y_t, m_t, restart = self.stream.next()
                if restart:
                    self.online.reset()
                loss, g = self.online.step(x_t, y_t, m_t)
                total_loss += loss
                counted += B if m_t is None else float(np.sum(m_t, dtype=np.float64))
                if total is None:
                    total = g
                else:
                    for name, arr in total.items():
                        arr += g[name]
        if not self.online.state_is_finite():
            self.online.reset()
        assert total is not None
        res = BPTTResult(loss=total_loss, grads=total, h_last=None)
        return res, self.config.update_every * B, counted

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; returns its metrics (loss per step/char, lr, grad norm, …)."""
        if self.online is not None:
            return self._apply(*self._online_step(), profile=None)
        x, y, mask, h0 = self._next_batch()
        res = self._forward_backward(x, y, mask)
        T, B = x.shape[:2]
        counted = T * B if mask is None else float(np.sum(mask, dtype=np.float64))
        return self._apply(res, T * B, counted, profile=(x, y, h0, mask))

    def _apply(
        self, res: BPTTResult, tokens: int, counted: float, profile: tuple[Any, ...] | None
    ) -> dict[str, Any]:
        """Scale to the mean loss per counted step, clip, update; the step's metrics."""
        # The objective is the mean loss per counted step (per character for charlm), as in
        # PyTorch's mean-reduced losses, so --lr and --clip mean what they mean there:
        # L̄ = L · B / Σ mask  (L sums over steps and averages over the batch).
        B = self.config.batch
        scale = B / max(counted, 1.0)
        for _, arr in res.grads.items():
            arr *= arr.dtype.type(scale)
        lr = self.schedule(self.step)
        info = guarded_step(
            self.optimizer,
            self.model.params,
            res.grads,
            lr=lr,
            clip_norm=self.config.clip,
            clip_value=self.config.clip_value,
            loss=res.loss * scale,
        )
        self.step += 1
        if info.applied:
            self.consecutive_bad = 0
        else:
            self.bad_steps += 1
            self.consecutive_bad += 1
        loss = res.loss * scale
        if self.profiler is not None and profile is not None:
            x, y, h0, mask = profile
            self.profiler.maybe_record(self.step, self.model, x, y, h0=h0, mask=mask)
        return {
            "step": self.step,
            "kind": "train",
            "loss": loss,
            "lr": lr,
            "grad_norm": info.grad_norm,
            "applied": info.applied,
            "reason": info.reason,
            "tokens": tokens,
        }

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics: charlm val loss (nats/char), bits/char, perplexity, accuracy;
        tasks: loss, the task's metrics on ``eval_size`` validation sequences, its baseline."""
        if self.text is not None:
            return self._evaluate_text(self.text.val_ids)
        return self._evaluate_task()

    def _evaluate_text(self, ids: np.ndarray) -> dict[str, Any]:
        return evaluate_text(
            self.model, ids, self.config.batch, self.config.seq_len, self.config.eval_windows
        )

    def _evaluate_task(self) -> dict[str, Any]:
        return evaluate_task(
            self.model, self.task, self.config.eval_size, self.config.batch, self.config.seed
        )

    # -- checkpoints -----------------------------------------------------------------------

    def save(self) -> Path:
        """Write the checkpoint (and profile.json when profiling) atomically."""
        path = save_checkpoint(
            self.out,
            model=self.model,
            step=self.step,
            config=self.config.to_dict(),
            optimizer_state=self.optimizer.state_dict(),
            vocab_json=None if self.text is None else self.text.vocab.to_json(),
            rng=self.rng,
            data_state=self._data_state(),
            arrays=self._state_arrays(),
            metrics={
                "bad_steps": self.bad_steps,
                "consecutive_bad": self.consecutive_bad,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
                "best_step": self.best_step,
            },
            task=self.config.task,
        )
        if self.profiler is not None:
            self.profiler.save(self.out / "profile.json")
        self._emit("checkpoint", {"path": str(path)})
        return path

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """The carried state: TBPTT's buffer, or the online algorithm's state and its stream."""
        if self.online is None:
            return self.runner.state_arrays()
        assert self.stream is not None
        online = {f"online.{k}": v for k, v in self.online.state_dict().items()}
        return online | self.stream.state_arrays()

    def _data_state(self) -> dict[str, Any]:
        """charlm: the stream position and the text's fingerprint; csv: the file's fingerprint,
        the columns and the training rows' μ, σ (so ``bptt predict`` standardises new rows as
        training did)."""
        if self.text is not None:
            return self.text.state()
        state: dict[str, Any] = {} if self.source is None else {"source": self.source}
        if self.config.task == "csv":
            state |= {
                "columns": list(self.task.columns),
                "mean": [float(v) for v in self.task.mean],
                "std": [float(v) for v in self.task.std],
            }
        return state

    def _save_best(self) -> None:
        """Keep the current weights as the best: in memory, and in ``out/best`` on disk."""
        self.best_params = self.model.params.copy()
        self.best_step = self.step
        save_checkpoint(
            self.out / "best",
            model=self.model,
            step=self.step,
            config=self.config.to_dict(),
            vocab_json=None if self.text is None else self.text.vocab.to_json(),
            metrics={"best": self.best},
            task=self.config.task,
        )

    @property
    def keeps_best(self) -> bool:
        """``--keep-best``, or early stopping (which returns the best weights)."""
        return self.config.keep_best or self.config.patience > 0

    # -- the loop --------------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped") -> None:
        """End the run after the current step (a checkpoint is saved)."""
        self._stop_reason = reason

    def _emit(self, kind: str, metrics: dict[str, Any]) -> None:
        event = TrainEvent(kind, self.step, metrics, self)
        for cb in self.callbacks:
            cb(event)

    def _log(self, record: dict[str, Any]) -> None:
        path = self.out / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise OSError(err.errno, f"cannot append to {str(path)!r}: {err.strerror}") from None

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)

    def _init_profiler(self, resume: bool = False) -> None:
        """A gradient-profile recorder; on resume, the run's profile.json continued (its
        records after the checkpoint's step dropped), so a resumed run's profile equals an
        uninterrupted one's."""
        if self.config.profile_every <= 0:
            return
        try:
            from .diagnostics import GradientProfileRecorder
        except ImportError as err:
            raise ImportError(
                "--profile-every needs bptt.diagnostics.GradientProfileRecorder, which this "
                f"installation lacks ({err})"
            ) from None
        if not self.model.simple:
            raise ValueError(
                "--profile-every takes the lag profile of one layer in one direction; this run "
                f"has --layers {self.model.num_layers}"
                + (" --bidirectional" if self.model.bidirectional else "")
            )
        path = self.out / "profile.json"
        if not (resume and path.is_file()):
            self.profiler = GradientProfileRecorder(every=self.config.profile_every)
            return
        try:
            rec = GradientProfileRecorder.load(path)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
            raise CheckpointError(
                f"--resume: {str(path)!r} is not a readable gradient profile ({err}); move it "
                "away to start a new profile"
            ) from None
        keep = sum(1 for s in rec.steps if s <= self.step)
        rec.steps, rec.losses, rec.labels = rec.steps[:keep], rec.losses[:keep], rec.labels[:keep]
        rec.history = {name: rows[:keep] for name, rows in rec.history.items()}
        rec.every = self.config.profile_every
        self.profiler = rec

    def _sample_text(self) -> str:
        from .sample import sample_text

        assert self.text is not None
        return sample_text(
            self.model,
            self.text.vocab,
            self.config.sample_length,
            temperature=0.8,
            seed=self.config.seed + self.step,
        )

    def _after_eval(self, metrics: dict[str, Any]) -> bool:
        """Track the best score; True when early stopping triggers."""
        if self.text is not None:
            score, higher = metrics["val_loss"], False
        else:
            score, higher = metrics[f"val_{self.task.metric}"], self.task.higher_is_better
        better = self.best is None or (score > self.best if higher else score < self.best)
        if better:
            self.best, self.evals_since_best = float(score), 0
            self.best_step = self.step
            if self.keeps_best:
                self._save_best()
        else:
            self.evals_since_best += 1
        return self.config.patience > 0 and self.evals_since_best >= self.config.patience

    def train(self) -> TrainResult:
        """Run to ``config.steps``; returns how it ended (a checkpoint is always saved).

        Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and returns with
        reason ``interrupted``; a second Ctrl-C aborts at once. SIGTERM (``kill``, systemd,
        Slurm, containers) does the same with reason ``terminated``. The run directory stays
        locked (:mod:`bptt.rundir`) until this returns.

        Raises:
            TrainingDiverged: ``max_bad_steps`` consecutive non-finite steps (checkpoint saved
                first, holding the last finite weights).
        """
        self._lock.acquire()  # held since __init__; taken again if train() runs twice
        try:
            return self._train()
        finally:
            self._lock.release()

    def _train(self) -> TrainResult:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if self.step >= cfg.steps:  # config.json keeps the --steps the run went to
            self._say(f"{self.out}: already at step {self.step} >= --steps {cfg.steps}")
            return TrainResult(self.step, "done", {}, checkpoint_path(self.out))
        atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        if self.step == 0:  # a fresh run: no stale log lines from an earlier, deleted run
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if self.text is not None:
            c = self.text.corpus
            self._say(
                f"corpus {c.source}: {len(c):,} chars, vocabulary {c.vocab.size}, "
                f"train {len(self.text.train_ids):,} / val {len(self.text.val_ids):,}"
            )
        else:
            self._say(f"task {self.task!r}")
        self._say(
            f"{self.model}: {self.model.n_parameters():,} parameters, "
            f"{self.model.params.global_norm():.3g} weight norm; "
            f"{cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps -> {self.out}"
        )
        bar = self._progress_bar()
        say = bar.write if bar is not None else self._say
        if self.echo is None:
            say = self._say
        # without a bar, a line of training loss between evaluations (about 5 per interval)
        loss_every = 0 if bar is not None else max(cfg.log_every, cfg.eval_every // 5)
        start_step, window_losses = self.step, []
        interrupted = False
        previous = _install_sigint(lambda reason: setattr(self, "_stop_reason", reason))
        reason = "done"
        last: dict[str, Any] = {}
        t0, tokens = time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                self._consistent = False
                rec = self.train_step()
                self._consistent = True
                tokens += rec["tokens"]
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                if not rec["applied"]:
                    say(
                        f"step {self.step}: skipped ({rec['reason']}); "
                        f"{self.consecutive_bad} in a row, {self.bad_steps} in all"
                    )
                    if self.consecutive_bad >= cfg.max_bad_steps:
                        self._rollback_for_divergence()
                        path = self.save()
                        self._log(
                            {"step": self.step, "kind": "diverged", "bad_steps": self.bad_steps}
                        )
                        raise TrainingDiverged(
                            f"{self.consecutive_bad} consecutive steps had a non-finite loss or "
                            f"gradient (last: {rec['reason']}) at step {self.step}; stopped. "
                            f"The last finite weights are saved in {path}. Try a lower --lr, "
                            "a --clip, or --dtype float64."
                        )
                if rec["applied"]:
                    window_losses.append(rec["loss"])
                if loss_every and self.step % loss_every == 0:
                    if window_losses and self.step % cfg.eval_every:
                        say(
                            f"step {self.step}: train loss {np.mean(window_losses):.4f} "
                            f"(mean of {len(window_losses)}), {rate:,.0f} tok/s"
                        )
                    window_losses = []
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(
                        {k: rec[k] for k in ("step", "kind", "loss", "lr", "grad_norm")}
                        | {"tokens_per_s": rate, "bad_steps": self.bad_steps}
                    )
                if bar is not None:
                    bar.update(1)
                    if self.step % 10 == 0 or self.step == cfg.steps:  # 10 µs: not every step
                        bar.set_postfix(
                            loss=f"{rec['loss']:.4f}", tok_s=f"{rate:,.0f}", refresh=False
                        )
                self._emit("step", rec)
                early = False
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    last = {"step": self.step, "kind": "eval"} | self.evaluate()
                    early = self._after_eval(last)
                    self._log(last)
                    say(_format_eval(last))
                    self._emit("eval", last)
                if self.text is not None and cfg.sample_every and self.step % cfg.sample_every == 0:
                    say(f"--- sample at step {self.step} ---\n{self._sample_text()}\n---")
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                if early:
                    reason = "early_stop"
                    say(
                        f"early stopping at step {self.step}: no improvement in "
                        f"{cfg.patience} evaluations (best {self.best:.4f} at step "
                        f"{self.best_step})"
                    )
                    break
                if self._stop_reason:
                    reason = self._stop_reason
                    interrupted = reason in ("interrupted", "terminated")
                    break
        except Exception as err:
            # a failure outside a step (evaluation, sampling, logging) loses no progress
            if self._consistent and not isinstance(err, TrainingDiverged):
                try:
                    self.save()
                except Exception:  # the original error is the one to report
                    pass
            raise
        finally:
            _restore_sigint(previous)
            if bar is not None:
                bar.close()
        path = self.save()
        if interrupted:
            self._say(
                f"{reason} at step {self.step}; checkpoint saved to {path}; continue "
                f"with the same options and --resume"
            )
        if reason == "early_stop" and self.best_params is not None:
            # the model handed back (bptt.fit) holds the best weights; the checkpoint in
            # OUT keeps the last ones, so that --resume continues where the run stopped
            self.model.params = self.best_params.copy()
        self._emit("end", {"reason": reason})
        plot = self._plot() if cfg.plot else None
        best = checkpoint_path(self.out / "best") if self.best_params is not None else None
        self._say(
            self._summary(reason, self.step - start_step, time.perf_counter() - t0, last, plot)
        )
        return TrainResult(self.step, reason, last, path, best)

    def _summary(
        self, reason: str, steps: int, seconds: float, last: dict[str, Any], plot: Path | None
    ) -> str:
        """The end-of-run lines: steps and time, the final and best metric, the files."""
        how = {
            "done": "done",
            "early_stop": "stopped early",
            "interrupted": "interrupted",
            "stopped": "stopped by a callback",
        }.get(reason, reason)
        lines = [f"{how}: {steps:,} steps in {seconds:.1f} s (step {self.step} of the run)"]
        if self.text is not None:
            key, name = "val_loss", "validation loss (nats/char)"
        else:
            key, name = f"val_{self.task.metric}", f"validation {self.task.metric}"
        if key in last:
            line = f"  final {name}: {last[key]:.4f} at step {last['step']}"
            base = last.get(key.replace("val_", "baseline_"))
            if base is not None:
                line += f" (memoryless baseline {base:.4f})"
            lines.append(line)
        if self.best is not None:
            where = f" (weights in {self.out / 'best'})" if self.best_params is not None else ""
            at = f" at step {self.best_step}" if self.best_step is not None else ""
            lines.append(f"  best {name}: {self.best:.4f}{at}{where}")
        lines.append(f"  checkpoint: {checkpoint_path(self.out)}")
        files = ["config.json", "metrics.jsonl"] + (["loss.png"] if plot else [])
        lines.append(f"  run directory {self.out}: " + ", ".join(files))
        return "\n".join(lines)

    def _rollback_for_divergence(self) -> None:
        """Weights are never made non-finite by a skipped step, so nothing to undo here;
        the hidden state carried by the truncation runner is reset if it went non-finite."""
        if self.online is not None and not self.online.state_is_finite():
            self.online.reset()
        if self.runner.h_start is not None and not np.isfinite(self.runner.h_start).all():
            self.runner.reset()

    def _progress_bar(self) -> Any:
        if not self.config.progress or self.echo is None:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            self._say("(no progress bar: pip install 'bptt[progress]' for tqdm)")
            return None
        return tqdm(
            total=self.config.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _plot(self) -> Path | None:
        try:
            from .plots import plot_metrics

            return plot_metrics(self.out)
        except ImportError as err:
            self._say(f"(no loss.png: {err})")
            return None


# ---------------------------------------------------------------------------------------------
# Evaluation helpers (also used by ``bptt eval``)
# ---------------------------------------------------------------------------------------------


def evaluate_text(
    model: RNN, ids: np.ndarray, batch: int, seq_len: int, max_windows: int = 0
) -> dict[str, Any]:
    """Mean cross-entropy per character over B streams of ``ids``, hidden state carried.

        val_loss = (1/N) Σ −log p(c_{n+1} | c_1..c_n)   (nats/char)
        bits/char = val_loss / ln 2;   perplexity = exp(val_loss)

    Args:
        max_windows: evaluate at most this many (T, B) windows (0: every one).
    """
    from .data.text import require_length, stream_batches

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


def evaluate_task(model: RNN, task: Any, size: int, batch: int, seed: int) -> dict[str, Any]:
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


def _format_eval(m: dict[str, Any]) -> str:
    parts = [f"step {m['step']}:"]
    for k, v in m.items():
        if k in ("step", "kind"):
            continue
        parts.append(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
    return " ".join(parts)


def _install_sigint(on_interrupt: Callable[[str], None]) -> Any:
    """First Ctrl-C (SIGINT) or SIGTERM: ask the loop to stop after this step (the reason is
    ``interrupted`` or ``terminated``); a second one: the usual KeyboardInterrupt, or the
    default SIGTERM action (the process ends)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        on_interrupt("terminated" if signum == signal.SIGTERM else "interrupted")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
