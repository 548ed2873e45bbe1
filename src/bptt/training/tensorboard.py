"""TensorBoard logging of a run's scalars: a Trainer callback (``bptt train --log tensorboard``).

Every line ``metrics.jsonl`` gets is also written as TensorBoard scalars at its step:

    train/<name>  for the training lines (loss, lr, grad_norm, … every ``log_every`` steps)
    val/<name>    for the evaluations (val_loss and the task's val_* numbers)

into ``RUN/tb/`` (one event file per session; ``tensorboard --logdir RUN/tb`` shows them).
Needs ``tensorboardX`` (installed with the ``sweep`` extra, as a Ray Tune dependency).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .loop import TrainEvent

MISSING = "--log tensorboard needs tensorboardX, which is not installed: pip install tensorboardX"


class TensorBoardLogger:
    """A :class:`~bptt.training.Trainer` callback writing the run's scalars for TensorBoard.

    Args:
        logdir: the folder of the event files (``bptt train --log tensorboard``: ``RUN/tb``).

    Raises:
        ImportError: tensorboardX is not installed.
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError(MISSING) from None
        self.logdir = Path(logdir)
        self._make_writer = SummaryWriter
        self._writer: Any = None  # opened at the first event: after the Trainer has taken
        # the run directory (a folder it refuses gets nothing written into it)

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "step":
            # the line metrics.jsonl got at this step, if it got one (every log_every steps)
            history = event.trainer.history
            line = history[-1] if history else {}
            if line.get("step") == event.step and line.get("kind") != "eval":
                self._scalars("train", event.step, line)
        elif event.kind == "eval":
            self._scalars("val", event.step, event.metrics)
        elif event.kind == "end":
            self.close()

    def _scalars(self, group: str, step: int, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            if name in ("step", "kind") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                if self._writer is None:
                    self._writer = self._make_writer(logdir=str(self.logdir))
                self._writer.add_scalar(f"{group}/{name}", float(value), global_step=step)
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Write what is pending and close the event file (a later event opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
