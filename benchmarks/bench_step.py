"""One forward + BPTT step, bptt (NumPy) against PyTorch and JAX, each in its own fresh process.

    python benchmarks/bench_step.py                       # every shape, idle machine
    python benchmarks/bench_step.py --load 2              # with two busy-loop processes running
    python benchmarks/bench_step.py --markdown /tmp/step.md   # also writes the table
    python benchmarks/bench_step.py --frameworks bptt torch   # without the JAX column

A step is the loss and every gradient of an Elman RNN (tanh hidden, softmax + cross-entropy at
every step, loss summed over t and averaged over B), float32:

    bptt:    loss, grads = model.loss_and_grads(x, y)            (the public API)
    PyTorch: nn.RNN + nn.Linear + F.cross_entropy(reduction="sum") / B, then loss.backward()
    JAX:     jax.jit(jax.value_and_grad(loss)) with the recurrence in lax.scan, compiled
             ahead of time (``.lower(...).compile()``); the input product hoisted out of the
             scan, token ids gathered from V (no one-hot); ``pip install 'bptt[jax]'``.
             Only where JAX is installed (``--frameworks``).

For each shape the script first *validates* in a child process (both give the same loss and
gradients, float64 to 1e-9 and float32 to a norm-wise 2e-4; JAX likewise, in its own child)
and stops if they differ. Then it
times ``--reps`` rounds; in each round each framework runs in a fresh process that
imports only its own framework (order flipped every round, see ``_harness``), and each child
reports the median of ``--chunks`` timed chunks of about ``--chunk-seconds``. The table quotes
the median over rounds with the min–max range; the speed-up is the median of the per-round
ratios. Peak memory of one step is measured in one more fresh process per framework.

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
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _harness import (  # noqa: E402
    ChildFailed,
    CompetingLoad,
    Spread,
    alternate,
    emit,
    env_threads,
    load_average,
    rss_kib,
    run_child,
    sgemm_peak_child,
    spread,
)
from _machine import report  # noqa: E402

import bptt  # noqa: E402
from bptt.atomic import atomic_write_text  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    T: int
    B: int
    I: int
    H: int
    O: int
    ids: bool
    layers: int = 1

    def flops(self) -> float:
        """Matrix-product flops of one forward + backward step (layers above the first take
        H inputs: their input products count as 2·2TB·H²)."""
        T, B, I, H, O = self.T, self.B, self.I, self.H, self.O
        inp = 0 if self.ids else I * H
        deeper = (self.layers - 1) * (2 * H * H + 3 * H * H)
        return 2.0 * T * B * (2 * inp + 3 * H * H + deeper + 3 * H * O)

    def describe(self) -> str:
        inp = f"{self.I} ids" if self.ids else f"{self.I} floats"
        deep = f" L{self.layers}" if self.layers > 1 else ""
        return f"T{self.T} B{self.B} {inp} H{self.H}{deep} O{self.O}"


SHAPES = {
    s.name: s
    for s in (
        Shape("minchar", 25, 1, 65, 100, 65, ids=True),
        Shape("charlm", 100, 32, 65, 256, 65, ids=True),
        Shape("dense", 50, 64, 128, 512, 128, ids=False),
        Shape("long", 1000, 16, 32, 128, 32, ids=False),
        Shape("charlm2", 100, 32, 65, 256, 65, ids=True, layers=2),  # 2-layer (issue 8)
        Shape("sine", 50, 32, 1, 32, 1, ids=False),  # issue 11's small busy-machine step
    )
}
DEFAULT_SHAPES = ["minchar", "charlm", "dense", "long", "charlm2"]


class Unavailable(RuntimeError):
    """This bptt has no model for the shape yet (e.g. 2 layers before issue 8 lands)."""


# -- problems ---------------------------------------------------------------------------


def make_data(shape: Shape, dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One batch: ids or N(0,1) floats in (T, B[, I]), class ids out (T, B)."""
    rng = np.random.default_rng(seed)
    if shape.ids:
        x = rng.integers(0, shape.I, size=(shape.T, shape.B))
    else:
        x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(dtype)
    return x, rng.integers(0, shape.O, size=(shape.T, shape.B))


