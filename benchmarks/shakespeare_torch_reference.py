"""PyTorch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` on exactly the pipeline of ``bptt train``
(a curve to compare, not a timing).

Same data (tiny Shakespeare, 90/10 by position, B = 32 streams, T = 100 windows, hidden state
carried and detached — the LSTM's (h, c) both), same objective (mean cross-entropy per
character), same recipe (H = 256, Adam 2e-3, global-norm clip 5, float32), same evaluation (the
whole validation split, streams with carried state). Prints the validation loss every
``--eval-every`` steps.

    python benchmarks/shakespeare_torch_reference.py                     # nn.RNN (tanh)
    python benchmarks/shakespeare_torch_reference.py --cell lstm --eval-every 500

The bptt side of the same comparison is ``bptt train --text …/tinyshakespeare.txt --cell C
--hidden 256 --seq-len 100 --batch 32 --steps 2000`` (see ``shakespeare_cells.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bptt.data.text import CharCorpus, stream_batches  # noqa: E402

B, T, H = 32, 100, 256
MODULES = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}


def detach(state):  # type: ignore[no-untyped-def]
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def zeros(cell: str):  # type: ignore[no-untyped-def]
    h = torch.zeros(1, B, H)
    return (h, torch.zeros(1, B, H)) if cell == "lstm" else h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=sorted(MODULES), default="elman")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument(
        "--same-init",
        action="store_true",
        help="start from bptt train's initial weights (bptt.RNN(seed=--seed) through "
        "bptt.interop.to_torch) instead of PyTorch's own draw",
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    STEPS = args.steps
    torch.manual_seed(args.seed)
    corpus = CharCorpus.from_file(REPO.parent / "shared" / "data" / "tinyshakespeare.txt")
    train, val = corpus.split(0.1, seq_len=T, batch=B)
    K = corpus.vocab.size
    kwargs = {"nonlinearity": "tanh"} if args.cell == "elman" else {}
    rnn = MODULES[args.cell](K, H, **kwargs)
    head = torch.nn.Linear(H, K)
    if args.same_init:  # the weights bptt train starts from (init uniform, seed --seed)
        import numpy as np

        from bptt.interop import to_torch
        from bptt.model import RNN

        rnn, head = to_torch(RNN(K, H, K, cell=args.cell, seed=args.seed, dtype=np.float32))
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    ce = torch.nn.functional.cross_entropy

    def one_hot(x):  # (T, B) ids -> (T, B, K)
        return torch.nn.functional.one_hot(torch.from_numpy(x.copy()), K).float()

    def evaluate() -> float:
        h, total, n = zeros(args.cell), 0.0, 0
        with torch.no_grad():
            for x, y in stream_batches(val, B, T):
                out, h = rnn(one_hot(x), h)
                target = torch.from_numpy(y.copy()).reshape(-1)
                total += ce(head(out).reshape(-1, K), target, reduction="sum").item()
                n += y.size
        return total / n

    step, t0 = 0, time.perf_counter()
    while step < STEPS:
        h = zeros(args.cell)  # a new epoch starts every stream afresh
        for x, y in stream_batches(train, B, T):
            out, h = rnn(one_hot(x), detach(h))
            loss = ce(head(out).reshape(-1, K), torch.from_numpy(y.copy()).reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            if step % args.eval_every == 0:
                elapsed = time.perf_counter() - t0
                print(f"step {step}: val_loss {evaluate():.4f} ({elapsed:.0f} s)", flush=True)
            if step >= STEPS:
                break


if __name__ == "__main__":
    main()
