"""The task registry: what ``bptt train --task NAME`` is, in one object per task.

    task = registry.get(config.task)          # a TaskSpec
    task.options                              # the TrainConfig fields it reads, with bounds
    task.build(config)                        # its data: a SequenceTask (not charlm)
    task.check(config)                        # what it refuses in a configuration
    task.score(y_hat, y, mask, output)        # what ``bptt predict`` reports, masks included
    task.title(config), task.mse_units        # its plot labels and units

Everything outside this module that depends on the task (``make_task`` and the sources, the
configuration's checks, ``bptt predict``, ``bptt eval``, ``bptt export``, ``loss.png``, the
run's batch of ``bptt inspect``, the sweep's metric check and PBT's fixed fields, the trainer's
memory hint) asks the task's entry here instead of branching on its name, as
Gymnasium's environments are looked up by id. Adding a task is one class (its data, a
:class:`~bptt.data.tasks.SequenceTask`, and its :class:`TaskSpec`) and one :func:`register`
call (docs/data.md shows it).

A configuration is any object with :class:`~bptt.training.TrainConfig`'s fields; this module
never imports the training package (the configuration imports it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .arrays import array_task_from_npz
from .tasks import (
    AddingTask,
    CopyTask,
    CsvTask,
    LaggedDependenciesTask,
    SequenceTask,
    SineTask,
    TemporalOrderTask,
    read_csv_columns,
    score_predictions,
)

DEFAULT_SEQ_LEN = 50
"""``--seq-len``'s default: a task of fixed length accepts it as "not given"."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Bound:
    """The range of a task option: ``low <= value`` (``low < value`` when ``open_low``),
    ``value <= high`` (``value < high`` when ``open_high``); None: no bound on that side."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raises ValueError naming the option, the range and the value outside it."""
        if value is None:
            return
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        if low_ok and high_ok:
            return
        if self.high is None:
            raise ValueError(
                f"{_flag(name)} must be {'>' if self.open_low else '>='} "
                f"{_number(self.low)}, got {value}"
            )
        if self.low is None:
            raise ValueError(
                f"{_flag(name)} must be {'<' if self.open_high else '<='} "
                f"{_number(self.high)}, got {value}"
            )
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        raise ValueError(
            f"{_flag(name)} must lie in {left}{_number(self.low)}, {_number(self.high)}{right}, "
            f"got {value}"
        )


