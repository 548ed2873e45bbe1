"""Learning curves of a run (``loss.png``), drawn with matplotlib.

The figures are built on :class:`matplotlib.figure.Figure` directly, never through pyplot's
global state, so drawing them changes nothing of the caller's matplotlib (no backend switch,
no figure left open in a notebook).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..checkpoint import load_checkpoint
from ..data import registry


def pyplot() -> Any:
    """matplotlib.pyplot (the backend as the user or matplotlib chose it: headless machines get
    Agg by matplotlib's own fallback), or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'bptt[plot]'"
        ) from None
    return plt


def _new_figure(**options: Any) -> Any:
    """A matplotlib Figure outside pyplot (nothing global touched), or a clear ImportError."""
    try:
        import matplotlib  # noqa: F401  (the package itself, before its submodule)
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'bptt[plot]'"
        ) from None
    return Figure(**options)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (unreadable lines are skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {str(run_dir)!r}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):  # a line of another JSON shape is not a record
            # metrics.jsonl is strict JSON: a NaN or inf number was written as null
            out.append({k: math.nan if v is None else v for k, v in record.items()})
    return out


def _run_facts(run_dir: Path) -> dict[str, Any]:
    """config.json of the run, or {} (a bare metrics log)."""
    try:
        return dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _task(name: str) -> registry.TaskSpec:
    """The run's task in the registry; an unknown name (a newer bptt's run): the generic one."""
    return registry.REGISTRY.get(name) or registry.TaskSpec()


def _output_size(run_dir: Path, task: str) -> int | None:
    """O of the run's model: the task's when it fixes it (adding, sine), else the checkpoint's."""
    known = _task(task).output_size_known
    if known is not None:
        return known
    try:
        return int(load_checkpoint(run_dir).model.output_size)
    except (OSError, ValueError, ImportError):
        return None


def model_words(config: dict[str, Any]) -> str:
    """The model as a title says it: ``tanh RNN``, ``GRU``, ``2-layer bidirectional LSTM``."""
    cell = str(config.get("cell", "elman"))
    name = f"{config.get('activation', '?')} RNN" if cell == "elman" else cell.upper()
    layers = int(config.get("layers", 1) or 1)
    return (
        (f"{layers}-layer " if layers > 1 else "")
        + ("bidirectional " if config.get("bidirectional") else "")
        + name
    )


def _title(config: dict[str, Any], run_dir: Path) -> str:
    if not config:
        return str(run_dir.name)
    task = str(config.get("task", "?"))
    what = _task(task).title(config) if task in registry.REGISTRY else task
    return (
        f"{what}: {model_words(config)}, "
        f"H = {config.get('hidden', '?')}, B = {config.get('batch', '?')} ({run_dir.name})"
    )


def metrics_figure(run_dir: str | os.PathLike[str]) -> Any:
    """The figure of :func:`plot_metrics` (a matplotlib Figure), without saving it.

    charlm (and runs without a task metric): training and validation loss, nats per
    character. Regression tasks (metric ``mse``): training MSE (= 2 · loss / O, the loss being
    ½‖ŷ − y‖² per step), validation MSE, the memoryless baseline as a horizontal line; log
    scale when the curves span more than a decade. Classification tasks: the losses, and the
    metric (accuracy) beside its baseline on a second panel.
    """
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    config = _run_facts(run_dir)
    task = str(config.get("task", "charlm"))
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    metric = next(
        (k[4:] for r in evals for k in r if k.startswith("val_") and k[4:] in ("mse", "accuracy")),
        None,
    )
    spec = _task(task)
    if spec.streams:
        metric = None  # the loss is the headline: nats (and bits) per character
    title = _title(config, run_dir)
    if metric == "mse":
        fig = _new_figure(figsize=(7, 4), dpi=100, layout="constrained")
        ax = fig.subplots()
        out = _output_size(run_dir, task)
        curves = []
        if train and out:
            steps, loss = zip(*train, strict=True)
            mse = [2.0 * v / out for v in loss]
            ax.plot(
                steps,
                mse,
                lw=1,
                alpha=0.7,
                marker="." if len(mse) < 5 else None,
                label="training MSE (2 · loss / O)",
            )
            curves.append(mse)
        val = [(r["step"], r["val_mse"]) for r in evals if "val_mse" in r]
        if val:
            ax.plot(*zip(*val, strict=True), "o-", lw=1.5, label="validation MSE")
            curves.append([v for _, v in val])
        base = [r["baseline_mse"] for r in evals if "baseline_mse" in r]
        if base:
            ax.axhline(
                base[-1], color="0.3", ls="--", lw=1, label=f"memoryless baseline {base[-1]:.3g}"
            )
            curves.append([base[-1]])
        flat = [v for c in curves for v in c if v > 0]
        if flat and max(flat) / min(flat) > 10:
            ax.set_yscale("log")
        ax.set_ylabel(f"MSE ({spec.mse_units})")
        axes = [ax]
    else:
        ncols = 2 if metric == "accuracy" else 1
        fig = _new_figure(figsize=(7 * ncols * 0.8 + 1.4, 4), dpi=100, layout="constrained")
        axs = fig.subplots(1, ncols, squeeze=False)
        axes = list(axs[0])
        ax = axes[0]
        unit = spec.loss_unit()
        if train:
            ax.plot(
                *zip(*train, strict=True),
                lw=1,
                alpha=0.7,
                marker="." if len(train) < 5 else None,
                label="training loss",
            )
        val = [(r["step"], r["val_loss"]) for r in evals if "val_loss" in r]
        if val:
            ax.plot(*zip(*val, strict=True), "o-", lw=1.5, label="validation loss")
        ax.set_ylabel(f"cross-entropy ({unit})")
        if metric == "accuracy":
            acc = axes[1]
            points = [(r["step"], r["val_accuracy"]) for r in evals if "val_accuracy" in r]
            acc.plot(*zip(*points, strict=True), "o-", lw=1.5, label="validation accuracy")
            base = [r["baseline_accuracy"] for r in evals if "baseline_accuracy" in r]
            if base:
                acc.axhline(
                    base[-1],
                    color="0.3",
                    ls="--",
                    lw=1,
                    label=f"memoryless baseline {base[-1]:.3g}",
                )
            acc.set_ylabel("accuracy (fraction correct)")
            acc.set_ylim(0, 1.02)
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3, which="both")
        if a.lines:
            a.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return fig


def plot_metrics(
    run_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Path:
    """The run's learning curves (:func:`metrics_figure`), written atomically as a PNG.

    Args:
        run_dir: a run directory with ``metrics.jsonl`` (and ``config.json``).
        path: the PNG (default ``run_dir/loss.png``).

    Raises:
        ImportError: matplotlib is missing (the message says how to install it).
        FileNotFoundError: no metrics log.
    """
    fig = metrics_figure(run_dir)
    target = Path(run_dir) / "loss.png" if path is None else Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
