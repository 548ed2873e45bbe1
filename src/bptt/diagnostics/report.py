"""``bptt inspect``'s report: a sample batch, every diagnostic on it, ``inspect.json``, the
terminal summary and the figures.

Any model (:func:`inspect_model`): the per-lag contributions of every layer-direction, and for
the top layer's forward direction dL/dh_t, the state-Jacobian products (with the spectrum of W
and the Pascanu et al. condition for the Elman cell) and the truncation bias.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import registry as task_registry
from ..data.tasks import Batch, SequenceTask
from ..data.text import CharVocab, stream_batches
from ..model import RNN
from ..training import CharStreamSource, TrainConfig, make_task
from . import plots as dp
from .jacobians import JacobianReport, layer_jacobian_report
from .lags import (
    HiddenStateGradients,
    LagContributions,
    TruncationBias,
    layer_lag_parts,
    layer_state_gradients,
    layer_truncation_bias,
    truncation_from_lags,
)
from .recorder import GradientProfileRecorder
from .trace import one_blas_thread, trace

FIGURES = {
    "lags": "lag_contributions.png",
    "hidden": "hidden_gradients.png",
    "jacobian": "jacobian_products.png",
    "truncation": "truncation_bias.png",
    "profile": "profile_heatmap.png",
    "layers": "layer_lag_profile.png",
}


# -- batches -----------------------------------------------------------------------------


def task_batch(task: SequenceTask, batch: int, rng: np.random.Generator, dtype: Any) -> Batch:
    """A validation batch of a :class:`~bptt.data.tasks.SequenceTask` (``split="val"``)."""
    return task.sample(rng, batch, dtype, split="val")


def charlm_batch(config: TrainConfig, vocab: CharVocab | None, seq_len: int, batch: int) -> Batch:
    """The first (T, B) window of the run's validation text, y the next character of x.

    The corpus is built as the trainer builds it
    (:class:`bptt.training.sources.CharStreamSource`: ``--text`` or the built-in corpus, the
    run's vocabulary and ``--val-fraction``); the validation split is cut into B parallel
    streams (:func:`bptt.data.text.stream_batches`).
    """
    # the split does not depend on T and B; passing them makes a too-short text's error name them
    text = CharStreamSource(dataclasses.replace(config, seq_len=seq_len, batch=batch), vocab)
    x, y = next(stream_batches(text.val_ids, batch, seq_len))  # (T, B), (T, B)
    return Batch(np.array(x), np.array(y), None)


def random_batch(
    model: RNN, seq_len: int, batch: int, rng: np.random.Generator, ids: bool
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
    return Batch(x, y, None)


def run_batch(
    model: RNN,
    config: TrainConfig,
    vocab: CharVocab | None,
    seq_len: int | None,
    batch: int,
    seed: int,
) -> Batch:
    """A validation batch of the run's own task (``config.task``) of B sequences, T =
    ``seq_len`` when given, else the run's; the task's batch drawn with ``seed + 1``."""
    if seq_len is not None and seq_len != config.seq_len:
        config = dataclasses.replace(config, seq_len=seq_len)
    if task_registry.get(config.task).streams:
        return charlm_batch(config, vocab, config.seq_len, batch)
    task = make_task(config)
    if (model.input_size, model.output_size) != (task.input_size, task.output_size):
        raise ValueError(
            f"the run's task {task!r} needs input_size {task.input_size} and output_size "
            f"{task.output_size}, but the checkpoint holds {model!r}"
        )
    return task_batch(task, batch, np.random.default_rng(seed + 1), model.dtype)


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    """Everything ``bptt inspect`` computes for one model and batch.

    Attributes:
        contrib, hidden, jacobian, truncation: the diagnostics of layer-direction ``layer``
            (the top layer's forward direction).
        layers: the per-lag contributions of every layer-direction (``contrib`` among them).
    """

    model: RNN
    batch: Batch
    task: str  # the batch's task: a training task's name, or "random"
    source: str
    contrib: LagContributions
    hidden: HiddenStateGradients
    jacobian: JacobianReport
    truncation: TruncationBias
    profile: GradientProfileRecorder | None
    layer: str = "l0"  # the layer-direction the single-layer diagnostics look at
    layers: dict[str, LagContributions] | None = None  # every layer's lag profile (deep)


def progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar on stderr for ``total`` lags of work, shown only when ``enabled`` (a
    terminal) and only once the work has taken more than two seconds."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc="bptt inspect",
        unit="lag",
        disable=not enabled,
        delay=2.0,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def inspect_model(
    model: RNN,
    batch: Batch,
    task: str,
    source: str,
    max_lag: int | None = None,
    profile: GradientProfileRecorder | None = None,
    progress: bool = False,
) -> Inspection:
    """Run every diagnostic of :mod:`bptt.diagnostics` on one batch, for any model.

    One trace of the batch (:func:`~.trace.trace`: one forward and one backward) serves all:
    the per-lag contributions of every layer-direction (``layers``), and for the top layer's
    forward direction dL/dh_t, the Jacobian products and the truncation bias (taken from the
    stored lags when all of them are kept). ``progress`` shows a bar on stderr when the work
    takes more than two seconds.
    """
    tr = trace(model, batch.x, batch.y, mask=batch.mask)
    T = tr.T
    top = (model.num_layers - 1) * model.num_directions  # the top layer, forward direction
    # lags beyond T − 1 do not exist: a larger max_lag is the same report, and must not
    # allocate a block per lag it asks for
    m = None if max_lag is None or max_lag >= T - 1 else max_lag
    n_lags = T if m is None else m + 1
    reuse = m is None  # the truncation bias from the stored lags of the top layer
    total = len(tr.layers) * n_lags + T + (0 if reuse else T)
    with progress_bar(total, progress) as bar, one_blas_thread():
        layers = {s.name: layer_lag_parts(tr, s.index, m, bar.update) for s in tr.layers}
        name = tr.layers[top].name
        contrib = layers[name]
        hidden = layer_state_gradients(tr, top)
        if reuse:
            assert tr.grads is not None
            full = {n: tr.grads[n] for n in contrib.parts}
            per_lag = ({n: a[d] for n, a in contrib.parts.items()} for d in range(T))
            truncation = truncation_from_lags(per_lag, full, T, name)
        else:
            truncation = layer_truncation_bias(tr, top, bar.update)
        jacobian = layer_jacobian_report(tr.layers[top], None, None, bar.update)
    return Inspection(
        model=model,
        batch=batch,
        task=task,
        source=source,
        contrib=contrib,
        hidden=hidden,
        jacobian=jacobian,
        truncation=truncation,
        profile=profile,
        layer=name,
        layers=None if model.simple else layers,
    )


def _floats(a: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


def _maybe_float(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def report_dict(ins: Inspection) -> dict[str, Any]:
    """The JSON document ``inspect.json`` (strict JSON: NaN and inf as null)."""
    T, B = ins.batch.x.shape[:2]
    jac, tb, model = ins.jacobian, ins.truncation, ins.model
    spectral = jac.has_spectrum
    return {
        "model": {
            "repr": repr(model),
            "cell": model.cell,
            "input_size": model.input_size,
            "hidden_size": model.hidden_size,
            "output_size": model.output_size,
            "num_layers": model.num_layers,
            "bidirectional": model.bidirectional,
            "hidden_activation": model.hidden_activation,
            "output": model.output,
            "source": ins.source,
        },
        "batch": {"task": ins.task, "seq_len": T, "batch": B, "loss": ins.contrib.loss},
        "lag_contributions": {
            "layer": ins.contrib.layer,
            "labels": ins.contrib.labels,
            "max_lag": ins.contrib.max_lag,
            "norms": {k: _floats(v) for k, v in ins.contrib.norms().items()},
            "role_norms": {k: _floats(v) for k, v in ins.contrib.role_norms().items()},
            # Σ_d C[d] over every lag (remainder included) = dL/dθ: a check a reader can redo
            "sum_over_lags": {
                k: np.asarray(v, dtype=np.float64).sum(axis=0).tolist()
                for k, v in ins.contrib.parts.items()
            },
        },
        "hidden_state_gradients": {
            "steps": list(range(T + 1)),
            "norm_mean": _floats(ins.hidden.norms("mean")),
            "norm_max": _floats(ins.hidden.norms("max")),
        },
        "jacobian": {
            "cell": jac.cell,
            "layer": jac.layer,
            "origin": jac.origin,
            "lags": jac.lags.tolist(),
            "norm_mean": _floats(jac.norm_mean),
            "norm_max": _floats(jac.norm_max),
            "log10_norm_mean": _floats(jac.log10_mean),
            "log10_norm_mean_of_logs": _floats(jac.log10_norms.mean(axis=1)),
            "rate_per_step": _floats(np.array([jac.rate()]))[0],
            "singular_values": _floats(jac.singular_values) if spectral else None,  # type: ignore[arg-type]
            "spectral_radius": _maybe_float(jac.spectral_radius),
            "gamma": _maybe_float(jac.gamma),
            "step_bound": _maybe_float(jac.step_bound),
            "pascanu_vanishing_condition_holds": jac.vanishing_guaranteed if spectral else None,
            "statement": jac.statement(),
        },
        "truncation_bias": {
            "layer": tb.layer,
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
    err = ins.truncation.rel_error["all"]
    reach = np.nonzero(np.nan_to_num(cos, nan=-1.0) >= 0.99)[0]
    params = ", ".join(ins.contrib.parts)
    state = "h" if jac.has_spectrum else "s"
    lines = [
        f"model: {ins.model!r}",
        f"source: {ins.source}",
        f"batch: task={ins.task} T={T} B={B} loss={ins.contrib.loss:.4g}",
        f"per-lag ‖part of dL/d({params})‖_F: "
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
        f"‖∂{state}_t/∂{state}_(t−d)‖₂ from t={jac.origin} (batch mean): lag 1: "
        f"{_pick(jac_mean, 1)}, lag 10: {_pick(jac_mean, 10)}, lag {jac.lags[-1]}: "
        f"10^{jac.log10_mean[-1]:.2f}; fitted factor per step {jac.rate():.3g}",
        ("Pascanu et al. 2013: " if jac.has_spectrum else "state Jacobians: ") + jac.statement(),
        f"truncation (g(k2): lags < k2 kept; g: the full gradient of {params}): k2 = 1: "
        f"cos∠(g(k2), g) {cos[0]:.3g}, relative error ‖g(k2) − g‖/‖g‖ {err[0]:.3g}; "
        + (
            f"cos ≥ 0.99 from k2 = {int(ins.truncation.k2[reach[0]])} "
            f"(relative error there {err[reach[0]]:.3g})"
            if reach.size
            else "cos stays below 0.99 until k2 = T"
        ),
        "  (the cosine compares directions only, the relative error lengths too: a truncated "
        "gradient that points the same way but is shorter has cos ≈ 1 and a large error)",
    ]
    if ins.layers is not None:
        lines.insert(3, f"gradient flow by layer (the lines below: layer {ins.layer}):")
        for offset, (name, c) in enumerate(ins.layers.items()):
            total = c.norms()["total"]
            picks = sorted({0, min(1, c.n_exact - 1), min(10, c.n_exact - 1)})
            lines.insert(
                4 + offset,
                f"  {name:<12} ‖dL/dθ_layer‖ {np.sqrt(np.sum(total**2)):.3g}; "
                + ", ".join(f"lag {c.labels[i]}: {total[i]:.3g}" for i in picks),
            )
    if ins.profile is not None:
        lines.append(f"profile: {len(ins.profile)} records from training")
    return lines


def write_figures(ins: Inspection, out: Path) -> list[Path]:
    """The PNG figures of :mod:`bptt.diagnostics.plots`, written atomically into ``out``."""
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
