"""Issue 23's first target at its shape: a memory budget of 1% of full storage's peak against
full storage (T = 20,000, B = 16, H = 256, I = O = 32, float32, Elman), one process per mode.

    python benchmarks/budget_one_percent.py full                # prints full storage's peak
    python benchmarks/budget_one_percent.py budget PEAK_BYTES   # 1% of that peak

Each prints the plan (budget mode), the median seconds per step over 3 steps after a warm-up,
and the tracemalloc peak of one more step (which must stay within the budget).
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

import numpy as np

import bptt
from bptt import _workspace
from bptt.algorithms.budget import plan

T, B, H, I, O = 20_000, 16, 256, 32, 32


def main() -> None:
    rng = np.random.default_rng(0)
    model = bptt.ElmanRNN(I, H, O, "tanh", "softmax", seed=0, dtype=np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = rng.integers(0, O, (T, B))
    mode = sys.argv[1]
    kw = {} if mode == "full" else {"memory_budget": int(0.01 * float(sys.argv[2]))}
    if kw:
        print(plan(model, T, B, kw["memory_budget"], ids=False))
    model.loss_and_grads(x[:200], y[:200])  # compile and warm the loops
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.loss_and_grads(x, y, **kw)
        times.append(time.perf_counter() - start)
    _workspace.clear()  # the pool's buffers are allocated again, under the trace
    gc.collect()
    tracemalloc.start()
    model.loss_and_grads(x, y, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    median = float(np.median(times))
    print(f"{mode}: median {median:.3f} s/step, peak {peak} bytes ({peak / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