def make_problem(
    shape: Shape, dtype: type, seed: int = 0
) -> tuple[bptt.ElmanRNN, np.ndarray, np.ndarray]:
    """A model and one batch (:func:`make_data`).

    Raises:
        Unavailable: this bptt cannot build the shape's model.
    """
    kwargs = {} if shape.layers == 1 else {"num_layers": shape.layers}
    try:
        model = bptt.ElmanRNN(
            shape.I, shape.H, shape.O, "tanh", "softmax", seed=seed, dtype=dtype, **kwargs
        )
    except TypeError as err:
        raise Unavailable(f"bptt.ElmanRNN has no num_layers yet ({err})") from err
    x, y = make_data(shape, dtype, seed)
    return model, x, y


class TorchStep:
    """The same network in PyTorch, weights copied from the bptt model."""

    def __init__(
        self, model: bptt.ElmanRNN | None, x: np.ndarray, y: np.ndarray, shape: Shape
    ) -> None:
        """``model`` None: PyTorch's own initial weights (timing only, nothing to compare)."""
        import torch

        self.torch = torch
        tdtype = torch.float32 if model is None or model.dtype == np.float32 else torch.float64
        H, I, O = shape.H, shape.I, shape.O
        self.rnn = torch.nn.RNN(I, H, num_layers=shape.layers, nonlinearity="tanh", dtype=tdtype)
        self.lin = torch.nn.Linear(H, O, dtype=tdtype)
        with torch.no_grad():
            for name, value in (torch_weights(model) if model is not None else {}).items():
                getattr(self, name.split(".")[0]).get_parameter(name.split(".")[1]).copy_(
                    torch.from_numpy(value)
                )
        if x.ndim == 2:  # one-hot outside the timed region
            xt = torch.nn.functional.one_hot(torch.from_numpy(x), I).to(tdtype)
        else:
            xt = torch.from_numpy(x)
        self.x = xt.contiguous()
        self.y = torch.from_numpy(y.astype(np.int64)).reshape(-1)
        self.B = x.shape[1]

    def step(self) -> float:
        torch = self.torch
        self.rnn.zero_grad(set_to_none=True)
        self.lin.zero_grad(set_to_none=True)
        hs, _ = self.rnn(self.x)  # (T, B, H)
        logits = self.lin(hs)  # (T, B, O)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), self.y, reduction="sum"
        ) / float(self.B)
        loss.backward()
        return float(loss.detach())

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients under the torch names of :func:`bptt.interop.state_dict` (``rnn.*``,
        ``head.*``), any number of layers."""
        named = {f"rnn.{k}": v for k, v in self.rnn.named_parameters()}
        named |= {f"head.{k}": v for k, v in self.lin.named_parameters()}
        return {k: v.grad.detach().numpy().copy() for k, v in named.items()}


def torch_weights(model: bptt.ElmanRNN) -> dict[str, np.ndarray]:
    """bptt's weights under PyTorch's names (``rnn.weight_ih_l0`` …, ``lin.weight``): the one
    mapping, :func:`bptt.interop.state_dict` (b_hh is zero), any number of layers."""
    named = bptt.interop.state_dict(model)
    return {k.replace("head.", "lin.", 1): v for k, v in named.items()}


class JaxStep:
    """The same network in JAX: ``jit(value_and_grad(loss))``, the recurrence a ``lax.scan``.

    Parameters under PyTorch's names (:func:`bptt.interop.state_dict`), so the gradients
    compare name by name with bptt's; ``model`` None: random weights (timing only).
    """

    def __init__(
        self, model: bptt.ElmanRNN | None, x: np.ndarray, y: np.ndarray, shape: Shape
    ) -> None:
        import jax
        import jax.numpy as jnp

        self.jax = jax
        dtype = np.float32 if model is None or model.dtype == np.float32 else np.float64
        if model is not None:
            weights = bptt.interop.state_dict(model)
        else:
            weights = bptt.interop.state_dict(make_problem(shape, np.float32)[0])
        self.params = {k: jnp.asarray(v, dtype) for k, v in weights.items()}
        B, H, layers, ids = x.shape[1], shape.H, shape.layers, x.ndim == 2

        def loss(p: dict[str, Any], x: Any, y: Any) -> Any:
            if ids:
                inp = jnp.take(p["rnn.weight_ih_l0"].T, x, axis=0)  # (T, B, H): rows of Vᵀ
            else:
                inp = x @ p["rnn.weight_ih_l0"].T  # (T, B, H), hoisted out of the scan
            hs = inp
            for layer in range(layers):
                if layer:
                    inp = hs @ p[f"rnn.weight_ih_l{layer}"].T
                inp = inp + p[f"rnn.bias_ih_l{layer}"] + p[f"rnn.bias_hh_l{layer}"]
                W = p[f"rnn.weight_hh_l{layer}"]

                def cell(h: Any, e: Any, W: Any = W) -> tuple[Any, Any]:
                    h = jnp.tanh(e + h @ W.T)
                    return h, h

                _, hs = jax.lax.scan(cell, jnp.zeros((B, H), dtype), inp)  # (T, B, H)
            logits = hs @ p["head.weight"].T + p["head.bias"]  # (T, B, O)
            logp = jax.nn.log_softmax(logits, axis=-1)
            return -jnp.take_along_axis(logp, y[..., None], axis=-1).sum() / B

        self.x = jnp.asarray(x.astype(np.int32) if ids else x)
        self.y = jnp.asarray(y.astype(np.int32))
        step = jax.jit(jax.value_and_grad(loss))
        self.compiled = step.lower(self.params, self.x, self.y).compile()  # compiled here
        self.B = B

    def step(self) -> float:
        value, grads = self.compiled(self.params, self.x, self.y)
        self.jax.block_until_ready(grads)
        self._grads = grads
        return float(value)

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the last :meth:`step`, under the torch names."""
        return {k: np.asarray(v) for k, v in self._grads.items()}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖b‖, tiny): norm-wise relative error, in float64."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), 1e-30))


