"""Figures (optional dependency: ``pip install 'bptt[plot]'`` for matplotlib)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_path


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'bptt[plot]'"
        ) from None
    return plt


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (unreadable lines are skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {str(run_dir)!r}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def plot_metrics(
    run_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Path:
    """Training loss and validation loss against step, written atomically as a PNG.

    Args:
        run_dir: a run directory with ``metrics.jsonl``.
        path: the PNG (default ``run_dir/loss.png``).

    Raises:
        ImportError: matplotlib is missing (the message says how to install it).
        FileNotFoundError: no metrics log.
    """
    plt = _pyplot()
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, alpha=0.7, label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", lw=1.5, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per step / char)")
    ax.set_title(str(Path(run_dir).name))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target = Path(run_dir) / "loss.png" if path is None else Path(path)
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return target
