"""Child process for test_robust_crash: train (or resume) a tiny run, SIGKILL itself at a point.

    python crash_child.py CONFIG_JSON RESUME POINT N

POINT is where the N-th occurrence kills the process with SIGKILL (no cleanup, no finally):
``step`` (after the N-th optimizer step's callbacks), ``replace`` (an atomic write's temporary
file complete, not yet moved into place), ``fsync`` (a temporary file written, not synced),
``log`` (just after a metrics line is appended), or ``none`` (run to the end).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import bptt.atomic
from bptt.training import TrainConfig, Trainer


def main() -> None:
    config = TrainConfig(**json.loads(sys.argv[1]))
    resume, point, n = sys.argv[2] == "1", sys.argv[3], int(sys.argv[4])
    count = 0

    def hit() -> None:
        nonlocal count
        count += 1
        if count == n:
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks = []
    if point == "step":
        callbacks.append(lambda event: hit() if event.kind == "step" else None)
    elif point in ("replace", "fsync"):
        original = getattr(bptt.atomic.os, point)

        def wrapped(*args: object) -> object:
            hit()
            return original(*args)

        setattr(bptt.atomic.os, point, wrapped)
    elif point == "log":
        log = Trainer._log

        def logged(self: Trainer, record: dict) -> None:
            log(self, record)
            hit()

        Trainer._log = logged  # type: ignore[method-assign]
    Trainer(config, resume=resume, callbacks=callbacks, echo=None).train()


if __name__ == "__main__":
    main()
