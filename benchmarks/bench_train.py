"""What the trainer costs on top of the step: ``bptt train``'s loop against bare loops.

    python benchmarks/bench_train.py                 # minchar and charlm recipes, 5 rounds
    python benchmarks/bench_train.py --load 2        # beside two busy-loop processes

Three ways to run the same optimizer steps, each in its own fresh process (``_harness``),
alternated and repeated; per-step milliseconds, median [min–max] over rounds:

- **core**: ``model.loss_and_grads(x, y)`` alone on the stream's windows (the step that
  ``bench_step.py`` times), at the initial weights (nothing trains them);
- **trained**: the same core alone, at fixed weights trained first by ``warmup + steps / 2``
  untimed bare-loop steps (where the trainer's timed window is halfway);
- **bare**: core + the recipe's clipping + ``optimizer.step`` (``bptt.optim``), carrying
  nothing else: the loop a user would write by hand;
- **trainer**: :class:`bptt.training.Trainer` (what ``bptt train`` runs): truncated BPTT with the
  carried state, the mean-per-character scaling, the guarded step (finiteness checks),
  the learning-rate schedule, ``metrics.jsonl`` every ``log_every`` steps, the progress bar.
  Evaluation, sampling and checkpoints are set beyond the timed steps: they are separate,
  configurable work, not per-step overhead. Steps are timed from a callback, after warm-up.

Every mode also times, inside its own loop, the calls to ``model.forward_backward`` (what
``loss_and_grads`` and the trainer's truncated BPTT call): the **core in the loop**, the same
step at the weights that loop is training. The step's cost depends on the weights (at
min-char-rnn's size the core step at the initial weights is ~125 µs, at weights trained for
3,000 steps ~150 µs, mostly in the forward's tanh and the softmax: docs/benchmarks.md), so
the trainer's overhead is trainer / its own core in the loop; the
fresh-weight core is shown for comparison with ``bench_step.py``.

Recipes: minchar = Karpathy's min-char-rnn (H 100, T 25, B 1, Adagrad lr 0.1, entries
clipped to ±5); charlm = H 256, T 100, B 32, Adam 2e-3, global-norm clip 5. Text: the
built-in corpus. Targets (issue 11): trainer ≤ 1.1 × bare at charlm, ≤ 1.5 × core at minchar.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _harness import (  # noqa: E402
    CompetingLoad,
    alternate,
    emit,
    env_threads,
    load_average,
    spread,
)
from _machine import report  # noqa: E402

RECIPES: dict[str, dict[str, Any]] = {
    "minchar": dict(
        hidden=100, seq_len=25, batch=1, optimizer="adagrad", lr=0.1, clip=0.0, clip_value=5.0
    ),
    "charlm": dict(hidden=256, seq_len=100, batch=32, optimizer="adam", lr=2e-3, clip=5.0),
}
MODES = ("core", "trained", "bare", "trainer")


def recipe_config(recipe: str, out: Path, **overrides: Any) -> Any:
    """The recipe's ``TrainConfig`` on the built-in corpus, training only: evaluation,
    sampling, checkpoints and plots set beyond any timed step (also used by
    ``alloc_per_step.py``)."""
    from bptt.training import TrainConfig

    return TrainConfig(
        task="charlm",
        steps=10**9,
        eval_every=10**9,
        sample_every=0,
        checkpoint_every=10**9,
        plot=False,
        out=str(out),
        **(RECIPES[recipe] | overrides),
    )


def child(mode: str, recipe: str, steps: int, warmup: int) -> dict[str, object]:
    """Per-step ms of ``steps`` steps after ``warmup`` ones, in this (fresh) process."""
    from bptt.data.text import stream_batches
    from bptt.optim import clip_grad_norm, clip_grad_value, make_optimizer
    from bptt.training import CharStreamSource, Trainer

    out = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        cfg = recipe_config(recipe, out / "run")
        trainer = Trainer(cfg, echo=None)
        inner = trainer.model.forward_backward
        core_s = 0.0  # seconds inside forward_backward (the core in the loop)

        def timed_forward_backward(*args: Any, **kwargs: Any) -> Any:
            nonlocal core_s
            t0 = time.perf_counter()
            result = inner(*args, **kwargs)
            core_s += time.perf_counter() - t0
            return result

        trainer.model.forward_backward = timed_forward_backward  # type: ignore[method-assign]
        if mode == "trainer":
            stamps: list[float] = []

            def on_step(event: Any) -> None:
                nonlocal core_s
                if event.kind == "step":
                    stamps.append(time.perf_counter())
                    if len(stamps) == warmup + 1:  # the timed steps start here
                        core_s = 0.0
                    if len(stamps) > warmup + steps:
                        trainer.request_stop("benchmark")

            trainer.callbacks.append(on_step)
            trainer.train()
            elapsed = stamps[-1] - stamps[warmup]
        else:
            model = trainer.model
            assert isinstance(trainer.source, CharStreamSource)
            ids = trainer.source.train_ids
            opt = make_optimizer(cfg.optimizer, cfg.lr)
            batches = stream_batches(ids, cfg.batch, cfg.seq_len)

            train = False

            def one() -> None:
                nonlocal batches
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = stream_batches(ids, cfg.batch, cfg.seq_len)
                    x, y = next(batches)
                _, grads = model.loss_and_grads(x, y)
                if mode == "bare" or train:
                    if cfg.clip_value:
                        clip_grad_value(grads, cfg.clip_value)
                    if cfg.clip:
                        clip_grad_norm(grads, cfg.clip)
                    opt.step(model.params, grads)

            train = mode == "trained"  # the bare loop first, then the core alone
            for _ in range(warmup + steps // 2 if train else warmup):
                one()
            train = False
            core_s = 0.0
            start = time.perf_counter()
            for _ in range(steps):
                one()
            elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"ms": 1e3 * elapsed / steps, "core_ms": 1e3 * core_s / steps, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="rough timed length per child")
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes meanwhile")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, recipe, steps, warmup = args.child
        emit(child(mode, recipe, int(steps), int(warmup)))
        return 0
    before = load_average()
    script = str(Path(__file__).resolve())
    rows = []
    guess_ms = {"minchar": 0.3, "charlm": 20.0}
    with CompetingLoad(args.load):
        for recipe in args.recipes:
            steps = max(20, int(args.seconds * 1e3 / guess_ms[recipe]))
            print(f"  {recipe}: {steps} steps per child", flush=True)
            cmds = {m: [script, "--child", m, recipe, str(steps), "20"] for m in MODES}
            runs = alternate(cmds, args.reps)
            ms = {m: [float(r["ms"]) for r in runs[m]] for m in MODES}  # type: ignore[arg-type]
            inner_ms = [float(r["core_ms"]) for r in runs["trainer"]]  # type: ignore[arg-type]
            ratio_bare = spread([t / b for t, b in zip(ms["trainer"], ms["bare"], strict=True)])
            ratio_core = spread([t / c for t, c in zip(ms["trainer"], ms["core"], strict=True)])
            ratio_inner = spread([t / c for t, c in zip(ms["trainer"], inner_ms, strict=True)])
            rows.append(
                f"| {recipe} | {spread(ms['core']).fmt(3)} | {spread(ms['trained']).fmt(3)} "
                f"| {spread(inner_ms).fmt(3)} "
                f"| {spread(ms['bare']).fmt(3)} | {spread(ms['trainer']).fmt(3)} "
                f"| {ratio_bare.fmt()} | {ratio_core.fmt()} | **{ratio_inner.fmt()}** |"
            )
    text = (
        "| recipe | core ms/step (initial weights) | core (trained weights) "
        "| core in the trainer's loop | bare loop ms/step | trainer ms/step | trainer / bare "
        "| trainer / core (initial) | trainer / its core in the loop |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"median [min–max] over {args.reps} alternated rounds, each mode in a fresh process; "
        f"ratios per round; competing load: {args.load} busy-loop process(es); {env_threads()}; "
        f"load average before {before}, after {load_average()}"
    )
    report(text, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