def validate(shape: Shape, framework: str = "torch") -> dict[str, float]:
    """Largest relative error of loss and gradients, bptt vs PyTorch (or JAX), float64 and
    float32.

    Raises:
        AssertionError: a disagreement beyond 1e-9 (float64) or 2e-4 (float32).
    """
    if framework == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64
    peer = JaxStep if framework == "jax" else TorchStep
    worst: dict[str, float] = {}
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 2e-4)):
        model, x, y = make_problem(shape, dtype)
        loss, grads = model.loss_and_grads(x, y)
        ts = peer(model, x, y, shape)
        tloss = ts.step()
        tgrads = ts.grads()
        named = bptt.interop.state_dict(model, grads)  # db_h for each of bias_ih, bias_hh
        errs = {"loss": abs(loss - tloss) / abs(tloss)}
        for name, g in tgrads.items():
            mine = named[name]
            assert mine.dtype == dtype, f"{name}: dtype {mine.dtype} != {np.dtype(dtype)}"
            errs[name] = rel_err(mine, g)
        worst[np.dtype(dtype).name] = max(errs.values())
        bad = {k: v for k, v in errs.items() if v > tol}
        name = np.dtype(dtype).name
        assert not bad, f"{shape.name} {name}: bptt != {framework} beyond {tol}: {bad}"
    return worst


# -- children: one framework, one shape, a fresh process ---------------------------------


def _step_fn(framework: str, shape: Shape) -> Callable[[], object]:
    """The timed call: bptt's ``model.loss_and_grads(x, y)`` or PyTorch's forward + backward."""
    if framework == "bptt":
        model, x, y = make_problem(shape, np.float32)

        def step() -> object:
            return model.loss_and_grads(x, y)

        return step
    try:
        model_or_none: bptt.ElmanRNN | None = make_problem(shape, np.float32)[0]
    except Unavailable:  # time PyTorch alone from its own initial weights
        model_or_none = None
    x, y = make_data(shape, np.float32)
    if framework == "jax":
        return JaxStep(model_or_none, x, y, shape).step
    return TorchStep(model_or_none, x, y, shape).step


