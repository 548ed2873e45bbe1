"""Data-parallel training (--workers N): the step time and the all-reduce time against the
gradient's size, measured for 1 and 2 workers, projected for 8 and 64.

    python benchmarks/bench_data_parallel.py                     # H = 32, 128, 512
    python benchmarks/bench_data_parallel.py --hidden 16 --reps 2 --steps 2   # seconds
    python benchmarks/bench_data_parallel.py --bandwidth 1.25 --latency 50    # 10 Gbit/s

For each hidden size H (a charlm Elman model: P = H² + 2·H·V + … parameters, V = 96):

- 1 worker: one process, the gradient of the whole batch (T = 50, B = --batch) by ``bptt``;
- 2 workers: two processes joined by torch.distributed (gloo on 127.0.0.1: the engine Ray
  Train sets up for ``--workers 2``, without Ray's start-up), each computing its half of the
  batch with :class:`bptt.training.parallel.ShardedGradient`: the step (its share's gradient
  plus the all-reduce of the P-number gradient) and the all-reduce alone are timed, medians
  over ``--steps`` steps, best of ``--reps`` repetitions.

On paper, for N workers on a network of bandwidth β (GB/s) and latency α (µs), a ring
all-reduce of P numbers of s bytes takes t_N = 2(N−1)·α + 2·(N−1)/N · P·s/β, and the step
t_1/N + t_N, so the projected speed-up is t_1 / (t_1/N + t_N). It assumes the gradient's time
shrinks as 1/N with the share (BLAS loses efficiency on small shares) and the network is the
only cost of the reduce (the slowest worker sets the pace).

What a 2-core machine can and cannot show: 2 workers on 2 cores can show the all-reduce's
cost on loopback (memory copies and gloo's protocol, no network) and whether the two halves
run side by side; they cannot show a speed-up over one process whose BLAS already used both
cores, nor anything about 8 or 64 workers or a real network: those rows are arithmetic,
from the measured 1-worker step and the β, α given. Time it on a quiet machine (the load
average is printed before and after).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from _harness import load_average  # noqa: E402
from _machine import report  # noqa: E402

T, VOCAB = 50, 96


def _setup(hidden: int, batch: int) -> tuple[Any, Any, Any]:
    """A charlm-shaped float32 Elman model, bptt on ``batch`` streams, a batch of ids."""
    from bptt import algorithms
    from bptt.data.tasks import Batch
    from bptt.model import build_model

    model = build_model(
        input_size=VOCAB,
        hidden_size=hidden,
        output_size=VOCAB,
        output="softmax",
        seed=0,
        dtype=np.float32,  # bptt train's default
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, size=(T, batch))
    y = rng.integers(0, VOCAB, size=(T, batch))
    alg = algorithms.make("bptt", model, batch=batch)
    return model, alg, Batch(x, y, None)


def one_worker(hidden: int, batch: int, steps: int) -> float:
    """Median seconds of one process's gradient of the whole batch."""
    _, alg, data = _setup(hidden, batch)
    alg.gradient(data, restart=True)  # warm-up (pools, kernels)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        alg.gradient(data, restart=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _worker(
    rank: int, world: int, port: int, hidden: int, batch: int, steps: int, out: str
) -> None:
    import torch.distributed as dist

    from bptt.training import TrainConfig
    from bptt.training.parallel import ShardedGradient, TorchCollective

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        _, alg, data = _setup(hidden, batch)
        cfg = TrainConfig(task="charlm", hidden=hidden, batch=batch, seq_len=T, workers=world)
        sharded = ShardedGradient(alg, cfg, TorchCollective())
        sharded.gradient(data, restart=True)  # warm-up: pools, kernels, gloo's pairs
        step, reduce = [], []
        for _ in range(steps):
            r0 = sharded.reduce_seconds
            dist.barrier()
            t0 = time.perf_counter()
            sharded.gradient(data, restart=True)
            step.append(time.perf_counter() - t0)
            reduce.append(sharded.reduce_seconds - r0)
        if rank == 0:
            Path(out).write_text(f"{statistics.median(step)} {statistics.median(reduce)}")
    finally:
        dist.destroy_process_group()


def two_workers(hidden: int, batch: int, steps: int) -> tuple[float, float]:
    """(median step seconds, median all-reduce seconds) of 2 gloo workers on loopback."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times")
        mp.spawn(_worker, args=(2, port, hidden, batch, steps, out), nprocs=2, join=True)
        step, reduce = (float(v) for v in Path(out).read_text().split())
    return step, reduce


def ring_seconds(
    n: int, numbers: int, itemsize: int, bandwidth_gbs: float, latency_us: float
) -> float:
    """A ring all-reduce of ``numbers`` values on N workers: 2(N−1)α + 2(N−1)/N·P·s/β."""
    if n == 1:
        return 0.0
    return 2 * (n - 1) * latency_us * 1e-6 + 2 * (n - 1) / n * numbers * itemsize / (
        bandwidth_gbs * 1e9
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=3, help="repetitions (best median kept)")
    p.add_argument("--bandwidth", type=float, default=1.25, help="β, GB/s (1.25: 10 Gbit/s)")
    p.add_argument("--latency", type=float, default=50.0, help="α, µs per message")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)

    before = load_average()
    rows = [
        "| H | P (gradient numbers) | 1 worker step | 2 workers step | 2 workers all-reduce "
        "(loopback) | share | projected speed-up N=2 / 8 / 64 |",
        "|---|---|---|---|---|---|---|",
    ]
    for hidden in args.hidden:
        model, _, _ = _setup(hidden, args.batch)
        numbers, itemsize = model.n_parameters(), model.dtype.itemsize
        t1 = min(one_worker(hidden, args.batch, args.steps) for _ in range(args.reps))
        two = min(two_workers(hidden, args.batch, args.steps) for _ in range(args.reps))
        t2, reduce2 = two
        speedups = [
            t1 / (t1 / n + ring_seconds(n, numbers, itemsize, args.bandwidth, args.latency))
            for n in (2, 8, 64)
        ]
        rows.append(
            f"| {hidden} | {numbers:,} | {t1 * 1e3:.2f} ms | {t2 * 1e3:.2f} ms | "
            f"{reduce2 * 1e3:.3f} ms | {reduce2 / t2:.0%} | "
            + " / ".join(f"{s:.1f}×" for s in speedups)
            + " |"
        )
    text = "\n".join(
        [
            f"Data-parallel step, charlm Elman, T = {T}, global batch {args.batch}, "
            f"{model.dtype} gradients; projection: β = {args.bandwidth:g} GB/s, "
            f"α = {args.latency:g} µs (ring all-reduce), compute ∝ 1/N.",
            "",
            *rows,
            "",
            f"load average before: {before}, after: {load_average()} (well under 1 per core, "
            "or the numbers mean little). On 2 cores the 2-worker row shows the all-reduce's "
            "loopback cost, not a speed-up; the N = 8, 64 columns are arithmetic.",
        ]
    )
    report(text, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
