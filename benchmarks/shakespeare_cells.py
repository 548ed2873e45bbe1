"""Training results beside PyTorch: tiny Shakespeare for elman, gru and lstm, both frameworks.

    python benchmarks/shakespeare_cells.py                         # 3 cells × 2 frameworks
    python benchmarks/shakespeare_cells.py --cells lstm --markdown out.md

The recipe of the README (H = 256, B = 32 streams, T = 100, Adam 2e-3, global-norm clip 5,
float32, 90/10 split by position, 2,000 steps, validation on the whole held-out split every
500 steps). bptt runs ``bptt train``; PyTorch runs ``shakespeare_torch_reference.py`` (nn.RNN,
nn.GRU, nn.LSTM on the same streams). Each run is its own fresh process, frameworks
alternated; the load average is recorded before and after each run. The table gives the
validation loss at steps 500/1000/1500/2000 and the difference bptt − PyTorch (the issue's
check: within 0.03 nats at each). Wall-clock times are printed but are not a speed benchmark
(evaluation included, other processes on the machine); see ``bench_cells.py`` for speed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(HERE))

from _machine import report  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
STEP_RE = re.compile(r"step (\d+): val_loss (\d+\.\d+)")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def run(cmd: list[str]) -> tuple[dict[int, float], float, str]:
    """Run one training process; its validation losses by step, wall seconds, the loads.

    One BLAS/OpenMP thread for both frameworks (the loss curves do not depend on it; on a
    shared machine more threads only wait for each other)."""
    before = load()
    start = time.perf_counter()
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **threads}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    losses = {int(s): float(v) for s, v in STEP_RE.findall(proc.stdout)}
    return losses, wall, f"{before} → {load()}"


def bptt_cmd(cell: str, steps: int, every: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "bptt", "train", "--text", str(DATA), "--val-fraction", "0.1",
        "--cell", cell, "--hidden", "256", "--seq-len", "100", "--batch", "32",
        "--steps", str(steps), "--optimizer", "adam", "--lr", "2e-3", "--clip", "5",
        "--dtype", "float32", "--eval-every", str(every), "--sample-every", "0",
        "--checkpoint-every", "1000000", "--no-progress", "--no-plot", "--seed", "0",
        "--out", str(out),
    ]  # fmt: skip


def torch_cmd(cell: str, steps: int, every: int, same_init: bool) -> list[str]:
    return [
        sys.executable, str(HERE / "shakespeare_torch_reference.py"), "--cell", cell,
        "--steps", str(steps), "--eval-every", str(every), "--threads", "1",
        *(["--same-init"] if same_init else []),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="elman,gru,lstm")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument(
        "--same-init",
        action="store_true",
        help="PyTorch starts from bptt's initial weights (else its own draw)",
    )
    args = parser.parse_args()
    if not DATA.is_file():
        sys.exit(f"tiny Shakespeare not found at {DATA}")
    cells = args.cells.split(",")
    checkpoints = list(range(args.eval_every, args.steps + 1, args.eval_every))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, cell in enumerate(cells):
            order = ("bptt", "torch") if k % 2 == 0 else ("torch", "bptt")  # alternate
            results = {}
            for framework in order:
                cmd = (
                    bptt_cmd(cell, args.steps, args.eval_every, Path(tmp) / cell)
                    if framework == "bptt"
                    else torch_cmd(cell, args.steps, args.eval_every, args.same_init)
                )
                results[framework] = run(cmd)
                losses, wall, loads = results[framework]
                print(f"{cell} {framework}: {losses} in {wall:.0f} s (load {loads})", flush=True)
            for step in checkpoints:
                ours, theirs = results["bptt"][0].get(step), results["torch"][0].get(step)
                diff = "-" if ours is None or theirs is None else f"{ours - theirs:+.4f}"
                rows.append(f"| {cell} | {step} | {ours} | {theirs} | {diff} |")
            for framework in ("bptt", "torch"):
                _, wall, loads = results[framework]
                rows.append(f"| {cell} | wall | {framework}: {wall:.0f} s | load {loads} | |")
    table = "\n".join(
        [
            "| cell | step | bptt val loss | PyTorch val loss | bptt − PyTorch |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    report(table, args.markdown)


if __name__ == "__main__":
    main()
