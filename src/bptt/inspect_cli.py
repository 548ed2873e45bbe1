"""``bptt inspect``: gradient-flow diagnostics of a model on a sample batch.

    bptt inspect [DIR_OR_CHECKPOINT] [--out DIR] [model and batch options]

Without a path, a freshly initialised model is built from the options; with one, the model is
loaded through :func:`bptt.checkpoint.load_checkpoint`, and ``DIR/profile.json`` (written by
the trainer when profiling is on) is drawn as a heat map. Writes ``inspect.json`` and PNG
figures into ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .activations import ACTIVATIONS
from .atomic import atomic_write_text
from .diagnostics import (
    GradientProfileRecorder,
    HiddenStateGradients,
    JacobianReport,
    LagContributions,
    TruncationBias,
    hidden_state_gradients,
    jacobian_report,
    lag_contributions,
    truncation_bias,
)
from .heads import HEADS
from .model import ElmanRNN

TASKS = ("adding", "random")
RECURRENT_INITS = ("uniform", "identity", "orthogonal")
FIGURES = {
    "lags": "lag_contributions.png",
    "hidden": "hidden_gradients.png",
    "jacobian": "jacobian_products.png",
    "truncation": "truncation_bias.png",
    "profile": "profile_heatmap.png",
}


# -- batches -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A sample batch: x (T, B, I) or ids (T, B), targets y, and a (T, B) mask or None."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None
    task: str


def adding_batch(seq_len: int, batch: int, rng: np.random.Generator, dtype: Any) -> Batch:
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

    x[t, b] = (value ~ U(0, 1), marker ∈ {0, 1}); exactly two markers per sequence, one in
    each half. The target, scored only at the last step (mask), is the sum of the two marked
    values, for an identity head with one output: x (T, B, 2), y (T, B, 1), mask (T, B).
    """
    if seq_len < 2:
        raise ValueError(f"the adding problem needs seq_len >= 2, got {seq_len}")
    half = seq_len // 2
    x = np.zeros((seq_len, batch, 2), dtype=dtype)  # (T, B, 2)
    x[:, :, 0] = rng.uniform(0.0, 1.0, size=(seq_len, batch))
    first = rng.integers(0, half, size=batch)  # (B,)
    second = rng.integers(half, seq_len, size=batch)  # (B,)
    cols = np.arange(batch)
    x[first, cols, 1] = 1.0
    x[second, cols, 1] = 1.0
    y = np.zeros((seq_len, batch, 1), dtype=dtype)  # (T, B, 1)
    y[-1, :, 0] = x[first, cols, 0] + x[second, cols, 0]
    mask = np.zeros((seq_len, batch), dtype=dtype)  # (T, B)
    mask[-1] = 1.0
    return Batch(x=x, y=y, mask=mask, task="adding")


def random_batch(
    model: ElmanRNN, seq_len: int, batch: int, rng: np.random.Generator, ids: bool
) -> Batch:
    """Standard-normal inputs (or uniform token ids) and random targets for the model's head."""
    shape_tb = (seq_len, batch)
    x = (
        rng.integers(0, model.input_size, size=shape_tb)
        if ids
        else rng.standard_normal((*shape_tb, model.input_size)).astype(model.dtype)
    )
    O = model.output_size
    if model.output == "softmax":
        y = rng.integers(0, O, size=shape_tb)
    elif model.output == "sigmoid":
        y = (rng.random((*shape_tb, O)) < 0.5).astype(model.dtype)
    else:
        y = rng.standard_normal((*shape_tb, O)).astype(model.dtype)
    return Batch(x=x, y=y, mask=None, task="random")


# -- models ------------------------------------------------------------------------------


def set_recurrent_init(
    model: ElmanRNN, init: str, spectral_radius: float | None, rng: np.random.Generator
) -> None:
    """Replace W: ``identity`` (the IRNN of Le et al. 2015, with b_h = 0), ``orthogonal``
    (Haar-random), or keep ``uniform``; then rescale W to ``spectral_radius`` if given."""
    H = model.hidden_size
    params = model.params
    if init == "identity":
        params.W = np.eye(H, dtype=model.dtype)
        params.b_h = np.zeros(H, dtype=model.dtype)
    elif init == "orthogonal":
        q, r = np.linalg.qr(rng.standard_normal((H, H)))
        params.W = (q * np.sign(np.diag(r))).astype(model.dtype)
    elif init != "uniform":
        raise ValueError(f"recurrent init must be one of {RECURRENT_INITS}, got {init!r}")
    if spectral_radius is not None:
        if not spectral_radius > 0:
            raise ValueError(f"--spectral-radius must be > 0, got {spectral_radius}")
        radius = float(np.max(np.abs(np.linalg.eigvals(params.W))))
        if radius == 0:
            raise ValueError("cannot rescale W to a spectral radius: W has spectral radius 0")
        params.W = (params.W * (spectral_radius / radius)).astype(model.dtype)


