"""One forward + BPTT step, bptt (NumPy) against PyTorch in the same process.

    python benchmarks/bench_step.py                       # all four shapes, prints the table
    python benchmarks/bench_step.py --markdown docs/benchmarks.md   # also writes the table

A step is the loss and every gradient of an Elman RNN (tanh hidden, softmax + cross-entropy at
every step, loss summed over t and averaged over B), float32:

    bptt:    loss, grads = model.loss_and_grads(x, y)            (the public API)
    PyTorch: nn.RNN + nn.Linear + F.cross_entropy(reduction="sum") / B, then loss.backward()

For each shape the script first *validates* (both give the same loss and gradients, float64 to
1e-9 and float32 to a norm-wise 2e-4), then times several interleaved repetitions and quotes the
median, then measures peak memory of one step in a fresh subprocess (see ``memory_child``).

Token-id inputs: bptt gathers rows of V (no one-hot product); PyTorch's nn.RNN takes dense
inputs, so it is fed the one-hot encoding, built once outside the timed region.

GFLOP/s counts only the matrix products of the step (elementwise work is not counted):
forward 2TB(IH + H² + HO), backward 2TB(H² + H² + HO + HO + IH), with the IH terms dropped
for token ids (a gather and a scatter-add, no product).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _machine import matmul_peak_gflops, report  # noqa: E402

import bptt  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    T: int
    B: int
    I: int
    H: int
    O: int
    ids: bool

    def flops(self) -> float:
        """Matrix-product flops of one forward + backward step."""
        T, B, I, H, O = self.T, self.B, self.I, self.H, self.O
        inp = 0 if self.ids else I * H
        return 2.0 * T * B * (2 * inp + 3 * H * H + 3 * H * O)

    def describe(self) -> str:
        inp = f"{self.I} ids" if self.ids else f"{self.I} floats"
        return f"T{self.T} B{self.B} {inp} H{self.H} O{self.O}"


SHAPES = {
    s.name: s
    for s in (
        Shape("minchar", 25, 1, 65, 100, 65, ids=True),
        Shape("charlm", 100, 32, 65, 256, 65, ids=True),
        Shape("dense", 50, 64, 128, 512, 128, ids=False),
        Shape("long", 1000, 16, 32, 128, 32, ids=False),
    )
}


# -- problems ---------------------------------------------------------------------------


def make_problem(
    shape: Shape, dtype: type, seed: int = 0
) -> tuple[bptt.ElmanRNN, np.ndarray, np.ndarray]:
    """A model and one batch: ids or N(0,1) floats in, class ids out."""
    rng = np.random.default_rng(seed)
    model = bptt.ElmanRNN(shape.I, shape.H, shape.O, "tanh", "softmax", seed=seed, dtype=dtype)
    if shape.ids:
        x = rng.integers(0, shape.I, size=(shape.T, shape.B))
    else:
        x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(dtype)
    y = rng.integers(0, shape.O, size=(shape.T, shape.B))
    return model, x, y


class TorchStep:
    """The same network in PyTorch, weights copied from the bptt model."""

    def __init__(self, model: bptt.ElmanRNN, x: np.ndarray, y: np.ndarray) -> None:
        import torch

        self.torch = torch
        p = model.params
        tdtype = torch.float32 if model.dtype == np.float32 else torch.float64
        H, I, O = model.hidden_size, model.input_size, model.output_size
        self.rnn = torch.nn.RNN(I, H, nonlinearity="tanh", dtype=tdtype)
        self.lin = torch.nn.Linear(H, O, dtype=tdtype)
        with torch.no_grad():
            self.rnn.weight_ih_l0.copy_(torch.from_numpy(p.V))
            self.rnn.weight_hh_l0.copy_(torch.from_numpy(p.W))
            self.rnn.bias_ih_l0.copy_(torch.from_numpy(p.b_h))
            self.rnn.bias_hh_l0.zero_()
            self.lin.weight.copy_(torch.from_numpy(p.U))
            self.lin.bias.copy_(torch.from_numpy(p.b_y))
        if x.ndim == 2:  # one-hot outside the timed region
            xt = torch.nn.functional.one_hot(torch.from_numpy(x), I).to(tdtype)
        else:
            xt = torch.from_numpy(x)
        self.x = xt.contiguous()
        self.y = torch.from_numpy(y.astype(np.int64)).reshape(-1)
        self.B = x.shape[1]
        self.params = [
            self.lin.weight,
            self.rnn.weight_ih_l0,
            self.rnn.weight_hh_l0,
            self.rnn.bias_ih_l0,
            self.lin.bias,
        ]

    def step(self) -> float:
        torch = self.torch
        for q in self.params:
            q.grad = None
        self.rnn.bias_hh_l0.grad = None
        hs, _ = self.rnn(self.x)  # (T, B, H)
        logits = self.lin(hs)  # (T, B, O)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), self.y, reduction="sum"
        ) / float(self.B)
        loss.backward()
        return float(loss.detach())

    def grads(self) -> dict[str, np.ndarray]:
        names = ("U", "V", "W", "b_h", "b_y")
        return {n: q.grad.detach().numpy().copy() for n, q in zip(names, self.params, strict=True)}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖b‖, tiny): norm-wise relative error, in float64."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), 1e-30))


def validate(shape: Shape) -> dict[str, float]:
    """Largest relative error of loss and gradients, bptt vs PyTorch, float64 and float32.

    Raises:
        AssertionError: a disagreement beyond 1e-9 (float64) or 2e-4 (float32).
    """
    worst: dict[str, float] = {}
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 2e-4)):
        model, x, y = make_problem(shape, dtype)
        loss, grads = model.loss_and_grads(x, y)
        ts = TorchStep(model, x, y)
        tloss = ts.step()
        tgrads = ts.grads()
        errs = {"loss": abs(loss - tloss) / abs(tloss)}
        for name, g in tgrads.items():
            mine = getattr(grads, name)
            assert mine.dtype == dtype, f"{name}: dtype {mine.dtype} != {np.dtype(dtype)}"
            errs[name] = rel_err(mine, g)
        worst[np.dtype(dtype).name] = max(errs.values())
        bad = {k: v for k, v in errs.items() if v > tol}
        assert not bad, f"{shape.name} {np.dtype(dtype).name}: bptt != torch beyond {tol}: {bad}"
    return worst


# -- timing -----------------------------------------------------------------------------


def _calls_per_rep(fn: Callable[[], object], target_s: float) -> int:
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(1, int(target_s / max(once, 1e-7)))


def time_both(shape: Shape, reps: int, target_s: float) -> tuple[list[float], list[float]]:
    """Per-step seconds, ``reps`` repetitions of each, numpy and torch interleaved."""
    model, x, y = make_problem(shape, np.float32)
    ts = TorchStep(model, x, y)

    def np_step() -> object:
        return model.loss_and_grads(x, y)

    for _ in range(3):  # warm up (and JIT compile where a kernel is used)
        np_step()
        ts.step()
    n_np = _calls_per_rep(np_step, target_s)
    n_t = _calls_per_rep(ts.step, target_s)
    t_np: list[float] = []
    t_t: list[float] = []
    for _ in range(reps):
        for fn, n, out in ((np_step, n_np, t_np), (ts.step, n_t, t_t)):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - start) / n)
    return t_np, t_t


# -- memory -----------------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(shape_name: str, framework: str) -> dict[str, float]:
    """Peak memory of one step, measured in a fresh process.

    RSS: reset the high-water mark (``echo 5 > /proc/self/clear_refs``), run one step, and
    report VmHWM minus the RSS just before; the same for both frameworks. A warm-up step on a
    tiny problem first loads libraries and JIT kernels, so they are not counted.
    tracemalloc (bptt only): NumPy reports its buffers to tracemalloc, torch does not.
    """
    shape = SHAPES[shape_name]
    tiny = Shape("tiny", 3, 2, shape.I, 4, shape.O, shape.ids)
    model, x, y = make_problem(tiny, np.float32)
    model.loss_and_grads(x, y)  # loads and compiles what the real step needs
    if framework == "torch":
        TorchStep(model, x, y).step()
    model, x, y = make_problem(shape, np.float32)
    run: Callable[[], object]
    if framework == "torch":
        run = TorchStep(model, x, y).step
    else:

        def run() -> object:
            return model.loss_and_grads(x, y)

    gc.collect()
    out: dict[str, float] = {}
    if framework == "bptt":
        tracemalloc.start()
        run()
        out["tracemalloc_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        gc.collect()
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    run()
    out["rss_mib"] = (_rss_kib("VmHWM") - before) / 1024
    return out


def measure_memory(shape: Shape, framework: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--memory-child", shape.name, framework]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report -----------------------------------------------------------------------------


def run(names: list[str], reps: int, target_s: float, memory: bool) -> list[dict[str, object]]:
    peak = matmul_peak_gflops()
    print(f"measured float32 matmul peak (2048³ sgemm, best of 5): {peak:.1f} GFLOP/s")
    rows = []
    for name in names:
        shape = SHAPES[name]
        worst = validate(shape)
        t_np, t_t = time_both(shape, reps, target_s)
        ms_np, ms_t = 1e3 * statistics.median(t_np), 1e3 * statistics.median(t_t)
        gflops = shape.flops() / (ms_np / 1e3) / 1e9
        row: dict[str, object] = {
            "shape": shape,
            "err64": worst["float64"],
            "err32": worst["float32"],
            "ms_np": ms_np,
            "ms_t": ms_t,
            "spread_np": (1e3 * min(t_np), 1e3 * max(t_np)),
            "spread_t": (1e3 * min(t_t), 1e3 * max(t_t)),
            "tok_np": shape.T * shape.B / (ms_np / 1e3),
            "tok_t": shape.T * shape.B / (ms_t / 1e3),
            "speedup": ms_t / ms_np,
            "gflops": gflops,
            "peak_frac": gflops / peak,
            "gflops_t": shape.flops() / (ms_t / 1e3) / 1e9,
        }
        if memory:
            row["mem_np"] = measure_memory(shape, "bptt")
            row["mem_t"] = measure_memory(shape, "torch")
        rows.append(row)
        print(
            f"  {name}: validated (max rel err f64 {worst['float64']:.1e}, "
            f"f32 {worst['float32']:.1e}); bptt {ms_np:.3f} ms, torch {ms_t:.3f} ms"
        )
    return [{"peak": peak}, *rows]


def table(results: list[dict[str, object]]) -> str:
    peak = results[0]["peak"]
    rows = results[1:]
    head = (
        "| shape | bptt ms/step | torch ms/step | speed-up | bptt tokens/s | torch tokens/s "
        "| bptt GFLOP/s | of peak | torch GFLOP/s | bptt peak MiB (tracemalloc / RSS) "
        "| torch peak MiB (RSS) | max rel err f32 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        s = r["shape"]
        assert isinstance(s, Shape)
        mem_np = r.get("mem_np")
        mem_t = r.get("mem_t")
        mnp = f"{mem_np['tracemalloc_mib']:.2f} / {mem_np['rss_mib']:.1f}" if mem_np else "-"
        mt = f"{mem_t['rss_mib']:.1f}" if mem_t else "-"
        lines.append(
            f"| {s.name} ({s.describe()}) | {r['ms_np']:.3f} | {r['ms_t']:.3f} "
            f"| **{r['speedup']:.2f}×** | {r['tok_np']:,.0f} | {r['tok_t']:,.0f} "
            f"| {r['gflops']:.1f} | {100 * r['peak_frac']:.0f}% | {r['gflops_t']:.1f} "
            f"| {mnp} | {mt} | {r['err32']:.1e} |"
        )
    speedups = [r["speedup"] for r in rows]
    foot = (
        f"\n\nmedian speed-up {statistics.median(speedups):.2f}× (over {len(rows)} shapes); "
        f"float32 matmul peak {peak:.1f} GFLOP/s"
    )
    return head + "\n".join(lines) + foot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (median quoted)")
    parser.add_argument("--rep-seconds", type=float, default=0.3, help="target length of a rep")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--markdown", type=Path, help="write machine info + table here")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    results = run(args.shapes, args.reps, args.rep_seconds, not args.no_memory)
    text = table(results)
    report(text, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
