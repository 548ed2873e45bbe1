"""Sweeps: many ``bptt train`` runs (a grid, seeds, ASHA, population-based training) on Ray Tune.

A sweep is the product

    trials = {base ∪ point ∪ {seed = s} : point ∈ space, s ∈ seeds}

where ``space`` is a grid (lists, every combination) crossed with draws from distributions
(tables), ``samples`` draws per grid point. Each trial is an ordinary bptt run directory
(``config.json``, ``metrics.jsonl``, ``checkpoint.safetensors``) under ``OUT/trials/``, trained
by :class:`bptt.training.Trainer`. At every evaluation the trial saves its checkpoint and reports

    {metric, the other val_* numbers, step, time_s}  +  Tune checkpoint (the bptt checkpoint)

to Tune, whose scheduler decides what runs: ``fifo`` (all trials to the end), ``asha``
(asynchronous successive halving: at step g·rᵏ a trial continues only if it is in the best
1/r of the trials seen at that step) or ``pbt`` (population-based training: every ``interval``
steps a trial in the worst ``quantile_fraction`` loads the checkpoint of one in the best and
perturbs its ``mutations``). Ray Tune does the scheduling, the cluster and the bookkeeping;
this module only translates a spec file into a Tune experiment and its results back into
tables. The spec format, with an example, is in ``docs/sweeps.md``.

Files under OUT::

    sweep.json            the normalised spec (``--resume`` checks it is unchanged)
    trials/<name>/        one bptt run directory per trial, plus trial.json (status, error,
                          the searched values, the metric against time, PBT exploits)
    tune/                 Ray Tune's experiment state and checkpoints
    sweep.csv             one row per trial
    summary.md            the final metric per configuration over seeds: mean, std, min, max
    sweep.png             the metric against training time, every trial, best configuration bold
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .checkpoint import load_checkpoint
from .data import registry as task_registry
from .model import ElmanRNN
from .rundir import RUN_MARKER, NotOwnedError, RunDirBusyError, RunDirLock, is_run_dir
from .training import TrainConfig, Trainer, config_fields, evaluate_task, evaluate_text, make_task
from .training.plots import pyplot

SPEC_VERSION = 1
SCHEDULERS = ("fifo", "asha", "pbt")
DISTRIBUTIONS = ("uniform", "loguniform", "choice")
MISSING_EXTRA = "bptt sweep needs Ray Tune, which is not installed: pip install 'bptt[sweep]'"

# Fields a sweep sets itself: the run directory, and the seed (``seeds = [...]``).
_RESERVED = ("out", "seed")
# Fields PBT may not perturb: they change the model's shape, the data or the run's identity,
# so another trial's checkpoint would not fit or would mean something else.
_PBT_FIXED = (
    "task",
    *dict.fromkeys(o for t in task_registry.REGISTRY.values() for o in t.options),  # the data
    "hidden",
    "cell",
    "layers",
    "bidirectional",
    "init_from",
    "activation",
    "init",
    "spectral_radius",
    "dtype",
    "optimizer",
    "steps",
    "out",
    "seed",
)
_SWEEP_KEYS = (
    "seeds",
    "metric",
    "mode",
    "parallel",
    "cpus_per_trial",
    "samples",
    "scheduler",
    "keep_checkpoints",
    "search_seed",
    "max_failures",
    "asha",
    "pbt",
)
_ASHA_DEFAULTS: dict[str, Any] = {"grace_period": None, "reduction_factor": 2.0, "brackets": 1}
_PBT_DEFAULTS: dict[str, Any] = {
    "interval": None,
    "mutations": None,
    "quantile_fraction": 0.25,
    "resample_probability": 0.25,
    "factors": [1.2, 0.8],
}


#: bounds checked before anything starts: trials in all (grid points × samples × seeds),
#: CPUs per trial, ASHA's rungs and brackets
MAX_TRIALS = 10_000
MIN_CPUS, MAX_CPUS = 0.01, 1024.0
MAX_RUNGS, MAX_BRACKETS = 64, 16
#: TrainConfig fields naming files: made absolute (from the current directory) and checked
PATH_FIELDS = ("text", "csv", "data", "init_from")
#: seconds ``--address`` waits for a cluster to answer
ADDRESS_TIMEOUT_S = 10.0
#: the most retries of a failed trial ``[sweep].max_failures`` may ask for
MAX_FAILURES = 100
#: exit status of a sweep stopped by Ctrl-C (SIGINT), as a shell reports a process it killed
INTERRUPTED_EXIT = 130


class SpecError(ValueError):
    """A sweep spec that cannot run: unknown field, empty space, bad metric or option."""


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepSpec:
    """A validated sweep spec (the TOML file's three tables, with defaults filled in).

    Attributes:
        base: TrainConfig fields shared by every trial.
        space: field → list (a grid axis) or ``{"dist": ..., ...}`` (a distribution).
        seeds: every configuration runs once per seed.
        metric: the reported number to optimise (``val_loss``, ``val_mse``, …).
        mode: ``min`` or ``max``.
        parallel: trials running at once.
        cpus_per_trial: CPUs Ray reserves for each trial.
        samples: draws of the distributions per grid point.
        scheduler: ``fifo``, ``asha`` or ``pbt``.
        options: the scheduler's options (``[sweep.asha]`` / ``[sweep.pbt]``).
        keep_checkpoints: Tune checkpoints kept per trial (0: all).
        search_seed: seeds Tune's draws from the distributions (and PBT's perturbations).
        max_failures: times Tune restarts a failed trial from its last checkpoint (0: never).
    """

    base: dict[str, Any]
    space: dict[str, Any]
    seeds: list[int]
    metric: str
    mode: str
    parallel: int = 1
    cpus_per_trial: float = 1.0
    samples: int = 1
    scheduler: str = "fifo"
    options: dict[str, Any] = field(default_factory=dict)
    keep_checkpoints: int = 0
    search_seed: int = 0
    max_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The spec as the TOML file's tables (JSON-able; ``load_spec`` reads it back)."""
        sweep: dict[str, Any] = {
            "seeds": list(self.seeds),
            "metric": self.metric,
            "mode": self.mode,
            "parallel": self.parallel,
            "cpus_per_trial": self.cpus_per_trial,
            "samples": self.samples,
            "scheduler": self.scheduler,
            "keep_checkpoints": self.keep_checkpoints,
            "search_seed": self.search_seed,
            "max_failures": self.max_failures,
        }
        if self.scheduler != "fifo":
            sweep[self.scheduler] = dict(self.options)
        tables: dict[str, Any] = {"base": dict(self.base)}
        if self.space:  # no [space]: the base configuration once per seed
            tables["space"] = dict(self.space)
        return tables | {"sweep": sweep}

    @property
    def fields(self) -> list[str]:
        """The searched TrainConfig fields, in the spec's order."""
        return list(self.space)

    @property
    def max_steps(self) -> int:
        """The most steps any trial runs (ASHA's and PBT's horizon)."""
        steps = self.space.get("steps", self.base.get("steps", _field_default("steps")))
        if isinstance(steps, list):
            return max(int(s) for s in steps)
        if isinstance(steps, dict):
            return int(max(steps.get("values", [steps.get("high", 1)])))
        return int(steps)