def fresh_model(args: argparse.Namespace) -> ElmanRNN:
    """The model the options describe, with the adding task fixing I = 2, O = 1, identity."""
    if args.task == "adding":
        for option, value, needed in (
            ("--input-size", args.input_size, 2),
            ("--output-size", args.output_size, 1),
            ("--output", args.output, "identity"),
        ):
            if value is not None and value != needed:
                raise ValueError(f"--task adding needs {option} {needed}, got {value}")
        sizes = (2, args.hidden, 1)
        output = "identity"
    else:
        sizes = (args.input_size or 8, args.hidden, args.output_size or 4)
        output = args.output or "softmax"
    model = ElmanRNN(
        *sizes, hidden_activation=args.activation, output=output, seed=args.seed, dtype=np.float64
    )
    set_recurrent_init(
        model, args.recurrent_init, args.spectral_radius, np.random.default_rng(args.seed)
    )
    return model


def load_model(path: Path) -> ElmanRNN:
    """``bptt.checkpoint.load_checkpoint(path).model``, with a clear error when unavailable."""
    try:
        from .checkpoint import load_checkpoint  # type: ignore[import-not-found,unused-ignore]
    except ImportError as err:
        raise ValueError(
            f"cannot load {path}: this bptt has no checkpoint support (bptt.checkpoint with "
            f"load_checkpoint is missing); inspect a fresh model by giving no path"
        ) from err
    if not path.exists():
        raise ValueError(f"DIR_OR_CHECKPOINT {path} does not exist")
    model = load_checkpoint(path).model
    if not isinstance(model, ElmanRNN):
        raise TypeError(f"checkpoint {path} did not give an ElmanRNN, got {type(model).__name__}")
    return model


def find_profile(path: Path | None, explicit: Path | None) -> Path | None:
    """``--profile``, else ``DIR/profile.json`` (or beside a checkpoint file) when present."""
    if explicit is not None:
        if not explicit.is_file():
            raise ValueError(f"--profile {explicit} is not a file")
        return explicit
    if path is None:
        return None
    folder = path if path.is_dir() else path.parent
    candidate = folder / "profile.json"
    return candidate if candidate.is_file() else None


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    """Everything ``bptt inspect`` computes for one model and batch."""

    model: ElmanRNN
    batch: Batch
    source: str
    contrib: LagContributions
    hidden: HiddenStateGradients
    jacobian: JacobianReport
    truncation: TruncationBias
    profile: GradientProfileRecorder | None


def inspect_model(
    model: ElmanRNN,
    batch: Batch,
    source: str,
    max_lag: int | None = None,
    profile: GradientProfileRecorder | None = None,
) -> Inspection:
    """Run every diagnostic of :mod:`bptt.diagnostics` on one batch."""
    return Inspection(
        model=model,
        batch=batch,
        source=source,
        contrib=lag_contributions(model, batch.x, batch.y, mask=batch.mask, max_lag=max_lag),
        hidden=hidden_state_gradients(model, batch.x, batch.y, mask=batch.mask),
        jacobian=jacobian_report(model, batch.x),
        truncation=truncation_bias(model, batch.x, batch.y, mask=batch.mask),
        profile=profile,
    )


