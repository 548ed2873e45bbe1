"""Checkpointed (recompute) BPTT against full storage: peak memory and time of one step.

    python benchmarks/bench_checkpointing.py            # T=20000 B=16 H=256, I=32 floats, O=32
    python benchmarks/bench_checkpointing.py --curve --figure docs/figures/budget_curve.png \
        --markdown curve.md                             # time against memory, every budget

Problem: tanh hidden, softmax + cross-entropy at every step over O = 32 classes, inputs
32 N(0,1) floats, float32 (the issue fixes T, B, H; I and O are chosen here, small, so that the
hidden state dominates memory as it does in long-sequence work).

Order: validate (checkpointed loss and gradients equal full BPTT's to float32 rounding), then
time (median of interleaved repetitions), then peak memory of one step in a fresh process for
each schedule: tracemalloc (NumPy reports its buffers to it) and the RSS high-water mark
minus the RSS before the step (``/proc/self/clear_refs``).

``--curve``: the time-against-memory curve of exact BPTT under a memory budget
(``loss_and_grads(memory_budget=…)``, :mod:`bptt.algorithms.budget`): full storage, the √T
schedule and budgets from 50% of full storage's predicted peak down by halves to the smallest
feasible (and 1% of it, the issue's target), beside PyTorch's ``torch.utils.checkpoint`` on the
same model (``torch.nn.RNN`` with the same weights; full storage and one checkpoint per segment
of K steps, the one-level schedule a PyTorch user places by hand). Every point runs in its own
fresh process: a warm-up on 4 steps (and, for a budget, the planner's measurement), the first
full-size step under tracemalloc (bptt), ``--reps`` timed steps, then one step for the RSS
high-water mark. Every schedule is validated first (loss and gradients against full storage in
this process, float32 rel. error < 1e-4; PyTorch's against bptt's). Budgets whose predicted
time is over ``--max-slowdown`` × full storage's are listed with their plan but not run (the
smallest feasible budget has no checkpoint slot and recomputes T(T−1)/2 steps).
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

from _harness import run_child  # noqa: E402
from _machine import report  # noqa: E402

import bptt  # noqa: E402
from bptt import _workspace  # noqa: E402
from bptt.algorithms import budget as budget_plan  # noqa: E402
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


# -- the time-against-memory curve ------------------------------------------------------------


def _rss_peak_of(fn: object) -> float:
    """MiB of RSS high-water mark above the RSS before ``fn()`` (after ``clear_refs``)."""
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()  # type: ignore[operator]
    return (_rss_kib("VmHWM") - before) / 1024


def _bptt_call(model: bptt.RNN, x: np.ndarray, y: np.ndarray, spec: str) -> object:
    if spec == "full":
        return lambda: model.loss_and_grads(x, y)
    if spec == "sqrt":
        return lambda: model.loss_and_grads(x, y, checkpoint=True)
    limit = int(spec.removeprefix("budget:"))
    return lambda: model.loss_and_grads(x, y, memory_budget=limit)


def _torch_problem(dims: list[int]) -> tuple[object, ...]:
    import torch

    from bptt.interop import to_torch

    T, B, H, I, O = dims
    model, x, y = problem(T, B, H, I, O)
    rnn, head = to_torch(model)
    return torch, rnn, head, torch.from_numpy(x), torch.from_numpy(y)


def _torch_step(torch: object, rnn: object, head: object, x: object, y: object, spec: str) -> float:
    """L and its backward, as bptt computes it: Σ_t CE / B; ``spec`` "full" or a segment K."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    T, B = x.shape[:2]  # type: ignore[attr-defined]
    O = head.out_features  # type: ignore[attr-defined]
    for p in (*rnn.parameters(), *head.parameters()):  # type: ignore[attr-defined]
        p.grad = None

    def segment(xs: object, ys: object, h: object) -> tuple[object, object]:
        out, h_new = rnn(xs, h)  # type: ignore[operator]
        logits = head(out)  # type: ignore[operator]
        loss = F.cross_entropy(logits.reshape(-1, O), ys.reshape(-1), reduction="sum") / B
        return loss, h_new

    h0 = torch.zeros(1, B, rnn.hidden_size, dtype=x.dtype)  # type: ignore[attr-defined]
    if spec == "full":
        total, _ = segment(x, y, h0)
    else:
        k, h, total = int(spec), h0, 0.0
        for a in range(0, T, k):
            loss, h = checkpoint(segment, x[a : a + k], y[a : a + k], h, use_reentrant=False)
            total = total + loss
    total.backward()  # type: ignore[union-attr]
    return float(total.detach())  # type: ignore[union-attr]


