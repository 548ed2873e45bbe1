"""Figures for :mod:`bptt.diagnostics` (needs the optional extra: ``pip install 'bptt[plot]'``).

Each ``plot_*`` function draws one diagnostic on a new :class:`matplotlib.figure.Figure` (or on
axes you pass, to overlay several models) and returns the figure. Figures are built without
pyplot, so no display or backend is needed; :func:`save_figure` writes a PNG atomically.
Axes whose positive values span more than two decades are drawn on a log scale.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..atomic import atomic_write_bytes
from .jacobians import JacobianReport
from .lags import HiddenStateGradients, LagContributions, TruncationBias
from .recorder import GradientProfileRecorder

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'bptt[plot]'"

ROLE_STYLE = {
    "recurrent": dict(color="C0", marker="o"),
    "input": dict(color="C1", marker="s"),
    "bias": dict(color="C2", marker="^"),
    "total": dict(color="k", marker=""),
}
"""Colour and marker of a parameter by its role; a second parameter of the same role (the
GRU's b_hn beside b) takes the next colour and marker."""

_MORE_STYLES = [dict(color="C3", marker="v"), dict(color="C4", marker="D"), dict(color="C5")]


def _param_styles(contrib: LagContributions, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """name → {color, marker, label} for the lines of :func:`plot_lag_contributions`."""
    out: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    extra = iter(_MORE_STYLES)
    for name in names:
        if name == "total":
            out[name] = {**ROLE_STYLE["total"], "label": "all of the layer's parameters"}
            continue
        role = contrib.roles[name]
        style = dict(ROLE_STYLE[role]) if role not in used else dict(next(extra, {}))
        used.add(role)
        out[name] = {"marker": "o", **style, "label": f"dL/d{name} ({role})"}
    return out


def require_matplotlib() -> Any:
    """Import matplotlib, or raise an ImportError that says how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"bptt's diagnostic figures need matplotlib, which is not installed; "
            f"install the plot extra: {INSTALL_HINT}"
        ) from err
    return matplotlib


def new_axes(ncols: int = 1, width: float = 5.6, height: float = 3.6) -> tuple[Figure, Any]:
    """A new figure (no pyplot) with ``ncols`` axes side by side, to draw several models on."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _axes_or_new(ax: Axes | None, width: float = 5.6, height: float = 3.6) -> tuple[Figure, Any]:
    if ax is None:
        return new_axes(width=width, height=height)
    return cast("Figure", ax.figure), ax


def _positive(values: np.ndarray) -> np.ndarray:
    """Values with zeros, negatives and non-finite entries as NaN (gaps on a log axis)."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _spans_decades(*arrays: np.ndarray, decades: float = 2.0) -> bool:
    vals = np.concatenate([_positive(a).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    return bool(vals.size) and float(np.log10(vals.max() / vals.min())) > decades


def _maybe_log_y(ax: Axes, *arrays: np.ndarray) -> None:
    if _spans_decades(*arrays):
        ax.set_yscale("log")


def _limits_from(ax: Axes, *arrays: np.ndarray) -> tuple[float, float]:
    """Y-limits that hold every finite value of ``arrays`` with a margin (log or linear axis).

    Only measured data set the limits: guide lines drawn afterwards (bounds, levels) are
    clipped to them instead of stretching the axis.
    """
    if ax.get_yscale() == "log":
        vals = np.concatenate([_positive(a).ravel() for a in arrays])
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            return cast("tuple[float, float]", ax.get_ylim())
        lo, hi = np.log10(vals.min()), np.log10(vals.max())
        pad = max(0.05 * (hi - lo), 0.15)
        return float(10 ** (lo - pad)), float(10 ** (hi + pad))
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return cast("tuple[float, float]", ax.get_ylim())
    lo, hi = float(min(vals.min(), 0.0)), float(vals.max())
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return lo - (pad if lo < 0 else 0.0), hi + pad


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file in the folder + os.replace)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def plot_lag_contributions(
    contrib: LagContributions,
    ax: Axes | None = None,
    names: Sequence[str] | None = None,
    label: str | None = None,
) -> Figure:
    """Frobenius norm of the lag-d part of each of the layer's parameter gradients (for one
    Elman layer dL/dW, dL/dV, dL/db_h) against the lag d = t − k.

    ``names`` picks the parameters (the model's or the cell's local names, or ``"total"``;
    default: all of the layer's). With a remainder entry (``max_lag`` set), it is drawn as a
    separate hollow marker. ``label`` prefixes the legend entries (to overlay models on one
    ``ax``).
    """
    fig, ax = _axes_or_new(ax)
    norms = contrib.norms()
    wanted = list(contrib.parts) if names is None else list(names)
    unknown = [n for n in wanted if n != "total" and n not in contrib.parts | contrib.local]
    if unknown:
        raise ValueError(
            f"names must be among {sorted(contrib.parts)}, the local names "
            f"{sorted(contrib.local)} or 'total', got {unknown}"
        )
    wanted = [contrib.local.get(n, n) for n in wanted]
    styles = _param_styles(contrib, wanted)
    n = contrib.n_exact
    lags = np.arange(n)
    prefix = f"{label}: " if label else ""
    for name in wanted:
        style = styles[name]
        kwargs: dict[str, Any] = {"color": style["color"]} if not label else {}
        ax.plot(
            lags,
            _positive(norms[name][:n]),
            marker=style.get("marker", "o"),
            markersize=3,
            label=prefix + style["label"],
            **kwargs,
        )
        if contrib.has_remainder:
            ax.plot(
                [n],
                _positive(norms[name][n:]),
                marker=style.get("marker", "o") or "o",
                markersize=7,
                linestyle="none",
                markerfacecolor="none",
                color=ax.lines[-1].get_color(),
                label=f"{prefix}{name}, lags ≥ {n} summed",
            )
    _maybe_log_y(ax, *(norms[name] for name in wanted))
    where = "" if contrib.layer == "l0" and "W" in contrib.parts else f"\nlayer {contrib.layer}"
    ax.set_xlabel("lag d = t − k (steps between loss and weight use)")
    ax.set_ylabel("‖lag-d part of gradient‖_F (loss / weight unit)")
    ax.set_title(
        f"BPTT contributions by lag (T = {contrib.seq_len}, loss {contrib.loss:.3g}){where}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_hidden_gradients(
    hidden: HiddenStateGradients, ax: Axes | None = None, label: str | None = None
) -> Figure:
    """‖dL/dh_t‖₂ against the step t (mean and max over the batch)."""
    fig, ax = _axes_or_new(ax)
    steps = np.arange(hidden.dh.shape[0])
    mean, top = hidden.norms("mean"), hidden.norms("max")
    prefix = f"{label}: " if label else ""
    (line,) = ax.plot(steps, _positive(mean), marker="o", markersize=3, label=prefix + "mean")
    ax.plot(steps, _positive(top), linestyle="--", color=line.get_color(), label=prefix + "max")
    _maybe_log_y(ax, mean, top)
    ax.set_xlabel("time step t (0 = initial state)")
    ax.set_ylabel("‖dL/dh_t‖₂ (loss / state unit)")
    ax.set_title("Hidden-state gradient ‖dL/dh_t‖ (batch mean, max)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_jacobian_products(
    jac: JacobianReport, ax: Axes | None = None, label: str | None = None
) -> Figure:
    """‖Π J‖₂ against the lag (batch mean and max) and the level 1; for the Elman cell also
    the bound (γ·σ_max)^d."""
    fig, ax = _axes_or_new(ax)
    lags = jac.lags
    prefix = f"{label}: " if label else ""
    mean, top = jac.norm_mean, jac.norm_max
    (line,) = ax.plot(
        lags, _positive(mean), marker="o", markersize=3, label=prefix + "‖Π J‖₂, batch mean"
    )
    ax.plot(
        lags, _positive(top), linestyle="--", color=line.get_color(), label=prefix + "batch max"
    )
    _maybe_log_y(ax, mean, top)
    # The axes follow the measured products; the bound is a guide, clipped to them (it can
    # reach 1e37 where the products stay near 1, which would flatten the curves).
    low, high = _limits_from(ax, mean, top)
    if ax.get_yscale() == "log" or low <= 1.0 <= high:
        low, high = min(low, 0.9 if ax.get_yscale() == "log" else low), max(high, 1.1)
    if len(ax.lines) > 2:  # overlaying another model: keep its range too
        old_low, old_high = ax.get_ylim()
        low, high = min(low, old_low), max(high, old_high)
    if jac.has_spectrum:
        with np.errstate(over="ignore", under="ignore"):
            bound = jac.step_bound ** lags.astype(np.float64)
        outside = np.nonzero((bound > high) | (bound < low))[0]
        note = f", off the axes from d = {int(lags[outside[0]])}" if outside.size else ""
        ax.plot(
            lags,
            _positive(bound),
            linestyle=":",
            color=line.get_color(),
            label=f"{prefix}bound (γ·σ_max)^d = {jac.step_bound:.3g}^d{note}",
        )
    ax.axhline(1.0, color="0.5", linewidth=0.8)
    ax.set_ylim(low, high)
    ax.set_xlabel(f"lag d (steps back from t = {jac.origin})")
    where = "" if jac.layer == "l0" else f"\nlayer {jac.layer}"
    if jac.has_spectrum:
        ax.set_ylabel("‖∂h_t / ∂h_(t−d)‖₂ (gain, dimensionless)")
        ax.set_title(
            f"Jacobian products ({jac.activation}: σ_max(W) = {jac.sigma_max:.3g}, "
            f"ρ(W) = {jac.spectral_radius:.3g}){where}"
        )
    else:
        state = "s = [h ‖ c]" if jac.cell == "lstm" else "s = h"
        ax.set_ylabel(f"‖∂s_t / ∂s_(t−d)‖₂, {state} (gain)")
        ax.set_title(f"State-Jacobian products ({jac.cell}){where}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_truncation_bias(
    tb: TruncationBias,
    axes: Sequence[Axes] | None = None,
    label: str | None = None,
    names: Sequence[str] | None = None,
) -> Figure:
    """Cosine similarity (left) and relative error (right, log) of g(k2) against the full g.

    ``names``: ``"all"`` (all of the layer's parameters stacked) and parameter names; default
    ``"all"`` and the recurrent matrix (``W``, ``W_l1``, …).
    """
    params = [n for n in tb.cosine if n != "all"]
    if names is None:
        names = ["all", *[n for n in params if n.split("_l")[0] == "W"][:1]]
    unknown = [n for n in names if n not in tb.cosine]
    if unknown:
        raise ValueError(f"names must be among {sorted(tb.cosine)}, got {unknown}")
    if axes is None:
        fig, pair = new_axes(ncols=2, width=4.6)
        axes = list(pair)
    else:
        fig = cast("Figure", axes[0].figure)
    ax_cos, ax_err = axes[0], axes[1]
    prefix = f"{label}: " if label else ""
    names_text = {"all": ", ".join(params), **{n: n for n in params}}
    for i, name in enumerate(names):
        style = "-" if i == 0 else "--"
        (line,) = ax_cos.plot(
            tb.k2, tb.cosine[name], style, label=f"{prefix}{names_text[name]}", marker="."
        )
        ax_err.plot(
            tb.k2,
            _positive(tb.rel_error[name]),
            style,
            color=line.get_color(),
            marker=".",
            label=f"{prefix}{names_text[name]}",
        )
    _maybe_log_y(ax_err, *(tb.rel_error[name] for name in names))
    ax_cos.set_xlabel("truncation length k2 (steps kept)")
    ax_cos.set_ylabel("cos∠(g(k2), g) (1 = same direction)")
    ax_cos.set_title("Truncated vs full gradient: direction")
    ax_err.set_xlabel("truncation length k2 (steps kept)")
    ax_err.set_ylabel("‖g(k2) − g‖ / ‖g‖ (fraction)")
    ax_err.set_title("Truncated vs full gradient: relative error")
    for ax in (ax_cos, ax_err):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def plot_profile_heatmap(
    profile: GradientProfileRecorder, name: str = "total", ax: Axes | None = None
) -> Figure:
    """Per-lag gradient norms (colour, log scale) over training steps (rows) and lags (columns)."""
    matplotlib = require_matplotlib()
    from matplotlib.colors import LogNorm

    if len(profile) == 0:
        raise ValueError("the gradient profile holds no records to draw")
    fig, ax = _axes_or_new(ax, width=6.0, height=4.0)
    data = _positive(profile.matrix(name))  # (n_records, L)
    steps = np.asarray(profile.steps, dtype=np.float64)
    if len(steps) > 1:
        mids = (steps[1:] + steps[:-1]) / 2
        edges = np.concatenate([[2 * steps[0] - mids[0]], mids, [2 * steps[-1] - mids[-1]]])
    else:
        edges = np.array([steps[0] - profile.every / 2, steps[0] + profile.every / 2])
    x_edges = np.arange(data.shape[1] + 1) - 0.5
    finite = data[np.isfinite(data)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(x_edges, edges, np.ma.masked_invalid(data), norm=norm, cmap=cmap)
    what = {
        "total": "all parameters",
        "W": "dL/dW (recurrent)",
        "V": "dL/dV (input)",
        "b_h": "the biases",
    }[name]
    fig.colorbar(mesh, ax=ax, label=f"‖lag-d part of {what}‖_F (log scale)")
    labels = max(profile.labels, key=len) if profile.labels else []
    if labels and labels[-1].startswith("≥"):
        ticks = ax.get_xticks()
        ticks = [t for t in ticks if 0 <= t < data.shape[1] - 1 and float(t).is_integer()]
        ax.set_xticks([*ticks, data.shape[1] - 1])
        ax.set_xticklabels([str(int(t)) for t in ticks] + [labels[-1]])
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_xlabel("lag d = t − k (steps)")
    ax.set_ylabel("training step (updates)")
    layer = getattr(profile, "layer", None)
    where = "" if layer is None else f", layer {layer}"
    ax.set_title(f"Per-lag gradient profile over training ({what}{where})\ngrey: zero or no data")
    return fig


def plot_layer_lag_profile(layers: dict[str, LagContributions], ax: Axes | None = None) -> Figure:
    """‖lag-d part of the gradient‖ of each layer-direction (all its parameters) against the
    lag, on one axes.

    Each layer's lags are steps of its own recurrence; the origin of a lag is the gradient
    arriving on that layer's state from above (the head, or the layer above).
    """
    fig, ax = _axes_or_new(ax)
    totals = []
    for name, contrib in layers.items():
        total = contrib.norms()["total"]
        n = contrib.n_exact
        (line,) = ax.plot(np.arange(n), _positive(total[:n]), marker="o", markersize=3, label=name)
        if contrib.has_remainder:
            ax.plot(
                [n],
                _positive(total[n:]),
                marker="o",
                markersize=7,
                linestyle="none",
                markerfacecolor="none",
                color=line.get_color(),
            )
        totals.append(total)
    _maybe_log_y(ax, *totals)
    ax.set_xlabel("lag d within the layer's own recurrence")
    ax.set_ylabel("‖lag-d part of the layer's gradient‖_F")
    ax.set_title("Gradient flow by layer and by lag", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", title="layer")
    return fig


# -- several cells on one axes ----------------------------------------------------------------


def plot_cell_lag_profile(
    contrib: LagContributions,
    ax: Axes | None = None,
    label: str | None = None,
    relative: bool = False,
) -> Figure:
    """‖C[d]‖_F over all the recurrent layer's parameters against the lag d, for any cell.

    ``relative`` divides by the norm of the whole recurrent gradient ‖Σ_d C[d]‖, so cells with
    differently sized parameters share one axis. Overlay cells by passing the same ``ax``.
    """
    fig, ax = _axes_or_new(ax)
    norms = contrib.norms()["total"]
    if relative:
        full = np.sqrt(sum(float(np.sum(a.sum(axis=0) ** 2)) for a in contrib.parts.values()))
        norms = norms / full if full > 0 else norms
    n = contrib.n_exact
    (line,) = ax.plot(np.arange(n), _positive(norms[:n]), marker="o", markersize=2, label=label)
    if contrib.max_lag is not None:
        ax.plot(
            [n],
            _positive(norms[n:]),
            marker="o",
            markersize=7,
            linestyle="none",
            markerfacecolor="none",
            color=line.get_color(),
        )
    _maybe_log_y(ax, norms)
    ax.set_xlabel("lag d = t − k (steps between loss and weight use)")
    ax.set_ylabel(
        "‖C[d]‖ / ‖dL/dθ_rec‖" if relative else "‖lag-d part of dL/dθ_rec‖_F (loss / weight unit)"
    )
    ax.set_title(f"BPTT contributions by lag (T = {contrib.seq_len})")
    ax.grid(True, which="both", alpha=0.3)
    if label:
        ax.legend(fontsize="small")
    return fig


def plot_state_jacobians(
    report: JacobianReport, ax: Axes | None = None, label: str | None = None
) -> Figure:
    """‖∂s_t/∂s_{t−d}‖₂ (batch mean) against the lag d, for any cell (LSTM: s = [h ‖ c])."""
    fig, ax = _axes_or_new(ax)
    with np.errstate(over="ignore", under="ignore"):
        mean = np.power(10.0, report.log10_mean)
    ax.plot(report.lags, _positive(mean), marker="o", markersize=2, label=label)
    ax.axhline(1.0, color="0.5", linewidth=0.8)
    _maybe_log_y(ax, mean)
    ax.set_xlabel(f"lag d (steps back from t = {report.origin})")
    ax.set_ylabel("‖∂s_t / ∂s_(t−d)‖₂, batch mean (gain)")
    ax.set_title("State-Jacobian products")
    ax.grid(True, which="both", alpha=0.3)
    if label:
        ax.legend(fontsize="small")
    return fig