def _floats(a: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


def report_dict(ins: Inspection) -> dict[str, Any]:
    """The JSON document ``inspect.json`` (strict JSON: NaN and inf as null)."""
    T, B = ins.batch.x.shape[:2]
    jac, tb = ins.jacobian, ins.truncation
    return {
        "model": {
            "repr": repr(ins.model),
            "input_size": ins.model.input_size,
            "hidden_size": ins.model.hidden_size,
            "output_size": ins.model.output_size,
            "hidden_activation": ins.model.hidden_activation,
            "output": ins.model.output,
            "source": ins.source,
        },
        "batch": {"task": ins.batch.task, "seq_len": T, "batch": B, "loss": ins.contrib.loss},
        "lag_contributions": {
            "labels": ins.contrib.labels,
            "max_lag": ins.contrib.max_lag,
            "norms": {k: _floats(v) for k, v in ins.contrib.norms().items()},
        },
        "hidden_state_gradients": {
            "steps": list(range(T + 1)),
            "norm_mean": _floats(ins.hidden.norms("mean")),
            "norm_max": _floats(ins.hidden.norms("max")),
        },
        "jacobian": {
            "origin": jac.origin,
            "lags": jac.lags.tolist(),
            "norm_mean": _floats(jac.norm_mean),
            "norm_max": _floats(jac.norm_max),
            "log10_norm_mean_of_logs": _floats(jac.log10_norms.mean(axis=1)),
            "rate_per_step": _floats(np.array([jac.rate()]))[0],
            "singular_values": _floats(jac.singular_values),
            "spectral_radius": jac.spectral_radius,
            "gamma": jac.gamma,
            "step_bound": jac.step_bound,
            "pascanu_vanishing_condition_holds": jac.vanishing_guaranteed,
            "statement": jac.statement(),
        },
        "truncation_bias": {
            "k2": tb.k2.tolist(),
            "cosine": {k: _floats(v) for k, v in tb.cosine.items()},
            "rel_error": {k: _floats(v) for k, v in tb.rel_error.items()},
        },
        "profile": None if ins.profile is None else ins.profile.to_dict(),
    }


def _pick(values: np.ndarray, index: int) -> str:
    return f"{values[index]:.3g}" if 0 <= index < len(values) else "-"


def summary_lines(ins: Inspection) -> list[str]:
    """A short terminal summary."""
    T, B = ins.batch.x.shape[:2]
    norms = ins.contrib.norms()["total"]
    n = ins.contrib.n_exact
    far = min(10, n - 1)
    share = float(np.sum(norms[far:] ** 2) / np.sum(norms**2)) if np.sum(norms**2) > 0 else 0.0
    hidden = ins.hidden.norms("mean")
    jac = ins.jacobian
    jac_mean = jac.norm_mean
    cos = ins.truncation.cosine["all"]
    reach = np.nonzero(np.nan_to_num(cos, nan=-1.0) >= 0.99)[0]
    lines = [
        f"model: {ins.model!r}",
        f"source: {ins.source}",
        f"batch: task={ins.batch.task} T={T} B={B} loss={ins.contrib.loss:.4g}",
        "per-lag ‖part of dL/d(W,V,b_h)‖_F: "
        + ", ".join(
            f"lag {ins.contrib.labels[i]}: {norms[i]:.3g}" for i in sorted({0, min(1, far), far})
        )
        + (
            f", lags {ins.contrib.labels[-1]} summed: {norms[-1]:.3g}"
            if ins.contrib.has_remainder
            else ""
        ),
        f"  lags ≥ {far} carry {share:.1%} of the squared norm summed over lags",
        f"‖dL/dh_t‖ (batch mean): t={T}: {hidden[T]:.3g}, t={T // 2}: {hidden[T // 2]:.3g}, "
        f"t=0: {hidden[0]:.3g}",
        f"‖Π J‖₂ from t={jac.origin} (batch mean): lag 1: {_pick(jac_mean, 1)}, "
        f"lag 10: {_pick(jac_mean, 10)}, lag {jac.lags[-1]}: {_pick(jac_mean, len(jac_mean) - 1)}; "
        f"fitted factor per step {jac.rate():.3g}",
        "Pascanu et al. 2013: " + jac.statement(),
        "truncation: cos∠(g(k2), g) ≥ 0.99 from k2 = "
        + (str(int(ins.truncation.k2[reach[0]])) if reach.size else "never")
        + f"; relative error at k2=1: {ins.truncation.rel_error['all'][0]:.3g}",
    ]
    if ins.profile is not None:
        lines.append(f"profile: {len(ins.profile)} records from training")
    return lines


def write_figures(ins: Inspection, out: Path) -> list[Path]:
    """The PNG figures of :mod:`bptt.diagnostic_plots`, written atomically into ``out``."""
    from . import diagnostic_plots as dp

    figures = {
        "lags": dp.plot_lag_contributions(ins.contrib),
        "hidden": dp.plot_hidden_gradients(ins.hidden),
        "jacobian": dp.plot_jacobian_products(ins.jacobian),
        "truncation": dp.plot_truncation_bias(ins.truncation),
    }
    if ins.profile is not None and len(ins.profile):
        figures["profile"] = dp.plot_profile_heatmap(ins.profile)
    return [dp.save_figure(fig, out / FIGURES[key]) for key, fig in figures.items()]


# -- the command -------------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    """Build or load the model, run the diagnostics, write JSON and figures, print a summary."""
    path = None if args.path is None else Path(args.path)
    out = Path(args.out)
    if args.max_lag is not None and args.max_lag < 0:
        raise ValueError(f"--max-lag must be >= 0, got {args.max_lag}")
    for option, value in (("--seq-len", args.seq_len), ("--batch", args.batch)):
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if not args.no_plots:
        from .diagnostic_plots import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as err:
            print(f"bptt inspect: error: {err} (or pass --no-plots)", file=sys.stderr)
            return 2
    rng = np.random.default_rng(args.seed + 1)
    if path is None:
        model = fresh_model(args)
        source = f"fresh initialisation (seed {args.seed}, W {args.recurrent_init}" + (
            f", spectral radius {args.spectral_radius})" if args.spectral_radius else ")"
        )
    else:
        model = load_model(path)
        source = f"checkpoint {path}"
    if args.task == "adding":
        if (model.input_size, model.output_size, model.output) != (2, 1, "identity"):
            raise ValueError(
                f"--task adding needs a model with input_size 2, output_size 1 and the "
                f"identity head, got {model!r}"
            )
        batch = adding_batch(args.seq_len, args.batch, rng, model.dtype)
    else:
        batch = random_batch(model, args.seq_len, args.batch, rng, args.ids)
    profile_path = find_profile(path, None if args.profile is None else Path(args.profile))
    profile = None if profile_path is None else GradientProfileRecorder.load(profile_path)
    ins = inspect_model(model, batch, source, max_lag=args.max_lag, profile=profile)
    report = report_dict(ins)
    if report["profile"] is not None:
        report["profile"]["path"] = str(profile_path)
    json_path = atomic_write_text(
        out / "inspect.json", json.dumps(report, indent=1, allow_nan=False, ensure_ascii=False)
    )
    for line in summary_lines(ins):
        print(line)
    written = [json_path]
    if not args.no_plots:
        written += write_figures(ins, out)
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bptt inspect`` on the ``bptt`` command's subparsers."""
    p = subparsers.add_parser(
        "inspect",
        help="gradient-flow diagnostics: per-lag BPTT contributions, Jacobians, truncation",
        description="Take BPTT apart on a sample batch: the part of dL/dW, dL/dV, dL/db_h that "
        "flows over each lag, dL/dh_t per step, Jacobian-product norms against lag with the "
        "spectrum of W and the Pascanu et al. (2013) condition, and the bias of truncated "
        "BPTT for every truncation length. Without DIR_OR_CHECKPOINT, a freshly initialised "
        "model is built from the model options. Writes inspect.json and PNG figures "
        "(needs matplotlib: pip install 'bptt[plot]') into --out.",
    )
    p.add_argument(
        "path",
        nargs="?",
        metavar="DIR_OR_CHECKPOINT",
        help="a run folder or checkpoint to load; its profile.json is drawn as a heat map",
    )
    p.add_argument("--out", default="bptt-inspect", help="output folder (default: %(default)s)")
    p.add_argument("--max-lag", type=int, default=None, help="lags kept apart (rest summed)")
    p.add_argument("--profile", default=None, help="a profile.json to draw (default: DIR's)")
    p.add_argument("--no-plots", action="store_true", help="only the summary and the JSON")
    g = p.add_argument_group("sample batch")
    g.add_argument("--task", choices=TASKS, default="random", help="(default: %(default)s)")
    g.add_argument("--seq-len", type=int, default=50, help="T (default: %(default)s)")
    g.add_argument("--batch", type=int, default=16, help="B (default: %(default)s)")
    g.add_argument("--ids", action="store_true", help="random task: integer token ids")
    g.add_argument("--seed", type=int, default=0, help="model and batch seed (default: 0)")
    m = p.add_argument_group("fresh model (no DIR_OR_CHECKPOINT)")
    m.add_argument("--input-size", type=int, default=None, help="I (random task default 8)")
    m.add_argument("--hidden", type=int, default=32, help="H (default: %(default)s)")
    m.add_argument("--output-size", type=int, default=None, help="O (random task default 4)")
    m.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    m.add_argument("--output", choices=sorted(HEADS), default=None, help="head (softmax)")
    m.add_argument(
        "--recurrent-init",
        choices=RECURRENT_INITS,
        default="uniform",
        help="W: PyTorch's uniform, identity (IRNN, b_h = 0) or orthogonal",
    )
    m.add_argument(
        "--spectral-radius", type=float, default=None, help="rescale W to this spectral radius"
    )
    p.set_defaults(func=run_inspect)
    return p
