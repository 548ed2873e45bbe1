"""``bptt plan``: the recompute schedule that BPTT under a memory budget would run, not run.

Builds the model from the sizes given (no weights are trained; its bytes per step are measured
on a few short sweeps) and prints :func:`bptt.algorithms.budget.plan`'s schedule: blocks,
checkpoint slots, forward steps recomputed, predicted peak memory and time against full storage.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..algorithms.budget import plan
from ..cells import CELLS
from ..heads import HEADS
from ..model import build_model


def add_plan_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plan",
        help="show the recompute schedule for a memory budget (a dry run of --memory-budget)",
        description="Print the schedule that exact BPTT under --memory-budget runs for a "
        "model and a sequence shape: blocks, checkpoint slots, forward steps recomputed, "
        "predicted peak memory and predicted time relative to full storage. Nothing is "
        "trained. A budget that no schedule fits is refused, naming the smallest that works.",
    )
    p.add_argument(
        "--memory-budget", required=True, metavar="BYTES", help="e.g. 200MB, 1.5GiB, 4096"
    )
    p.add_argument("--seq-len", type=int, default=50, metavar="T", help="steps per sequence")
    p.add_argument("--batch", type=int, default=32, metavar="B", help="sequences per batch")
    p.add_argument("--hidden", type=int, default=256, metavar="H", help="units per layer")
    p.add_argument("--cell", default="elman", choices=tuple(CELLS), help="recurrent cell")
    p.add_argument("--layers", type=int, default=1, metavar="L", help="stacked layers")
    p.add_argument(
        "--input-size", type=int, default=65, metavar="I", help="features, or vocabulary size"
    )
    p.add_argument("--output-size", type=int, default=65, metavar="O", help="outputs or classes")
    p.add_argument("--output", default="softmax", choices=tuple(HEADS), help="the head")
    p.add_argument(
        "--ids",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="inputs are (T, B) token ids (--no-ids: dense (T, B, I) floats)",
    )
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.set_defaults(func=run_plan)
    return p


def run_plan(args: argparse.Namespace) -> int:
    for name in ("seq_len", "batch", "hidden", "layers", "input_size", "output_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    model = build_model(
        input_size=args.input_size,
        hidden_size=args.hidden,
        output_size=args.output_size,
        cell=args.cell,
        num_layers=args.layers,
        output=args.output,
        dtype=np.dtype(args.dtype),
    )
    schedule = plan(model, args.seq_len, args.batch, args.memory_budget, ids=args.ids)
    print(model)
    print(f"T={args.seq_len} B={args.batch} inputs={'ids' if args.ids else 'dense'}")
    print(schedule.summary())
    return 0
