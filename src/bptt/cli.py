"""The ``bptt`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .activations import ACTIVATIONS
from .heads import HEADS
from .inspect_cli import add_inspect_parser
from .model import ElmanRNN


def _add_gradcheck(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="verify the hand-written BPTT gradients (finite differences, seed formula)",
        description="Build a random float64 model and batch, and report the largest relative "
        "error of each parameter's gradient against central finite differences and against "
        "the literal seed formula. Exits 1 if any error is above --tolerance.",
    )
    p.add_argument("--input-size", type=int, default=5, help="I (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=8, help="H (default: %(default)s)")
    p.add_argument("--output-size", type=int, default=4, help="O (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=12, help="T (default: %(default)s)")
    p.add_argument("--batch", type=int, default=3, help="B (default: %(default)s)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--output", choices=sorted(HEADS), default="softmax")
    p.add_argument("--ids", action="store_true", help="feed integer token ids instead of floats")
    p.add_argument("--tolerance", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_gradcheck)


def _run_gradcheck(args: argparse.Namespace) -> int:
    from .gradcheck import gradcheck

    model = ElmanRNN(
        args.input_size,
        args.hidden,
        args.output_size,
        hidden_activation=args.activation,
        output=args.output,
        seed=args.seed,
    )
    rng = np.random.default_rng(args.seed + 1)
    shape_tb = (args.seq_len, args.batch)
    x: np.ndarray
    y: np.ndarray
    if args.ids:
        x = rng.integers(0, args.input_size, size=shape_tb)
    else:
        x = rng.standard_normal((*shape_tb, args.input_size))
    if args.output == "softmax":
        y = rng.integers(0, args.output_size, size=shape_tb)
    elif args.output == "sigmoid":
        y = (rng.random((*shape_tb, args.output_size)) < 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((*shape_tb, args.output_size))
    h0 = 0.5 * rng.standard_normal((args.batch, args.hidden))
    print(model)
    print(f"T={args.seq_len} B={args.batch} inputs={'ids' if args.ids else 'dense'}")
    report = gradcheck(model, x, y, h0, tolerance=args.tolerance, seed=args.seed)
    print(report.format())
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bptt",
        description="Train and inspect Elman RNNs with explicit backpropagation through time.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_gradcheck(subparsers)
    add_inspect_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as err:
        print(f"bptt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