def time_child(framework: str, shape_name: str, chunks: int, chunk_s: float) -> dict[str, object]:
    """Median per-step time over ``chunks`` chunks of about ``chunk_s`` seconds each.

    Three warm-up steps first (library loading, JIT compilation, allocator warm-up).
    """
    shape = SHAPES[shape_name]
    try:
        step = _step_fn(framework, shape)
    except Unavailable as err:
        return {"unavailable": str(err)}
    for _ in range(3):
        step()
    start = time.perf_counter()
    step()
    n = max(1, int(chunk_s / max(time.perf_counter() - start, 1e-7)))
    per_step = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(n):
            step()
        per_step.append((time.perf_counter() - start) / n)
    threads = None
    choice = None
    if framework == "bptt":
        from bptt import tuning

        dtype = np.dtype(np.float32)
        if tuning.active():
            choice = tuning.choice("elman", shape.B, shape.H, dtype).describe()
        else:
            choice = (
                f"defaults: {tuning.default_choice('elman', shape.B, shape.H, dtype).describe()}"
            )
    if framework == "torch":
        import torch

        threads = torch.get_num_threads()
    loaded = [m for m in ("torch", "jax") if m in sys.modules and m != framework]
    return {
        "ms": 1e3 * statistics.median(per_step),
        "chunks_ms": [1e3 * t for t in per_step],
        "calls_per_chunk": n,
        "torch_threads": threads,
        "loaded_torch": "torch" in sys.modules,
        "loaded_peers": loaded,
        "loop_choice": choice,
    }


