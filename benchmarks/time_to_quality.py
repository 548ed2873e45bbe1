"""Time to quality: validation loss reached in a fixed wall-clock budget, bptt vs PyTorch.

    python benchmarks/time_to_quality.py                  # 120 s each, prints both curves
    python benchmarks/time_to_quality.py --budget 30      # a quick look
    python benchmarks/time_to_quality.py --load 2         # beside two busy-loop processes

Each framework trains in its own fresh process (``_harness.run_child``), one after the other,
so neither library's thread pool is resident while the other trains.

Recipe (the tiny Shakespeare character model): vocabulary of the corpus's 65 characters,
tanh Elman RNN with H = 256, softmax head, float32; batches of B = 32 random windows of
T = 100 characters (+1 for the targets) from the first 90% of the text, h0 = 0; Adam
(lr 2e-3, β = (0.9, 0.999), ε = 1e-8) after clipping the global gradient norm at 5. Both
frameworks start from the same weights and see the same batches in the same order.

Validation: the mean per-character cross-entropy (nats) over a fixed set of windows from the
last 10%, evaluated every ``--eval-every`` seconds of training; the clock stops while
evaluating. bptt uses the project's ``bptt.optim.Adam`` and ``clip_grad_norm`` in a minimal
loop written here (not the trainer, whose evaluation and logging would cost time the
PyTorch loop does not pay); PyTorch uses ``torch.optim.Adam`` and ``clip_grad_norm_``.

The corpus is ``../shared/data/tinyshakespeare.txt`` beside the repository.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(HERE))

from _harness import CompetingLoad, emit, env_threads, load_average, run_child  # noqa: E402
from _machine import report  # noqa: E402

import bptt  # noqa: E402
from bptt.data.text import CharCorpus  # noqa: E402
from bptt.optim import Adam, clip_grad_norm  # noqa: E402

CHILD_ARGS = ("budget", "eval_every", "hidden", "batch", "seq_len", "lr", "clip", "val_windows")
CHILD_ARGS += ("data",)
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def windows(ids: np.ndarray, starts: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """x = ids[s : s+T], y = ids[s+1 : s+T+1] for each start, time-major (T, B)."""
    idx = starts[None, :] + np.arange(T)[:, None]  # (T, B)
    return ids[idx], ids[idx + 1]


def run_bptt(
    model: bptt.ElmanRNN,
    batches: Callable[[int], tuple[np.ndarray, np.ndarray]],
    val: list[tuple[np.ndarray, np.ndarray]],
    budget: float,
    eval_every: float,
    lr: float,
    clip: float,
) -> list[tuple[float, int, float]]:
    opt = Adam(lr, betas=(0.9, 0.999), eps=1e-8)
    T = val[0][0].shape[0]

    def evaluate() -> float:
        return float(np.mean([model.loss(x, y) for x, y in val])) / T

    curve = [(0.0, 0, evaluate())]
    elapsed, step, next_eval = 0.0, 0, eval_every
    while elapsed < budget:
        x, y = batches(step)
        start = time.perf_counter()
        _, grads = model.loss_and_grads(x, y)
        clip_grad_norm(grads, clip)
        opt.step(model.params, grads)
        elapsed += time.perf_counter() - start
        step += 1
        if elapsed >= next_eval or elapsed >= budget:
            curve.append((elapsed, step, evaluate()))
            next_eval += eval_every
    return curve


def run_torch(
    model: bptt.ElmanRNN,
    batches: Callable[[int], tuple[np.ndarray, np.ndarray]],
    val: list[tuple[np.ndarray, np.ndarray]],
    budget: float,
    eval_every: float,
    lr: float,
    clip: float,
) -> list[tuple[float, int, float]]:
    import torch

    I, O = model.input_size, model.output_size
    rnn, lin = bptt.interop.to_torch(model)  # the same weights and function
    params = list(rnn.parameters()) + list(lin.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    T = val[0][0].shape[0]

    def loss_of(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        xt = torch.nn.functional.one_hot(torch.from_numpy(x), I).float()
        hs, _ = rnn(xt)
        logits = lin(hs)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, O), torch.from_numpy(y).reshape(-1), reduction="sum"
        ) / float(x.shape[1])

    def evaluate() -> float:
        with torch.no_grad():
            return float(np.mean([float(loss_of(x, y)) for x, y in val])) / T

    curve = [(0.0, 0, evaluate())]
    elapsed, step, next_eval = 0.0, 0, eval_every
    while elapsed < budget:
        x, y = batches(step)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        elapsed += time.perf_counter() - start
        step += 1
        if elapsed >= next_eval or elapsed >= budget:
            curve.append((elapsed, step, evaluate()))
            next_eval += eval_every
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds each")
    parser.add_argument("--eval-every", type=float, default=10.0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--val-windows", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--markdown", type=Path, help="write machine info + curves here")
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes meanwhile")
    parser.add_argument("--framework", choices=("bptt", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"corpus not found at {args.data}", file=sys.stderr)
        return 2
    corpus = CharCorpus.from_file(args.data)
    train, valid = corpus.split(0.1)
    vocab = corpus.vocab.size
    T, B = args.seq_len, args.batch
    rng = np.random.default_rng(0)
    starts_seed = rng.integers(0, 2**31)

    def batches(step: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng([int(starts_seed), step])  # same batch k for both
        return windows(train, r.integers(0, len(train) - T - 1, size=B), T)

    val_starts = np.random.default_rng(1).integers(0, len(valid) - T - 1, size=args.val_windows)
    val = [windows(valid, val_starts[i : i + B], T) for i in range(0, args.val_windows, B)]
    if args.framework:  # a child: train one framework, print its curve as JSON
        runner = run_bptt if args.framework == "bptt" else run_torch
        model = bptt.ElmanRNN(vocab, args.hidden, vocab, seed=0, dtype=np.float32)
        curve = runner(model, batches, val, args.budget, args.eval_every, args.lr, args.clip)
        emit({"curve": curve})
        return 0
    passed = [  # the recipe, not --markdown or --load
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in CHILD_ARGS
    ]
    before = load_average()
    curves = {}
    with CompetingLoad(args.load):
        for name in ("bptt", "torch"):
            print(f"training {name} for {args.budget:.0f} s in a fresh process ...", flush=True)
            out = run_child([str(Path(__file__).resolve()), *passed, "--framework", name])
            curves[name] = [tuple(c) for c in out["curve"]]  # type: ignore[union-attr]

    lines = [
        f"tiny Shakespeare, H={args.hidden} B={B} T={T}, Adam lr {args.lr}, clip {args.clip}, "
        f"float32, {args.budget:.0f} s of training each (clock stopped during evaluation); "
        f"validation loss in nats per character over {args.val_windows} windows; each "
        f"framework in its own fresh process; competing load: {args.load} busy-loop "
        f"process(es); {env_threads()}; load average before {before}, after {load_average()}",
        "",
    ]
    for name, curve in curves.items():
        lines.append(f"{name}: " + ", ".join(f"{t:.0f}s/{s}:{v:.3f}" for t, s, v in curve))
    lines.append("")
    lines.append("| framework | steps in budget | steps/s | final val loss | best val loss |")
    lines.append("|---|---|---|---|---|")
    for name, curve in curves.items():
        t, s, v = curve[-1]
        best = min(c[2] for c in curve)
        lines.append(f"| {name} | {s} | {s / t:.2f} | {v:.3f} | {best:.3f} |")
    text = "\n".join(lines)
    report(text, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