def _field_default(name: str) -> Any:
    return {n: default for n, _kind, default, *_ in config_fields()}[name]


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"spec file {str(p)!r} is not valid TOML: {err}") from None


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SpecError(
            f"{where} has unknown key(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(allowed)}"
        )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where} must be a number, got {str(value)[:80]}")
    if not math.isfinite(value):
        raise SpecError(f"{where} must be a finite number, got {value}")
    return float(value)


def _check_distribution(name: str, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    dist = table.get("dist")
    if dist not in DISTRIBUTIONS:
        raise SpecError(
            f"{where}.{name}: dist must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}"
        )
    if dist == "choice":
        _check_keys(table, ("dist", "values"), f"{where}.{name}")
        values = table.get("values")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.{name}: choice needs a non-empty values = [...]")
        return {"dist": dist, "values": list(values)}
    _check_keys(table, ("dist", "low", "high"), f"{where}.{name}")
    if "low" not in table or "high" not in table:
        raise SpecError(f"{where}.{name}: {dist} needs low and high")
    low = _number(table["low"], f"{where}.{name}.low")
    high = _number(table["high"], f"{where}.{name}.high")
    if not low < high:
        raise SpecError(f"{where}.{name}: the range is empty: low {low} must be < high {high}")
    if dist == "loguniform" and low <= 0:
        raise SpecError(f"{where}.{name}: loguniform needs low > 0, got {low}")
    return {"dist": dist, "low": table["low"], "high": table["high"]}


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any] | SweepSpec) -> SweepSpec:
    """Read and check a sweep spec (a TOML file's path, or the same tables as a dict).

    Checked before anything starts: every key is known; every [base]/[space] name is a
    TrainConfig field (``out`` and ``seed`` are the sweep's own); no axis or range is empty;
    the metric is one the task reports; the scheduler's options are in range; at least one
    configuration of the space is a valid TrainConfig. (A configuration that is not valid
    becomes a failed trial, recorded with its error.)

    Raises:
        SpecError: naming the table, the key, what was expected and what was given.
    """
    if isinstance(spec, SweepSpec):
        return spec
    from_file = not isinstance(spec, Mapping)
    raw = dict(spec) if isinstance(spec, Mapping) else _read_toml(spec)
    known = [name for name, *_ in config_fields()]
    _check_keys(raw, ("base", "space", "sweep"), "the spec")
    base, space, sweep = raw.get("base", {}), raw.get("space"), raw.get("sweep")
    for name, table in (("[base]", base), ("[space]", space), ("[sweep]", sweep)):
        if table is not None and not isinstance(table, dict):
            raise SpecError(f"{name} must be a table, got {table!r}")
    if sweep is None:
        raise SpecError("the spec needs a [sweep] table (seeds, metric, parallel, scheduler)")
    allowed = [n for n in known if n not in _RESERVED]
    _check_keys(base, allowed, "[base]")
    if space is not None:
        _check_keys(space, allowed, "[space]")
        if not space and from_file:
            raise SpecError(
                "[space] is empty: give at least one field (lr = [1e-3, 3e-3]), or leave the "
                "table out to run the base configuration once per seed"
            )
    base = {k: _absolute(k, v) for k, v in base.items()}
    checked_space: dict[str, Any] = {}
    for name, axis in (space or {}).items():
        if name in PATH_FIELDS and isinstance(axis, list):
            axis = [_absolute(name, v) for v in axis]
        elif name in PATH_FIELDS and isinstance(axis, dict):
            values = axis.get("values")
            if isinstance(values, list):
                axis = axis | {"values": [_absolute(name, v) for v in values]}
        if isinstance(axis, list):
            if not axis:
                raise SpecError(f"[space].{name} is an empty list: give at least one value")
            if len({json.dumps(v) for v in axis}) != len(axis):
                raise SpecError(f"[space].{name} repeats a value: {axis!r}")
            checked_space[name] = list(axis)
        elif isinstance(axis, dict):
            checked_space[name] = _check_distribution(name, axis, "[space]")
        else:
            raise SpecError(
                f"[space].{name} must be a list (a grid axis) or a table with dist = "
                f"{'|'.join(DISTRIBUTIONS)}, got {axis!r}"
            )
    _check_keys(sweep, _SWEEP_KEYS, "[sweep]")
    seeds = sweep.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SpecError(f"[sweep].seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"[sweep].seeds repeats a seed: {seeds!r}")
    metric = sweep.get("metric")
    if not isinstance(metric, str) or not metric:
        raise SpecError(
            "[sweep].metric must name the number to optimise (val_loss, or the task's "
            f"val_<metric>), got {metric!r}"
        )
    mode = sweep.get("mode", "max" if metric.endswith("accuracy") else "min")
    if mode not in ("min", "max"):
        raise SpecError(f"[sweep].mode must be 'min' or 'max', got {mode!r}")
    parallel = _positive_int(sweep.get("parallel", 1), "[sweep].parallel")
    samples = _positive_int(sweep.get("samples", 1), "[sweep].samples")
    cpus = _number(sweep.get("cpus_per_trial", 1), "[sweep].cpus_per_trial")
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise SpecError(
            f"[sweep].cpus_per_trial must lie in [{MIN_CPUS}, {MAX_CPUS}], got {cpus:g}"
        )
    if parallel > MAX_TRIALS or samples > MAX_TRIALS:
        raise SpecError(f"[sweep].parallel and samples must be <= {MAX_TRIALS}")
    keep = sweep.get("keep_checkpoints", 0)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= 2**31:
        raise SpecError(f"[sweep].keep_checkpoints must be an integer >= 0, got {keep!r}")
    search_seed = sweep.get("search_seed", 0)
    if isinstance(search_seed, bool) or not isinstance(search_seed, int):
        raise SpecError(f"[sweep].search_seed must be an integer, got {search_seed!r}")
    if not 0 <= search_seed < 2**32:
        raise SpecError(f"[sweep].search_seed must lie in [0, 2**32), got {search_seed}")
    max_failures = sweep.get("max_failures", 0)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int):
        raise SpecError(f"[sweep].max_failures must be an integer, got {max_failures!r}")
    if not 0 <= max_failures <= MAX_FAILURES:
        raise SpecError(
            f"[sweep].max_failures must lie in [0, {MAX_FAILURES}] (retries of a failed "
            f"trial), got {max_failures}"
        )
    n_trials = math.prod(len(a) for a in checked_space.values() if isinstance(a, list))
    n_trials *= samples * len(seeds)
    if n_trials > MAX_TRIALS:
        raise SpecError(
            f"the sweep has {n_trials} trials (grid points x samples x seeds), more than "
            f"{MAX_TRIALS}; search a smaller grid, or draw from distributions instead"
        )
    scheduler = sweep.get("scheduler", "fifo")
    if scheduler not in SCHEDULERS:
        raise SpecError(
            f"[sweep].scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}"
        )
    for other in SCHEDULERS[1:]:
        if other in sweep and other != scheduler:
            raise SpecError(f"[sweep.{other}] is given but the scheduler is {scheduler!r}")
    out = SweepSpec(
        base=dict(base),
        space=checked_space,
        seeds=list(seeds),
        metric=metric,
        mode=mode,
        parallel=parallel,
        cpus_per_trial=cpus,
        samples=samples,
        scheduler=scheduler,
        keep_checkpoints=keep,
        search_seed=search_seed,
        max_failures=max_failures,
    )
    if scheduler == "asha":
        out.options = _check_asha(sweep.get("asha", {}), out)
    elif scheduler == "pbt":
        out.options = _check_pbt(sweep.get("pbt", {}), out, allowed)
    _check_metric(out)
    return out


