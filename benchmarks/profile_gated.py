"""Where the time of one GRU or LSTM step goes at the charlm shape: each phase timed alone.

    python benchmarks/profile_gated.py                       # gru and lstm, wall clock
    python benchmarks/profile_gated.py --cells lstm --cpu    # this process's CPU time

The phases are the calls ``RNN.forward_backward`` makes for one layer (the cell's forward and
backward, the output head), each timed on its own (median of ``--reps``), with the GFLOP/s of
the matrix products in it: the forward loop does one (B, H) × (H, kH) product per step, the
backward loop one (B, kH) × (kH, H) per step and then dW over all T·B rows (k = 3 for the GRU,
4 for the LSTM). ``--cpu`` times with the process's CPU clock instead of the wall clock: on a
machine shared with other jobs and with one thread (``OPENBLAS_NUM_THREADS=1``) it is far less
noisy, since waiting for a core does not count. Run it with PYTHONPATH pointing at another
checkout's ``src`` to profile that version (the phases use only the cell protocol).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(HERE.parent / "src"))

import bptt  # noqa: E402
from bptt import _kernels, heads  # noqa: E402

T, B, K, H = 100, 32, 65, 256


def median_ms(fn: Callable[[], object], reps: int, clock: Callable[[], float]) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        times.append(clock() - start)
    return 1e3 * statistics.median(times)


def profile(cell: str, reps: int, clock: Callable[[], float]) -> list[tuple[str, float, float]]:
    model = bptt.RNN(K, H, K, cell=cell, seed=0, dtype=np.float32)
    layer = model.layers[0]
    c, p = layer.cell, layer.take(model.params)
    k = p["W"].shape[0] // H
    rng = np.random.default_rng(0)
    x = rng.integers(0, K, (T, B))
    y = rng.integers(0, K, (T, B))
    s0 = np.zeros((B, c.state_size), np.float32)
    weights = {"U": model.params["U"], "b_y": model.params["b_y"]}  # as model.py
    weight = np.full((T, B), 1.0 / B, np.float32)
    top, _, cache = c.forward(p, x, s0)

    def head() -> np.ndarray:
        z = heads.output_forward(weights, top)
        _, dz = model.head.loss_and_dz(z, y, weight)
        return heads.output_backward(dz, top, weights)[2]

    dh = head()
    gemm = 2.0 * T * B * H * k * H  # flops of one of the three big products
    dA = rng.standard_normal((T * B, k * H)).astype(np.float32)
    hs = np.ascontiguousarray(top.reshape(T * B, H))
    phases: list[tuple[str, Callable[[], object], float]] = [
        ("whole step (loss_and_grads)", lambda: model.loss_and_grads(x, y), 3 * gemm),
        ("cell forward: input gather + time loop", lambda: c.forward(p, x, s0), gemm),
        ("head: U h + b_y, softmax + cross-entropy, dU, db_y, Uᵀ dz", head, 0.0),
        (
            "cell backward: time loop, dW, dV, db",
            lambda: c.backward(dh.copy(), cache, p, None, need_dx=False),
            2 * gemm,
        ),
        ("dW alone (one GEMM over T·B rows)", lambda: _kernels.matmul_tn(dA, hs), gemm),
    ]
    rows = [(name, median_ms(fn, reps, clock), flops) for name, fn, flops in phases]
    return [(name, ms, flops / ms / 1e6 if flops else 0.0) for name, ms, flops in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="gru,lstm")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--cpu", action="store_true", help="time with the process CPU clock")
    args = parser.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    for cell in args.cells.split(","):
        print(f"{cell} T{T} B{B} {K} ids H{H}, float32, {'CPU' if args.cpu else 'wall'} ms")
        print("| phase | ms | GFLOP/s |\n|---|---|---|")
        for name, ms, rate in profile(cell, args.reps, clock):
            print(f"| {name} | {ms:.2f} | {f'{rate:.0f}' if rate else '-'} |")
        print()
    print("load average (1/5/15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
