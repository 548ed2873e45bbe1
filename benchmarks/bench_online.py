"""Online credit assignment against exact BPTT: gradient quality, cost, speed, learning curves.

    python benchmarks/bench_online.py quality   # cosine / relative error / bias / variance
    python benchmarks/bench_online.py speed     # vs an unbatched NumPy baseline, B=1 and B=32
    python benchmarks/bench_online.py scaling   # time and memory per step, H = 16 … 256
    python benchmarks/bench_online.py sparse    # SnAp-n on a sparse W: sparse vs dense storage
    python benchmarks/bench_online.py curves    # lagged-dependencies learning curves (+ figure)
    python benchmarks/bench_online.py shakespeare  # tiny Shakespeare learning curves (+ figure)
    python benchmarks/bench_online.py gated-quality  # GRU/LSTM: cosine to BPTT at initialisation
    python benchmarks/bench_online.py gated-cost     # GRU: time per step as H grows
    python benchmarks/bench_online.py gated-curves   # GRU on the lagged task beside BPTT (+ figure)

Timed processes run BLAS on one thread (``OPENBLAS_NUM_THREADS=1``, both implementations): on
the shared 2-core machine two threads on these small products are many times slower.
Every run prints the machine facts (load average included) beside its table; ``--markdown``
also writes them to a file. Timings run each (implementation, algorithm, H, B) in its own fresh
process, implementations alternated, repeated ``--repeats`` times: median and [min, max].

The baseline (``Naive*`` below) is a straightforward unbatched NumPy implementation of the same
equations, one stream at a time, in the influence-matrix form the papers write (and
omarschall/vanilla-rtrl codes): M (H, P) with P = H·Q, the immediate Jacobian formed densely
as Ī = diag(f') ⊗ ĥᵀ, J = diag(f') W as a dense matrix; RFLO's trace as an outer product; TBPTT
as a Python loop over the k stored steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _machine import report  # noqa: E402

from bptt import online  # noqa: E402
from bptt.data.tasks import LaggedDependenciesTask  # noqa: E402
from bptt.model import ElmanRNN  # noqa: E402

ALGS = ("rtrl", "snap-1", "snap-2", "uoro", "kf-rtrl", "rflo", "tbptt")
SPEED_ALGS = (*ALGS, "snap-2@0.1")  # name@d: W keeps a fixed random fraction d of its entries
RUN_CHUNK = 100  # steps per alg.run call in the "ours-run" timings
IMPLS = {
    "ours": "bptt.online, alg.step per step",
    "ours-run": f"bptt.online, alg.run over chunks of {RUN_CHUNK} steps",
    "ours-dense": "bptt.online, SnAp-n with dense storage (storage='dense')",
    "ours-numpy": "bptt.online with the NumPy kernels only (no Numba)",
    "naive": "the unbatched NumPy baseline below",
}
RECURRENT = ("V", "W", "b_h")
FIGURES = HERE.parent / "docs" / "figures"


# ---------------------------------------------------------------------------------------------
# The baseline: one stream, the papers' matrix equations, straightforward NumPy
# ---------------------------------------------------------------------------------------------


class Naive:
    """One stream of a one-layer tanh Elman RNN with a softmax head (the shared forward)."""

    def __init__(self, p: dict[str, np.ndarray], seed: int = 0, k: int = 10) -> None:
        self.p = {n: np.array(a) for n, a in p.items()}
        self.H, self.I = self.p["V"].shape
        self.Q = self.I + self.H + 1
        self.P = self.H * self.Q
        self.h = np.zeros(self.H)
        self.rng = np.random.default_rng(seed)
        self.k = k
        self.init()

    def init(self) -> None:
        pass

    def step(self, x: int, y: int) -> dict[str, np.ndarray]:
        p = self.p
        h_prev = self.h
        xv = np.zeros(self.I)
        xv[x] = 1.0
        self.h = np.tanh(p["V"] @ xv + p["W"] @ h_prev + p["b_h"])
        fp = 1.0 - self.h**2
        a_hat = np.concatenate([xv, h_prev, [1.0]])
        J = np.diag(fp) @ p["W"]
        z = p["U"] @ self.h + p["b_y"]
        prob = np.exp(z - z.max())
        prob /= prob.sum()
        dz = prob.copy()
        dz[y] -= 1.0
        c = p["U"].T @ dz
        g = self.rec_grad(J, fp, a_hat, c, dz, xv, h_prev)  # (P,) = vec(Θ), row-major
        return {"U": np.outer(dz, self.h), "b_y": dz, "theta": g}

    def immediate(self, fp: np.ndarray, a_hat: np.ndarray) -> np.ndarray:
        """Ī = diag(f') ⊗ ĥᵀ (H, P)."""
        return np.kron(np.diag(fp), a_hat[None, :])

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class NaiveRTRL(Naive):
    def init(self) -> None:
        self.M = np.zeros((self.H, self.P))

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        self.M = J @ self.M + self.immediate(fp, a_hat)
        return c @ self.M


class NaiveSnAp1(NaiveRTRL):
    def init(self) -> None:
        super().init()
        self.pattern = np.kron(np.eye(self.H), np.ones((1, self.Q)))  # (H, P): k = r

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        self.M = (J @ self.M + self.immediate(fp, a_hat)) * self.pattern
        return c @ self.M


class NaiveSnAp2(NaiveSnAp1):
    def init(self) -> None:
        super().init()
        reach = (np.abs(self.p["W"]) > 0) | np.eye(self.H, dtype=bool)
        self.pattern = np.kron(reach.astype(float), np.ones((1, self.Q)))


class NaiveUORO(Naive):
    def init(self) -> None:
        self.a = np.zeros(self.H)
        self.b = np.zeros(self.P)

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        nu = self.rng.choice([-1.0, 1.0], size=self.H)
        ja = J @ self.a
        nu_i = nu @ self.immediate(fp, a_hat)
        eps = 1e-7
        r0 = np.sqrt((np.linalg.norm(self.b) + eps) / (np.linalg.norm(ja) + eps))
        r1 = np.sqrt((np.linalg.norm(nu_i) + eps) / (np.linalg.norm(nu) + eps))
        self.a = r0 * ja + r1 * nu
        self.b = self.b / r0 + nu_i / r1
        return (c @ self.a) * self.b


class NaiveKF(Naive):
    def init(self) -> None:
        self.u = np.zeros(self.Q)
        self.A = np.zeros((self.H, self.H))

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        c1, c2 = self.rng.choice([-1.0, 1.0], size=2)
        ja = J @ self.A
        D = np.diag(fp)
        eps = 1e-7
        p1 = np.sqrt((np.linalg.norm(ja) + eps) / (np.linalg.norm(self.u) + eps))
        p2 = np.sqrt((np.linalg.norm(D) + eps) / (np.linalg.norm(a_hat) + eps))
        self.u = c1 * p1 * self.u + c2 * p2 * a_hat
        self.A = c1 / p1 * ja + c2 / p2 * D
        return c @ np.kron(self.A, self.u[None, :])  # M = A ⊗ uᵀ (H, P)


class NaiveRFLO(Naive):
    def init(self) -> None:
        self.B = np.zeros((self.H, self.Q))
        self.fb = self.rng.uniform(-1, 1, size=self.p["U"].shape) / np.sqrt(self.H)

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        self.B = np.outer(fp, a_hat)  # α = 1: (1 − α) B + α f' ĥᵀ
        return ((self.fb.T @ dz)[:, None] * self.B).ravel()


class NaiveTBPTT(Naive):
    def init(self) -> None:
        self.buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (ĥ, h, f')

    def rec_grad(self, J, fp, a_hat, c, dz, xv, h_prev):  # type: ignore[no-untyped-def]
        self.buf.append((a_hat, self.h, fp))
        self.buf = self.buf[-self.k :]
        g = np.zeros((self.H, self.Q))
        delta = c * fp
        for i in range(len(self.buf) - 1, -1, -1):
            a_i, _, _ = self.buf[i]
            g += np.outer(delta, a_i)
            if i > 0:
                delta = (self.p["W"].T @ delta) * self.buf[i - 1][2]
        return g.ravel()


NAIVE = {
    "rtrl": NaiveRTRL,
    "snap-1": NaiveSnAp1,
    "snap-2": NaiveSnAp2,
    "uoro": NaiveUORO,
    "kf-rtrl": NaiveKF,
    "rflo": NaiveRFLO,
    "tbptt": NaiveTBPTT,
}


# ---------------------------------------------------------------------------------------------
# One timing, in this (fresh) process
# ---------------------------------------------------------------------------------------------


def _parse(alg: str) -> tuple[str, float | None]:
    """``snap-2@0.1`` → ("snap-2", 0.1): the algorithm and W's density (None: dense W)."""
    name, _, density = alg.partition("@")
    return name, float(density) if density else None


def _model(H: int, density: float | None, I: int = 2, O: int = 2) -> ElmanRNN:
    model = ElmanRNN(I, H, O, seed=0)
    if density is not None:
        model.set_recurrent_mask(np.random.default_rng(1).uniform(size=(H, H)) < density)
    return model


def _time_one(impl: str, alg: str, H: int, B: int, min_s: float, min_steps: int) -> dict:
    from bptt import _kernels

    name, density = _parse(alg)
    model = _model(H, density)
    rng = np.random.default_rng(0)
    n_data = 20_000
    xs = rng.integers(0, 2, size=(n_data, B))
    ys = rng.integers(0, 2, size=(n_data, B))
    options: dict[str, Any] = {"k": 10} if name == "tbptt" else {}
    if impl == "ours-dense":
        options["storage"] = "dense"
    if impl == "ours-numpy":
        _kernels.set_backend("numpy")
    per_unit = RUN_CHUNK if impl == "ours-run" else 1  # steps per timed call
    tracemalloc.start()
    if impl.startswith("ours"):
        alg_obj = online.make(name, model, batch=B, **options)
        if impl == "ours-run":

            def run(u: int) -> None:
                lo = (u * RUN_CHUNK) % (n_data - RUN_CHUNK)
                alg_obj.run(xs[lo : lo + RUN_CHUNK], ys[lo : lo + RUN_CHUNK])

        else:

            def run(u: int) -> None:
                alg_obj.step(xs[u % n_data], ys[u % n_data])

        state = sum(a.nbytes for a in alg_obj.state_dict().values())
    else:
        streams = [NAIVE[name](dict(model.params.items()), seed=b) for b in range(B)]

        def run(u: int) -> None:
            t = u % n_data
            for b, s in enumerate(streams):
                s.step(int(xs[t, b]), int(ys[t, b]))

        state = sum(
            v.nbytes for s in streams for v in vars(s).values() if isinstance(v, np.ndarray)
        )
    for u in range(3):  # warm-up (and Numba's compilation)
        run(u)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    run(3)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    for u in range(2):  # untimed: the first call after tracemalloc stops takes ~20 ms more
        run(u)
    n, t0 = 0, time.perf_counter()
    units = max(1, min_steps // per_unit)
    while n < units or time.perf_counter() - t0 < min_s:
        run(4 + n)
        n += 1
        if n * per_unit >= 10_000:
            break
    per_step = (time.perf_counter() - t0) / (n * per_unit)
    return {
        "per_step_s": per_step,
        "steps": n * per_unit,
        "state_bytes": int(state),
        "peak_bytes": int(peak),
    }


def _spawn(impl: str, alg: str, H: int, B: int, min_s: float, min_steps: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "_one",
        impl,
        alg,
        str(H),
        str(B),
        str(min_s),
        str(min_steps),
    ]
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _timings(configs: list[tuple[str, str, int, int]], repeats: int, min_s: float) -> dict:
    """Median and range of per-step time for each config, fresh processes, alternated."""
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for rep in range(repeats):
        order = configs if rep % 2 == 0 else configs[::-1]
        for c in order:
            impl, alg, H, B = c
            min_steps = 3 if H >= 128 else 20
            runs[c].append(_spawn(impl, alg, H, B, min_s, min_steps))
            print(f"  {c} rep {rep}: {runs[c][-1]['per_step_s'] * 1e3:.3f} ms", flush=True)
    out = {}
    for c, rs in runs.items():
        ts = [r["per_step_s"] for r in rs]
        out[c] = {
            "median": statistics.median(ts),
            "min": min(ts),
            "max": max(ts),
            "state_bytes": rs[0]["state_bytes"],
            "peak_bytes": statistics.median(r["peak_bytes"] for r in rs),
        }
    return out


def _ms(r: dict) -> str:
    return f"{r['median'] * 1e3:.3g} [{r['min'] * 1e3:.3g}, {r['max'] * 1e3:.3g}]"


def validate_baseline(H: int = 6, steps: int = 15) -> None:
    """Before any timing: the baseline computes the same gradients as bptt.online (the
    deterministic algorithms; SnAp-2 on a dense W and on a sparse one, both storages and both
    kernel paths), and alg.run gives what alg.step gives, for every timed configuration."""
    from bptt import _kernels

    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, 2, size=(steps, 1)), rng.integers(0, 2, size=(steps, 1))
    checks = [(alg, {}) for alg in ("rtrl", "snap-1", "snap-2", "tbptt", "snap-2@0.3")]
    checks += [("snap-2@0.3", {"storage": "dense"})]
    for alg, extra in checks:
        name, density = _parse(alg)
        model = _model(H, density)
        for backend in ("auto", "numpy"):
            with _kernels.backend(backend):
                opts = {"k": 10} if name == "tbptt" else {}
                ours = online.make(name, model, batch=1, **opts, **extra)
                naive = NAIVE[name](dict(model.params.items()))
                for t in range(steps):
                    _, g = ours.step(xs[t], ys[t])
                    gn = naive.step(int(xs[t, 0]), int(ys[t, 0]))
                    theta = np.concatenate([g["V"], g["W"], g["b_h"][:, None]], axis=1)
                    if density is not None:  # the masked W entries get no gradient
                        gn["theta"] = (
                            gn["theta"].reshape(theta.shape)
                            * np.concatenate([np.ones((H, 2)), model.w_mask, np.ones((H, 1))], 1)
                        ).ravel()
                    assert np.allclose(theta.ravel(), gn["theta"], rtol=1e-9, atol=1e-12), alg
                    assert np.allclose(g["U"], gn["U"], rtol=1e-9, atol=1e-12), (alg, t)
    for alg in SPEED_ALGS:
        name, density = _parse(alg)
        model = _model(H, density)
        opts = {"k": 10} if name == "tbptt" else {}
        for B in (1, 3):
            xb = rng.integers(0, 2, size=(steps, B))
            yb = rng.integers(0, 2, size=(steps, B))
            a = online.make(name, model, batch=B, seed=1, **opts)
            b = online.make(name, model, batch=B, seed=1, **opts)
            total = None
            for t in range(steps):
                _, g = a.step(xb[t], yb[t])
                total = _flat(g) if total is None else total + _flat(g)
            _, g_run = b.run(xb, yb)
            assert total is not None and np.allclose(_flat(g_run), total, rtol=1e-9), alg
    print(
        "baseline validated: same gradients as bptt.online (rtrl, snap-1, snap-2 on dense and "
        "sparse W, tbptt); alg.run = Σ alg.step for every timed algorithm"
    )


def cmd_speed(args: argparse.Namespace) -> str:
    validate_baseline()
    B = args.batch
    impls = ("ours", "ours-run", "naive")
    configs = [
        (impl, alg, H, b)
        for H in args.hidden
        for alg in SPEED_ALGS
        for impl in impls
        for b in (1, B)
    ]
    res = _timings(configs, args.repeats, args.min_seconds)
    lines = [
        "| H | algorithm | B=1 step ms | B=1 run() ms/step | B=1 baseline ms | speed-up "
        f"step · run | B={B} step stream-steps/s | B={B} run() stream-steps/s | "
        f"B={B} baseline stream-steps/s | speed-up step · run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for H in args.hidden:
        for alg in SPEED_ALGS:
            o1, r1, n1 = (res[(i, alg, H, 1)] for i in impls)
            oB, rB, nB = (res[(i, alg, H, B)] for i in impls)
            label = alg.replace("@", ", W density ")
            lines.append(
                f"| {H} | {label} | {_ms(o1)} | {_ms(r1)} | {_ms(n1)} | "
                f"{n1['median'] / o1['median']:.1f}x · {n1['median'] / r1['median']:.1f}x | "
                f"{B / oB['median']:,.0f} | {B / rB['median']:,.0f} | {B / nB['median']:,.0f} | "
                f"{nB['median'] / oB['median']:.1f}x · {nB['median'] / rB['median']:.1f}x |"
            )
    _save_json(args, {str(k): v for k, v in res.items()})
    return "\n".join(lines)


def cmd_sparse(args: argparse.Namespace) -> str:
    """SnAp-n on a sparse W (a fixed random mask of density d): the sparse storage (with the
    compiled kernel, and NumPy only) against the dense, masked storage, B = 1."""
    validate_baseline()
    impls = ("ours", "ours-numpy", "ours-dense")
    algs = [f"snap-{n}@{d:g}" for n in args.n for d in args.density]
    configs = [(impl, alg, H, 1) for H in args.hidden for alg in algs for impl in impls]
    res = _timings(configs, args.repeats, args.min_seconds)
    lines = [
        "| H | SnAp | W density | pattern P_n density | sparse ms/step (Numba · NumPy) | "
        "dense ms/step | speed-up | sparse state MiB · step peak MiB | "
        "dense state MiB · step peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for H in args.hidden:
        for alg in algs:
            name, density = _parse(alg)
            pattern = online.snap_pattern(_model(H, density).w_mask, int(name[5:]))
            sp, npy, de = (res[(i, alg, H, 1)] for i in impls)
            lines.append(
                f"| {H} | {name} | {density:g} | {pattern.mean():.3f} | "
                f"{sp['median'] * 1e3:.3g} · {npy['median'] * 1e3:.3g} | "
                f"{de['median'] * 1e3:.3g} | {de['median'] / sp['median']:.1f}x | "
                f"{sp['state_bytes'] / 2**20:.3g} · {sp['peak_bytes'] / 2**20:.3g} | "
                f"{de['state_bytes'] / 2**20:.3g} · {de['peak_bytes'] / 2**20:.3g} |"
            )
    _save_json(args, {str(k): v for k, v in res.items()})
    return "\n".join(lines)


def cmd_scaling(args: argparse.Namespace) -> str:
    configs = [("ours", alg, H, 1) for H in args.hidden for alg in ALGS]
    res = _timings(configs, args.repeats, args.min_seconds)
    lines = [
        "| algorithm | "
        + " | ".join(f"H={H}: ms/step · state MiB · step peak MiB" for H in args.hidden)
        + " |",
        "|---|" + "---|" * len(args.hidden),
    ]
    for alg in ALGS:
        cells = []
        for H in args.hidden:
            r = res[("ours", alg, H, 1)]
            cells.append(
                f"{r['median'] * 1e3:.3g} · {r['state_bytes'] / 2**20:.3g} · "
                f"{r['peak_bytes'] / 2**20:.3g}"
            )
        lines.append(f"| {alg} | " + " | ".join(cells) + " |")
    _save_json(args, {str(k): v for k, v in res.items()})
    if args.figure:
        _plot_scaling(res, args.hidden, FIGURES / "online_scaling.png")
    return "\n".join(lines)


def _plot_scaling(res: dict, hidden: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for alg in ALGS:
        t = [res[("ours", alg, H, 1)]["median"] * 1e3 for H in hidden]
        m = [res[("ours", alg, H, 1)]["state_bytes"] / 2**20 for H in hidden]
        axes[0].loglog(hidden, t, "o-", label=alg)
        axes[1].loglog(hidden, m, "o-", label=alg)
    axes[0].set(xlabel="H", ylabel="ms per step (B=1, median)", title="time per step")
    axes[1].set(xlabel="H", ylabel="carried state (MiB)", title="memory carried")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(hidden, [str(H) for H in hidden])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Gradient quality against BPTT
# ---------------------------------------------------------------------------------------------


def _flat(g: Any) -> np.ndarray:
    return np.concatenate([np.ravel(g[k]) for k in RECURRENT])


def _online_sum(alg: Any, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    alg.reset()
    total = None
    for t in range(x.shape[0]):
        _, g = alg.step(x[t], y[t], None if mask is None else mask[t])
        total = _flat(g) if total is None else total + _flat(g)
    assert total is not None
    return total


def _trained_model(H: int, steps: int, density: float = 1.0) -> ElmanRNN:
    """A model trained by full BPTT + Adam on lagged-dependency sequences (an operating point
    past initialisation), optionally with a sparse W."""
    from bptt.optim import make_optimizer

    task = LaggedDependenciesTask(seq_len=50)
    model = ElmanRNN(2, H, 2, seed=0)
    if density < 1.0:
        mask = np.random.default_rng(1).uniform(size=(H, H)) < density
        model.set_recurrent_mask(mask)
    opt = make_optimizer("adam", 1e-2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        b = task.sample(rng, 16, np.float64)
        _, g = model.loss_and_grads(b.x, b.y, None, b.mask)
        opt.step(model.params, g)
    return model


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _quality_rows(model: ElmanRNN, T: int, seeds: int, variants: list) -> list[str]:
    task = LaggedDependenciesTask(seq_len=T)
    batch, _ = task.stream(np.random.default_rng(3), 1, np.float64, None)
    x, y, mask = batch
    _, ref = model.loss_and_grads(x, y, None, mask)
    exact = _flat(ref)
    rows = []
    for label, name, opts in variants:
        stochastic = name in ("uoro", "kf-rtrl")
        n = seeds if stochastic else 1
        est = np.array(
            [_online_sum(online.make(name, model, 1, seed=s, **opts), x, y, mask) for s in range(n)]
        )
        cos = [_cos(e, exact) for e in est]
        rel = [_rel(e, exact) for e in est]
        if stochastic:
            mean = est.mean(axis=0)
            noise = np.sqrt(est.var(axis=0, ddof=1).sum() / n) / np.linalg.norm(exact)
            var = float(est.var(axis=0, ddof=1).sum() / np.linalg.norm(exact) ** 2)
            rows.append(
                f"| {label} | {np.mean(cos):.3f} ± {np.std(cos):.3f} | {np.mean(rel):.3g} | "
                f"{_rel(mean, exact):.3g} (noise {noise:.3g}) | {var:.3g} |"
            )
        else:
            rows.append(f"| {label} | {cos[0]:.6f} | {rel[0]:.3g} | {rel[0]:.3g} | 0 |")
    return rows


def cmd_quality(args: argparse.Namespace) -> str:
    variants: list = [
        ("rtrl", "rtrl", {}),
        ("snap-1", "snap-1", {}),
        ("snap-2", "snap-2", {}),
        ("uoro", "uoro", {}),
        ("kf-rtrl", "kf-rtrl", {}),
        ("rflo (α=1, random B)", "rflo", {}),
        ("rflo (α=1, symmetric)", "rflo", {"feedback": "symmetric"}),
        ("rflo (α=0.5, symmetric)", "rflo", {"feedback": "symmetric", "alpha": 0.5}),
        ("tbptt k=1", "tbptt", {"k": 1}),
        ("tbptt k=5", "tbptt", {"k": 5}),
        ("tbptt k=10", "tbptt", {"k": 10}),
        ("tbptt k=T", "tbptt", {"k": args.T}),
    ]
    head = (
        "| algorithm | cosine to BPTT (mean ± sd over seeds) | relative error ‖ĝ−g‖/‖g‖ (mean) | "
        f"bias ‖E ĝ − g‖/‖g‖ over {args.seeds} seeds | variance E‖ĝ−Eĝ‖²/‖g‖² |\n"
        "|---|---|---|---|---|"
    )
    out = []
    for title, model in (
        ("at initialisation", ElmanRNN(2, args.H, 2, seed=0)),
        (f"after {args.train_steps} BPTT Adam steps", _trained_model(args.H, args.train_steps)),
    ):
        out.append(f"H={args.H}, one lagged-dependencies stream of T={args.T} steps, {title}:\n")
        out.append(head)
        out += _quality_rows(model, args.T, args.seeds, variants)
        out.append("")
    sparse = _trained_model(args.H_sparse, args.train_steps, density=args.density)
    snap_variants = [(f"snap-{n}", f"snap-{n}", {}) for n in (1, 2, 3, 4)]
    snap_variants.insert(0, ("rtrl", "rtrl", {}))
    out.append(
        f"Sparse W: H={args.H_sparse}, {args.density:.0%} of W's entries kept (trained "
        f"{args.train_steps} steps), T={args.T}:\n"
    )
    out.append(head)
    out += _quality_rows(sparse, args.T, args.seeds, snap_variants)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------


CURVE_RUNS = [
    ("rtrl", {}),
    ("kf-rtrl", {}),
    ("uoro", {}),
    ("snap-1", {}),
    ("snap-2", {"recurrent_density": 0.25}),
    ("rflo", {}),
    ("tbptt", {"truncation": 10}),
    ("tbptt", {"truncation": 5}),
    ("tbptt", {"truncation": 2}),
]


def _train_curve(workdir: Path, label: str, **config: Any) -> list[tuple[int, float]]:
    from bptt.training import TrainConfig, Trainer

    cfg = TrainConfig(
        out=str(workdir / label.replace(" ", "_")),
        progress=False,
        plot=False,
        sample_every=0,
        checkpoint_every=10**9,
        log_every=10**9,
        **config,
    )
    evals: list[tuple[int, float]] = []

    def on_event(ev: Any) -> None:
        if ev.kind == "eval":
            evals.append((ev.step, ev.metrics.get("val_cross_entropy", ev.metrics.get("val_loss"))))

    t0 = time.perf_counter()
    Trainer(cfg, callbacks=[on_event], echo=None).train()
    print(f"  {label}: {time.perf_counter() - t0:.1f} s, last {evals[-1]}", flush=True)
    return evals


def cmd_curves(args: argparse.Namespace) -> str:
    """Each algorithm at each learning rate of ``--lrs`` over ``--seeds`` seeds; the table and
    figure show, per algorithm, the learning rate with the lowest mean final cross-entropy."""
    import tempfile

    levels = LaggedDependenciesTask.levels()
    results: dict[str, dict[float, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for alg, extra in CURVE_RUNS:
            label = alg + "".join(f" {k}={v}" for k, v in extra.items())
            for lr in args.lrs:
                for seed in range(args.seeds):
                    results.setdefault(label, {}).setdefault(lr, []).append(
                        _train_curve(
                            Path(tmp) / f"s{seed}_lr{lr}",
                            f"{label} lr={lr}",
                            task="lagged",
                            algorithm=alg,
                            hidden=args.H,
                            batch=args.batch,
                            seq_len=50,
                            steps=args.steps,
                            lr=lr,
                            schedule="cosine",
                            eval_every=args.eval_every,
                            eval_size=512,
                            dtype="float64",
                            seed=seed,
                            **extra,
                        )
                    )
    _save_json(args, {label: {str(lr): r for lr, r in d.items()} for label, d in results.items()})
    lines = [
        f"Levels: none {levels['none']:.4f}, first {levels['first']:.4f}, "
        f"both {levels['both']:.4f} nats/step.\n",
        "| algorithm | best lr | final val cross-entropy (per seed) | nearest level | "
        + " | ".join(f"mean at lr {lr:g}" for lr in args.lrs)
        + " |",
        "|---|---|---|---|" + "---|" * len(args.lrs),
    ]
    best_runs: dict[str, list] = {}
    for label, by_lr in results.items():
        means = {lr: float(np.mean([r[-1][1] for r in runs])) for lr, runs in by_lr.items()}
        lr = min(means, key=lambda k: means[k])
        best_runs[f"{label} (lr {lr:g})"] = by_lr[lr]
        finals = [r[-1][1] for r in by_lr[lr]]
        level = min(levels, key=lambda k: abs(levels[k] - means[lr]))
        lines.append(
            f"| {label} | {lr:g} | {', '.join(f'{f:.4f}' for f in finals)} | {level} | "
            + " | ".join(f"{means[x]:.4f}" for x in args.lrs)
            + " |"
        )
    if args.figure:
        _plot_curves(best_runs, levels, FIGURES / "online_lagged_curves.png", args.batch)
    return "\n".join(lines)


def _plot_curves(
    results: dict,
    levels: dict,
    path: Path,
    batch: int,
    ylabel: str = "",
    xlabel: str = "optimizer steps (one per stream step)",
    title: str = "online learning",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, runs in results.items():
        steps = [s for s, _ in runs[0]]
        mean = np.mean([[v for _, v in r] for r in runs], axis=0)
        ax.plot(steps, mean, label=label)
    for name, value in levels.items():
        ax.axhline(value, color="gray", ls="--", lw=0.8)
        ax.text(1.005, value, name, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set(
        xlabel=xlabel,
        ylabel=ylabel or "validation cross-entropy (nats/step)",
        title=f"{title}, B={batch} streams",
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_shakespeare(args: argparse.Namespace) -> str:
    import tempfile

    corpus = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
    if args.text:
        corpus = Path(args.text)
    results: dict[str, list] = {}
    runs = [("bptt", {}), ("tbptt", {"truncation": 10})] + [
        (a, {}) for a in ("rtrl", "kf-rtrl", "uoro", "snap-1", "rflo")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for alg, extra in runs:
            label = alg + "".join(f" {k}={v}" for k, v in extra.items())
            steps = args.steps if alg != "bptt" else args.steps // args.seq_len
            every = args.eval_every if alg != "bptt" else max(1, args.eval_every // args.seq_len)
            curve = _train_curve(
                Path(tmp),
                label,
                task="charlm",
                text=str(corpus),
                algorithm=alg,
                hidden=args.H,
                batch=args.batch,
                seq_len=args.seq_len,
                steps=steps,
                lr=args.lr,
                eval_every=every,
                eval_windows=args.eval_windows,
                dtype="float32",
                **extra,
            )
            if alg == "bptt":  # one BPTT step consumes seq_len stream steps
                curve = [(s * args.seq_len, v) for s, v in curve]
            results[label] = [curve]
    _save_json(args, results)
    lines = ["| algorithm | val loss (nats/char) at the end |", "|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} | {r[0][-1][1]:.4f} |")
    if args.figure:
        _plot_curves(
            results,
            {},
            FIGURES / "online_shakespeare.png",
            args.batch,
            ylabel="validation loss (nats/char)",
            xlabel="characters per stream (online: an update each; bptt: one per --seq-len)",
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Gated cells (the cell-protocol forms of bptt.online.cellwise)
# ---------------------------------------------------------------------------------------------

GATED_MODELS = {  # label → RNN keyword arguments (input 2, output 2: the lagged task)
    "GRU": {"cell": "gru"},
    "LSTM": {"cell": "lstm"},
    "GRU, 2 layers": {"cell": "gru", "num_layers": 2},
}
GATED_ALGS = [  # label, name, options
    ("rtrl", "rtrl", {}),
    ("snap-1", "snap-1", {}),
    ("snap-2", "snap-2", {}),
    ("uoro", "uoro", {}),
    ("kf-rtrl", "kf-rtrl", {}),
    ("rflo", "rflo", {}),
    ("tbptt k=1", "tbptt", {"k": 1}),
    ("tbptt k=10", "tbptt", {"k": 10}),
]


def _all_flat(g: Any, names: list[str]) -> np.ndarray:
    return np.concatenate([np.ravel(g[k]) for k in names])


def _gated_model(label: str, H: int, seed: int = 0) -> Any:
    from bptt.model import RNN

    return RNN(2, H, 2, seed=seed, **GATED_MODELS[label])


def cmd_gated_quality(args: argparse.Namespace) -> str:
    """Cosine of Σ_t grads_t to BPTT's gradient at initialisation, on one lagged stream of T
    steps, for every algorithm on each gated model (stochastic ones: mean ± sd over seeds)."""
    task = LaggedDependenciesTask(seq_len=args.T)
    x, y, mask = task.stream(np.random.default_rng(3), 1, np.float64, None)[0]
    cells: dict[tuple[str, str], str] = {}
    for model_label in GATED_MODELS:
        model = _gated_model(model_label, args.H)
        names = [k for k in model.param_shapes() if k not in ("U", "b_y")]  # the recurrent part
        _, ref = model.loss_and_grads(x, y, None, mask)
        exact = _all_flat(ref, names)
        for label, name, opts in GATED_ALGS:
            stochastic = name in ("uoro", "kf-rtrl")
            cos = []
            for seed in range(args.seeds if stochastic else 1):
                try:
                    alg = online.make(name, model, 1, seed=seed, **opts)
                except ValueError as err:
                    cells[(label, model_label)] = "refused" + (
                        " (reset gate)" if "reset gate" in str(err) else ""
                    )
                    break
                alg.reset()
                total = None
                for t in range(x.shape[0]):
                    _, g = alg.step(x[t], y[t], mask[t])
                    flat = _all_flat(g, names)
                    total = flat if total is None else total + flat
                assert total is not None
                cos.append(_cos(total, exact))
            if cos:
                cells[(label, model_label)] = (
                    f"{np.mean(cos):.3f} ± {np.std(cos):.3f}" if stochastic else f"{cos[0]:.6f}"
                )
            print(f"  {model_label} {label}: {cells[(label, model_label)]}", flush=True)
    _save_json(args, {f"{a} | {m}": v for (a, m), v in cells.items()})
    lines = [
        f"H = {args.H}, one lagged-dependencies stream of T = {args.T} steps (first 8 masked), "
        f"weights at initialisation (seed 0); cosine of Σ_t grads_t to BPTT on the cells' "
        f"parameters (the head's are exact for every algorithm); uoro and kf-rtrl: mean ± sd "
        f"over {args.seeds} seeds.\n",
        "| algorithm | " + " | ".join(GATED_MODELS) + " |",
        "|---|" + "---|" * len(GATED_MODELS),
    ]
    for label, _, _ in GATED_ALGS:
        lines.append(f"| {label} | " + " | ".join(cells[(label, m)] for m in GATED_MODELS) + " |")
    return "\n".join(lines)


def cmd_gated_cost(args: argparse.Namespace) -> str:
    """Time per ``alg.step`` (B streams) on a one-layer GRU as H grows: median of
    ``--repeats`` timings of ``--steps`` steps each, after a warm-up. Timing: run it alone."""
    task = LaggedDependenciesTask(seq_len=args.steps + 10)
    lines = [
        f"GRU, B = {args.batch}, ms per step (median of {args.repeats} runs of {args.steps} "
        "steps):\n",
        "| H | " + " | ".join(label for label, _, _ in GATED_ALGS) + " |",
        "|---|" + "---|" * len(GATED_ALGS),
    ]
    for H in args.hidden:
        model = _gated_model("GRU", H)
        x, y, mask = task.stream(np.random.default_rng(0), args.batch, np.float64, None)[0]
        row = []
        for _label, name, opts in GATED_ALGS:
            try:
                alg = online.make(name, model, args.batch, **opts)
            except ValueError:
                row.append("refused")
                continue
            for t in range(min(3, args.steps)):  # warm-up (compiles, caches)
                alg.step(x[t], y[t])
            times = []
            for _ in range(args.repeats):
                alg.reset()
                t0 = time.perf_counter()
                for t in range(args.steps):
                    alg.step(x[t], y[t], mask[t])
                times.append((time.perf_counter() - t0) / args.steps)
            row.append(f"{1e3 * statistics.median(times):.3g}")
            print(f"  H={H} {name}{opts}: {row[-1]} ms", flush=True)
        lines.append(f"| {H} | " + " | ".join(row) + " |")
    return "\n".join(lines)


GATED_CURVES = [  # label, algorithm ("bptt": windows of --window steps), options
    ("bptt", "bptt", {}),
    ("rtrl", "rtrl", {}),
    ("snap-1", "snap-1", {}),
    ("uoro", "uoro", {}),
    ("tbptt k=10", "tbptt", {"k": 10}),
    ("tbptt k=2", "tbptt", {"k": 2}),
]


def _val_cross_entropy(model: Any, val: Any) -> float:
    """Cross-entropy per scored step on fresh sequences (their first t2 steps masked)."""
    loss = model.loss(val.x, val.y, None, val.mask)  # (1/B) Σ_t Σ_b m L
    return float(loss * val.x.shape[1] / val.mask.sum())


def _gated_curve(name: str, opts: dict, lr: float, seed: int, args: argparse.Namespace) -> list:
    """Train a GRU on the lagged stream; (stream steps, validation cross-entropy) pairs.

    Online algorithms: B unbroken streams, one Adam step per stream step (``alg.step``).
    BPTT: one Adam step per window of ``--window`` fresh steps of the same streams (the
    state carried, full BPTT inside the window): the same data, 1/window as many updates."""
    from bptt.optim import make_optimizer

    task = LaggedDependenciesTask(seq_len=args.window)
    model = _gated_model("GRU", args.H, seed=seed)
    opt = make_optimizer("adam", lr)
    rng = np.random.default_rng(100 + seed)
    val = task.sample(np.random.default_rng(999), args.val, np.float64)
    curve = [(0, _val_cross_entropy(model, val))]
    carry = None
    alg = None if name == "bptt" else online.make(name, model, args.batch, seed=seed, **opts)
    h = None
    seen = 0
    while seen < args.steps:
        (x, y, mask), carry = task.stream(rng, args.batch, np.float64, carry)
        if alg is None:
            result = model.forward_backward(x, y, h, mask)
            h = result.h_last
            opt.step(model.params, result.grads)
        else:
            for t in range(x.shape[0]):
                _, g = alg.step(x[t], y[t], None if mask is None else mask[t])
                opt.step(model.params, g)
        seen += x.shape[0]
        if seen % args.eval_every == 0:
            curve.append((seen, _val_cross_entropy(model, val)))
    return curve


def cmd_gated_curves(args: argparse.Namespace) -> str:
    levels = LaggedDependenciesTask.levels()
    results: dict[str, dict[float, list]] = {}
    for label, name, opts in GATED_CURVES:
        results[label] = {}
        for lr in args.lrs:
            runs = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                runs.append(_gated_curve(name, opts, lr, seed, args))
                print(
                    f"  {label} lr={lr:g} seed={seed}: {time.perf_counter() - t0:.1f} s, "
                    f"final {runs[-1][-1][1]:.4f}",
                    flush=True,
                )
            results[label][lr] = runs
    _save_json(args, results)
    lines = [
        f"GRU, H = {args.H}, B = {args.batch} streams of the lagged task, {args.steps} steps per "
        f"stream, Adam; online: an update per step; bptt: an update per window of "
        f"{args.window} steps (state carried). Validation: {args.val} fresh sequences of "
        f"{args.window} steps, the first 8 unscored. Levels: "
        + ", ".join(f"{k} {v:.4f}" for k, v in levels.items())
        + " nats/step.\n",
        "| algorithm | best lr | final val cross-entropy (per seed) | nearest level | "
        + " | ".join(f"mean at lr {lr:g}" for lr in args.lrs)
        + " |",
        "|---|---|---|---|" + "---|" * len(args.lrs),
    ]
    best_runs = {}
    for label, by_lr in results.items():
        means = {lr: float(np.mean([r[-1][1] for r in runs])) for lr, runs in by_lr.items()}
        lr = min(means, key=lambda k: means[k])
        finals = [r[-1][1] for r in by_lr[lr]]
        best_runs[f"{label} (lr {lr:g})"] = by_lr[lr]
        level = min(levels, key=lambda k: abs(levels[k] - means[lr]))
        lines.append(
            f"| {label} | {lr:g} | {', '.join(f'{f:.4f}' for f in finals)} | {level} | "
            + " | ".join(f"{means[x]:.4f}" for x in args.lrs)
            + " |"
        )
    if args.figure:
        _plot_curves(
            best_runs,
            levels,
            FIGURES / "online_gated_curves.png",
            args.batch,
            xlabel="steps per stream (online: an update each; bptt: one per window)",
            title=f"GRU, H={args.H}, lagged task",
        )
    return "\n".join(lines)


def _save_json(args: argparse.Namespace, data: Any) -> None:
    if getattr(args, "json", None):
        from bptt.atomic import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(data, indent=1, default=str) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        impl, alg, H, B, min_s, min_steps = sys.argv[2:8]
        print(json.dumps(_time_one(impl, alg, int(H), int(B), float(min_s), int(min_steps))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--H", type=int, default=16)
    q.add_argument("--H-sparse", type=int, default=32)
    q.add_argument("--density", type=float, default=0.1)
    q.add_argument("--T", type=int, default=100)
    q.add_argument("--seeds", type=int, default=200)
    q.add_argument("--train-steps", type=int, default=300)
    s = sub.add_parser("speed")
    s.add_argument("--hidden", type=int, nargs="+", default=[32, 64])
    s.add_argument("--batch", type=int, default=32)
    sc = sub.add_parser("scaling")
    sc.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    sc.add_argument("--figure", action="store_true")
    sp = sub.add_parser("sparse")
    sp.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256])
    sp.add_argument("--density", type=float, nargs="+", default=[0.1, 0.25])
    sp.add_argument("--n", type=int, nargs="+", default=[2])
    for p in (s, sc, sp):
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--min-seconds", type=float, default=0.3)
    c = sub.add_parser("curves")
    c.add_argument("--H", type=int, default=16)
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--steps", type=int, default=4000)
    c.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    c.add_argument("--eval-every", type=int, default=500)
    c.add_argument("--seeds", type=int, default=2)
    c.add_argument("--figure", action="store_true")
    sh = sub.add_parser("shakespeare")
    sh.add_argument("--text", default=None)
    sh.add_argument("--H", type=int, default=32)
    sh.add_argument("--batch", type=int, default=8)
    sh.add_argument("--seq-len", type=int, default=50)
    sh.add_argument("--steps", type=int, default=3000)
    sh.add_argument("--lr", type=float, default=3e-3)
    sh.add_argument("--eval-every", type=int, default=500)
    sh.add_argument("--eval-windows", type=int, default=20)
    sh.add_argument("--figure", action="store_true")
    gq = sub.add_parser("gated-quality")
    gq.add_argument("--H", type=int, default=16)
    gq.add_argument("--T", type=int, default=100)
    gq.add_argument("--seeds", type=int, default=50)
    gc = sub.add_parser("gated-cost")
    gc.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32, 64])
    gc.add_argument("--batch", type=int, default=1)
    gc.add_argument("--steps", type=int, default=50)
    gc.add_argument("--repeats", type=int, default=3)
    gv = sub.add_parser("gated-curves")
    gv.add_argument("--H", type=int, default=16)
    gv.add_argument("--batch", type=int, default=16)
    gv.add_argument("--steps", type=int, default=3000)
    gv.add_argument("--window", type=int, default=50)
    gv.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2])
    gv.add_argument("--eval-every", type=int, default=250)
    gv.add_argument("--val", type=int, default=256)
    gv.add_argument("--seeds", type=int, default=2)
    gv.add_argument("--figure", action="store_true")
    for p in (q, s, sc, sp, c, sh, gq, gc, gv):
        p.add_argument("--markdown", type=Path, default=None)
        p.add_argument("--json", default=None)
    args = parser.parse_args()
    commands = {
        "quality": cmd_quality,
        "speed": cmd_speed,
        "scaling": cmd_scaling,
        "sparse": cmd_sparse,
        "curves": cmd_curves,
        "shakespeare": cmd_shakespeare,
        "gated-quality": cmd_gated_quality,
        "gated-cost": cmd_gated_cost,
        "gated-curves": cmd_gated_curves,
    }
    report(commands[args.cmd](args), args.markdown)


if __name__ == "__main__":
    main()