def _absolute(name: str, value: Any) -> Any:
    """A path field's value absolute (trials run in other directories); others as given."""
    if name in PATH_FIELDS and isinstance(value, str) and value:
        return os.path.abspath(value)
    return value


def check_paths(spec: SweepSpec) -> None:
    """Every file a [base] or [space] path field names exists (before anything starts).

    Raises:
        SpecError: naming the field and the path.
    """
    for name in PATH_FIELDS:
        values: list[Any] = [spec.base.get(name)]
        axis = spec.space.get(name)
        if isinstance(axis, list):
            values += axis
        elif isinstance(axis, dict):
            values += list(axis.get("values", []))
        for value in values:
            if isinstance(value, str) and not os.path.exists(value):
                raise SpecError(f"{name} = {value!r} does not exist")


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def _check_asha(table: Any, spec: SweepSpec) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SpecError(f"[sweep.asha] must be a table, got {table!r}")
    _check_keys(table, tuple(_ASHA_DEFAULTS), "[sweep.asha]")
    opts = _ASHA_DEFAULTS | table
    max_t = spec.max_steps
    if opts["grace_period"] is None:
        opts["grace_period"] = max(1, max_t // 8)
    grace = _positive_int(opts["grace_period"], "[sweep.asha].grace_period")
    if grace > max_t:
        raise SpecError(
            f"[sweep.asha].grace_period must be <= the trials' steps ({max_t}), got {grace}"
        )
    rf = _number(opts["reduction_factor"], "[sweep.asha].reduction_factor")
    if rf <= 1:
        raise SpecError(f"[sweep.asha].reduction_factor must be > 1, got {rf}")
    rungs = math.log(max(max_t / grace, 1.0)) / math.log(rf)
    if rungs > MAX_RUNGS:
        raise SpecError(
            f"[sweep.asha].reduction_factor {rf:g} makes {rungs:.3g} rungs between "
            f"grace_period {grace} and {max_t} steps, more than {MAX_RUNGS}; use a larger one"
        )
    brackets = _positive_int(opts["brackets"], "[sweep.asha].brackets")
    if brackets > MAX_BRACKETS:
        raise SpecError(f"[sweep.asha].brackets must be <= {MAX_BRACKETS}, got {brackets}")
    return opts


def _check_pbt(table: Any, spec: SweepSpec, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SpecError(f"[sweep.pbt] must be a table, got {table!r}")
    _check_keys(table, tuple(_PBT_DEFAULTS), "[sweep.pbt]")
    opts = _PBT_DEFAULTS | table
    if opts["interval"] is None:
        raise SpecError("[sweep.pbt].interval (steps between exploit/explore) is required")
    interval = _positive_int(opts["interval"], "[sweep.pbt].interval")
    if interval >= spec.max_steps:
        raise SpecError(
            f"[sweep.pbt].interval must be < the trials' steps ({spec.max_steps}), got {interval}"
        )
    mutations = opts["mutations"]
    if not isinstance(mutations, dict) or not mutations:
        raise SpecError(
            "[sweep.pbt].mutations must name at least one field to perturb, e.g. "
            'mutations = { lr = { dist = "loguniform", low = 1e-4, high = 1e-1 } }'
        )
    checked: dict[str, Any] = {}
    for name, how in mutations.items():
        if name not in allowed:
            raise SpecError(f"[sweep.pbt].mutations: {name!r} is not a TrainConfig field")
        if name in _PBT_FIXED:
            raise SpecError(
                f"[sweep.pbt].mutations: PBT cannot perturb {name!r}: it changes the model's "
                "shape, the data or the run's identity; perturb optimisation fields (lr, clip, "
                "momentum, weight_decay, …)"
            )
        if isinstance(how, list):
            if not how:
                raise SpecError(f"[sweep.pbt].mutations.{name} is an empty list")
            checked[name] = list(how)
        elif isinstance(how, dict):
            checked[name] = _check_distribution(name, how, "[sweep.pbt].mutations")
        else:
            raise SpecError(
                f"[sweep.pbt].mutations.{name} must be a list or a distribution table, got {how!r}"
            )
    q = _number(opts["quantile_fraction"], "[sweep.pbt].quantile_fraction")
    if not 0 < q <= 0.5:
        raise SpecError(f"[sweep.pbt].quantile_fraction must lie in (0, 0.5], got {q}")
    p = _number(opts["resample_probability"], "[sweep.pbt].resample_probability")
    if not 0 <= p <= 1:
        raise SpecError(f"[sweep.pbt].resample_probability must lie in [0, 1], got {p}")
    factors = opts["factors"]
    if (
        not isinstance(factors, list)
        or len(factors) != 2
        or not all(_number(f, "[sweep.pbt].factors") > 0 for f in factors)
    ):
        raise SpecError(f"[sweep.pbt].factors must be two numbers > 0, got {factors!r}")
    return opts | {"interval": interval, "mutations": checked}


def _representatives(spec: SweepSpec) -> list[dict[str, Any]]:
    """One configuration per grid point, distributions at their low end (or first choice)."""
    axes: list[tuple[str, list[Any]]] = []
    for name, axis in spec.space.items():
        if isinstance(axis, list):
            axes.append((name, axis))
        elif axis["dist"] == "choice":
            axes.append((name, axis["values"][:1]))
        else:
            axes.append((name, [axis["low"]]))
    names = [n for n, _ in axes]
    return [
        spec.base | dict(zip(names, values, strict=True)) | {"seed": spec.seeds[0]}
        for values in itertools.product(*(v for _, v in axes))
    ]


def _check_metric(spec: SweepSpec) -> None:
    """Every task in the sweep reports ``spec.metric``, and some configuration is valid."""
    by_task: dict[str, Any] = {}
    first_error: Exception | None = None
    for values in _representatives(spec):
        try:
            config = TrainConfig(**(values | {"out": "unused"}))
        except (TypeError, ValueError) as err:
            first_error = first_error or err
            continue
        by_task.setdefault(config.task, config)
    if not by_task:
        raise SpecError(f"no configuration of the sweep is a valid TrainConfig: {first_error}")
    for task, config in by_task.items():
        try:
            names = reported_metrics(config)
        except (TypeError, ValueError, OSError) as err:
            raise SpecError(f"cannot build task {task!r} to check its metrics: {err}") from None
        if spec.metric not in names:
            raise SpecError(
                f"[sweep].metric {spec.metric!r} is not reported by task {task!r}; it reports "
                f"{', '.join(sorted(names))}"
            )


def reported_metrics(config: Any) -> list[str]:
    """The numbers a run of ``config`` reports at each evaluation (besides ``step``).

    Found by running the trainer's own evaluation on a two-unit model, so it is what the
    trials will report, not a list kept by hand.
    """
    if task_registry.get(config.task).streams:
        model = ElmanRNN(4, 2, 4, "tanh", "softmax", seed=0)
        metrics = evaluate_text(model, np.arange(8) % 4, 1, 2)
    else:
        task = make_task(config)
        model = ElmanRNN(task.input_size, 2, task.output_size, "tanh", task.output, seed=0)
        metrics = evaluate_task(model, task, 2, 2, 0)
    return sorted(metrics)


# ---------------------------------------------------------------------------------------------
# One trial (runs inside a Ray worker)
# ---------------------------------------------------------------------------------------------


def params_digest(params: Any) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of each parameter array, in name order."""
    h = hashlib.sha256()
    for name, arr in sorted(params.items()):
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's content; None when unreadable, not JSON, nested beyond the
    parser, or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(v: Any) -> Any:
    """A JSON scalar as it is; anything nested (a forged record) as None."""
    return v if v is None or isinstance(v, (str, int, float, bool)) else None


def clean_record(record: Any, metric: str) -> dict[str, Any] | None:
    """A ``trial.json`` record with every field the report reads in its expected type, or
    None when it is not a trial record (a forged or foreign file: any JSON shape)."""
    if not isinstance(record, dict):
        return None
    name, status, config = record.get("trial"), record.get("status"), record.get("config")
    if not (isinstance(name, str) and isinstance(status, str) and isinstance(config, dict)):
        return None
    history = []
    raw_history = record.get("history")
    for h in raw_history if isinstance(raw_history, list) else []:
        if isinstance(h, dict) and _is_number(h.get("time_s")) and _is_number(h.get("step")):
            value = h.get(metric)
            history.append(
                {"step": h["step"], "time_s": h["time_s"], metric: value}
                if value is None or _is_number(value)
                else {"step": h["step"], "time_s": h["time_s"], metric: None}
            )
    exploits = record.get("exploits")
    return record | {
        "trial": name,
        "status": status,
        "config": {str(k): _scalar(v) for k, v in config.items()},
        "seed": _scalar(record.get("seed")),
        "history": history,
        "steps": record["steps"] if _is_number(record.get("steps")) else 0,
        "time_s": record["time_s"] if _is_number(record.get("time_s")) else 0.0,
        "exploits": exploits if isinstance(exploits, list) else [],
        "error": str(record.get("error") or "")[:2000],
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {value!r}")


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "kind"
    }


class _Superseded(Exception):
    """A later start of the same trial owns its run directory; this one stops writing."""


def _new_record(name: str, searched: dict[str, Any], seed: Any) -> dict[str, Any]:
    """A fresh ``trial.json``: the trial's starting values, its status and history."""
    return {
        "trial": name,
        "config": searched,
        "seed": seed,
        "status": "running",
        "error": None,
        "steps": 0,
        "time_s": 0.0,
        "history": [],
        "exploits": [],
        "trainings": 0,
        "failures": 0,
    }


def _start_trainer(
    config: Any, start_from: Any, superseded: Callable[[], bool], wait_s: float = 30.0
) -> Any:
    """A silent Trainer for ``config``. While the run directory is still locked by this
    trial's previous start (a process or thread Tune is ending), wait for it, up to wait_s;
    give up (:class:`_Superseded`) as soon as a later start has claimed the trial."""
    deadline = time.monotonic() + wait_s
    while True:
        if superseded():
            raise _Superseded
        try:
            return Trainer(config, echo=None, start_from=start_from)
        except RunDirBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """Train one trial: a bptt run in ``trials/<trial name>``, reporting each evaluation.

    Tune may start a trial again (PBT's exploit, a pause, ``--resume``) while its previous
    start is still ending. Each start claims the trial (``.owner``) first; a start that finds
    the claim is no longer its own stops at once and writes nothing more, so the last start's
    configuration, checkpoint and ``trial.json`` are what the run directory keeps.
    """
    from ray import tune

    name = tune.get_context().get_trial_name()
    run = Path(ctx["trials"]) / name
    if run.is_symlink():  # a link planted in the sweep: bptt does not write through it
        raise NotOwnedError(f"trial directory {str(run)!r} is a symbolic link; remove it")
    run.mkdir(parents=True, exist_ok=True)
    if not is_run_dir(run):  # the sweep made it: a bptt run directory
        atomic_write_text(run / RUN_MARKER, "bptt run directory\n")
    record_path = run / "trial.json"
    record = _read_json(record_path)
    if record is not None and record["status"] in ("done", "early_stop") and record["history"]:
        # Finished in an earlier, interrupted sweep: report the result again, train nothing.
        tune.report(dict(record["history"][-1]))
        return
    owner = uuid.uuid4().hex
    atomic_write_text(run / ".owner", owner)

    def superseded() -> bool:
        try:
            return (run / ".owner").read_text(encoding="utf-8") != owner
        except OSError:
            return True

    fields, metric = ctx["fields"], ctx["metric"]
    values = ctx["base"] | {k: config[k] for k in fields} | {"seed": config["seed"]}
    values |= {k: config[k] for k in ctx["mutable"]} | {"out": str(run), "progress": False}
    start_from = None
    donor: dict[str, Any] | None = None
    try:
        train_config = TrainConfig(**values)
        tune_ckpt = tune.get_checkpoint()
        if tune_ckpt is not None:
            with tune_ckpt.as_directory() as d:
                start_from = load_checkpoint(d)
                origin = _read_json(Path(d) / "trial.json") or {}
            if origin.get("trial", name) != name:  # PBT exploit: another trial's state
                donor = {"donor": origin.get("trial"), "donor_checkpoint": tune_ckpt.path}
        elif any((run / n).is_file() for n in ("checkpoint.safetensors", "checkpoint.npz")):
            start_from = load_checkpoint(run)  # interrupted before Tune kept a checkpoint
        own = _read_json(record_path) or {}
        own_last = own["history"][-1] if own.get("history") else {"step": -1}
        if donor is not None and own_last["step"] >= train_config.steps:
            # PBT's perturbation point was the trial's last step: nothing is left to train
            # with the donor's weights, so the trial ends as it was
            own["status"] = "done"
            _write_json(record_path, own)
            tune.report(dict(own_last))
            return
        trainer = _start_trainer(train_config, start_from, superseded)
    except _Superseded:
        return
    except Exception as err:
        record = _read_json(record_path) or _new_record(
            name, {k: config[k] for k in fields}, config["seed"]
        )
        if not superseded():
            record |= {"status": "error", "error": f"{type(err).__name__}: {err}"}
            record["failures"] = int(record.get("failures") or 0) + 1
            _write_json(record_path, record)
        raise
    if superseded():  # claimed while we waited: let the later start have the directory
        del trainer
        return
    # read now, after the previous start has let go of the run directory
    record = _read_json(record_path) or _new_record(
        name, {k: config[k] for k in fields}, config["seed"]
    )
    record["current"] = {k: config[k] for k in ctx["mutable"]}
    if donor is not None:
        # the weights the trainer holds now, after loading (the test compares them with
        # the donor's checkpoint file)
        record["exploits"].append(
            {"step": trainer.step}
            | donor
            | {"config": record["current"], "params_sha256": params_digest(trainer.model.params)}
        )
    elif start_from is not None:  # its own state: forget evaluations after that step
        record["history"] = [h for h in record["history"] if h["step"] <= trainer.step]
    record["trainings"] += 1
    record |= {"status": "running", "error": None}  # a retried trial's old error is gone
    _write_json(record_path, record)
    t0 = time.perf_counter() - float(record["time_s"])

    def evaluated(step: int, metrics: Mapping[str, Any]) -> None:
        """Save the checkpoint; report the evaluation with it to Tune; note it in trial.json."""
        trainer.save()
        now = time.perf_counter() - t0
        report = _numbers(metrics) | {"step": step, "time_s": now}
        record["history"].append({"step": step, "time_s": now, metric: report[metric]})
        record.update(steps=step, time_s=now)
        _write_json(record_path, record)
        with tempfile.TemporaryDirectory(prefix="bptt-tune-") as d:
            src = trainer.out / "checkpoint.safetensors"
            if not src.is_file():
                src = trainer.out / "checkpoint.npz"
            shutil.copy2(src, Path(d) / src.name)
            _write_json(Path(d) / "trial.json", {"trial": name, "step": step})
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))

    if trainer.step >= train_config.steps:
        # Nothing left to train: PBT gave this trial the state of one that had finished. The
        # run directory takes that state, under this trial's configuration, evaluated.
        atomic_write_text(run / "config.json", json.dumps(train_config.to_dict(), indent=2) + "\n")
        evaluated(trainer.step, trainer.evaluate())
        result = trainer.train()  # returns at once, letting go of the run directory
        if not superseded():
            record |= {"status": result.reason, "steps": result.step}
            _write_json(record_path, record)
        return

    def on_event(event: Any) -> None:
        if event.kind != "eval":
            return
        if superseded():
            raise _Superseded  # leave at once: no checkpoint, no report, no trial.json
        evaluated(event.step, event.metrics)

    trainer.callbacks.append(on_event)
    try:
        result = trainer.train()
    except _Superseded:
        return
    except Exception as err:
        if not superseded():
            record |= {"status": "error", "error": f"{type(err).__name__}: {err}"}
            record["failures"] = int(record.get("failures") or 0) + 1
            _write_json(record_path, record)
        raise
    if not superseded():
        record |= {"status": result.reason, "steps": result.step}
        _write_json(record_path, record)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def _require_ray() -> Any:
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError:
        raise ImportError(MISSING_EXTRA) from None
    return ray