def _number(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


POSITIVE = Bound(low=1)
NONNEGATIVE = Bound(low=0)
FRACTION = Bound(low=0.0, high=1.0, open_low=True, open_high=True)
ANY = Bound()


class TaskSpec:
    """One ``--task``: its options, data, metric, predictions and labels.

    Attributes:
        name: the ``--task`` value (and ``config.json``'s ``task``).
        summary: one line for the docs and the help.
        options: the configuration fields the task reads, with their bounds (checked for every
            configuration, whatever its task, as the flags always were).
        own: fields only this task may set (another task given a non-default value is refused).
        data_option: the field naming the data file whose content a resume checks, or None.
        streams: carried character streams trained by truncated BPTT (charlm), not finite
            sequences: no ``--bidirectional``; evaluation in nats per character.
        token_inputs: the inputs are token ids (``bptt predict --csv`` refuses such a run,
            ``bptt export`` marks them); None: it depends on the data (your own arrays).
        fixed_length: T is set by the task, not ``--seq-len``.
        output_size_known: O without the checkpoint (1 for adding and sine), or None.
        mse_units: the unit of the task's MSE, for plot axes.
        memory_options: flags that shrink the task's memory besides the model's sizes.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Bound]] = {}
    own: ClassVar[tuple[str, ...]] = ()
    data_option: ClassVar[str | None] = None
    streams: ClassVar[bool] = False
    token_inputs: ClassVar[bool | None] = False
    fixed_length: ClassVar[bool] = False
    output_size_known: ClassVar[int | None] = None
    mse_units: ClassVar[str] = "squared target units"
    memory_options: ClassVar[tuple[str, ...]] = ()

    def build(self, config: Any) -> SequenceTask:
        """The task's data for this configuration."""
        raise ValueError(f"not a sequence task: {self.name!r}")

    def seq_len(self, config: Any) -> int:
        """T of the task's sequences (``--seq-len`` unless the task fixes it)."""
        return int(config.seq_len)

    def check(self, config: Any) -> None:
        """What this task refuses in a configuration whose ``task`` it is (beyond bounds).

        Raises:
            ValueError: naming the flags and what to do instead.
        """
        if self.fixed_length and config.seq_len != DEFAULT_SEQ_LEN:
            length = self.fixed_seq_len(config)
            if length is not None and config.seq_len != length:
                raise ValueError(self.fixed_length_message(config, length))

    def fixed_seq_len(self, config: Any) -> int | None:
        """A fixed-length task's T from the configuration alone, or None (known from data)."""
        return None

    def fixed_length_message(self, config: Any, length: int) -> str:
        return (
            f"--seq-len {config.seq_len}: the {self.name} task's sequences have T = {length} "
            "steps, fixed by the task; leave --seq-len out"
        )

    def refuse_foreign(self, option: str, task: str) -> str:
        """The error for ``option`` (one of :attr:`own`) given to another task."""
        return f"{_flag(option)} applies to --task {self.name} only"

    def data_state(self, task: SequenceTask) -> dict[str, Any]:
        """What a checkpoint keeps of the task's data besides the file's fingerprint."""
        return {}

    def data_path(self, config: Any) -> str | None:
        """The data file the run reads (its content is fingerprinted), or None."""
        if self.data_option is None:
            return None
        value = getattr(config, self.data_option[2:].replace("-", "_"), None)
        return None if value is None else str(value)

    def eval_source(self, config: Any, metrics: dict[str, Any]) -> str:
        """What ``bptt eval`` scored, in words: the count it really scored."""
        n = int(metrics.get("val_sequences", config.eval_size))
        return f"{n} validation sequences of {self.name}"

    def score(
        self, y_hat: np.ndarray, y: np.ndarray, mask: np.ndarray | None, output: str
    ) -> dict[str, float]:
        """``bptt predict``'s scores of ŷ (T, N, O) against the file's y on its masked steps
        (:func:`score_predictions`)."""
        return score_predictions(y_hat, y, mask, output)

    def csv_inputs(
        self, data_state: dict[str, Any], path: str | os.PathLike[str]
    ) -> tuple[list[str], np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """``bptt predict --csv``: (column names, rows (R, C), (μ, σ) to standardise the inputs
        and unstandardise the forecasts, or None: the values as they are)."""
        if self.token_inputs:
            raise ValueError(
                f"the run's task {self.name!r} reads token ids, not CSV columns; "
                "predict --csv is for regression runs (csv, sine, adding, arrays)"
            )
        names, raw = read_csv_columns(path, None)
        return list(names), raw, None

    def title(self, config: dict[str, Any]) -> str:
        """The run's task as a plot title names it."""
        return self.name

    def loss_unit(self) -> str:
        return "nats per counted step"


REGISTRY: dict[str, TaskSpec] = {}
"""Every task by name, in ``--task``'s order."""


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task (an instance of its :class:`TaskSpec` subclass) to the registry.

    Raises:
        ValueError: a name already taken.
    """
    if spec.name in REGISTRY:
        raise ValueError(f"a task named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> TaskSpec:
    """Remove a task from the registry (and return it).

    Raises:
        ValueError: an unknown name.
    """
    spec = get(name)
    del REGISTRY[name]
    return spec


def get(name: str) -> TaskSpec:
    """The registered task ``name``.

    Raises:
        ValueError: an unknown name (the choices listed).
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"--task must be one of {', '.join(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def check_config(config: Any) -> None:
    """The bounds of every task's options, the owner-only options, and the chosen task's
    own :meth:`TaskSpec.check`.

    Raises:
        ValueError: naming the flag, the range or the task it applies to, and the value.
    """
    for spec in REGISTRY.values():
        for option, bound in spec.options.items():
            bound.check(option, getattr(config, option))
    chosen = get(config.task)
    defaults = _field_defaults(config)
    for spec in REGISTRY.values():
        if spec is chosen:
            continue
        for option in spec.own:
            if getattr(config, option) != defaults.get(option):
                raise ValueError(spec.refuse_foreign(option, config.task))
    chosen.check(config)


def _field_defaults(config: Any) -> dict[str, Any]:
    fields = getattr(type(config), "__dataclass_fields__", {})
    return {name: f.default for name, f in fields.items()}


# ---------------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------------


class CharLM(TaskSpec):
    name = "charlm"
    summary = "next-character prediction on a text, B carried streams, truncated BPTT"
    options: ClassVar[dict[str, Bound]] = {"text": ANY, "val_fraction": FRACTION}
    own = ("text", "k2")
    data_option = "--text"
    streams = True
    token_inputs = True
    mse_units = "nats per character"

    def check(self, config: Any) -> None:
        if config.bidirectional:
            raise ValueError(
                "--bidirectional needs whole sequences, but --task charlm trains on carried "
                "streams with truncated BPTT, where the future is not available"
            )

    def refuse_foreign(self, option: str, task: str) -> str:
        return (
            f"{_flag(option)} applies to --task charlm, not --task {task} "
            "(finite sequences are trained by full BPTT)"
        )

    def eval_source(self, config: Any, metrics: dict[str, Any]) -> str:
        return "validation split of " + (config.text or "the built-in corpus")

    def title(self, config: dict[str, Any]) -> str:
        return "charlm on " + Path(str(config.get("text") or "built-in corpus")).name

    def loss_unit(self) -> str:
        return "nats per character"


class Adding(TaskSpec):
    name = "adding"
    summary = "the sum of the two marked numbers of a sequence (regression, last step)"
    output_size_known = 1
    mse_units = "squared units of the sum"

    def build(self, config: Any) -> SequenceTask:
        return AddingTask(seq_len=config.seq_len)


class Copy(TaskSpec):
    name = "copy"
    summary = "recall n symbols after a delay (classification)"
    options: ClassVar[dict[str, Bound]] = {
        "n_symbols": POSITIVE,
        "copy_len": POSITIVE,
        "delay": POSITIVE,
    }
    token_inputs = True
    fixed_length = True
    memory_options = ("--n-symbols",)

    def build(self, config: Any) -> SequenceTask:
        return CopyTask(n_symbols=config.n_symbols, copy_len=config.copy_len, delay=config.delay)

    def fixed_seq_len(self, config: Any) -> int:
        return int(config.delay + 2 * config.copy_len)

    def seq_len(self, config: Any) -> int:
        return self.fixed_seq_len(config)

    def fixed_length_message(self, config: Any, length: int) -> str:
        return (
            f"--seq-len {config.seq_len}: the copy task's length is fixed, T = --delay + "
            f"2 * --copy-len = {length}; set --delay and --copy-len instead"
        )


class Sine(TaskSpec):
    name = "sine"
    summary = "forecast a noisy sum of sines h steps ahead (regression)"
    options: ClassVar[dict[str, Bound]] = {
        "noise": NONNEGATIVE,
        "horizon": POSITIVE,
        "last_only": ANY,
    }
    output_size_known = 1
    mse_units = "squared signal units"

    def build(self, config: Any) -> SequenceTask:
        return SineTask(
            seq_len=config.seq_len,
            noise=config.noise,
            horizon=config.horizon,
            last_only=config.last_only,
        )


class Order(TaskSpec):
    name = "order"
    summary = "the temporal order of two marked symbols (classification, last step)"
    token_inputs = True

    def build(self, config: Any) -> SequenceTask:
        return TemporalOrderTask(seq_len=config.seq_len)


class Csv(TaskSpec):
    name = "csv"
    summary = "forecast columns of a CSV time series h steps ahead (regression)"
    options: ClassVar[dict[str, Bound]] = {
        "csv": ANY,
        "columns": ANY,
        "horizon": POSITIVE,
        "last_only": ANY,
    }
    data_option = "--csv"
    mse_units = "standardised units²"

    def build(self, config: Any) -> SequenceTask:
        return CsvTask(
            path=config.csv,
            columns=config.columns,
            window=config.seq_len,
            horizon=config.horizon,
            last_only=config.last_only,
        )

    def check(self, config: Any) -> None:
        if config.csv is None:
            raise ValueError("--task csv needs --csv FILE")

    def data_state(self, task: SequenceTask) -> dict[str, Any]:
        """The columns and the training rows' μ, σ (so ``bptt predict`` standardises new rows
        as training did)."""
        assert isinstance(task, CsvTask)
        return {
            "columns": list(task.columns),
            "mean": [float(v) for v in task.mean],
            "std": [float(v) for v in task.std],
        }

    def csv_inputs(
        self, data_state: dict[str, Any], path: str | os.PathLike[str]
    ) -> tuple[list[str], np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """The run's own columns, standardised with its training statistics."""
        if "mean" not in data_state:
            raise ValueError("the checkpoint lacks the training statistics (an older bptt run)")
        names, raw = read_csv_columns(path, data_state["columns"])
        mean, std = np.asarray(data_state["mean"]), np.asarray(data_state["std"])  # (C,)
        return list(names), raw, (mean, std)

    def title(self, config: dict[str, Any]) -> str:
        return "csv " + Path(str(config.get("csv") or "?")).name


class Lagged(TaskSpec):
    name = "lagged"
    summary = "binary targets that depend on the inputs lag1 and lag2 steps back (streams)"
    token_inputs = True
    options: ClassVar[dict[str, Bound]] = {"lag1": POSITIVE, "lag2": POSITIVE}

    def build(self, config: Any) -> SequenceTask:
        return LaggedDependenciesTask(seq_len=config.seq_len, lag1=config.lag1, lag2=config.lag2)


class Arrays(TaskSpec):
    name = "arrays"
    summary = "your own arrays from an .npz file (X, Y, optionally mask)"
    options: ClassVar[dict[str, Bound]] = {
        "data": ANY,
        "batch_first": ANY,
        "output": ANY,
        "val_fraction": FRACTION,
    }
    own = ("data", "batch_first", "output")
    data_option = "--data"
    token_inputs = None
    fixed_length = True
    mse_units = "squared units of Y"

    def build(self, config: Any) -> SequenceTask:
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

    def refuse_foreign(self, option: str, task: str) -> str:
        if option == "output":
            return "--output applies to --task arrays only"
        return super().refuse_foreign(option, task)


for _spec in (CharLM(), Adding(), Copy(), Sine(), Order(), Csv(), Lagged(), Arrays()):
    register(_spec)


class _RegisteredNames(Sequence[str]):
    """The registry's names, read each time (a task registered later is a ``--task`` choice
    of every configuration and parser built after it)."""

    def __getitem__(self, index: Any) -> Any:
        return tuple(REGISTRY)[index]

    def __len__(self) -> int:
        return len(REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(REGISTRY))


TASK_NAMES: Sequence[str] = _RegisteredNames()
"""The one list of what ``bptt train --task`` accepts: the registry's names, live."""
