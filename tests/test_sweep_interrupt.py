"""Issue 22, sweeps on a cluster: Ctrl-C (SIGINT) on the driver exits 130, labels the trials
it stopped "interrupted" and prints bptt's own --resume hint (not Tune's Tuner.restore
advice), with Ray's progress tables off; --resume then finishes the sweep. --resume also
retries the trials that failed."""

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

pytestmark = pytest.mark.slow

SPEC = """
[base]
task = "adding"
seq_len = 10
batch = 8
hidden = 8
steps = 600
eval_every = 50
eval_size = 32
plot = false
{extra}
[space]
lr = [1e-3, 3e-3, 1e-2]

[sweep]
seeds = [0]
metric = "val_mse"
parallel = 1
"""


def _env() -> dict[str, str]:
    src = str(Path(__file__).parents[1] / "src")
    return os.environ | {"PYTHONPATH": src, "RAY_memory_monitor_refresh_ms": "0"}


def _records(out: Path) -> dict[str, dict]:
    found = {}
    for path in (out / "trials").glob("*/trial.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return found


def _sweep(spec: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "bptt", "sweep", str(spec), "--out", str(out), *more]


def test_ctrl_c_exits_130_labels_interrupted_and_resume_finishes(tmp_path: Path) -> None:
    spec, out = tmp_path / "spec.toml", tmp_path / "sweep"
    spec.write_text(SPEC.format(extra=""))
    proc = subprocess.Popen(
        _sweep(spec, out, "--num-cpus", "1"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell's foreground job
    )
    try:
        deadline = time.monotonic() + 240
        # a trial has started and reported at least once (it has a checkpoint)
        while not any(r.get("history") for r in _records(out).values()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no trial started in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    statuses = {name: r["status"] for name, r in _records(out).items()}
    assert "interrupted" in statuses.values(), statuses
    assert set(statuses.values()) <= {"done", "interrupted"}, statuses
    assert "Tuner.restore" not in stdout + stderr
    assert f"bptt sweep {spec} --out {out} --resume" in stderr, stderr[-3000:]
    assert "interrupted, 0 failed" in stdout, stdout
    # no Ray progress tables by default: the summary, the hint, a line of Ray's start-up
    assert len((stdout + stderr).splitlines()) < 25, stdout + stderr
    assert "Trial status" not in stdout + stderr

    resumed = subprocess.run(
        _sweep(spec, out, "--num-cpus", "1", "--resume", "--verbose"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = _records(out)
    assert len(records) == 3 and {r["status"] for r in records.values()} == {"done"}, records
    for name, status in statuses.items():  # the interrupted trial continued, not restarted
        if status == "interrupted":
            assert records[name]["trainings"] == 2, records[name]
    assert "Trial status" in resumed.stdout  # --verbose: Ray Tune's progress tables


def test_resume_retries_failed_trials(tmp_path: Path) -> None:
    """max_failures = 1 retries a failed trial once. Every trial fails at first (its
    init_from run directory holds no checkpoint yet); once the checkpoint is there, --resume
    retries them and they finish."""
    donor = tmp_path / "donor"
    donor.mkdir()
    spec, out = tmp_path / "spec.toml", tmp_path / "sweep"
    text = SPEC.format(extra=f'init_from = "{donor}"').replace("600", "100")
    spec.write_text(text + "max_failures = 1\n")
    first = subprocess.run(
        _sweep(spec, out, "--num-cpus", "1"), env=_env(), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert {r["status"] for r in _records(out).values()} == {"error"}, _records(out)
    assert "3 failed" in first.stdout
    # max_failures = 1: Tune tried each trial twice
    assert [r["failures"] for r in _records(out).values()] == [2, 2, 2], _records(out)

    donor.rmdir()
    train = [sys.executable, "-m", "bptt", "train", "--task", "adding", "--seq-len", "10"]
    train += ["--hidden", "8", "--steps", "5", "--out", str(donor), "--no-progress", "--no-plot"]
    assert subprocess.run(train, env=_env(), capture_output=True).returncode == 0

    resumed = subprocess.run(
        _sweep(spec, out, "--num-cpus", "1", "--resume"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = _records(out)
    assert len(records) == 3 and {r["status"] for r in records.values()} == {"done"}, records
    assert all(r["steps"] == 100 and not r["error"] for r in records.values()), records
