"""What one warm training step allocates: page faults, tracemalloc's peak, and where.

    python benchmarks/alloc_per_step.py                   # charlm and minchar recipes
    python benchmarks/alloc_per_step.py --no-pool         # the same with the workspace pool off
    python benchmarks/alloc_per_step.py --list            # + every line that allocated >= 16 KiB

Runs :meth:`bptt.training.Trainer.train_step` (the step ``bptt train`` loops over: the source's
forward and backward, the mean-per-character scaling, the guarded optimizer step with its
clipping) on the built-in corpus, after ``--warmup`` steps, and reports per warm step:

- **minor faults**: ``getrusage(RUSAGE_SELF).ru_minflt`` over the step (tracemalloc off);
- **peak increase**: tracemalloc's peak during the step over its traced size just before
  (``reset_peak`` before, ``get_traced_memory`` after): the most memory the step held at once
  beyond what it started with, which the (T, B, ·) temporaries and every parameter-sized
  array that is allocated fresh add to;
- **--list**: the source lines during which the traced peak rose by at least ``--min-kib``
  (a line tracer with ``reset_peak`` at every line: one entry per line that allocated that
  much, with the largest rise; arrays made inside Numba kernels are not traced).

Recipes (``bench_train.py``): minchar = H 100, T 25, B 1, Adagrad 0.1, entries clipped to ±5;
charlm = H 256, T 100, B 32, Adam 2e-3, global-norm clip 5. Not a timing benchmark: it
counts allocations, and is quick (a few seconds).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_train import RECIPES, recipe_config  # noqa: E402


def make_step(
    recipe: str, out: Path, cell: str, layers: int, optimizer: str | None
) -> Callable[[], Any]:
    from bptt.training import Trainer

    chosen = {} if optimizer is None else {"optimizer": optimizer}
    cfg = recipe_config(recipe, out / recipe, cell=cell, layers=layers, **chosen)
    trainer = Trainer(cfg, echo=None)
    return trainer.train_step


def minor_faults(step: Callable[[], Any], steps: int) -> list[int]:
    counts = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts


def peak_increase(step: Callable[[], Any], steps: int) -> list[int]:
    """tracemalloc must be tracing."""
    rises = []
    for _ in range(steps):
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        rises.append(tracemalloc.get_traced_memory()[1] - current)
    return rises


def allocating_lines(step: Callable[[], Any], min_bytes: int) -> dict[str, int]:
    """{"file:line function": largest peak rise} over one step; tracemalloc must be tracing."""
    root = str(HERE.parent)
    hits: dict[str, int] = {}
    state: dict[str, Any] = {"where": None, "base": 0}

    def where(frame: Any) -> str:  # the innermost frame in this project (not NumPy's)
        inner = frame
        while frame is not None and not frame.f_code.co_filename.startswith(root):
            frame = frame.f_back
        frame = frame or inner
        name = os.path.relpath(frame.f_code.co_filename, root)
        return f"{name}:{frame.f_lineno} {frame.f_code.co_name}"

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        peak = tracemalloc.get_traced_memory()[1]
        if state["where"] is not None and peak - state["base"] >= min_bytes:
            hits[state["where"]] = max(hits.get(state["where"], 0), peak - state["base"])
        # a return continues its caller's line: charge what follows to the caller
        at = frame.f_back if event == "return" and frame.f_back is not None else frame
        state["where"] = where(at)
        tracemalloc.reset_peak()
        state["base"] = tracemalloc.get_traced_memory()[0]
        return tracer

    sys.settrace(tracer)
    try:
        step()
    finally:
        sys.settrace(None)
    return hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--cell", default="elman", help="recurrent cell (elman, gru, lstm)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--optimizer", help="instead of the recipe's (e.g. adamw: NumPy path)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-pool", action="store_true", help="every request a plain np.empty")
    parser.add_argument("--list", action="store_true", help="list the lines that allocated")
    parser.add_argument("--min-kib", type=float, default=16.0)
    args = parser.parse_args(argv)

    from bptt import _workspace

    if args.no_pool:
        _workspace.MIN_ELEMENTS = sys.maxsize
    print(
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; pool "
        f"{'off' if args.no_pool else f'on (MIN_ELEMENTS {_workspace.MIN_ELEMENTS})'}"
    )
    with tempfile.TemporaryDirectory(prefix="alloc_per_step_") as tmp:
        for recipe in args.recipes:
            step = make_step(recipe, Path(tmp), args.cell, args.layers, args.optimizer)
            for _ in range(args.warmup):
                step()
            faults = minor_faults(step, args.steps)
            tracemalloc.start(1)
            try:
                step()  # tracemalloc's own tables warm up
                rises = peak_increase(step, args.steps)
                lines = allocating_lines(step, int(args.min_kib * 1024)) if args.list else {}
            finally:
                tracemalloc.stop()
            print(
                f"{recipe} ({args.cell} x{args.layers}): minor faults per warm step median "
                f"{statistics.median(faults):.0f} "
                f"[{min(faults)}-{max(faults)}]; tracemalloc peak increase median "
                f"{statistics.median(rises) / 1024:.1f} KiB [{min(rises) / 1024:.1f}-"
                f"{max(rises) / 1024:.1f}] over {args.steps} steps"
            )
            for line, size in sorted(lines.items(), key=lambda kv: -kv[1]):
                print(f"    {size / 1024:9.1f} KiB  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
