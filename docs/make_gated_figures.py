"""The lag profile of a tanh RNN, a GRU and an LSTM on one figure (docs/diagnostics.md, §6).

    PYTHONPATH=src python docs/make_gated_figures.py [RUNS]

The three runs are ``bptt train --task adding --cell C --hidden 64 --seq-len 100 --batch 32
--steps 4000 --eval-every 100 --eval-size 512 --dtype float32 --seed 0 --out RUNS/adding-C``
for C in elman, gru, lstm (Adam 2e-3, clip 5: the defaults); a missing run is trained here
with exactly that configuration (tens of minutes per run on one core). "At initialisation" is
the same model with the run's seed-0 weights before training.

On one validation batch of the adding problem (T = 100, B = 32, the loss at step T only),
in float64, through each cell's own Jacobian products (:mod:`bptt.diagnostics`):

- top: ‖C[d]‖ / ‖dL/dθ_rec‖, the part of the recurrent layer's gradient that reaches back over
  lag d, relative to the whole recurrent gradient;
- bottom: ‖∂s_T/∂s_{T−d}‖₂ (batch mean), the state Jacobian products — for the LSTM over
  s = [h ‖ c], the cell path included.

Also printed: the first evaluation step at which each run's validation MSE fell below 0.01.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import bptt
from bptt.checkpoint import load_checkpoint
from bptt.data.tasks import AddingTask
from bptt.diagnostics import jacobian_report, lag_contributions
from bptt.diagnostics import plots as dp

OUT = Path(__file__).parent / "figures"
T, B, H = 100, 32, 64
CELLS = {"elman": "tanh RNN", "gru": "GRU", "lstm": "LSTM"}


def config(cell: str, out: Path) -> bptt.training.TrainConfig:  # type: ignore[name-defined]
    from bptt.training import TrainConfig

    return TrainConfig(
        task="adding", cell=cell, hidden=H, seq_len=T, batch=32, steps=4000, eval_every=100,
        eval_size=512, dtype="float32", seed=0, out=str(out), progress=False, plot=False,
        log_every=50, checkpoint_every=500,
    )  # fmt: skip


def trained(cell: str, runs: Path) -> Path:
    run = runs / f"adding-{cell}"
    if not (run / "checkpoint.safetensors").is_file() and not (run / "checkpoint.npz").is_file():
        from bptt.training import Trainer

        Trainer(config(cell, run), echo=None).train()
    return run


def as_float64(model: bptt.RNN) -> bptt.RNN:
    structure = {**model.structure(), "dtype": "float64"}
    out = bptt.model.build_model(**structure, seed=0)
    out.params = model.params.map(lambda a: a.astype(np.float64))
    return out


def first_below(run: Path, level: float = 0.01) -> int | None:
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "eval" and record.get("val_mse", 1.0) < level:
            return int(record["step"])
    return None


def main() -> None:
    runs = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs")
    OUT.mkdir(parents=True, exist_ok=True)
    probe = AddingTask(seq_len=T).sample(np.random.default_rng(123), B, np.float64, split="val")
    dp.require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 7.6), dpi=100, layout="constrained")
    axes = fig.subplots(2, 2, sharey="row")
    for cell, name in CELLS.items():
        run = trained(cell, runs)
        models = {
            "initialisation": bptt.RNN(2, H, 1, cell=cell, output="identity", seed=0),
            "after training": as_float64(load_checkpoint(run).model),
        }
        steps = first_below(run)
        print(f"{name}: validation MSE < 0.01 first at step {steps} (evaluated every 100)")
        for col, (when, model) in enumerate(models.items()):
            contrib = lag_contributions(model, probe.x, probe.y, mask=probe.mask)
            jac = jacobian_report(model, probe.x)
            dp.plot_cell_lag_profile(contrib, ax=axes[0, col], label=name, relative=True)
            dp.plot_state_jacobians(jac, ax=axes[1, col], label=name)
            rel = contrib.norms()["total"]
            rel = rel / np.sqrt(sum(float(np.sum(a.sum(0) ** 2)) for a in contrib.parts.values()))
            print(
                f"  {when}: loss {contrib.loss:.4g}; ‖C[d]‖/‖g‖ at d = 0, 10, 50, 99: "
                + ", ".join(f"{rel[d]:.3g}" for d in (0, 10, 50, 99))
                + "; log10 ‖∂s_T/∂s_(T−d)‖ at d = 10, 50, 100: "
                + ", ".join(f"{jac.log10_mean[d]:.2f}" for d in (10, 50, 100))
            )
    for col, when in enumerate(("at initialisation", "after training")):
        axes[0, col].set_title(f"Lag profile {when} (adding, T = {T})")
        axes[1, col].set_title(f"State-Jacobian products {when}")
    axes[0, 1].set_ylabel("")
    axes[1, 1].set_ylabel("")
    for ax in axes.flat:
        ax.set_yscale("log")
    dp.save_figure(fig, OUT / "diag_gated_lag_profile.png", dpi=90)


if __name__ == "__main__":
    main()
