"""``bptt sweep``: many training runs on Ray Tune (the driver: :mod:`bptt.sweep`)."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..sweep import INTERRUPTED_EXIT, report, run


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bptt sweep`` on the ``bptt`` command's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="run many training runs (grid, seeds, ASHA, PBT) on Ray Tune",
        description="Run the trials of a sweep spec (a TOML file: [base] TrainConfig fields, "
        "[space] the searched fields, [sweep] seeds, metric, parallel, scheduler) as bptt runs "
        "under --out, on this machine's cores or an existing Ray cluster (--address), and "
        "write sweep.csv, summary.md and sweep.png. Needs the extra: pip install "
        "'bptt[sweep]'. See docs/sweeps.md.",
    )
    p.add_argument("spec", nargs="?", metavar="SPEC.toml", help="the sweep spec")
    p.add_argument("--out", default="runs/sweep", help="the sweep directory (default: %(default)s)")
    p.add_argument(
        "--address", default=None, help="a running Ray cluster (default: start Ray locally)"
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="cores of the local Ray (default: all)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted sweep in --out; finished trials are not rerun",
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="only rebuild sweep.csv, summary.md and sweep.png of the sweep in DIR",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print Ray Tune's progress tables while the sweep runs (default: off)",
    )
    p.set_defaults(func=_run_sweep_cli)
    return p


def _run_sweep_cli(args: argparse.Namespace) -> int:
    if args.report is not None:
        if args.spec is not None or args.resume:
            raise ValueError("--report DIR takes no SPEC.toml and no --resume")
        report(args.report)
        return 0
    if args.spec is None:
        raise ValueError("give a SPEC.toml (or --report DIR)")
    if args.quiet and args.verbose:
        raise ValueError("--quiet and --verbose contradict each other: give one")
    result = run(
        args.spec,
        out=args.out,
        address=args.address,
        resume=args.resume,
        num_cpus=args.num_cpus,
        verbose=not args.quiet,
        progress=args.verbose,
    )
    if args.quiet:
        print(result.table, end="")
    if result.interrupted:
        again = ["bptt", "sweep", args.spec, "--out", args.out, "--resume"]
        if args.address is not None:
            again += ["--address", args.address]
        print(
            "bptt sweep: interrupted; the finished trials are kept and the interrupted ones "
            f"continue from their last checkpoint with:\n  {shlex.join(again)}",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    return 0
