"""Speed of one forward + BPTT step for each cell, bptt against PyTorch, each in its own process.

    python benchmarks/bench_cells.py                          # elman, gru, lstm at the charlm shape
    python benchmarks/bench_cells.py --cells lstm --rounds 7 --threads 2 --markdown out.md

A step is the loss and every gradient at the charlm shape (T = 100, B = 32, 65 token ids,
H = 256, 65 classes, softmax + cross-entropy at every step, float32):

    bptt:    model.loss_and_grads(x, y)
    PyTorch: nn.RNN/GRU/LSTM + nn.Linear + F.cross_entropy(reduction="sum") / B, backward()
             (the same weights, through bptt.interop.to_torch; inputs one-hot, built once)

Each measurement is a fresh process (``--child``) that first checks that both give the same
loss (float32, 1e-4 relative), warms up, then times ``--steps`` steps and prints the per-step
seconds. Rounds alternate which framework goes first; the table gives the median over rounds of
each round's median, the spread (min–max of the round medians), the ratio PyTorch / bptt
(> 1: bptt faster) and the load average before and after. BLAS/OpenMP threads are set to
``--threads`` for both (environment variables and torch.set_num_threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(HERE))

T, B, K, H = 100, 32, 65, 256


def child(framework: str, cell: str, steps: int, threads: int) -> None:
    import numpy as np
    import torch

    import bptt
    from bptt.interop import to_torch

    torch.set_num_threads(threads)
    model = bptt.RNN(K, H, K, cell=cell, seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    x = rng.integers(0, K, (T, B))
    y = rng.integers(0, K, (T, B))
    rnn, head = to_torch(model)
    xt = torch.nn.functional.one_hot(torch.from_numpy(x), K).float()
    yt = torch.from_numpy(y).reshape(-1)
    params = [*rnn.parameters(), *head.parameters()]

    def torch_step() -> float:
        for q in params:
            q.grad = None
        out, _ = rnn(xt)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, K), yt, reduction="sum")
        loss = loss / B
        loss.backward()
        return float(loss.detach())

    def bptt_step() -> float:
        return model.loss_and_grads(x, y)[0]

    ours, theirs = bptt_step(), torch_step()
    assert abs(ours - theirs) <= 1e-4 * abs(theirs), (ours, theirs)
    step = bptt_step if framework == "bptt" else torch_step
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"median": statistics.median(times), "times": times}))


def measure(framework: str, cell: str, steps: int, threads: int) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    cmd = [sys.executable, __file__, "--child", framework, cell, str(steps), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["median"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        framework, cell, steps, threads = sys.argv[2:6]
        child(framework, cell, int(steps), int(threads))
        return
    from _machine import report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="elman,gru,lstm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    rows = [
        f"charlm shape T{T} B{B} {K} ids H{H} O{K}, float32, {args.threads} thread(s); "
        f"median of {args.rounds} rounds (each a fresh process, median of {args.steps} steps)",
        "",
        "| cell | bptt ms (spread) | PyTorch ms (spread) | PyTorch / bptt | load before → after |",
        "|---|---|---|---|---|",
    ]
    for cell in args.cells.split(","):
        before = " ".join(f"{v:.1f}" for v in os.getloadavg())
        got: dict[str, list[float]] = {"bptt": [], "torch": []}
        for r in range(args.rounds):
            for framework in ("bptt", "torch") if r % 2 == 0 else ("torch", "bptt"):
                got[framework].append(measure(framework, cell, args.steps, args.threads))
        after = " ".join(f"{v:.1f}" for v in os.getloadavg())
        med = {k: statistics.median(v) for k, v in got.items()}
        spread = {k: f"{1e3 * min(v):.0f}–{1e3 * max(v):.0f}" for k, v in got.items()}
        rows.append(
            f"| {cell} | {1e3 * med['bptt']:.1f} ({spread['bptt']}) | "
            f"{1e3 * med['torch']:.1f} ({spread['torch']}) | {med['torch'] / med['bptt']:.2f} | "
            f"{before} → {after} |"
        )
        print(rows[-1], flush=True)
    report("\n".join(rows), args.markdown)


if __name__ == "__main__":
    main()
