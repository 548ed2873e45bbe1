"""Regenerate the figures of docs/diagnostics.md: a tanh RNN and an IRNN on the adding problem.

    PYTHONPATH=src python docs/make_diagnostics_figures.py     (about a minute on a laptop)

Both models have H = 32 units and see the same batches. The tanh RNN keeps PyTorch's default
uniform initialisation; the IRNN (Le et al. 2015) is a ReLU RNN with W = I and b_h = 0 whose
U, V and b_y keep that uniform draw (``bptt.init``'s ``identity`` scheme, as ``bptt inspect
--init identity`` and ``bptt train --init identity``, also draws U, V ~ N(0, 0.001²)). Each
is trained with plain SGD and gradient-norm clipping while a GradientProfileRecorder keeps the
per-lag profile on a fixed probe batch; the one-batch diagnostics are taken at initialisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import bptt
from bptt.data.tasks import AddingTask
from bptt.diagnostics import (
    GradientProfileRecorder,
    hidden_state_gradients,
    jacobian_report,
    lag_contributions,
    truncation_bias,
)
from bptt.diagnostics import plots as dp

OUT = Path(__file__).parent / "figures"
T, B, H = 60, 32, 32
STEPS, EVERY, LR, CLIP = 1000, 40, 0.1, 1.0
ADDING = AddingTask(seq_len=T)


def make_model(kind: str) -> bptt.ElmanRNN:
    act = "tanh" if kind == "tanh" else "relu"
    model = bptt.ElmanRNN(2, H, 1, hidden_activation=act, output="identity", seed=0)
    if kind == "irnn":  # W = I, b_h = 0; U, V, b_y keep the uniform draw (see the docstring)
        model.params.W = np.eye(H)
        model.params.b_h = np.zeros(H)
    return model


def train(model: bptt.ElmanRNN, probe, seed: int) -> GradientProfileRecorder:
    """SGD with the global gradient norm clipped to CLIP; returns the per-lag profile."""
    rng = np.random.default_rng(seed)
    rec = GradientProfileRecorder(every=EVERY)
    for step in range(STEPS + 1):
        rec.maybe_record(step, model, probe.x, probe.y, mask=probe.mask)
        batch = ADDING.sample(rng, B, np.float64)
        _, grads = model.loss_and_grads(batch.x, batch.y, mask=batch.mask)
        norm = grads.global_norm()
        scale = LR * min(1.0, CLIP / norm) if norm > 0 else 0.0
        for name, param in model.params.items():
            param -= scale * getattr(grads, name)
    return rec


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    probe = ADDING.sample(np.random.default_rng(123), B, np.float64, split="val")
    models = {"tanh": make_model("tanh"), "irnn": make_model("irnn")}
    names = {"tanh": "tanh RNN", "irnn": "IRNN (relu, W = I)"}

    fig_lag, ax_lag = dp.new_axes()
    fig_hid, ax_hid = dp.new_axes()
    fig_jac, ax_jac = dp.new_axes()
    fig_tb, axes_tb = dp.new_axes(ncols=2, width=4.6)
    for kind, model in models.items():
        args = (model, probe.x, probe.y)
        contrib = lag_contributions(*args, mask=probe.mask)
        dp.plot_lag_contributions(contrib, ax=ax_lag, names=("W",), label=names[kind])
        dp.plot_hidden_gradients(
            hidden_state_gradients(*args, mask=probe.mask), ax=ax_hid, label=names[kind]
        )
        jac = jacobian_report(model, probe.x)
        dp.plot_jacobian_products(jac, ax=ax_jac, label=names[kind])
        tb = truncation_bias(*args, mask=probe.mask)
        dp.plot_truncation_bias(tb, axes=list(axes_tb), label=names[kind], names=("all",))
        norms = contrib.norms()["W"]
        print(
            f"{kind}: loss {contrib.loss:.4f}; ‖C_W[d]‖ at d = 0, 10, 30, 59: "
            + ", ".join(f"{norms[d]:.3g}" for d in (0, 10, 30, T - 1))
        )
        print(f"  Jacobian: {jac.statement()}")
        print(
            "  ‖Π J‖ batch mean at lag 10, 30, 60: "
            + ", ".join(f"{jac.norm_mean[d]:.3g}" for d in (10, 30, T))
            + f"; fitted factor per step {jac.rate():.3g}"
        )
        cos, err = tb.cosine["all"], tb.rel_error["all"]
        print(
            "  truncation k2 = 5, 20, 40: cos "
            + ", ".join(f"{cos[k - 1]:.3f}" for k in (5, 20, 40))
            + "; rel. error "
            + ", ".join(f"{err[k - 1]:.3g}" for k in (5, 20, 40))
        )
    ax_lag.set_title(f"Lag-d part of dL/dW at initialisation (adding, T = {T})")
    ax_jac.set_title(f"‖∂h_T/∂h_(T−d)‖₂ at initialisation (adding, T = {T})")
    ax_hid.set_title(f"‖dL/dh_t‖ at initialisation (adding, loss at t = {T} only)")
    dp.save_figure(fig_lag, OUT / "diag_lag_contributions.png", dpi=90)
    dp.save_figure(fig_hid, OUT / "diag_hidden_gradients.png", dpi=90)
    dp.save_figure(fig_jac, OUT / "diag_jacobian_products.png", dpi=90)
    dp.save_figure(fig_tb, OUT / "diag_truncation_bias.png", dpi=90)

    fig_prof, axes_prof = dp.new_axes(ncols=2, width=5.0, height=3.8)
    for i, (kind, model) in enumerate(models.items()):
        rec = train(model, probe, seed=7)
        dp.plot_profile_heatmap(rec, name="W", ax=axes_prof[i])
        axes_prof[i].set_title(f"{names[kind]}: per-lag ‖part of dL/dW‖")
        final = rec.matrix("W")[-1]
        print(
            f"{kind}: trained loss {rec.losses[0]:.4f} → {rec.losses[-1]:.4f}; final ‖C_W[d]‖ at "
            f"d = 0, 30, 59: {final[0]:.3g}, {final[30]:.3g}, {final[T - 1]:.3g}"
        )
    dp.save_figure(fig_prof, OUT / "diag_profile_heatmaps.png", dpi=90)


if __name__ == "__main__":
    main()
