"""Validate, then time, the lag-diagonal algorithm of ``bptt.diagnostics.lag_contributions``.

    PYTHONPATH=src python benchmarks/bench_lag_contributions.py [--T 100] [--H 64] [--B 16]
        [--threads 1] [--cell elman|gru|lstm]

BLAS threads are pinned (threadpoolctl, default 1) so that both methods run alike: on a busy
2-core machine OpenBLAS's threaded GEMM can be many times slower than its single-thread one.

Compared against (1) one ordinary backward sweep (``model.loss_and_grads``), the unit of cost,
and (2) the per-origin loop: for every loss step t, carry dL_t/dh back step by step and add
each step's outer products into the bucket of its lag (T(T+1)/2 small (B, H) × (H, H)
products) — the straightforward way to get the same numbers. Both are checked equal first.
Also timed: the generic path through the cell protocol (``fast_path=False``), which the Elman
closed forms shortcut. ``--cell gru|lstm`` times the generic path on a gated cell, validated
against ``loss_and_grads`` (the per-origin loop is the Elman cell's).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import bptt
from bptt.diagnostics import lag_contributions


def per_origin_loop(model: bptt.RNN, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dW by lag via one backward sweep per loss step t; returns (T, H, H)."""
    hs = model.hidden_states(x)
    T, B = y.shape
    fprime = model.activation.grad_from_output(hs[1:])  # (T, B, H)
    z = hs[1:] @ model.params.U.T + model.params.b_y  # (T, B, O)
    _, dz = model.head.loss_and_dz(z, y, np.full((T, B), 1.0 / B))
    direct = dz @ model.params.U  # (T, B, H)
    W = model.params.W
    out = np.zeros((T, *W.shape))
    for t in range(T):
        delta = direct[t] * fprime[t]  # (B, H): dL_t/dE_t
        for k in range(t, -1, -1):
            out[t - k] += delta.T @ hs[k]
            if k:
                delta = (delta @ W) * fprime[k - 1]
    return out


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--H", type=int, default=64)
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--I", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default: 1)")
    parser.add_argument("--cell", default="elman", choices=["elman", "gru", "lstm"])
    a = parser.parse_args()
    with threadpool_limits(a.threads):
        run(a)


def run(a: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    model = bptt.RNN(a.I, a.H, a.I, cell=a.cell, seed=0)
    x = rng.standard_normal((a.T, a.B, a.I))
    y = rng.integers(0, a.I, size=(a.T, a.B))

    contrib = lag_contributions(model, x, y)
    generic = lag_contributions(model, x, y, fast_path=False)
    _, grads = model.loss_and_grads(x, y)
    for name, parts in contrib.parts.items():
        scale = np.abs(grads[name]).max()
        assert np.allclose(parts.sum(0), grads[name], rtol=0, atol=1e-12 * scale), name
        err = np.abs(parts - generic.parts[name]).max() / np.abs(parts).max()
        assert err < 1e-10, f"fast and generic paths disagree on {name}: {err:.2e}"
    sweep = best_of(lambda: model.loss_and_grads(x, y), a.repeat)
    rows = {"loss_and_grads (one sweep)": sweep}
    if a.cell == "elman":
        loop = per_origin_loop(model, x, y)
        err = np.abs(contrib.W - loop).max() / np.abs(loop).max()
        assert err < 1e-10, f"lag-diagonal and per-origin loop disagree: {err:.2e}"
        print(f"validated: max relative difference to the per-origin loop {err:.1e}")
        rows["lag_contributions, all lags"] = best_of(
            lambda: lag_contributions(model, x, y), a.repeat
        )
        rows["lag_contributions, max_lag=10"] = best_of(
            lambda: lag_contributions(model, x, y, max_lag=10), a.repeat
        )
    else:
        print("validated: the lags sum to loss_and_grads; fast and generic paths agree")
    rows["generic path, all lags"] = best_of(
        lambda: lag_contributions(model, x, y, fast_path=False), a.repeat
    )
    rows["generic path, max_lag=10"] = best_of(
        lambda: lag_contributions(model, x, y, max_lag=10, fast_path=False), a.repeat
    )
    if a.cell == "elman":
        rows["per-origin loop, all lags"] = best_of(lambda: per_origin_loop(model, x, y), a.repeat)
    blas = ", ".join(
        f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
    )
    print(f"{a.cell} T={a.T} B={a.B} H={a.H} I={a.I} float64, best of {a.repeat}; BLAS: {blas}")
    for name, seconds in rows.items():
        print(f"  {name:32s} {seconds * 1e3:9.1f} ms   {seconds / sweep:7.1f} sweeps")


if __name__ == "__main__":
    main()