def _tune_domain(axis: Mapping[str, Any], kind: type) -> Any:
    from ray import tune

    if axis["dist"] == "choice":
        return tune.choice(list(axis["values"]))
    low, high = axis["low"], axis["high"]
    if kind is int:  # integer fields: bounds inclusive
        if axis["dist"] == "uniform":
            return tune.randint(int(low), int(high) + 1)
        return tune.lograndint(int(low), int(high) + 1)
    if axis["dist"] == "uniform":
        return tune.uniform(float(low), float(high))
    return tune.loguniform(float(low), float(high))


def _field_kinds() -> dict[str, type]:
    return {name: kind for name, kind, *_ in config_fields()}


def _param_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    kinds = _field_kinds()
    space: dict[str, Any] = {}
    for name, axis in spec.space.items():
        if isinstance(axis, list):
            space[name] = tune.grid_search(list(axis))
        else:
            space[name] = _tune_domain(axis, kinds[name])
    mutations = spec.options.get("mutations", {}) if spec.scheduler == "pbt" else {}
    for name in mutations:  # PBT perturbs config values, so they must be in the config
        if name not in space:
            space[name] = spec.base.get(name, _field_default(name))
    space["seed"] = tune.grid_search(list(spec.seeds))
    return space


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import (
        AsyncHyperBandScheduler,
        FIFOScheduler,
        PopulationBasedTraining,
    )

    o = spec.options
    if spec.scheduler == "asha":
        return AsyncHyperBandScheduler(
            time_attr="step",
            max_t=spec.max_steps,
            grace_period=o["grace_period"],
            reduction_factor=o["reduction_factor"],
            brackets=o["brackets"],
        )
    if spec.scheduler == "pbt":
        kinds = _field_kinds()
        mutations = {
            name: list(how) if isinstance(how, list) else _tune_domain(how, kinds[name])
            for name, how in o["mutations"].items()
        }
        return PopulationBasedTraining(
            time_attr="step",
            perturbation_interval=o["interval"],
            hyperparam_mutations=mutations,
            quantile_fraction=o["quantile_fraction"],
            resample_probability=o["resample_probability"],
            perturbation_factors=tuple(o["factors"]),
        )
    return FIFOScheduler()


