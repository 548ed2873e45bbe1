"""PyTorch ``nn.RNN`` on exactly the pipeline of ``bptt train`` (a curve to compare, not a timing).

Same data (tiny Shakespeare, 90/10 by position, B = 32 streams, T = 100 windows, hidden state
carried and detached), same objective (mean cross-entropy per character), same recipe (tanh,
H = 256, Adam 2e-3, global-norm clip 5, float32), same evaluation (the whole validation split,
streams with carried state). Prints the validation loss every 100 steps.

    python benchmarks/shakespeare_torch_reference.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bptt.data.text import CharCorpus, stream_batches  # noqa: E402

STEPS, B, T, H = 2000, 32, 100, 256


def main() -> None:
    torch.manual_seed(0)
    corpus = CharCorpus.from_file(REPO.parent / "shared" / "data" / "tinyshakespeare.txt")
    train, val = corpus.split(0.1, seq_len=T, batch=B)
    K = corpus.vocab.size
    rnn = torch.nn.RNN(K, H, nonlinearity="tanh")
    head = torch.nn.Linear(H, K)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    ce = torch.nn.functional.cross_entropy

    def one_hot(x):  # (T, B) ids -> (T, B, K)
        return torch.nn.functional.one_hot(torch.from_numpy(x.copy()), K).float()

    def evaluate() -> float:
        h, total, n = torch.zeros(1, B, H), 0.0, 0
        with torch.no_grad():
            for x, y in stream_batches(val, B, T):
                out, h = rnn(one_hot(x), h)
                target = torch.from_numpy(y.copy()).reshape(-1)
                total += ce(head(out).reshape(-1, K), target, reduction="sum").item()
                n += y.size
        return total / n

    step, t0 = 0, time.perf_counter()
    while step < STEPS:
        h = torch.zeros(1, B, H)  # a new epoch starts every stream afresh
        for x, y in stream_batches(train, B, T):
            out, h = rnn(one_hot(x), h.detach())
            loss = ce(head(out).reshape(-1, K), torch.from_numpy(y.copy()).reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            if step % 100 == 0:
                elapsed = time.perf_counter() - t0
                print(f"step {step}: val_loss {evaluate():.4f} ({elapsed:.0f} s)", flush=True)
            if step >= STEPS:
                break


if __name__ == "__main__":
    main()
