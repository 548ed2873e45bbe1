"""Where the time of one bptt step goes: each phase of the forward/backward timed alone.

    python benchmarks/profile_step.py                 # all four shapes of bench_step.py
    python benchmarks/profile_step.py --shapes dense

Each phase is the same call ``ElmanRNN.forward_backward`` makes (bptt.cells.elman and the head),
timed on its own (median of repetitions), with the matrix-product flops it does and the
GFLOP/s that gives. The phases add up to roughly the whole step; the rest is input checking
and Python glue. Sequential phases (the time loops) cannot use the big-GEMM peak: one small
(B, H) @ (H, H) product per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_step import DEFAULT_SHAPES, SHAPES, Unavailable, make_problem  # noqa: E402

from bptt import _kernels, heads  # noqa: E402
from bptt.cells import elman  # noqa: E402


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def profile_deep(name: str, reps: int) -> list[tuple[str, float, float]]:
    """A stacked model: the whole step, then the model's own forward → head → backward
    sequence phase by phase, and each layer's cell forward and backward alone."""
    s = SHAPES[name]
    model, x, y = make_problem(s, np.float32)
    params = model.params
    B = s.B
    weight = np.full((s.T, B), 1.0 / B, np.float32)
    yy = y.astype(np.intp)
    states = model.split_state(None, B)
    sweep = model.forward_layers(params, x, states)
    z = model.head_logits(params, sweep.top)
    _, dz = model.head.loss_and_dz(z.copy(), yy, weight)
    no_carry = [None] * len(model.layers)
    phases: list[tuple[str, Callable[[], object], float]] = [
        ("whole step (loss_and_grads)", lambda: model.loss_and_grads(x, y), s.flops()),
        ("forward through the layers", lambda: model.forward_layers(params, x, states), 0.0),
        ("head: output projection", lambda: model.head_logits(params, sweep.top), 0.0),
        ("softmax + cross-entropy + dz", lambda: model.head.loss_and_dz(z.copy(), yy, weight), 0.0),
        (
            "backward through head and layers",
            lambda: model.backward_layers(params, sweep, dz, no_carry),
            0.0,
        ),
    ]
    for k, layer in enumerate(model.layers):
        cell, p_k, inp = layer.cell, layer.take(params), sweep.inputs[k]
        h_k, _, cache_k = cell.forward(p_k, inp, states[k])
        dh = np.random.default_rng(k).standard_normal(h_k.shape).astype(np.float32)
        phases.append(
            (
                f"layer {k}: cell forward",
                lambda c=cell, p=p_k, i=inp, s0=states[k]: c.forward(p, i, s0),
                0.0,
            )
        )
        phases.append(
            (
                f"layer {k}: cell backward (with dL/dx: {k > 0})",
                lambda c=cell, p=p_k, ca=cache_k, d=dh, kk=k: c.backward(
                    d.copy(), ca, p, None, kk > 0
                ),
                0.0,
            )
        )
    return [
        (label, ms, flops / (ms / 1e3) / 1e9 if flops else 0.0)
        for label, fn, flops in phases
        for ms in [median_ms(fn, reps)]
    ]


def profile(name: str, reps: int) -> list[tuple[str, float, float]]:
    s = SHAPES[name]
    if s.layers > 1:
        return profile_deep(name, reps)
    model, x, y = make_problem(s, np.float32)
    p, act, head = model.params, model.activation, model.head
    T, B, I, H, O = s.T, s.B, s.I, s.H, s.O
    h0 = np.zeros((B, H), np.float32)
    weight = np.full((T, B), 1.0 / B, np.float32)
    yy = y.astype(np.intp)
    hs, cache = elman.recurrent_forward(p, x, h0, act)
    z = heads.output_forward(p, hs[1:])
    _, dz = head.loss_and_dz(z.copy(), yy, weight)
    _, _, dh = heads.output_backward(dz, hs[1:], p)
    proj = np.empty((T, B, H), np.float32)
    fprime = act.grad_from_output(hs[1:])
    delta = dh * fprime
    rows = T * B
    inp = 0 if s.ids else 2.0 * rows * I * H
    mm_h = 2.0 * rows * H * H
    mm_o = 2.0 * rows * H * O

    phases: list[tuple[str, Callable[[], object], float]] = [
        ("whole step (loss_and_grads)", lambda: model.loss_and_grads(x, y), s.flops()),
        ("input projection V x + b_h", lambda: elman.input_projection(p, x, proj), inp),
        (
            "forward time loop (incl. input proj.)",
            lambda: elman.recurrent_forward(p, x, h0, act),
            inp + mm_h,
        ),
        ("output projection U h + b_y", lambda: heads.output_forward(p, hs[1:]), mm_o),
        ("softmax + cross-entropy + dz", lambda: head.loss_and_dz(z.copy(), yy, weight), 0.0),
        (
            "output backward dU, db_y, U^T dz",
            lambda: heads.output_backward(dz, hs[1:], p),
            2 * mm_o,
        ),
        (
            "recurrent backward: time loop with f', dW, dV, db_h",
            lambda: elman.recurrent_backward(dh.copy(), cache, p, act),
            2 * mm_h + inp,
        ),
        (
            "dW alone (GEMM over T·B rows, in row blocks)",
            lambda: _kernels.matmul_tn(delta.reshape(rows, H), hs[:-1].reshape(rows, H)),
            mm_h,
        ),
        (
            "dV, db_h (scatter-add for ids)",
            lambda: elman.input_projection_backward(delta, x, I),
            inp,
        ),
    ]
    out = []
    for label, fn, flops in phases:
        ms = median_ms(fn, reps)
        out.append((label, ms, flops / (ms / 1e3) / 1e9 if flops else 0.0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES))
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    for name in args.shapes:
        try:
            phases = profile(name, args.reps)
        except Unavailable as err:
            print(f"\n{name}: skipped ({err})")
            continue
        print(f"\n{name} ({SHAPES[name].describe()}), float32, median of {args.reps}")
        print("| phase | ms | GFLOP/s |\n|---|---|---|")
        for label, ms, gf in phases:
            print(f"| {label} | {ms:.3f} | {gf:.1f} |" if gf else f"| {label} | {ms:.3f} | - |")
    with open("/proc/loadavg") as f:
        print(f"\nload average at the end (1/5/15 min): {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