_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")


def _format_value(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return _NAME_CHARS.sub("-", text)


def _trial_namer(fields: Sequence[str]) -> Callable[[Any], str]:
    """``t00003_lr=0.001_hidden=16_seed=1``: Tune's trial counter, the searched values, seed."""

    def name(trial: Any) -> str:
        index = str(trial.trial_id).rsplit("_", 1)[-1]
        parts = [f"t{index}"] + [f"{k}={_format_value(trial.config.get(k))}" for k in fields]
        return "_".join([*parts, f"seed={trial.config.get('seed')}"])

    return name


@dataclass
class SweepResult:
    """A sweep's results: one row per trial, one summary row per configuration.

    Attributes:
        rows: the rows of ``sweep.csv`` (searched fields, seed, best/final metric, steps,
            time, status, error, trial).
        summary: per configuration: the searched fields, ``runs`` (finished), ``failed``,
            and the final metric's ``mean``, ``std`` (sample, n − 1), ``min``, ``max``.
        best: the summary row of the best configuration (by mean), or None.
        table: the summary as a markdown table (what ``summary.md`` holds).
        out: the sweep directory.
        interrupted: Ctrl-C stopped the sweep: ``resume=True`` (``--resume``) continues it.
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    best: dict[str, Any] | None
    table: str
    out: Path
    interrupted: bool = False


def run(
    spec: str | os.PathLike[str] | Mapping[str, Any] | SweepSpec,
    *,
    out: str | os.PathLike[str] = "runs/sweep",
    address: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    verbose: bool = True,
    progress: bool = False,
) -> SweepResult:
    """Run a sweep on Ray Tune and write its results (see the module docstring).

    Args:
        spec: a TOML spec file, or its tables as a dict (see :func:`load_spec`).
        out: the sweep directory.
        address: a running Ray cluster's address (``ray start --head`` prints it); None starts
            Ray on this machine (``num_cpus`` cores, default all). On a cluster ``out`` must be
            a path every node can write (a shared file system).
        resume: continue the interrupted sweep in ``out``: finished trials are not run again,
            unfinished and failed ones continue from their last checkpoint.
        num_cpus: cores for a local Ray (ignored with ``address``).
        verbose: print the summary table.
        progress: print Ray Tune's progress tables while the sweep runs.

    Returns:
        the results table (also written as ``sweep.csv``, ``summary.md``, ``sweep.png``);
        ``interrupted`` is True when Ctrl-C (SIGINT) stopped the sweep: its running trials
        are labelled ``interrupted`` and ``resume=True`` continues them.

    Raises:
        SpecError: a bad spec, or ``resume`` with a different spec (nothing is started).
        ImportError: Ray Tune is missing (``pip install 'bptt[sweep]'``).
        FileExistsError: ``out`` holds a sweep and ``resume`` is False.
    """
    spec = load_spec(spec)
    check_paths(spec)
    ray = _require_ray()
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    if address is None:  # a local Ray: its cores are known before it starts
        cores = num_cpus or os.cpu_count() or 1
        if spec.cpus_per_trial > cores:
            raise SpecError(
                f"[sweep].cpus_per_trial = {spec.cpus_per_trial:g}, but the local Ray has "
                f"{cores} core(s): no trial could start"
            )
    lock = RunDirLock(out, kind="sweep")  # refuses a foreign folder; one driver at a time
    lock.acquire()
    try:
        out = Path(out).resolve()
        saved = _read_json(out / "sweep.json")
        if resume:
            if saved is None:
                raise SpecError(f"--resume: no sweep in {str(out)!r} (no readable sweep.json)")
            try:
                same = load_spec(saved["spec"]).to_dict() == spec.to_dict()
            except (KeyError, TypeError, ValueError, RecursionError):
                same = False
            if not same:
                raise SpecError(
                    f"--resume: the spec differs from the one the sweep in {str(out)!r} "
                    "started with (sweep.json); resume with the same spec, or choose another "
                    "--out"
                )
        elif saved is not None or (out / "trials").exists():
            raise FileExistsError(
                f"{str(out)!r} already holds a sweep; pass --resume to continue it, or choose "
                "another --out"
            )
        started = not ray.is_initialized()
        if started:
            start_ray(address=address, num_cpus=num_cpus)
        handlers = _signal_handlers()
        try:
            _check_cluster(spec, ray)
            # written once everything is checked: a refused spec leaves no sweep.json behind
            _write_json(out / "sweep.json", {"version": SPEC_VERSION, "spec": spec.to_dict()})
            results, interrupted = _fit(spec, out, resume, progress)
        finally:
            _restore_signal_handlers(handlers)  # Tune leaves its own SIGINT/SIGUSR1 handlers
            if started:
                ray.shutdown()
        _finalize(out, results, spec.fields, interrupted)
        result = _report(out, verbose=verbose)
        result.interrupted = interrupted
        return result
    finally:
        lock.release(discard=True)


def _check_cluster(spec: SweepSpec, ray: Any) -> None:
    """The cluster can run a trial: ``cpus_per_trial`` is at most its CPUs."""
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if spec.cpus_per_trial > cpus:
        raise SpecError(
            f"[sweep].cpus_per_trial = {spec.cpus_per_trial:g}, but the Ray cluster has "
            f"{cpus:g} CPU(s): no trial could start"
        )


def _probe_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse an ``--address`` at which nothing answers within ``timeout`` seconds (Ray's
    own connection retries go on for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--address must be HOST:PORT (or ray://HOST:PORT), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except OSError as err:
        raise ConnectionError(
            f"--address {address}: no Ray cluster answers there within {timeout:g} s "
            f"({err.strerror or err}); start one with `ray start --head`, or leave --address "
            "out to run on this machine"
        ) from None


#: Ray's token authentication (Ray >= 2.52): the mode, and where a driver finds the token
AUTH_MODE_VAR, AUTH_TOKEN_VAR, AUTH_TOKEN_PATH_VAR = (
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
)
AUTH_TOKEN_FILE = "~/.ray/auth_token"


def _driver_token() -> tuple[str | None, str]:
    """The token this driver would send, as Ray looks for it (``RAY_AUTH_TOKEN``, the file
    ``RAY_AUTH_TOKEN_PATH`` names, ``~/.ray/auth_token``), and where it came from."""
    token = os.environ.get(AUTH_TOKEN_VAR, "").strip()
    if token:
        return token, AUTH_TOKEN_VAR
    path = os.environ.get(AUTH_TOKEN_PATH_VAR) or os.path.expanduser(AUTH_TOKEN_FILE)
    where = f"{AUTH_TOKEN_PATH_VAR}={path}" if os.environ.get(AUTH_TOKEN_PATH_VAR) else path
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None, where
    return token or None, where


def _auth_message(address: str) -> str:
    """What to export when the cluster at ``address`` refused this driver (InvalidAuthToken)."""
    if os.environ.get(AUTH_MODE_VAR, "").strip().lower() != "token":
        return (
            f"--address {address}: the Ray cluster requires token authentication "
            f"(InvalidAuthToken); export {AUTH_MODE_VAR}=token and the cluster's token as "
            f"{AUTH_TOKEN_VAR} (or {AUTH_TOKEN_PATH_VAR}=<file>, or put it in "
            f"{AUTH_TOKEN_FILE}) before running bptt sweep; see docs/sweeps.md"
        )
    token, where = _driver_token()
    if token is None:
        return (
            f"--address {address}: {AUTH_MODE_VAR}=token but no token: export "
            f"{AUTH_TOKEN_VAR}=<the cluster's token>, or {AUTH_TOKEN_PATH_VAR}=<a file holding "
            f"it> ({where} is missing or empty)"
        )
    return (
        f"--address {address}: the Ray cluster refused the token from {where} "
        f"(InvalidAuthToken); export the token the cluster was started with as "
        f"{AUTH_TOKEN_VAR} (`ray get-auth-token` on the head node prints it)"
    )


@contextlib.contextmanager
def _stderr_to_file() -> Iterator[Any]:
    """File descriptor 2 (where Ray's C++ client writes its retries) into a temporary file
    while the block runs; yields the file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield tmp
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _signal_handlers() -> dict[int, Any]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}


def _restore_signal_handlers(handlers: Mapping[int, Any]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def start_ray(*, address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at ``address``, or start Ray on this machine's cores.

    A local Ray's workers import bptt from the same place as this process (the package's
    folder is put first on their PYTHONPATH). :func:`run` calls this unless Ray is already
    initialised, and then shuts Ray down at the end.
    """
    ray = _require_ray()
    runtime_env = None
    if address is not None:
        _probe_address(address)
    if address is None:
        package_root = str(Path(__file__).resolve().parents[1])
        pythonpath = os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
        )
        runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    options: dict[str, Any] = dict(
        # "local": a Ray of its own, even when `ray start` left a cluster on this machine
        # (ray.init() would connect to that one, ignoring num_cpus)
        address=address or "local",
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env=runtime_env,
    )
    said = ""
    auth_error = getattr(ray.exceptions, "AuthenticationError", ConnectionError)  # Ray >= 2.52
    try:
        if address is None:
            ray.init(**options)
            return
        # Connecting, Ray's client retries for 20 s, writing one line a second to fd 2; the
        # lines say InvalidAuthToken when the cluster wants a token this driver lacks
        with _stderr_to_file() as log:
            try:
                ray.init(**options)
            finally:
                log.seek(0)
                said = log.read().decode("utf-8", errors="replace")
        sys.stderr.write(said)  # connected: what Ray said is the user's to read
    except (ConnectionError, RuntimeError, ValueError, auth_error) as err:
        if address is not None and (
            "InvalidAuthToken" in said + str(err) or isinstance(err, auth_error)
        ):
            raise ConnectionError(_auth_message(address)) from None
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConnectionError(f"cannot start {where}: {str(err)[:300]}") from None


class _DropTuneHints(logging.Filter):
    """Drops Tune's own words about an interruption (``Tuner.restore(...)`` advice, "Stop
    signal received", "Trials did not complete"): bptt prints its own ``--resume`` hint."""

    WORDS = ("Tuner.restore", "Stop signal received", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(w in message for w in self.WORDS)


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while the block runs, as it was afterwards."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _interruptible(interrupted: threading.Event) -> Iterator[None]:
    """While Tune runs: the first Ctrl-C (SIGINT) sets ``interrupted`` and asks Tune to stop
    the way SIGUSR1 does (it saves the experiment's state, so ``--resume`` continues); a
    second one raises KeyboardInterrupt at once. Tune's words about it are dropped."""
    tune_logger = logging.getLogger("ray.tune.tune")
    hints = _DropTuneHints()
    tune_logger.addFilter(hints)
    if threading.current_thread() is not threading.main_thread():
        try:  # signal handlers can only be set from the main thread: Tune's own apply
            yield
        finally:
            tune_logger.removeFilter(hints)
        return

    def on_sigint(sig: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print(
            "bptt sweep: interrupted; saving the trials' state (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's handler while it runs
        if callable(tune_stop):
            tune_stop(sig, frame)

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        with _environ({"TUNE_DISABLE_SIGINT_HANDLER": "1"}):  # Tune leaves SIGINT to us
            yield
    finally:
        signal.signal(signal.SIGINT, old_handler)
        tune_logger.removeFilter(hints)


def _fit(spec: SweepSpec, out: Path, resume: bool, progress: bool) -> tuple[Any, bool]:
    """Run (or, with ``resume``, continue) the Tune experiment under ``out/tune``.

    Returns Tune's results and whether Ctrl-C stopped the sweep. On ``resume`` Tune continues
    the unfinished trials from their last checkpoint and retries the failed ones (from
    theirs), each up to ``max_failures`` more times.
    """
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    pbt = spec.scheduler == "pbt"
    ctx = {
        "trials": str(out / "trials"),
        "base": dict(spec.base),
        "fields": spec.fields,
        "metric": spec.metric,
        "mutable": list(spec.options.get("mutations", {})) if pbt else [],
    }

    def trainable(config: dict[str, Any]) -> None:
        _trial(config, ctx)

    resources = tune.with_resources(trainable, {"cpu": spec.cpus_per_trial})
    experiment = out / "tune"
    if resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(
            str(experiment),
            resources,
            resume_unfinished=True,
            resume_errored=True,  # a failed trial is retried from its last checkpoint
            restart_errored=False,
        )
        # Tune keeps the first run's RunConfig; this run's --verbose decides the tables.
        # (Through the Tuner's own object: if a Ray version has none, the first run's
        # choice stays.)
        local: Any = getattr(tuner, "_local_tuner", None)
        run_config = local.get_run_config() if hasattr(local, "get_run_config") else None
        if run_config is not None:
            run_config.verbose = 1 if progress else 0
    else:
        name = _trial_namer(spec.fields)
        tuner = tune.Tuner(
            resources,
            param_space=_param_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                scheduler=_scheduler(spec),
                search_alg=BasicVariantGenerator(
                    max_concurrent=spec.parallel, random_state=spec.search_seed
                ),
                num_samples=spec.samples,
                reuse_actors=True,
                trial_name_creator=name,
                trial_dirname_creator=name,
            ),
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=str(experiment.parent),
                verbose=1 if progress else 0,  # Ray's progress tables only when asked
                failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints or None),
            ),
        )
    interrupted = threading.Event()
    # Tune's newer output engine prints its configuration box and result paths even at
    # verbose=0; its older one prints nothing there
    quiet = {} if progress else {"RAY_AIR_NEW_OUTPUT": "0"}
    with _environ(quiet), _interruptible(interrupted):
        results = tuner.fit()
    return results, interrupted.is_set()


def _finalize(out: Path, results: Any, fields: Sequence[str], interrupted: bool = False) -> None:
    """Record in each trial.json what Tune knows and the trial could not write itself: one
    the scheduler stopped (``stopped``, or ``done`` at its last step), one Ctrl-C stopped
    (``interrupted``) or one that died without a word (``error``). A trial that finished by
    itself keeps its status."""
    for res in results:
        run = out / "trials" / Path(res.path).name
        if run.is_symlink():
            continue  # not written through (the trial refused it and failed)
        record = _read_json(run / "trial.json")
        if record is not None and not isinstance(record.get("status"), str):
            record = None  # not a trial record: rebuilt below when Tune knows the error
        if record is None and res.error is not None:  # died before the trial could start
            config = res.config or {}
            record = _new_record(run.name, {k: config.get(k) for k in fields}, config.get("seed"))
        if record is None or record["status"] != "running":
            continue
        if res.error is not None:
            record |= {"status": "error", "error": f"{type(res.error).__name__}: {res.error}"}
        else:
            config = _read_json(run / "config.json") or {}
            # the scheduler ends a trial at its last report: at its final step that is "done"
            reached = record["steps"] >= config.get("steps", math.inf)
            if reached:
                record["status"] = "done"
            else:
                record["status"] = "interrupted" if interrupted else "stopped"
        _write_json(run / "trial.json", record)


# ---------------------------------------------------------------------------------------------
# Results: sweep.csv, summary.md, sweep.png
# ---------------------------------------------------------------------------------------------


def _trial_row(
    record: Mapping[str, Any], fields: Sequence[str], metric: str, mode: str
) -> dict[str, Any]:
    values = [h[metric] for h in record.get("history", []) if h.get(metric) is not None]
    finite = [v for v in values if math.isfinite(v)]
    best = None
    if finite:
        best = min(finite) if mode == "min" else max(finite)
    row: dict[str, Any] = {k: record["config"].get(k) for k in fields}
    row |= {
        "seed": record["seed"],
        f"best_{metric}": best,
        f"final_{metric}": values[-1] if values else None,
        "steps": record.get("steps", 0),
        "time_s": round(float(record.get("time_s", 0.0)), 3),
        "status": record["status"],
        "exploits": len(record.get("exploits", [])),
        "error": record.get("error") or "",
        "trial": record["trial"],
    }
    return row


def _summarise(
    rows: list[dict[str, Any]], fields: Sequence[str], metric: str, mode: str
) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row[k] for k in fields]), []).append(row)
    summary = []
    for key, members in groups.items():
        finals = np.array(
            [
                r[f"final_{metric}"]
                for r in members
                if r["status"] != "error" and r[f"final_{metric}"] is not None
            ],
            dtype=np.float64,
        )
        n = finals.size
        entry = dict(zip(fields, json.loads(key), strict=True))
        entry |= {
            "runs": n,
            "failed": sum(r["status"] == "error" for r in members),
            "mean": float(finals.mean()) if n else math.nan,
            "std": float(finals.std(ddof=1)) if n > 1 else math.nan,
            "min": float(finals.min()) if n else math.nan,
            "max": float(finals.max()) if n else math.nan,
        }
        summary.append(entry)
    sign = 1.0 if mode == "min" else -1.0
    summary.sort(key=lambda e: (math.isnan(e["mean"]), sign * e["mean"] if e["runs"] else 0.0))
    return summary


