"""``bptt tune``: measure the time loops' choices for common shapes now (:mod:`bptt.tuning`)."""

from __future__ import annotations

import argparse

import numpy as np

from .. import _kernels, tuning

Shape = tuple[str, int, int, str]


def parse_shape(text: str) -> Shape:
    """``CELL,B,H[,DTYPE]`` → (cell, B, H, dtype); dtype float32 by default."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"--shape must be CELL,B,H[,DTYPE] (e.g. elman,32,256,float32), got {text!r}"
        )
    cell, batch, hidden = parts[0], parts[1], parts[2]
    dtype = parts[3] if len(parts) == 4 else "float32"
    if cell not in tuning.CELLS:
        raise argparse.ArgumentTypeError(
            f"--shape cell must be one of {tuning.CELLS}, got {cell!r}"
        )
    if not (batch.isdigit() and hidden.isdigit() and int(batch) > 0 and int(hidden) > 0):
        raise argparse.ArgumentTypeError(
            f"--shape B and H must be positive integers, got {batch!r} and {hidden!r}"
        )
    if dtype not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(f"--shape dtype must be float32 or float64, got {dtype!r}")
    return cell, int(batch), int(hidden), dtype


def add_tune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune",
        help="measure the time loops' fastest choices on this machine now",
        description="Measure, for each shape, the time loops' candidates (per-row or sharded "
        "loops, shard count, the Elman product's layout, NumPy's BLAS or MKL) on the real "
        "loops, keep the fastest in this machine's tuning cache and print the choices. "
        "The loops follow these choices from then on (the built-in defaults for a shape not "
        "measured); BPTT_TUNE=1 also measures a new shape the first time a run meets it, and "
        "BPTT_TUNE=0 ignores the choices. Run it on a quiet machine: a choice is kept.",
    )
    p.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        metavar="CELL,B,H[,DTYPE]",
        help="a shape to measure (repeatable); default: the benchmark shapes and the README's",
    )
    p.add_argument("--force", action="store_true", help="measure again even where cached")
    p.add_argument("--show", action="store_true", help="print the cached choices; measure nothing")
    p.set_defaults(func=run_tune)
    return p


def run_tune(args: argparse.Namespace) -> int:
    if _kernels.sharding_gemms() is None:
        raise ImportError(
            "nothing to tune: the compiled loops need Numba, threadpoolctl and NumPy's CBLAS "
            f"({_kernels.sharding_error()})"
        )
    machine = tuning.machine_key()
    print(f"cache: {tuning.cache_path()}")
    print(f"CPU: {machine['cpu']}; cores used: {_kernels.available_cores()}")
    print(f"BLAS: {'; '.join(machine['blas']) or 'unknown'}")
    mkl = "" if "mkl" in machine["providers"] else f" (mkl: {_kernels.mkl_error()})"
    print(f"GEMM providers: {', '.join(machine['providers'])}{mkl}")
    if not tuning.enabled():
        print("note: BPTT_TUNE=0 is set, so the loops use the defaults, not these choices")
    if args.show:
        entries = tuning.read_cache()
        if not entries:
            print("no cached choices")
        for key, entry in sorted(entries.items()):
            print(f"{key:32s} {entry.choice.describe():40s} (default: {entry.default.describe()})")
        return 0
    shapes: list[Shape] = args.shape or list(tuning.COMMON_SHAPES)
    print(f"{'shape class':32s} {'choice':40s} {'ms':>8s} {'default ms':>10s}")
    for cell, batch, hidden, dtype in shapes:
        result = tuning.tuned(cell, batch, hidden, np.dtype(dtype), force=args.force)
        key = tuning.shape_key(cell, batch, hidden, np.dtype(dtype))
        chosen = result.seconds.get(result.choice.describe(), float("nan")) * 1e3
        default = result.seconds.get(result.default.describe(), float("nan")) * 1e3
        print(f"{key:32s} {result.choice.describe():40s} {chosen:8.3f} {default:10.3f}")
    return 0
