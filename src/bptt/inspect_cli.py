"""``bptt inspect``: gradient-flow diagnostics of a model on a sample batch.

    bptt inspect [DIR_OR_CHECKPOINT] [--out DIR] [model and batch options]

Without a path, a freshly initialised model is built from the options (weights by
:mod:`bptt.init`); with one, the model is loaded through :func:`bptt.checkpoint.load_checkpoint`,
the sample batch is a validation batch of the run's own task (its ``config`` as a
:class:`bptt.train.TrainConfig`: :func:`bptt.train.make_task`, or the run's text for charlm)
unless ``--task`` says otherwise, and ``DIR/profile.json`` (written by the trainer when
profiling is on) is drawn as a heat map. Writes ``inspect.json`` and PNG
figures into ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import ACTIVATIONS
from .atomic import atomic_write_text
from .data.tasks import AddingTask, SequenceTask
from .diagnostics import (
    GradientProfileRecorder,
    HiddenStateGradients,
    JacobianReport,
    LagContributions,
    TruncationBias,
    hidden_state_gradients,
    jacobian_report,
    lag_contributions,
    layer_lag_contributions,
    layer_name,
    truncation_bias,
)
from .heads import HEADS
from .init import INITS, initialise
from .model import ElmanRNN
from .resources import check_memory, estimate_bytes

if TYPE_CHECKING:
    from .train import TrainConfig

TASKS = ("adding", "random")
DEFAULT_SEQ_LEN, DEFAULT_BATCH = 50, 16
FIGURES = {
    "lags": "lag_contributions.png",
    "hidden": "hidden_gradients.png",
    "jacobian": "jacobian_products.png",
    "truncation": "truncation_bias.png",
    "profile": "profile_heatmap.png",
    "layers": "layer_lag_profile.png",
}


# -- batches -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A sample batch: x (T, B, I) or ids (T, B), targets y, a (T, B) mask or None, the task."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None
    task: str


def task_batch(task: SequenceTask, batch: int, rng: np.random.Generator, dtype: Any) -> Batch:
    """A validation batch of a :class:`~bptt.data.tasks.SequenceTask` (``split="val"``)."""
    data = task.sample(rng, batch, dtype, split="val")
    return Batch(x=data.x, y=data.y, mask=data.mask, task=task.name)


def charlm_batch(config: TrainConfig, vocab: Any, seq_len: int, batch: int) -> Batch:
    """The first (T, B) window of the run's validation text, y the next character of x.

    The corpus is built as the trainer builds it (:class:`bptt.train.TextData`: ``--text`` or
    the built-in corpus, the run's vocabulary and ``--val-fraction``); the validation split is
    cut into B parallel streams (:func:`bptt.data.text.stream_batches`).
    """
    from .data.text import stream_batches
    from .train import TextData

    # the split does not depend on T and B; passing them makes a too-short text's error name them
    text = TextData(dataclasses.replace(config, seq_len=seq_len, batch=batch), vocab)
    x, y = next(stream_batches(text.val_ids, batch, seq_len))  # (T, B), (T, B)
    return Batch(x=np.array(x), y=np.array(y), mask=None, task="charlm")


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


def run_batch(model: ElmanRNN, config: TrainConfig, vocab: Any, args: argparse.Namespace) -> Batch:
    """A validation batch of the run's own task (``config.task``), T and B from the options
    when given, else T from the run and B = 16."""
    from .train import make_task

    batch = DEFAULT_BATCH if args.batch is None else args.batch
    if args.seq_len is not None and args.seq_len != config.seq_len:
        config = dataclasses.replace(config, seq_len=args.seq_len)
    if config.task == "charlm":
        return charlm_batch(config, vocab, config.seq_len, batch)
    task = make_task(config)
    if (model.input_size, model.output_size) != (task.input_size, task.output_size):
        raise ValueError(
            f"the run's task {task!r} needs input_size {task.input_size} and output_size "
            f"{task.output_size}, but the checkpoint holds {model!r}"
        )
    return task_batch(task, batch, np.random.default_rng(args.seed + 1), model.dtype)


# -- models ------------------------------------------------------------------------------


def fresh_model(args: argparse.Namespace) -> ElmanRNN:
    """The model the options describe, with the adding task fixing I = 2, O = 1, identity;
    weights drawn by :func:`bptt.init.init_params` (``--recurrent-init``, seed ``--seed``)."""
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
        sizes = (
            8 if args.input_size is None else args.input_size,
            args.hidden,
            4 if args.output_size is None else args.output_size,
        )
        output = args.output or "softmax"
    if args.spectral_radius is not None and not args.spectral_radius > 0:
        raise ValueError(f"--spectral-radius must be > 0, got {args.spectral_radius}")
    model = ElmanRNN(
        *sizes,
        hidden_activation=args.activation,
        output=output,
        num_layers=args.layers,
        bidirectional=args.bidirectional,
        seed=args.seed,
        dtype=np.float64,
    )
    return initialise(
        model, args.recurrent_init, seed=args.seed, spectral_radius=args.spectral_radius
    )


@dataclass(frozen=True)
class LoadedRun:
    """A checkpoint's model, its training configuration (None if it has none) and vocabulary."""

    model: ElmanRNN
    config: TrainConfig | None
    vocab: Any


def load_run(path: Path) -> LoadedRun:
    """:func:`bptt.checkpoint.load_checkpoint` of ``path``, its ``.config`` as a
    :class:`bptt.train.TrainConfig`, with a clear error when checkpoints are unavailable."""
    try:
        from .checkpoint import load_checkpoint  # type: ignore[import-not-found,unused-ignore]
    except ImportError as err:
        raise ValueError(
            f"cannot load {path}: this bptt has no checkpoint support (bptt.checkpoint with "
            f"load_checkpoint is missing); inspect a fresh model by giving no path"
        ) from err
    if not path.exists():
        raise ValueError(f"DIR_OR_CHECKPOINT {path} does not exist")
    ckpt = load_checkpoint(path)
    model = ckpt.model
    if not isinstance(model, ElmanRNN):
        raise TypeError(f"checkpoint {path} did not give an ElmanRNN, got {type(model).__name__}")
    config = None
    if ckpt.config:  # written by the trainer; a bare save_checkpoint may carry none
        from .train import TrainConfig

        config = TrainConfig.from_dict(dict(ckpt.config))
    return LoadedRun(model=model, config=config, vocab=getattr(ckpt, "vocab", None))


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
    layer: str = "l0"  # the layer-direction the single-layer diagnostics look at
    layers: dict[str, LagContributions] | None = None  # every layer's lag profile (deep)


def inspect_model(
    model: ElmanRNN,
    batch: Batch,
    source: str,
    max_lag: int | None = None,
    profile: GradientProfileRecorder | None = None,
) -> Inspection:
    """Run every diagnostic of :mod:`bptt.diagnostics` on one batch.

    For a deep or bidirectional model, the per-lag contributions of every layer-direction
    (``layers``) and the other diagnostics for the top layer's forward direction.
    """
    top = (model.num_layers - 1) * model.num_directions  # the top layer, forward direction
    layers = None
    if not model.simple:
        layers = layer_lag_contributions(model, batch.x, batch.y, mask=batch.mask, max_lag=max_lag)
    return Inspection(
        model=model,
        batch=batch,
        source=source,
        contrib=lag_contributions(
            model, batch.x, batch.y, mask=batch.mask, max_lag=max_lag, layer=top
        ),
        hidden=hidden_state_gradients(model, batch.x, batch.y, mask=batch.mask, layer=top),
        jacobian=jacobian_report(model, batch.x, layer=top),
        truncation=truncation_bias(model, batch.x, batch.y, mask=batch.mask, layer=top),
        profile=profile,
        layer=layer_name(model, top),
        layers=layers,
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
            # Σ_d C[d] over every lag (remainder included) = dL/dθ: a check a reader can redo
            "sum_over_lags": {
                k: np.asarray(getattr(ins.contrib, k), dtype=np.float64).sum(axis=0).tolist()
                for k in ("W", "V", "b_h")
            },
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
        "layer": ins.layer,
        "layers": None
        if ins.layers is None
        else {
            name: {"labels": c.labels, "norm_total": _floats(c.norms()["total"])}
            for name, c in ins.layers.items()
        },
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
    if ins.layers is not None:
        lines.insert(3, f"gradient flow by layer (the lines below: layer {ins.layer}):")
        for offset, (name, c) in enumerate(ins.layers.items()):
            total = c.norms()["total"]
            picks = sorted({0, min(1, c.n_exact - 1), min(10, c.n_exact - 1)})
            lines.insert(
                4 + offset,
                f"  {name:<12} ‖dL/d(V,W,b_h)‖ {np.sqrt(np.sum(total**2)):.3g}; "
                + ", ".join(f"lag {c.labels[i]}: {total[i]:.3g}" for i in picks),
            )
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
    if ins.layers is not None:
        figures["layers"] = dp.plot_layer_lag_profile(ins.layers)
    return [dp.save_figure(fig, out / FIGURES[key]) for key, fig in figures.items()]


# -- the command -------------------------------------------------------------------------


def _check_memory(
    n_in: int, hidden: int, n_out: int, seq_len: int, batch: int, max_lag: int | None
) -> None:
    """Refuse sizes whose diagnostics would not fit in memory (:mod:`bptt.resources`)."""
    lags = seq_len + 1 if max_lag is None else min(max_lag, seq_len - 1) + 2
    need = estimate_bytes(n_in, hidden, n_out, seq_len, batch, lags=lags)
    check_memory(
        need,
        f"inspecting I={n_in}, H={hidden}, O={n_out} on T={seq_len}, B={batch}",
        "use a smaller --hidden, --seq-len, --batch or --max-lag",
    )


def run_inspect(args: argparse.Namespace) -> int:
    """Build or load the model, run the diagnostics, write JSON and figures, print a summary."""
    path = None if args.path is None else Path(args.path)
    out = Path(args.out)
    if args.max_lag is not None and args.max_lag < 0:
        raise ValueError(f"--max-lag must be >= 0, got {args.max_lag}")
    for option, value in (
        ("--seq-len", args.seq_len),
        ("--batch", args.batch),
        ("--input-size", args.input_size),
        ("--output-size", args.output_size),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not args.no_plots:
        from .diagnostic_plots import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as err:
            print(f"bptt inspect: error: {err} (or pass --no-plots)", file=sys.stderr)
            return 2
    seq_len = DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len
    batch_size = DEFAULT_BATCH if args.batch is None else args.batch
    if path is None:
        adding = args.task == "adding"
        n_in = 2 if adding else (8 if args.input_size is None else args.input_size)
        n_out = 1 if adding else (4 if args.output_size is None else args.output_size)
        _check_memory(n_in, args.hidden, n_out, seq_len, batch_size, args.max_lag)
        model = fresh_model(args)
        source = f"fresh initialisation (seed {args.seed}, W {args.recurrent_init}" + (
            f", spectral radius {args.spectral_radius})" if args.spectral_radius else ")"
        )
        config, vocab = None, None
    else:
        run = load_run(path)
        model, config, vocab = run.model, run.config, run.vocab
        source = f"checkpoint {path}"
        T = seq_len if args.seq_len is not None or config is None else config.seq_len
        sizes = (model.input_size, model.hidden_size, model.output_size)
        _check_memory(*sizes, T, batch_size, args.max_lag)
    rng = np.random.default_rng(args.seed + 1)
    if args.task is None and config is not None:
        batch = run_batch(model, config, vocab, args)
        source += f" (validation batch of the run's task {config.task})"
    elif args.task == "adding":
        if (model.input_size, model.output_size, model.output) != (2, 1, "identity"):
            raise ValueError(
                f"--task adding needs a model with input_size 2, output_size 1 and the "
                f"identity head, got {model!r}"
            )
        batch = task_batch(AddingTask(seq_len), batch_size, rng, model.dtype)
    else:
        batch = random_batch(model, seq_len, batch_size, rng, args.ids)
    profile_path = find_profile(path, None if args.profile is None else Path(args.profile))
    profile = None if profile_path is None else GradientProfileRecorder.load(profile_path)
    # lags beyond T - 1 do not exist: a larger --max-lag is the same report, and must not
    # allocate a block per lag it asks for
    T = np.asarray(batch.x).shape[0]
    max_lag = None if args.max_lag is None else min(args.max_lag, T - 1)
    ins = inspect_model(model, batch, source, max_lag=max_lag, profile=profile)
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
        "model is built from the model options; with it, the batch is a validation batch of "
        "the run's own task unless --task is given. Writes inspect.json and PNG figures "
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
    g.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="adding or random inputs and targets (default: the run's own task, validation "
        "split, with DIR_OR_CHECKPOINT; random for a fresh model)",
    )
    g.add_argument(
        "--seq-len", type=int, default=None, help=f"T (default: the run's, else {DEFAULT_SEQ_LEN})"
    )
    g.add_argument("--batch", type=int, default=None, help=f"B (default: {DEFAULT_BATCH})")
    g.add_argument("--ids", action="store_true", help="random task: integer token ids")
    g.add_argument("--seed", type=int, default=0, help="model and batch seed (default: 0)")
    m = p.add_argument_group("fresh model (no DIR_OR_CHECKPOINT)")
    m.add_argument("--input-size", type=int, default=None, help="I (random task default 8)")
    m.add_argument("--hidden", type=int, default=32, help="H (default: %(default)s)")
    m.add_argument("--layers", type=int, default=1, help="L, stacked layers (default: 1)")
    m.add_argument(
        "--bidirectional", action="store_true", help="a forward and a reverse cell per layer"
    )
    m.add_argument("--output-size", type=int, default=None, help="O (random task default 4)")
    m.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    m.add_argument("--output", choices=sorted(HEADS), default=None, help="head (softmax)")
    m.add_argument(
        "--recurrent-init",
        "--init",
        dest="recurrent_init",
        choices=INITS,
        default="uniform",
        help="weights drawn by bptt.init, as bptt train --init: PyTorch's uniform, glorot, "
        "orthogonal W, or identity (IRNN: W = I, b = 0, U, V ~ N(0, 0.001²))",
    )
    m.add_argument(
        "--spectral-radius", type=float, default=None, help="rescale W to this spectral radius"
    )
    p.set_defaults(func=run_inspect)
    return p