def _markdown(summary: list[dict[str, Any]], fields: Sequence[str], metric: str) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.5g}"
        return str(v)

    head = [*fields, "runs", "failed", f"mean {metric}", "std", "min", "max"]
    keys = [*fields, "runs", "failed", "mean", "std", "min", "max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, e in enumerate(summary):
        cells = [cell(e[k]) for k in keys]
        if i == 0 and e["runs"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(out: str | os.PathLike[str], *, verbose: bool = True) -> SweepResult:
    """Rebuild ``sweep.csv``, ``summary.md`` and ``sweep.png`` of the sweep in ``out`` (see
    :func:`_report`), holding its lock: only a bptt sweep directory is written.

    Raises:
        FileNotFoundError: ``out`` holds no sweep.
        SpecError: its ``sweep.json`` is not a readable spec.
        RunDirBusyError: a sweep driver is running in ``out``.
    """
    folder = Path(out)
    if not is_run_dir(folder, "sweep"):
        raise FileNotFoundError(f"no sweep in {str(folder)!r} (no bptt sweep directory)")
    lock = RunDirLock(folder, kind="sweep")
    lock.option = "--report"
    lock.acquire()
    try:
        return _report(folder, verbose=verbose)
    finally:
        lock.release()


def _report(out: str | os.PathLike[str], *, verbose: bool = True) -> SweepResult:
    """Rebuild ``sweep.csv``, ``summary.md`` and ``sweep.png`` from a sweep directory.

    Needs no Ray: it reads ``sweep.json`` and each ``trials/*/trial.json``. The summary is
    over the final metric of every trial that did not fail, per configuration (the searched
    values a trial started with), across seeds; the best configuration (by mean) is first
    and in bold.

    Raises:
        FileNotFoundError: ``out`` holds no sweep.
    """
    out = Path(out)
    saved = _read_json(out / "sweep.json")
    if saved is None:
        raise FileNotFoundError(f"no sweep in {str(out)!r} (no readable sweep.json)")
    try:
        spec = load_spec(saved["spec"])
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise SpecError(
            f"{str(out / 'sweep.json')!r} is not a readable sweep spec: {str(err)[:200]}"
        ) from None
    fields, metric, mode = spec.fields, spec.metric, spec.mode
    paths = sorted((out / "trials").glob("*/trial.json"))
    records = [r for p in paths if (r := clean_record(_read_json(p), metric)) is not None]
    skipped = len(paths) - len(records)
    rows = [_trial_row(r, fields, metric, mode) for r in records]
    buf = io.StringIO()
    columns = [*fields, "seed", f"best_{metric}", f"final_{metric}", "steps", "time_s"]
    columns += ["status", "exploits", "error", "trial"]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    summary = _summarise(rows, fields, metric, mode)
    best = summary[0] if summary and summary[0]["runs"] else None
    table = _markdown(summary, fields, metric)
    title = f"Final {metric} per configuration over seeds {spec.seeds} ({mode} is best)"
    atomic_write_text(out / "summary.md", f"# {title}\n\n{table}")
    plot_note = ""
    try:
        plot_sweep(out, records, fields, metric, best)
    except ImportError as err:
        plot_note = f"(no sweep.png: {err})"
    if verbose:
        done = sum(r["status"] in ("done", "early_stop") for r in rows)
        stopped = sum(r["status"] == "stopped" for r in rows)
        interrupted = sum(r["status"] == "interrupted" for r in rows)
        failed = [r for r in rows if r["status"] == "error"]
        print(f"\n{title}\n\n{table}")
        counts = f"{len(rows)} trials: {done} finished, {stopped} stopped by the scheduler, "
        if interrupted:
            counts += f"{interrupted} interrupted, "
        print(f"{counts}{len(failed)} failed")
        for r in failed:
            print(f"  failed {r['trial']}: {r['error']}")
        if skipped:
            print(f"  {skipped} trial.json file(s) are not trial records: left out")
        print(f"results: {out / 'sweep.csv'}, {out / 'summary.md'}, {out / 'sweep.png'}")
        if plot_note:
            print(plot_note)
    return SweepResult(rows, summary, best, table, out)


def plot_sweep(
    out: Path,
    records: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    metric: str,
    best: Mapping[str, Any] | None,
) -> Path:
    """``sweep.png``: the metric against training time, one line per trial; the best
    configuration's trials in colour and bold, every other trial thin and grey."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    best_key = None if best is None else [best[k] for k in fields]
    positive = True
    labelled = False
    for r in records:
        pts = [
            (h["time_s"], h[metric])
            for h in r.get("history", [])
            if h.get(metric) is not None and math.isfinite(h[metric])
        ]
        if not pts:
            continue
        positive = positive and all(v > 0 for _, v in pts)
        t, v = zip(*pts, strict=True)
        if [r["config"].get(k) for k in fields] == best_key:
            label = None
            if not labelled:
                cfg = ", ".join(f"{k}={_format_value(r['config'].get(k))}" for k in fields)
                label = f"best by mean final {metric}: {cfg or 'base'}"
                labelled = True
            ax.plot(t, v, "o-", color="C3", lw=2.2, ms=3, zorder=3, label=label)
        else:
            ax.plot(t, v, "-", color="0.6", lw=0.9, alpha=0.8, zorder=2)
    ax.plot([], [], "-", color="0.6", lw=0.9, label="other trials")
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("training time of the trial (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} during training, {len(records)} trials")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    target = out / "sweep.png"
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return target
