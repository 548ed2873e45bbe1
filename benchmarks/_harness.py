"""Fresh-process, alternated, repeated measurements: the method every framework comparison uses.

A speed comparison run inside one process measures more than the step: a second library's
thread pool (OpenMP for PyTorch, OpenBLAS for NumPy) stays resident, its idle workers spin
for a while after each call, and on a 2-core machine they take cycles from the other
library's workers. So every timed sample here comes from a *fresh* child process that imports
only the framework it times, the frameworks take turns (ABAB…, the first one alternating
between repetitions so slow drift hits both alike), and the table quotes the median over
repetitions with the spread (min–max and the interquartile range).

    run_child(cmd)              one fresh process, its last stdout line parsed as JSON
    alternate(cmds, reps)       {name: [result, …]} with the order flipped every repetition
    CompetingLoad(n)            n busy-loop processes for the "busy machine" comparison
    spread(values)              median, quartiles, min, max
    sgemm_peak_child()          the 2048³ float32 matmul peak, measured in a fresh process
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
BUSY_LOOP = "while True: pass"


class ChildFailed(RuntimeError):
    """A benchmark child exited with an error; the message carries its stderr tail."""


def run_child(
    cmd: Sequence[str], timeout: float = 1800.0, env: dict[str, str] | None = None
) -> dict[str, object]:
    """Run ``cmd`` (a Python script + args) in a fresh interpreter; parse its last stdout line.

    The child inherits the environment (thread settings included), plus ``env`` if given.

    Raises:
        ChildFailed: nonzero exit status or no JSON on the last line.
    """
    done = subprocess.run(
        [sys.executable, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if done.returncode != 0:
        raise ChildFailed(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as err:
        raise ChildFailed(f"{' '.join(cmd)} printed no JSON result: {done.stdout[-500:]}") from err
    assert isinstance(out, dict)
    return out


def alternate(
    cmds: dict[str, Sequence[str]], reps: int, verbose: bool = True
) -> dict[str, list[dict[str, object]]]:
    """``reps`` rounds; in each round every command runs once in its own fresh process.

    The order is reversed every other round (A B, B A, A B, …).
    """
    names = list(cmds)
    out: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            out[name].append(run_child(cmds[name]))
            if verbose:
                last = out[name][-1]
                ms = last.get("ms")
                note = f"{ms:.3f} ms" if isinstance(ms, float) else str(last)[:80]
                print(f"    round {r + 1}/{reps} {name}: {note}", flush=True)
    return out


@dataclass(frozen=True)
class Spread:
    """Summary of repeated measurements."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 2) -> str:
        """``median [min–max]``."""
        return f"{self.median:.{digits}f} [{self.lo:.{digits}f}–{self.hi:.{digits}f}]"


def spread(values: Sequence[float]) -> Spread:
    """Median, quartiles (inclusive method), min and max of ``values`` (at least one)."""
    vals = sorted(values)
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = vals[0]
    return Spread(statistics.median(vals), q1, q3, vals[0], vals[-1], len(vals))


class CompetingLoad:
    """``n`` busy-loop processes (``python -c 'while True: pass'``) while the block runs.

    The documented "busy machine" condition: on the 2-core benchmark machine, ``n = 2``
    keeps both cores busy with another program, as a second user's job would. Every process
    is killed (by its own pid) when the block ends, even on error.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CompetingLoad:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))
        if self.n:
            time.sleep(1.0)  # let them reach full speed
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs.clear()


def load_average() -> str:
    """The 1/5/15-minute load averages, as a string."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def sgemm_peak_child() -> float:
    """The float32 2048³ matmul peak in GFLOP/s, best of 5, in a fresh process."""
    out = run_child([str(HERE / "_machine.py"), "--peak-json"])
    peak = out["sgemm_gflops"]
    assert isinstance(peak, float)
    return peak


def env_threads() -> str:
    """Thread-related environment variables as the children see them."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BPTT_LOOP_THREADS")
    env = {k: os.environ[k] for k in keys if k in os.environ}
    return str(env) if env else "no thread variables set"


def rss_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def emit(result: dict[str, object]) -> None:
    """A child's result: one JSON line, the last thing on stdout."""
    print(json.dumps(result), flush=True)
