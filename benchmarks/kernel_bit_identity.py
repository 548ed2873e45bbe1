"""Are the NumPy and the Numba kernel paths bit-identical? Train the same small runs with each
(``bptt._kernels.backend``) and compare the final weights.

    python benchmarks/kernel_bit_identity.py

Prints, per run, whether every weight is bit-identical and the largest relative difference
|a − b| / |a|. The table in docs/checkpoint-format.md ("NumPy and Numba kernels") comes from
this script. It needs Numba (``pip install 'bptt[fast]'``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bptt import _kernels
from bptt.checkpoint import load_checkpoint
from bptt.params import Params
from bptt.training import TrainConfig, Trainer


def run(backend: str, out: Path, **kw: Any) -> Params:
    """Train one run on ``backend`` and return its final weights."""
    with _kernels.backend(backend):
        config = TrainConfig(out=str(out), progress=False, plot=False, sample_every=0, **kw)
        Trainer(config, echo=None).train()
    return load_checkpoint(out).model.params


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    text = folder / "text.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(list("abcdefgh \n"), 5000)), encoding="utf-8")
    charlm = dict(text=str(text), seq_len=20)
    cases: dict[str, dict[str, Any]] = {
        "charlm H=16 B=4 float64": dict(charlm, hidden=16, batch=4, steps=50, dtype="float64"),
        "charlm H=16 B=4 float32": dict(charlm, hidden=16, batch=4, steps=50, dtype="float32"),
        "charlm H=8 B=1 float32": dict(
            charlm, hidden=8, batch=1, seq_len=25, steps=50, dtype="float32"
        ),
        "adding H=16 B=8 float64": dict(
            task="adding", hidden=16, batch=8, seq_len=20, steps=50, eval_size=16, dtype="float64"
        ),
        "charlm H=64 B=8 float32, 20 steps": dict(
            charlm, hidden=64, batch=8, steps=20, dtype="float32"
        ),
    }
    for i, (name, kw) in enumerate(cases.items()):
        kw["eval_every"] = kw["steps"]
        a = run("numpy", folder / f"{i}-numpy", **kw)
        b = run("numba", folder / f"{i}-numba", **kw)
        pairs = [(x, y) for (_, x), (_, y) in zip(a.items(), b.items(), strict=True)]
        same = all(np.array_equal(x, y) for x, y in pairs)
        rel = max(
            float(np.max(np.abs(x.astype(np.float64) - y) / (np.abs(x.astype(np.float64)) + 1e-30)))
            for x, y in pairs
        )
        print(f"{name}: bit-identical={same}, max relative difference {rel:.2g}")


if __name__ == "__main__":
    main()
