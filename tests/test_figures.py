"""Figures that read: axes set by the measured data, titles inside the figure, loss.png in the
task's own metric with its baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bptt
from bptt.data.tasks import AddingTask
from bptt.diagnostics import GradientProfileRecorder, hidden_state_gradients, jacobian_report
from bptt.diagnostics import plots as diagnostic_plots
from bptt.training import TrainConfig, Trainer
from bptt.training.plots import metrics_figure

pytest.importorskip("matplotlib")


def _adding_batch(T: int = 40, B: int = 8):
    return AddingTask(T).sample(np.random.default_rng(0), B, np.float64)


def _measured(jac) -> np.ndarray:
    vals = np.concatenate([jac.norm_mean, jac.norm_max])
    return vals[np.isfinite(vals) & (vals > 0)]


@pytest.mark.parametrize("w_scale", [1.0, 3.0], ids=["vanishing", "bound-explodes"])
def test_jacobian_figure_limits_bracket_the_measured_values(w_scale) -> None:
    model = bptt.ElmanRNN(2, 16, 1, output="identity", seed=0)
    model.params.W[...] *= w_scale
    jac = jacobian_report(model, _adding_batch().x)
    fig = diagnostic_plots.plot_jacobian_products(jac)
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    vals = _measured(jac)
    assert low <= vals.min() and vals.max() <= high
    # the axes follow the curves, not the bound (γσ_max)^d
    bound = jac.step_bound ** jac.lags.astype(np.float64)
    if ax.get_yscale() == "log":
        assert high <= 10 * max(vals.max(), 1.0) and low >= vals.min() / 10
    else:
        assert high <= 1.5 * max(vals.max(), 1.1)
    if w_scale > 1:
        assert bound.max() > 1e6 * high  # it would have set the axis before
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("off the axes from d =" in s for s in labels)


def _inside(fig) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    texts += [fig._suptitle] if fig._suptitle else []
    for text in texts:
        if not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        assert box.x0 >= -0.5 and box.x1 <= width + 0.5, text.get_text()
        assert box.y0 >= -0.5 and box.y1 <= height + 0.5, text.get_text()


def test_titles_fit_in_their_figures(tmp_path) -> None:
    model = bptt.ElmanRNN(2, 16, 1, output="identity", seed=0)
    b = _adding_batch()
    _inside(
        diagnostic_plots.plot_hidden_gradients(hidden_state_gradients(model, b.x, b.y, mask=b.mask))
    )
    _inside(diagnostic_plots.plot_jacobian_products(jacobian_report(model, b.x)))
    rec = GradientProfileRecorder(every=1, max_lag=10)
    for step in (1, 2, 3):
        rec.maybe_record(step, model, b.x, b.y, mask=b.mask)
    _inside(diagnostic_plots.plot_profile_heatmap(rec))


def test_regression_loss_png_plots_the_headline_metric_and_baseline(tmp_path) -> None:
    cfg = TrainConfig(
        task="adding",
        seq_len=10,
        hidden=8,
        steps=20,
        eval_every=10,
        eval_size=64,
        log_every=2,
        out=str(tmp_path / "run"),
        progress=False,
        plot=True,
    )
    Trainer(cfg, echo=None).train()
    assert (tmp_path / "run" / "loss.png").is_file()
    records = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    fig = metrics_figure(tmp_path / "run")
    (ax,) = fig.axes
    assert ax.get_ylabel().startswith("MSE")
    _inside(fig)
    assert "adding" in fig._suptitle.get_text() and "H = 8" in fig._suptitle.get_text()
    lines = {line.get_label(): line for line in ax.lines}
    val = lines["validation MSE"]
    np.testing.assert_allclose(val.get_ydata(), [r["val_mse"] for r in evals])
    base = next(line for label, line in lines.items() if label.startswith("memoryless baseline"))
    np.testing.assert_allclose(base.get_ydata(), evals[-1]["baseline_mse"])
    train = lines["training MSE (2 · loss / O)"]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    np.testing.assert_allclose(train.get_ydata(), 2 * np.asarray(losses))  # O = 1
