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

from .activations import ACTIVATIONS
from .atomic import atomic_write_text
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from .init import INITS, init_params
from .model import BPTTResult, ElmanRNN
from .optim import OPTIMIZERS, SCHEDULES, Schedule, guarded_step, make_optimizer
from .rnn import output_forward
from .truncation import TruncatedBPTT

TASK_NAMES: tuple[str, ...] = ("charlm", "adding", "copy", "sine", "order", "csv")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with CLI help text (and optional ``choices``) in its metadata."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything that defines a training run; the CLI's ``bptt train`` options are its fields.

    Fields marked ``resumable`` may change when a run is resumed; all others must match the
    checkpoint's configuration exactly.
    """

    # -- the task and its data
    task: str = _opt("charlm", "what to learn", choices=TASK_NAMES)
    text: str | None = _opt(
        None, "charlm: a UTF-8 text file (default: the built-in Python-stdlib corpus)"
    )
    val_fraction: float = _opt(0.1, "charlm: share of the text, at the end, held out")
    csv: str | None = _opt(None, "csv: the CSV file with a header row")
    columns: str | None = _opt(None, "csv: comma-separated column names (default: numeric ones)")
    horizon: int = _opt(1, "csv/sine: forecast this many steps ahead")
    n_symbols: int = _opt(8, "copy: alphabet size K")
    copy_len: int = _opt(10, "copy: symbols to remember")
    delay: int = _opt(20, "copy: steps between the sequence and the recall marker")
    noise: float = _opt(0.1, "sine: observation noise σ")
    last_only: bool = _opt(False, "sine/csv: many-to-one, only the last step's forecast counts")
    # -- the model
    hidden: int = _opt(256, "H, hidden units")
    activation: str = _opt("tanh", "hidden activation f_h", choices=tuple(sorted(ACTIVATIONS)))
    init: str = _opt("uniform", "weight initialisation", choices=INITS)
    spectral_radius: float = _opt(0.0, "if > 0, scale W to this spectral radius at init")
    dtype: str = _opt("float32", "floating dtype", choices=("float32", "float64"))
    # -- truncation
    seq_len: int = _opt(
        50, "T: window length (charlm: k1, steps per update; tasks: sequence length)"
    )
    k2: int = _opt(0, "charlm: backpropagate through the last k2 >= seq_len steps (0: = seq_len)")
    batch: int = _opt(32, "B, sequences per batch (parallel streams for charlm)")
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
        )
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.k2 and self.k2 < self.seq_len:
            raise ValueError(f"--k2 must be 0 or >= --seq-len ({self.seq_len}), got {self.k2}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must lie in (0, 1), got {self.val_fraction}")
        if self.task == "csv" and self.csv is None:
            raise ValueError("--task csv needs --csv FILE")
        if self.task != "charlm":
            for name in ("text", "k2"):
                if getattr(self, name):
                    raise ValueError(
                        f"--{_flag(name)} applies to --task charlm, not --task {self.task} "
                        "(finite sequences are trained by full BPTT)"
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
            if f.metadata.get("resumable"):
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

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "window": self.window}

    def load_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.window = int(state["epoch"]), int(state["window"])
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
    if config.task == "csv":
        return get_task(
            "csv",
            path=config.csv,
            columns=config.columns,
            window=config.seq_len,
            horizon=config.horizon,
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
    """How a run ended: ``reason`` is ``done``, ``early_stop``, ``interrupted``, ``diverged``
    or ``stopped`` (a callback asked)."""

    step: int
    reason: str
    metrics: dict[str, Any]
    checkpoint: Path | None


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; a checkpoint of the last good state was saved."""