def curve_child(framework: str, spec: str, dims: list[int], reps: int) -> dict[str, object]:
    """One point of the curve in this fresh process: times, peak memory, and the plan."""
    out: dict[str, object] = {"framework": framework, "spec": spec}
    if framework == "bptt":
        T, B, H, I, O = dims
        model, x, y = problem(T, B, H, I, O)
        model.loss_and_grads(x[:4], y[:4], checkpoint=2)  # loads and compiles what is needed
        if spec.startswith("budget:"):
            schedule = budget_plan.plan(model, T, B, int(spec[7:]), ids=False)  # measures
            out["plan"] = {
                "block": schedule.block,
                "slots": schedule.slots,
                "recomputed": schedule.recomputed_steps,
                "predicted_mib": schedule.peak_bytes / 2**20,
                "predicted_time": schedule.time_ratio,
            }
        step = _bptt_call(model, x, y, spec)
        # the first full-size call under tracemalloc, the pool emptied first: later ones reuse
        # the workspace pool's buffers, which tracemalloc would not see allocated again
        _workspace.clear()
        tracemalloc.start()
        step()  # type: ignore[operator]
        out["tracemalloc_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            step()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
    else:
        torch, rnn, head, x, y = _torch_problem(dims)
        _torch_step(torch, rnn, head, x[:4], y[:4], spec if spec == "full" else "2")
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            _torch_step(torch, rnn, head, x, y, spec)
            times.append(time.perf_counter() - start)
        step = lambda: _torch_step(torch, rnn, head, x, y, spec)  # noqa: E731
    out["seconds"] = times
    out["rss_mib"] = _rss_peak_of(step)
    return out


def _validate_curve(dims: list[int], specs: list[str], torch_specs: list[str]) -> None:
    """Every bptt schedule and every PyTorch one against bptt's full storage."""
    T, B, H, I, O = dims
    model, x, y = problem(T, B, H, I, O)
    loss, grads = model.loss_and_grads(x, y)
    for spec in specs:
        loss_s, grads_s = _bptt_call(model, x, y, spec)()  # type: ignore[operator, misc]
        assert abs(loss_s - loss) <= 1e-4 * abs(loss), (spec, loss_s, loss)
        for name, g in grads.items():
            err = float(np.linalg.norm(getattr(grads_s, name) - g) / np.linalg.norm(g))
            assert err < 1e-4, (spec, name, err)
    if torch_specs:
        torch, rnn, head, xt, yt = _torch_problem(dims)
        for spec in torch_specs:
            loss_t = _torch_step(torch, rnn, head, xt, yt, spec)
            assert abs(loss_t - loss) <= 1e-4 * abs(loss), (spec, loss_t, loss)
            w = rnn.weight_hh_l0.grad.numpy()  # type: ignore[attr-defined]
            err = float(np.linalg.norm(w - grads.W) / np.linalg.norm(grads.W))
            assert err < 1e-3, ("torch", spec, err)
    print(f"validated: {specs} and torch {torch_specs} == full BPTT (float32)", flush=True)


def run_curve(args: argparse.Namespace) -> int:
    dims = [args.T, args.B, args.H, args.I, args.O]
    T, B, H, I, O = dims
    model, _, _ = problem(T, B, H, I, O)
    sizes = budget_plan.measure_step_bytes(model, B, ids=False, n_steps=T)
    full_bytes = sizes.full_bytes(T)
    smallest = budget_plan.smallest_budget(model, T, B, ids=False)
    budgets: list[int] = []
    fraction = 0.5
    while fraction * full_bytes > smallest:
        budgets.append(int(fraction * full_bytes))
        fraction /= 2
    budgets.append(smallest)
    if 0.01 * full_bytes > smallest:  # issue 23's target point: 1% of full storage
        budgets = sorted({*budgets, int(0.01 * full_bytes)}, reverse=True)
    planned = {b: budget_plan.plan(model, T, B, b, ids=False) for b in budgets}
    run_budgets = [b for b in budgets if planned[b].time_ratio <= args.max_slowdown]
    specs = ["full", "sqrt", *(f"budget:{b}" for b in run_budgets)]
    k_sqrt = segment_length(T, True)
    torch_specs: list[str] = []
    if not args.no_torch:
        torch_specs = ["full", *(str(k) for k in sorted({k_sqrt, *map(int, args.torch_segments)}))]
    _validate_curve(dims, specs[1:], torch_specs)

    points: list[dict[str, object]] = []
    me = [str(Path(__file__).resolve())]
    for framework, spec in [("bptt", s) for s in specs] + [("torch", s) for s in torch_specs]:
        cmd = [*me, "--curve-child", framework, spec, *map(str, dims), str(args.reps)]
        point = run_child(cmd)
        print(f"  {framework} {spec}: {statistics.median(point['seconds']):.3f} s", flush=True)
        points.append(point)

    base = next(p for p in points if p["framework"] == "bptt" and p["spec"] == "full")
    base_t = statistics.median(base["seconds"])  # type: ignore[arg-type]
    base_m = float(base["tracemalloc_mib"])  # type: ignore[arg-type]
    base_rss = float(base["rss_mib"])  # type: ignore[arg-type]
    lines = [
        f"T={T} B={B} H={H} I={I} floats O={O} softmax, float32, median of {args.reps} "
        f"steps per point, each point in a fresh process; full storage's predicted peak "
        f"{full_bytes / 2**20:.1f} MiB",
        "",
        "| framework | schedule | plan | s/step | time vs bptt full | peak MiB (tracemalloc) "
        "| vs full | peak MiB (RSS delta) | vs full |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        t = statistics.median(p["seconds"])  # type: ignore[arg-type]
        spec = str(p["spec"])
        if p["framework"] == "bptt":
            if spec == "full":
                name = "full storage"
            elif spec == "sqrt":
                name = f"checkpoint=True (K={k_sqrt})"
            else:
                name = f"memory_budget={_mib(int(spec.removeprefix('budget:')))}"
            plan = p.get("plan")
            how = (
                f"ℓ={plan['block']}, s={plan['slots']}, {plan['recomputed'] / T:.2f} recomputed"
                f"/step, predicted {plan['predicted_time']:.2f}×"  # type: ignore[index]
                if isinstance(plan, dict)
                else "-"
            )
            traced = float(p["tracemalloc_mib"])  # type: ignore[arg-type]
            traced_cols = f"{traced:.1f} | {100 * traced / base_m:.2f}%"
        else:
            name = "torch full" if spec == "full" else f"torch.utils.checkpoint K={spec}"
            how, traced_cols = "-", "n/a | -"
        rss = float(p["rss_mib"])  # type: ignore[arg-type]
        rss_share = f"{100 * rss / base_rss:.1f}%" if base_rss >= 1.0 else "-"  # MiB-grained
        lines.append(
            f"| {p['framework']} | {name} | {how} | {t:.3f} | {t / base_t:.2f}× | {traced_cols} "
            f"| {rss:.1f} | {rss_share} |"
        )
    for b in budgets:
        if b not in run_budgets:
            sch = planned[b]
            lines.append(
                f"| bptt | memory_budget={_mib(b)} | ℓ={sch.block}, s={sch.slots}, "
                f"{sch.recomputed_steps / T:.1f} recomputed/step, predicted "
                f"{sch.time_ratio:.1f}× (not run: over --max-slowdown {args.max_slowdown}) "
                f"| - | - | - | - | - | - |"
            )
    report("\n".join(lines), args.markdown)
    if args.figure is not None:
        _figure(points, base_t, args.figure, dims)
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _figure(points: list[dict[str, object]], base_t: float, path: Path, dims: list[int]) -> None:
    """Time (relative to bptt's full storage) against peak memory (MiB, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bptt.atomic import atomic_write_bytes

    def mem(p: dict[str, object]) -> float:
        key = "tracemalloc_mib" if p["framework"] == "bptt" else "rss_mib"
        return float(p[key])  # type: ignore[arg-type]

    def rel(p: dict[str, object]) -> float:
        return statistics.median(p["seconds"]) / base_t  # type: ignore[arg-type]

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ours = [p for p in points if p["framework"] == "bptt" and str(p["spec"]).startswith("budget")]
    ours.sort(key=mem)
    ax.plot([mem(p) for p in ours], [rel(p) for p in ours], "o-", label="bptt memory_budget=")
    for spec, marker, label in (("full", "s", "bptt full storage"), ("sqrt", "^", "bptt √T")):
        for p in points:
            if p["framework"] == "bptt" and p["spec"] == spec:
                ax.plot([mem(p)], [rel(p)], marker, ms=9, label=label)
    theirs = [p for p in points if p["framework"] == "torch" and mem(p) > 0]  # RSS is MiB-coarse
    if theirs:
        ax.plot(
            [mem(p) for p in theirs],
            [rel(p) for p in theirs],
            "x",
            ms=9,
            label="PyTorch (full, torch.utils.checkpoint)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g×"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g×"))
    ax.set_xlabel("peak working memory, MiB (bptt: tracemalloc; PyTorch: RSS high-water delta)")
    ax.set_ylabel("time per step / bptt full storage")
    T, B, H = dims[:3]
    ax.set_title(f"Exact BPTT under a memory budget, T={T} B={B} H={H}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    print(f"figure -> {path}")


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
    parser.add_argument(
        "--curve", action="store_true", help="time against memory: full, √T, every budget, torch"
    )
    parser.add_argument("--figure", type=Path, help="--curve: write the curve's figure here")
    parser.add_argument(
        "--max-slowdown",
        type=float,
        default=4.0,
        help="--curve: plan, but do not run, budgets predicted slower than this × full",
    )
    parser.add_argument(
        "--torch-segments",
        nargs="*",
        default=["50", "500"],
        help="--curve: torch.utils.checkpoint segment lengths beside √T",
    )
    parser.add_argument("--no-torch", action="store_true", help="--curve: bptt only")
    parser.add_argument("--curve-child", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        *dims, ck = args.memory_child
        print(json.dumps(memory_child([int(d) for d in dims], ck)))
        return 0
    if args.curve_child:
        framework, spec, *rest = args.curve_child
        *dims, reps = (int(v) for v in rest)
        print(json.dumps(curve_child(framework, spec, dims, reps)))
        return 0
    if args.curve:
        return run_curve(args)
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
