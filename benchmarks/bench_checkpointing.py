"""Checkpointed (recompute) BPTT against full storage: peak memory and time of one step.

    python benchmarks/bench_checkpointing.py            # T=20000 B=16 H=256, I=32 floats, O=32

Problem: tanh hidden, softmax + cross-entropy at every step over O = 32 classes, inputs
32 N(0,1) floats, float32 (the issue fixes T, B, H; I and O are chosen here, small, so that the
hidden state dominates memory as it does in long-sequence work).

Order: validate (checkpointed loss and gradients equal full BPTT's to float32 rounding), then
time (median of interleaved repetitions), then peak memory of one step in a fresh process for
each schedule: tracemalloc (NumPy reports its buffers to it) and the RSS high-water mark
minus the RSS before the step (``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _machine import report  # noqa: E402

import bptt  # noqa: E402
from bptt.algorithms.recompute import segment_length  # noqa: E402


def problem(T: int, B: int, H: int, I: int, O: int) -> tuple[bptt.ElmanRNN, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    model = bptt.ElmanRNN(I, H, O, "tanh", "softmax", seed=0, dtype=np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = rng.integers(0, O, size=(T, B))
    return model, x, y


def parse_checkpoint(text: str) -> bool | int:
    """ "False" / "True" / a segment length, as given on the command line."""
    return {"False": False, "True": True}[text] if text in ("False", "True") else int(text)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(dims: list[int], checkpoint: str) -> dict[str, float]:
    T, B, H, I, O = dims
    ck = parse_checkpoint(checkpoint)
    model, x, y = problem(T, B, H, I, O)
    model.loss_and_grads(x[:4], y[:4], checkpoint=2)  # loads and compiles what is needed
    tracemalloc.start()
    model.loss_and_grads(x, y, checkpoint=ck)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    model.loss_and_grads(x, y, checkpoint=ck)
    return {"tracemalloc_mib": traced, "rss_mib": (_rss_kib("VmHWM") - before) / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, default=20_000)
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--I", type=int, default=32)
    parser.add_argument("--O", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--segments", nargs="*", default=["True", "50", "500"])
    parser.add_argument("--markdown", type=Path, help="write machine info + table here")
    parser.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        *dims, ck = args.memory_child
        print(json.dumps(memory_child([int(d) for d in dims], ck)))
        return 0
    dims = [args.T, args.B, args.H, args.I, args.O]
    model, x, y = problem(*dims)
    schedules: list[str] = ["False", *args.segments]

    # validate
    loss, grads = model.loss_and_grads(x, y)
    for s in schedules[1:]:
        loss_c, grads_c = model.loss_and_grads(x, y, checkpoint=parse_checkpoint(s))
        assert abs(loss_c - loss) <= 1e-4 * abs(loss), (s, loss_c, loss)
        for name, g in grads.items():
            err = float(np.linalg.norm(getattr(grads_c, name) - g) / np.linalg.norm(g))
            assert err < 1e-4, (s, name, err)  # sums over T·B = 320,000 rows, float32
    print(f"validated: checkpointed == full BPTT (float32, rel err < 1e-4) for {schedules[1:]}")

    times: dict[str, list[float]] = {s: [] for s in schedules}
    for _ in range(args.reps):
        for s in schedules:
            start = time.perf_counter()
            model.loss_and_grads(x, y, checkpoint=parse_checkpoint(s))
            times[s].append(time.perf_counter() - start)
    mem = {}
    for s in schedules:
        cmd = [sys.executable, __file__, "--memory-child", *map(str, dims), s]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        mem[s] = json.loads(out.strip().splitlines()[-1])

    T = args.T
    base_t = statistics.median(times["False"])
    base_m = mem["False"]
    lines = [
        f"T={T} B={args.B} H={args.H} I={args.I} floats O={args.O} softmax, float32, "
        f"median of {args.reps}",
        "",
        "| schedule | segment K | s/step | time vs full | peak MiB (tracemalloc) "
        "| vs full | peak MiB (RSS delta) | vs full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in schedules:
        k = segment_length(T, parse_checkpoint(s))
        t = statistics.median(times[s])
        m = mem[s]
        frac_traced = 100 * m["tracemalloc_mib"] / base_m["tracemalloc_mib"]
        frac_rss = 100 * m["rss_mib"] / max(base_m["rss_mib"], 1e-9)
        name = "full storage" if s == "False" else f"checkpoint={s}"
        lines.append(
            f"| {name} | {k or T} | {t:.3f} | {t / base_t:.2f}× "
            f"| {m['tracemalloc_mib']:.1f} | {frac_traced:.1f}% "
            f"| {m['rss_mib']:.1f} | {frac_rss:.1f}% |"
        )
    text = "\n".join(lines)
    report(text, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