Callback = Callable[[TrainEvent], None]


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

    Raises:
        CheckpointError: ``resume`` without a checkpoint, a checkpoint from another task or
            configuration, or a fresh run into a directory that already holds one.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
        echo: Callable[[str], None] | None = print,
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
        ckpt = self._existing_checkpoint(resume)
        dtype = np.dtype(config.dtype)
        self.text: TextData | None = None
        self.task: Any = None
        if config.task == "charlm":
            self.text = TextData(config, None if ckpt is None else ckpt.vocab)
            n_in = n_out = self.text.vocab.size
            output = "softmax"
        else:
            self.task = make_task(config)
            n_in, n_out, output = self.task.input_size, self.task.output_size, self.task.output
        self.model = ElmanRNN(
            n_in, config.hidden, n_out, config.activation, output, seed=config.seed, dtype=dtype
        )
        self.model.params = init_params(
            self.model,
            config.init,
            seed=config.seed,
            spectral_radius=config.spectral_radius or None,
        )
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
        if ckpt is not None:
            self._restore(ckpt)
        self._init_profiler()

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
        self.model.params = ckpt.model.params
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.step = ckpt.step
        if ckpt.rng_state is not None:
            self.rng.bit_generator.state = ckpt.rng_state
        if self.text is not None:
            self.text.load_state(ckpt.data_state)
        self.runner.load_state_arrays(ckpt.arrays)
        m = ckpt.metrics
        self.bad_steps = int(m.get("bad_steps", 0))
        self.consecutive_bad = int(m.get("consecutive_bad", 0))
        self.best = m.get("best")
        self.evals_since_best = int(m.get("evals_since_best", 0))
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

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; returns its metrics (loss per step/char, lr, grad norm, …)."""
        x, y, mask, h0 = self._next_batch()
        res = self._forward_backward(x, y, mask)
        # The objective is the mean loss per counted step (per character for charlm), as in
        # PyTorch's mean-reduced losses, so --lr and --clip mean what they mean there:
        # L̄ = L · B / Σ mask  (L sums over steps and averages over the batch).
        T, B = x.shape[:2]
        counted = T * B if mask is None else float(np.sum(mask, dtype=np.float64))
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
        if self.profiler is not None:
            self.profiler.maybe_record(self.step, self.model, x, y, h0=h0, mask=mask)
        return {
            "step": self.step,
            "kind": "train",
            "loss": loss,
            "lr": lr,
            "grad_norm": info.grad_norm,
            "applied": info.applied,
            "reason": info.reason,
            "tokens": int(x.shape[0] * x.shape[1]),
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
            data_state={} if self.text is None else self.text.state(),
            arrays=self.runner.state_arrays(),
            metrics={
                "bad_steps": self.bad_steps,
                "consecutive_bad": self.consecutive_bad,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
            },
            task=self.config.task,
        )
        if self.profiler is not None:
            self.profiler.save(self.out / "profile.json")
        self._emit("checkpoint", {"path": str(path)})
        return path

    # -- the loop --------------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped") -> None:
        """End the run after the current step (a checkpoint is saved)."""
        self._stop_reason = reason

    def _emit(self, kind: str, metrics: dict[str, Any]) -> None:
        event = TrainEvent(kind, self.step, metrics, self)
        for cb in self.callbacks:
            cb(event)

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)

    def _init_profiler(self) -> None:
        if self.config.profile_every <= 0:
            return
        try:
            from .diagnostics import GradientProfileRecorder
        except ImportError as err:
            raise ImportError(
                "--profile-every needs bptt.diagnostics.GradientProfileRecorder, which this "
                f"installation lacks ({err})"
            ) from None
        self.profiler = GradientProfileRecorder(every=self.config.profile_every)

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
        else:
            self.evals_since_best += 1
        return self.config.patience > 0 and self.evals_since_best >= self.config.patience

    def train(self) -> TrainResult:
        """Run to ``config.steps``; returns how it ended (a checkpoint is always saved).

        Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and returns with
        reason ``interrupted``; a second Ctrl-C aborts at once.

        Raises:
            TrainingDiverged: ``max_bad_steps`` consecutive non-finite steps (checkpoint saved
                first, holding the last finite weights).
        """
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        if self.step == 0:  # a fresh run: no stale log lines from an earlier, deleted run
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if self.step >= cfg.steps:
            self._say(f"{self.out}: already at step {self.step} >= --steps {cfg.steps}")
            return TrainResult(self.step, "done", {}, checkpoint_path(self.out))
        if self.text is not None:
            c = self.text.corpus
            self._say(
                f"corpus {c.source}: {len(c):,} chars, vocabulary {c.vocab.size}, "
                f"train {len(self.text.train_ids):,} / val {len(self.text.val_ids):,}"
            )
        else:
            self._say(f"task {self.task!r}")
        self._say(
            f"{self.model}, {self.model.params.global_norm():.3g} weight norm; "
            f"{cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps -> {self.out}"
        )
        bar = self._progress_bar()
        say = bar.write if bar is not None else self._say
        if self.echo is None:
            say = self._say
        interrupted = False
        previous = _install_sigint(lambda: setattr(self, "_stop_reason", "interrupted"))
        reason = "done"
        last: dict[str, Any] = {}
        t0, tokens = time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                rec = self.train_step()
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
                        f"{cfg.patience} evaluations (best {self.best:.4f})"
                    )
                    break
                if self._stop_reason:
                    reason = self._stop_reason
                    interrupted = reason == "interrupted"
                    break
        finally:
            _restore_sigint(previous)
            if bar is not None:
                bar.close()
        path = self.save()
        if interrupted:
            self._say(
                f"interrupted at step {self.step}; checkpoint saved to {path}; continue "
                f"with the same options and --resume"
            )
        self._emit("end", {"reason": reason})
        if cfg.plot:
            self._plot()
        return TrainResult(self.step, reason, last, path)

    def _rollback_for_divergence(self) -> None:
        """Weights are never made non-finite by a skipped step, so nothing to undo here;
        the hidden state carried by the truncation runner is reset if it went non-finite."""
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

    def _plot(self) -> None:
        try:
            from .plots import plot_metrics

            plot_metrics(self.out)
        except ImportError as err:
            self._say(f"(no loss.png: {err})")


# ---------------------------------------------------------------------------------------------
# Evaluation helpers (also used by ``bptt eval``)
# ---------------------------------------------------------------------------------------------


def evaluate_text(
    model: ElmanRNN, ids: np.ndarray, batch: int, seq_len: int, max_windows: int = 0
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
        hs = model.hidden_states(x, h)  # (T+1, B, H)
        z = output_forward(model.params, hs)  # (T, B, O)
        losses = model.head.step_losses(z, y)  # (T, B)
        total += float(np.sum(losses, dtype=np.float64))
        hits += int(np.count_nonzero(z.argmax(axis=-1) == y))
        count += losses.size
        h = hs[-1]
    loss = total / count
    return {
        "val_loss": loss,
        "val_bpc": loss / math.log(2.0),
        "val_ppl": math.exp(min(loss, 700.0)),
        "val_accuracy": hits / count,
        "val_chars": count,
    }


def evaluate_task(model: ElmanRNN, task: Any, size: int, batch: int, seed: int) -> dict[str, Any]:
    """The task's metrics and loss on ``size`` validation sequences (the same ones every time:
    drawn from a generator seeded with ``seed``), with the baseline's beside them."""
    rng = np.random.default_rng([seed, 7919])
    sums: dict[str, float] = {}
    n = 0
    while n < size:
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


def _install_sigint(on_interrupt: Callable[[], None]) -> Any:
    """First Ctrl-C: ask the loop to stop after this step; second: the usual KeyboardInterrupt."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        on_interrupt()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    return signal.signal(signal.SIGINT, handler)


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
