"""bptt sweep --resume: a sweep killed mid-way (SIGKILL) finishes without rerunning the
trials that had finished, and the interrupted trial continues to the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the 'sweep' extra (ray[tune])")

from bptt.cli import main

pytestmark = pytest.mark.slow

SPEC = """
[base]
task = "adding"
seq_len = 10
batch = 8
hidden = 8
steps = 400
eval_every = 50
eval_size = 32
plot = false

[space]
lr = [1e-3, 3e-3, 1e-2, 3e-2]

[sweep]
seeds = [0]
metric = "val_mse"
parallel = 1
"""


def _env() -> dict[str, str]:
    src = str(Path(__file__).parents[1] / "src")
    return os.environ | {"PYTHONPATH": src, "RAY_memory_monitor_refresh_ms": "0"}


def _statuses(out: Path) -> dict[str, str]:
    found = {}
    for path in (out / "trials").glob("*/trial.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())["status"]
        except (OSError, ValueError):
            continue
    return found


def _snapshot(run: Path) -> dict[str, tuple[int, bytes]]:
    return {
        name: ((run / name).stat().st_mtime_ns, (run / name).read_bytes())
        for name in ("metrics.jsonl", "checkpoint.safetensors", "trial.json", "config.json")
    }


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]


def test_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    spec, out = tmp_path / "spec.toml", tmp_path / "sweep"
    spec.write_text(SPEC)
    cmd = [sys.executable, "-m", "bptt", "sweep", str(spec), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [*cmd, "--num-cpus", "1"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )
    try:
        deadline = time.monotonic() + 240
        while list(_statuses(out).values()).count("done") < 1:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _statuses(out)
    finished = [name for name, status in before.items() if status == "done"]
    assert 1 <= len(finished) < 4, before
    snapshots = {name: _snapshot(out / "trials" / name) for name in finished}

    resumed = subprocess.run(
        [*cmd, "--num-cpus", "2", "--resume"], env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _statuses(out)
    assert len(after) == 4 and set(after.values()) == {"done"}, after
    for name in finished:  # not run again: not a byte, not a timestamp changed
        assert _snapshot(out / "trials" / name) == snapshots[name], name
        assert json.loads((out / "trials" / name / "trial.json").read_text())["trainings"] == 1
    # every trial, resumed or not, holds the numbers of the same run launched by hand
    for name in after:
        config = json.loads((out / "trials" / name / "config.json").read_text())
        hand = tmp_path / "hand" / name
        args = ["train", "--out", str(hand), "--no-progress", "--no-plot"]
        for key in ("task", "seq_len", "batch", "hidden", "steps", "eval_every", "eval_size"):
            args += ["--" + key.replace("_", "-"), str(config[key])]
        assert main([*args, "--lr", str(config["lr"]), "--seed", str(config["seed"])]) == 0
        assert _records(out / "trials" / name) == _records(hand), name
