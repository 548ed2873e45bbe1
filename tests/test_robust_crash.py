"""Issue 12: a run killed with SIGKILL at seeded random points, resumed after each kill, ends
bit-identical to an uninterrupted run, with no temporary file left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bptt import _kernels
from bptt.checkpoint import load_checkpoint
from bptt.training import TrainConfig, Trainer

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _config(folder: Path, out: str) -> dict:
    text = folder / "corpus.txt"
    if not text.exists():
        rng = np.random.default_rng(5)
        words = ["kill ", "nine ", "resume ", "again\n", "step "]
        text.write_text("".join(words[i] for i in rng.integers(0, 5, 400)), encoding="utf-8")
    return dict(
        text=str(text),
        out=str(folder / out),
        hidden=6,
        seq_len=4,
        k2=7,  # buffered steps in the checkpoint too
        batch=3,
        steps=24,
        eval_every=6,
        eval_windows=2,
        checkpoint_every=1,
        log_every=1,
        sample_every=0,
        profile_every=4,
        progress=False,
        plot=False,
        dtype="float64",
    )


def _child(cfg: dict, point: str, n: int) -> subprocess.Popen:
    resume = any((Path(cfg["out"]) / f).is_file() for f in ("checkpoint.safetensors",))
    argv = [sys.executable, str(HERE / "crash_child.py"), json.dumps(cfg), str(int(resume))]
    # NumPy kernels: no Numba compile per child, and the same arithmetic as the reference
    # (the Numba kernels agree only to rounding: docs/checkpoint-format.md)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    env["BPTT_KERNELS"] = "numpy"
    return subprocess.Popen([*argv, point, str(n)], env=env, stderr=subprocess.PIPE)


def _state(out: Path) -> dict:
    c = load_checkpoint(out)
    config = {k: v for k, v in c.config.items() if k != "out"}
    arrays = {f"params.{k}": v for k, v in c.model.params.items()}
    arrays |= {f"state.{k}": v for k, v in c.arrays.items()}
    arrays |= {f"optim.{k}": v for k, v in c.optimizer_state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in c.optimizer_state.items() if not isinstance(v, np.ndarray)}
    return {
        "step": c.step,
        "config": config,
        "optimizer": scalars,
        "rng": c.rng_state,
        "data": c.data_state,
        "metrics": c.metrics,
        "arrays": {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()},
    }


def _log(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in lines]


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path) -> None:
    with _kernels.backend("numpy"):
        Trainer(TrainConfig(**_config(tmp_path, "reference")), echo=None).train()
    cfg = _config(tmp_path, "crashed")
    rng = random.Random(20261128)
    kills, points = 0, []
    for _ in range(30):
        if kills == 5:
            break
        point = rng.choice(["step", "replace", "fsync", "log", "timer"])
        n = rng.randint(1, 6)
        if point == "timer":  # a truly random moment, from outside
            child = _child(cfg, "none", 0)
            time.sleep(rng.uniform(0.2, 1.0))
            child.kill()
        else:
            child = _child(cfg, point, n)
        _, err = child.communicate(timeout=120)
        if child.returncode == 0:  # finished before the kill point: keep going from there
            assert load_checkpoint(cfg["out"]).step == 24
            break
        assert child.returncode == -signal.SIGKILL, err.decode()
        kills += 1
        points.append((point, n))
    assert kills >= 5, points  # the run really was killed, several times
    final = _child(cfg, "none", 0)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    ref, out = tmp_path / "reference", tmp_path / "crashed"
    assert _state(out) == _state(ref), points
    assert _log(out) == _log(ref)
    assert json.loads((out / "profile.json").read_text()) == json.loads(
        (ref / "profile.json").read_text()
    )
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