def memory_child(shape_name: str, framework: str) -> dict[str, object]:
    """Peak memory of one step, measured in a fresh process.

    RSS: reset the high-water mark (``echo 5 > /proc/self/clear_refs``), run one step, and
    report VmHWM minus the RSS just before; the same for both frameworks. A warm-up step on a
    tiny problem first loads libraries and JIT kernels, so they are not counted.
    tracemalloc (bptt only): NumPy reports its buffers to tracemalloc, torch does not.
    """
    shape = SHAPES[shape_name]
    tiny = Shape("tiny", 3, 2, shape.I, 4, shape.O, shape.ids, shape.layers)
    try:
        _step_fn(framework, tiny)()  # loads and compiles what the real step needs
        run = _step_fn(framework, shape)
    except Unavailable as err:
        return {"unavailable": str(err)}
    gc.collect()
    out: dict[str, object] = {}
    if framework == "bptt":
        tracemalloc.start()
        run()
        out["tracemalloc_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        gc.collect()
    before = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    run()
    out["rss_mib"] = (rss_kib("VmHWM") - before) / 1024
    return out


def validate_child(shape_name: str, framework: str = "torch") -> dict[str, object]:
    """:func:`validate` in a child (bptt and the peer loaded: nothing is timed here)."""
    try:
        return {"worst": validate(SHAPES[shape_name], framework)}
    except Unavailable as err:
        return {"unavailable": str(err)}


# -- the parent: validate, alternate fresh children, summarise ----------------------------

FRAMEWORKS = ("bptt", "torch", "jax")


def available_frameworks(wanted: list[str]) -> list[str]:
    """``wanted`` less the peers that are not installed (said on stdout), bptt first."""
    import importlib.util

    out = []
    for fw in wanted:
        if fw != "bptt" and importlib.util.find_spec(fw) is None:
            print(f"  {fw} is not installed: no {fw} column (pip install 'bptt[{fw}]')")
            continue
        out.append(fw)
    return ["bptt", *[fw for fw in out if fw != "bptt"]]


def measure_shape(
    shape: Shape,
    reps: int,
    chunks: int,
    chunk_s: float,
    memory: bool,
    frameworks: tuple[str, ...] = ("bptt", "torch"),
) -> dict[str, object]:
    """Validation, ``reps`` alternated rounds of fresh timing children, memory children."""
    script = str(Path(__file__).resolve())
    row: dict[str, object] = {"shape": shape, "frameworks": frameworks}
    for fw in frameworks[1:]:
        checked = run_child([script, "--validate-child", shape.name, fw])
        if "unavailable" in checked:
            print(f"  {shape.name}: not validated: {checked['unavailable']}", flush=True)
        row["validated" if fw == "torch" else f"validated_{fw}"] = checked
    cmds = {
        fw: [script, "--time-child", fw, shape.name, str(chunks), str(chunk_s)] for fw in frameworks
    }
    runs = alternate(cmds, reps)
    for fw in frameworks:
        ok = [r for r in runs[fw] if "ms" in r]
        row[fw] = spread([float(r["ms"]) for r in ok]) if ok else None  # type: ignore[arg-type]
        if ok:
            assert not ok[0]["loaded_peers"], f"{fw} child imported {ok[0]['loaded_peers']}"
            row[f"{fw}_threads"] = ok[0]["torch_threads"]
            row[f"{fw}_loop_choice"] = ok[0].get("loop_choice")
    for fw in frameworks[1:]:
        pairs = [
            float(t["ms"]) / float(b["ms"])  # type: ignore[arg-type]
            for b, t in zip(runs["bptt"], runs[fw], strict=True)
            if "ms" in b and "ms" in t
        ]
        row["ratio" if fw == "torch" else f"ratio_{fw}"] = spread(pairs) if pairs else None
    if memory:
        for fw in frameworks:
            row[f"mem_{fw}"] = run_child([script, "--memory-child", shape.name, fw])
    return row


def _mem(m: object, key: str) -> str:
    if not isinstance(m, dict) or key not in m:
        return "-"
    return f"{m[key]:.1f}"


def table(rows: list[dict[str, object]], peak: float, reps: int, load: int) -> str:
    jax = any(r.get("jax") for r in rows)
    jax_head = " | jax ms/step median [min–max] | speed-up vs JAX median [min–max]" if jax else ""
    jax_tail = " | jax peak MiB (RSS) | max rel err f32 (JAX)" if jax else ""
    head = (
        "| shape | bptt ms/step median [min–max] | torch ms/step median [min–max] "
        f"| speed-up median [min–max]{jax_head} | bptt tokens/s | bptt GFLOP/s | of sgemm peak "
        "| torch GFLOP/s | bptt peak MiB (tracemalloc / RSS) | torch peak MiB (RSS) "
        f"| max rel err f32{jax_tail} |\n"
        "|---|---|---|---|"
        + ("---|---|" if jax else "")
        + "---|---|---|---|---|---|---|"
        + ("---|---|" if jax else "")
        + "\n"
    )
    lines = []
    for r in rows:
        s = r["shape"]
        assert isinstance(s, Shape)
        b, t, ratio = r["bptt"], r.get("torch"), r.get("ratio")
        err = _err(r.get("validated"))
        mb = r.get("mem_bptt")
        mnp = f"{_mem(mb, 'tracemalloc_mib')} / {_mem(mb, 'rss_mib')}" if mb else "-"
        mt = _mem(r.get("mem_torch"), "rss_mib")
        bms = b.fmt(3) if b else "n/a (no model yet)"
        tms = t.fmt(3) if t else "n/a"
        rat = _ratio(ratio)
        if b:
            gf = s.flops() / (b.median / 1e3) / 1e9
            perf = f"{s.T * s.B / (b.median / 1e3):,.0f} | {gf:.1f} | {100 * gf / peak:.0f}%"
        else:
            perf = "- | - | -"
        tgf = f"{s.flops() / (t.median / 1e3) / 1e9:.1f}" if t else "-"
        jx = jt = ""
        if jax:
            j = r.get("jax")
            jx = f" | {j.fmt(3) if j else 'n/a'} | {_ratio(r.get('ratio_jax'))}"
            jt = f" | {_mem(r.get('mem_jax'), 'rss_mib')} | {_err(r.get('validated_jax'))}"
        lines.append(
            f"| {s.name} ({s.describe()}) | {bms} | {tms} | {rat}{jx} | {perf} | {tgf} "
            f"| {mnp} | {mt} | {err}{jt} |"
        )
    torch_threads = next((r.get("torch_threads") for r in rows if r.get("torch_threads")), "?")
    foot = (
        f"\n\n{reps} alternated rounds per shape, each framework in a fresh process per round; "
        f"competing load: {load} busy-loop process(es); float32 sgemm peak (2048³, fresh "
        f"process, before the rounds) {peak:.1f} GFLOP/s; torch threads {torch_threads}; "
        f"{env_threads()}"
    )
    if jax:
        foot += f"; JAX {_jax_version()} (XLA CPU, its default threads)"
    choices = [f"{r['shape'].name}: {r.get('bptt_loop_choice')}" for r in rows]  # type: ignore[union-attr]
    foot += f"; bptt's time loops (bptt.tuning): {'; '.join(choices)}"
    return head + "\n".join(lines) + foot


def _err(checked: object) -> str:
    if isinstance(checked, dict) and "worst" in checked:
        return f"{checked['worst']['float32']:.1e}"
    return "not validated"


def _ratio(ratio: object) -> str:
    if not isinstance(ratio, Spread):
        return "-"
    return f"**{ratio.median:.2f}×** [{ratio.lo:.2f}–{ratio.hi:.2f}]"


def _jax_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jax")
    except PackageNotFoundError:
        return "?"


def summary_rows(rows: list[dict[str, object]], load: int, conditions: str) -> list[dict[str, Any]]:
    """Per shape: medians and the ratio's range, for the README summary."""
    out = []
    for r in rows:
        s, b, t, ratio = r["shape"], r["bptt"], r.get("torch"), r.get("ratio")
        j, ratio_j = r.get("jax"), r.get("ratio_jax")
        assert isinstance(s, Shape)
        out.append(
            {
                "jax_ms": j.median if isinstance(j, Spread) else None,
                "ratio_jax": ratio_j.median if isinstance(ratio_j, Spread) else None,
                "shape": s.name,
                "describe": s.describe(),
                "bptt_ms": b.median if isinstance(b, Spread) else None,
                "torch_ms": t.median if isinstance(t, Spread) else None,
                "ratio": ratio.median if isinstance(ratio, Spread) else None,
                "ratio_lo": ratio.lo if isinstance(ratio, Spread) else None,
                "ratio_hi": ratio.hi if isinstance(ratio, Spread) else None,
                "conditions": f"{time.strftime('%Y-%m-%d', time.gmtime())}, competing load "
                f"{load} busy-loop process(es), {conditions}",
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES))
    parser.add_argument("--reps", type=int, default=5, help="alternated rounds (fresh processes)")
    parser.add_argument("--chunks", type=int, default=5, help="timed chunks per child")
    parser.add_argument("--chunk-seconds", type=float, default=0.3, help="length of a chunk")
    parser.add_argument(
        "--load", type=int, default=0, help="busy-loop processes running meanwhile (0: none)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    parser.add_argument(
        "--frameworks",
        nargs="+",
        default=list(FRAMEWORKS),
        choices=list(FRAMEWORKS),
        help="the peers to time beside bptt (those not installed are left out, said so)",
    )
    parser.add_argument("--markdown", type=Path, help="write machine info + table here")
    parser.add_argument("--json", type=Path, help="write the summary rows here (run_all.py)")
    parser.add_argument("--time-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--validate-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_child:
        fw, name, chunks, chunk_s = args.time_child
        emit(time_child(fw, name, int(chunks), float(chunk_s)))
        return 0
    if args.memory_child:
        emit(memory_child(*args.memory_child))
        return 0
    if args.validate_child:
        emit(validate_child(*args.validate_child))
        return 0
    before = load_average()
    peak = sgemm_peak_child()
    print(f"float32 sgemm peak (fresh process): {peak:.1f} GFLOP/s; load {before}", flush=True)
    frameworks = tuple(available_frameworks(args.frameworks))
    rows = []
    with CompetingLoad(args.load):
        for name in args.shapes:
            print(f"  {name} ({SHAPES[name].describe()})", flush=True)
            try:
                rows.append(
                    measure_shape(
                        SHAPES[name],
                        args.reps,
                        args.chunks,
                        args.chunk_seconds,
                        not args.no_memory,
                        frameworks,
                    )
                )
            except ChildFailed as err:
                print(f"  {name} failed: {err}", file=sys.stderr)
                return 1
    text = table(rows, peak, args.reps, args.load)
    conditions = f"load average before {before}, after {load_average()}"
    text += f"; {conditions}"
    report(text, args.markdown)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(summary_rows(rows, args.load, conditions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
