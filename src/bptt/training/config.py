"""The one typed configuration of a training run: :class:`TrainConfig`.

Every ``bptt train`` option is a field (the CLI is built from :func:`config_fields`), with its
help text, choices and whether it may change on ``--resume`` in the field's metadata; each run
writes it to ``config.json``.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from .. import algorithms
from ..activations import ACTIVATIONS
from ..cells import CELLS
from ..data import registry as task_registry
from ..data.registry import DEFAULT_SEQ_LEN, TASK_NAMES
from ..init import INITS
from ..optim import OPTIMIZERS, SCHEDULES
from ..validation import check_config

# Which configuration field fills each algorithm option (an entry of bptt.algorithms lists
# the options it takes); the flags name them in error messages.
OPTION_FIELDS: dict[str, str] = {
    "k1": "seq_len",
    "k2": "k2",
    "k": "truncation",
    "segment": "segment",
    "memory_budget": "memory_budget",
}


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
        "charlm: a UTF-8 text file (default: the built-in corpus, Shakespeare's comedies)",
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
    data: str | None = _opt(
        None, "arrays: an .npz file with X, Y and optionally mask", content=True
    )
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
        None,
        "start from these weights: a bptt run/checkpoint or a torch-named state dict",
        resumable=True,  # read at the start only; a resume continues from the checkpoint
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
        "how the gradient is computed (bptt.algorithms; docs/algorithms.md): bptt and "
        "recompute backpropagate through each window; the others are online, step by step on "
        "carried streams",
        choices=algorithms.names(),
    )
    update_every: int = _opt(1, "online algorithms: an optimizer step every N stream steps")
    truncation: int = _opt(
        0, "--algorithm tbptt: each step's loss backpropagated through k steps (0: = seq-len)"
    )
    segment: int = _opt(0, "--algorithm recompute: segments of K steps (0: about √T)")
    memory_budget: str | None = _opt(
        None,
        "--algorithm bptt: exact BPTT whose working memory per update fits this many bytes "
        "(e.g. 200MB, 1.5GiB), recomputing as little as possible (bptt plan shows how)",
        resumable=True,
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
    # None (Python only): a run kept in memory, nothing written (bptt.fit's default)
    out: str | None = _opt("runs/bptt", "run directory", resumable=True)
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
    # -- data parallelism (docs/data-parallel.md)
    workers: int = _opt(
        1,
        "N data-parallel workers (Ray Train): each computes the gradient of its share of "
        "--batch, summed by an all-reduce; 1: this process alone",
        resumable=True,
    )
    address: str | None = _opt(
        None,
        "--workers N: the Ray cluster to run them on (what `ray start --head` prints, or "
        "auto); default: N local processes",
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
            "lr_step_size",
            "layers",
            "update_every",
            "workers",
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
            "spectral_radius",
            "min_lr_ratio",
            "seed",
            "truncation",
            "segment",
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
        # the task's options (their bounds, who may set them) and what the task refuses:
        # asked of the task registry (bptt.data.registry), not kept here
        task_registry.check_config(self)
        check_config(self)  # every size through the memory estimate, before anything is built
        if self.memory_budget is not None:
            from ..algorithms.budget import parse_bytes

            parse_bytes(self.memory_budget, "--memory-budget")
            if self.algorithm != "bptt" or self.bidirectional:
                raise ValueError(
                    "--memory-budget recomputes BPTT's windows from left to right: it applies "
                    "to --algorithm bptt on unidirectional models"
                )

    def _validate_algorithm(self) -> None:
        """What the registry entry of ``--algorithm`` says it takes and runs. Which cells and
        depths an algorithm runs is the algorithm's to say, when it is built."""
        entry = algorithms.get(self.algorithm)
        for option, name in OPTION_FIELDS.items():
            if option == "k1" or not getattr(self, name) or option in entry.options:
                continue
            takers = [e.name for e in algorithms.REGISTRY.values() if option in e.options]
            raise ValueError(
                f"--{_flag(name)} applies to --algorithm {' or '.join(takers)}, not "
                f"--algorithm {self.algorithm}"
            )
        if self.bidirectional and not entry.bidirectional:
            how = "step by step on carried streams" if entry.streaming else "in segments"
            raise ValueError(
                f"--algorithm {self.algorithm} runs {how}, where a bidirectional layer's "
                "future is not available: drop --bidirectional or use --algorithm bptt"
            )
        if self.profile_every and entry.streaming:
            raise ValueError(
                "--profile-every records BPTT's per-lag gradient profile of each window; "
                f"it runs with a window algorithm (bptt, recompute), not {self.algorithm}"
            )

    def algorithm_options(self) -> dict[str, Any]:
        """The options of ``--algorithm``'s registry entry, from this configuration:
        ``k1`` = --seq-len when --k2 is set (else each batch is one update), ``k2`` = --k2,
        ``k`` = --truncation (0: --seq-len), ``segment`` = --segment (0: about √T)."""
        values = {
            "k1": self.seq_len if self.k2 else None,
            "k2": self.k2 or None,
            "k": self.truncation or self.seq_len,
            "segment": self.segment or None,
            "memory_budget": self.memory_budget,
        }
        return {option: values[option] for option in algorithms.get(self.algorithm).options}

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
