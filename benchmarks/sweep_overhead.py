"""The cost of running a sweep through Ray Tune: `bptt sweep` against `bptt train` by hand.

    python benchmarks/sweep_overhead.py                 # 8 runs of about 10 s, 3 repetitions

The same 8 runs (a 2 lr × 2 hidden grid × 2 seeds on the adding task, sized to take about
10 s each on a 2-core machine) are launched two ways, alternately, each a fresh process tree:

- by hand: 8 `bptt train` processes, two running at any time (as `xargs -P 2`), with the
  environment as it is (NumPy's BLAS may start a thread per core in each process);
- by hand, 1 thread: the same with OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1,
  which is what Ray sets in a worker that reserves one CPU;
- sweep:   one `bptt sweep SPEC --num-cpus 2` (parallel = 2), Ray started and shut down inside.

Reported: the wall time of each repetition, the median and spread of each, their ratio
(median sweep / median by hand) and the 1-minute load average before and after each
repetition, which should be well under 1 for the numbers to mean anything on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

from _machine import report  # noqa: E402

BASE = {
    "task": "adding",
    "seq_len": 50,
    "batch": 32,
    "eval_every": 250,
    "eval_size": 512,
    "plot": False,
}
LRS, HIDDENS, SEEDS = (1e-3, 3e-3), (32, 64), (0, 1)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def spec_text(steps: int) -> str:
    base = "\n".join(f"{k} = {_toml_value(v)}" for k, v in (BASE | {"steps": steps}).items())
    return (
        f"[base]\n{base}\n\n[space]\nlr = {list(LRS)}\nhidden = {list(HIDDENS)}\n\n"
        f'[sweep]\nseeds = {list(SEEDS)}\nmetric = "val_mse"\nparallel = 2\n'
    )


def train_args(out: Path, steps: int, lr: float, hidden: int, seed: int) -> list[str]:
    args = [sys.executable, "-m", "bptt", "train", "--out", str(out), "--no-progress"]
    for k, v in (BASE | {"steps": steps, "lr": lr, "hidden": hidden, "seed": seed}).items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            args += [flag, str(v)]
    return args


def load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def env(one_thread: bool = False) -> dict[str, str]:
    out = os.environ | {"PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    if one_thread:
        out |= {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return out


def by_hand(work: Path, steps: int, one_thread: bool = False) -> float:
    """Wall time of the 8 runs, two at a time: a new one starts as soon as one ends."""
    jobs = [
        train_args(work / f"lr{lr}_h{h}_s{s}", steps, lr, h, s)
        for lr, h, s in itertools.product(LRS, HIDDENS, SEEDS)
    ]
    start = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    while jobs or running:
        while jobs and len(running) < 2:
            running.append(
                subprocess.Popen(jobs.pop(0), env=env(one_thread), stdout=subprocess.DEVNULL)
            )
        time.sleep(0.01)
        for p in list(running):
            if p.poll() is not None:
                if p.returncode != 0:
                    raise RuntimeError(f"bptt train exited {p.returncode}")
                running.remove(p)
    return time.perf_counter() - start


def sweep(work: Path, steps: int) -> float:
    spec = work / "spec.toml"
    spec.write_text(spec_text(steps))
    cmd = [sys.executable, "-m", "bptt", "sweep", str(spec), "--out", str(work / "sweep")]
    start = time.perf_counter()
    subprocess.run(
        [*cmd, "--num-cpus", "2", "--quiet"], env=env(), check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def one_run_time(work: Path, steps: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        train_args(work / "calibrate", steps, 3e-3, 64, 0),
        env=env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=400,
        help="steps per run (about 10 s on a quiet 2-core machine)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-default-threads",
        action="store_true",
        help="skip 'by hand' with the environment's BLAS threads (slow when oversubscribed)",
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"by hand": [], "by hand, 1 thread": [], "sweep": []}
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bptt-sweep-bench-") as tmp:
        single = one_run_time(Path(tmp), args.steps)
        for rep in range(args.repeats):
            modes: list[tuple[str, Any]] = [
                ("by hand", by_hand),
                ("by hand, 1 thread", lambda w, n: by_hand(w, n, one_thread=True)),
                ("sweep", sweep),
            ]
            if args.no_default_threads:
                modes = modes[1:]
            for name, fn in modes:
                work = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}{rep}"
                work.mkdir()
                before = load()
                times[name].append(fn(work, args.steps))
                loads.append(f"{name} #{rep + 1}: {before:.2f} -> {load():.2f}")
                print(f"{name} #{rep + 1}: {times[name][-1]:.1f} s ({loads[-1]})", flush=True)
                shutil.rmtree(work)
    swp = statistics.median(times["sweep"])
    lines = [
        f"8 runs of `bptt train --task adding --seq-len 50 --batch 32 --steps {args.steps}` "
        f"(one alone: {single:.1f} s), hidden {HIDDENS} × lr {LRS} × seeds {SEEDS}",
        "",
        "| launched | median (s) | min–max (s) | repetitions |",
        "|---|---|---|---|",
    ]
    times = {name: ts for name, ts in times.items() if ts}
    for name, ts in times.items():
        lines.append(
            f"| {name} | {statistics.median(ts):.1f} | {min(ts):.1f}–{max(ts):.1f} | "
            f"{', '.join(f'{t:.1f}' for t in ts)} |"
        )
    lines.append("")
    for name in [n for n in times if n != "sweep"]:
        lines.append(f"sweep / {name} (medians): {swp / statistics.median(times[name]):.2f}×  ")
    lines += ["", "load average (1 min):"]
    lines += [f"- {x}" for x in loads]
    report("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
