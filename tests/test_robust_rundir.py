"""Issue 12: run directories owned by one process, resumed on the same data, never losing
progress (items 1, 2, 5, 11, 12, 13, 17)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bptt.atomic
from bptt.checkpoint import CheckpointError, load_checkpoint
from bptt.cli import main
from bptt.rundir import LOCK_NAME, RunDirBusyError, RunDirLock
from bptt.training import TrainConfig, Trainer

SRC = Path(__file__).resolve().parents[1] / "src"


def _text(folder: Path, seed: int = 1, name: str = "c.txt") -> Path:
    """A small corpus (written once: a test may change it afterwards)."""
    rng = np.random.default_rng(seed)
    words = ["to ", "be ", "or ", "not ", "that ", "is\n"]
    path = folder / name
    if path.exists():
        return path
    path.write_text("".join(words[i] for i in rng.integers(0, 6, size=900)), encoding="utf-8")
    return path


def _config(folder: Path, out: str = "run", **kw) -> TrainConfig:
    base = dict(
        text=str(_text(folder)),
        out=str(folder / out),
        hidden=6,
        seq_len=5,
        batch=3,
        steps=8,
        eval_every=4,
        eval_windows=2,
        checkpoint_every=100,
        sample_every=0,
        progress=False,
        plot=False,
        dtype="float64",
    )
    base.update(kw)
    return TrainConfig(**base)


def _spawn_train(out: Path, *extra: str) -> subprocess.Popen:
    """A long `bptt train` on the adding task in a child process."""
    argv = [sys.executable, "-m", "bptt", "train", "--task", "adding", "--hidden", "4"]
    argv += ["--seq-len", "5", "--batch", "2", "--steps", "10000000", "--eval-every", "1000000"]
    argv += ["--eval-size", "8", "--checkpoint-every", "1000000", "--log-every", "1"]
    argv += ["--out", str(out), "--no-progress", "--no-plot", *extra]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_steps(out: Path, proc: subprocess.Popen, n: int = 3) -> None:
    log = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if log.is_file() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("the child never logged a step")


# -- item 1: one process per run directory ------------------------------------------------


def test_a_second_process_on_a_busy_run_directory_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    child = _spawn_train(out)
    try:
        _wait_for_steps(out, child)
        argv = ["train", "--task", "adding", "--hidden", "4", "--seq-len", "5", "--batch", "2"]
        argv += ["--out", str(out), "--no-progress", "--no-plot", "--steps", "3"]
        assert main(argv) == 2
        assert main([*argv, "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"in use by another bptt process (PID {child.pid})" in err
        assert err.startswith("bptt train: error:")
    finally:
        child.kill()
        child.communicate()
    # SIGKILL leaves no stale lock: the kernel released it with the process
    with RunDirLock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path) -> None:
    cfg = _config(tmp_path, steps=3)
    seen = []

    def probe(event) -> None:
        if event.kind == "step":
            with pytest.raises(RunDirBusyError, match=f"PID {os.getpid()}"):
                RunDirLock(cfg.out).acquire()
            seen.append(event.step)

    trainer = Trainer(cfg, callbacks=[probe], echo=None)
    with pytest.raises(RunDirBusyError):  # already from construction on
        Trainer(_config(tmp_path, steps=3), echo=None)
    trainer.train()
    assert seen == [1, 2, 3]
    Trainer(_config(tmp_path, steps=4), resume=True, echo=None).train()  # free again


def test_a_refused_run_leaves_no_directory(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        Trainer(_config(tmp_path, "new"), resume=True, echo=None)
    assert not (tmp_path / "new").exists()


# -- item 17: SIGTERM saves, as Ctrl-C does ----------------------------------------------------


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path) -> None:
    out = tmp_path / "run"
    child = _spawn_train(out)
    _wait_for_steps(out, child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err.decode()
    step = load_checkpoint(out).step
    assert step >= 3
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == step  # nothing after the checkpoint, nothing lost before it


# -- item 2: the gradient profile continues across a resume ------------------------------------


def test_resumed_profile_equals_the_uninterrupted_one(tmp_path) -> None:
    Trainer(_config(tmp_path, "full", profile_every=2), echo=None).train()
    Trainer(_config(tmp_path, "half", profile_every=2, steps=5), echo=None).train()
    Trainer(_config(tmp_path, "half", profile_every=2), resume=True, echo=None).train()
    full = json.loads((tmp_path / "full" / "profile.json").read_text())
    half = json.loads((tmp_path / "half" / "profile.json").read_text())
    assert full["steps"] == [2, 4, 6, 8]
    assert half == full


def test_a_corrupt_profile_is_named_on_resume(tmp_path) -> None:
    Trainer(_config(tmp_path, profile_every=2, steps=4), echo=None).train()
    (tmp_path / "run" / "profile.json").write_text('{"format": "bptt-gradient-profile"')
    with pytest.raises(CheckpointError, match=r"profile\.json.*not a readable gradient profile"):
        Trainer(_config(tmp_path, profile_every=2), resume=True, echo=None)


def test_inspect_names_a_corrupt_profile(tmp_path, capsys) -> None:
    Trainer(_config(tmp_path, steps=2), echo=None).train()
    (tmp_path / "run" / "profile.json").write_text('{"format": "bptt-gradient-profile"}')
    argv = ["inspect", str(tmp_path / "run"), "--no-plots", "--out", str(tmp_path / "i")]
    assert main(argv) == 2
    assert "profile.json' is not a readable gradient profile" in capsys.readouterr().err


# -- item 5: resume compares the data's content, not its path ----------------------------------


def test_resume_refuses_a_text_rewritten_in_place(tmp_path) -> None:
    cfg = _config(tmp_path, steps=4)
    Trainer(cfg, echo=None).train()
    text = Path(cfg.text)
    data = text.read_bytes()
    text.write_bytes(data.replace(b"to ", b"be "))  # same size and characters, other text
    with pytest.raises(CheckpointError, match="is not the data the checkpoint"):
        Trainer(_config(tmp_path, steps=8, text=str(text)), resume=True, echo=None)


def test_resume_accepts_the_same_text_by_another_path(tmp_path, monkeypatch) -> None:
    cfg = _config(tmp_path, steps=4)
    Trainer(cfg, echo=None).train()
    monkeypatch.chdir(tmp_path)
    relative = _config(tmp_path, steps=8)
    relative.text = os.path.relpath(cfg.text)
    assert relative.text != cfg.text
    assert Trainer(relative, resume=True, echo=None).train().step == 8


def test_resume_refuses_a_shorter_text_naming_the_option(tmp_path) -> None:
    cfg = _config(tmp_path, steps=4)
    Trainer(cfg, echo=None).train()
    text = Path(cfg.text)
    text.write_bytes(text.read_bytes()[:400])
    with pytest.raises(CheckpointError, match="--text"):
        Trainer(_config(tmp_path, steps=8, text=str(text)), resume=True, echo=None)


def test_resume_refuses_a_changed_csv(tmp_path) -> None:
    rng = np.random.default_rng(0)
    csv = tmp_path / "s.csv"
    csv.write_text("a\n" + "\n".join(f"{v:.6f}" for v in rng.standard_normal(80)) + "\n")
    kw = dict(task="csv", csv=str(csv), text=None, eval_size=8)
    Trainer(_config(tmp_path, steps=3, **kw), echo=None).train()
    csv.write_text(csv.read_text().replace("1", "2"))
    with pytest.raises(CheckpointError, match="--csv"):
        Trainer(_config(tmp_path, steps=6, **kw), resume=True, echo=None)


# -- item 12: stale temporaries are cleaned on start ------------------------------------------


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path) -> None:
    cfg = _config(tmp_path, steps=2)
    Trainer(cfg, echo=None).train()
    out = Path(cfg.out)
    stale = [out / ".checkpoint.safetensors.k3j_x1.tmp", out / ".metrics.jsonl.zz9.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = out / ".notes.tmp"
    keep.write_text("mine")
    Trainer(_config(tmp_path, steps=3), resume=True, echo=None).train()
    assert not any(p.exists() for p in stale)
    assert keep.read_text() == "mine"
    assert not list(out.glob(".*.*.tmp"))


# -- item 13: a full disk names the file ---------------------------------------------------------


def test_no_space_left_names_the_file(tmp_path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bptt.atomic.os, "fsync", full)
    with pytest.raises(OSError, match=r"cannot write '.*/\.bptt-run': No space left"):
        Trainer(_config(tmp_path, steps=2), echo=None).train()
    # the refused start leaves no run directory holding only its lock
    assert not (tmp_path / "run").exists()


# -- item 11: sizes beyond the machine are refused up front --------------------------------------

HUGE = [
    ["--task", "adding", "--hidden", "1000000"],
    ["--task", "adding", "--seq-len", "100000000"],
    ["--task", "adding", "--batch", "1000000000"],
    ["--task", "copy", "--n-symbols", "1000000000"],
    ["--sample-length", "10000000000", "--sample-every", "1"],
]


@pytest.mark.parametrize("extra", HUGE, ids=lambda a: " ".join(a[-2:]))
def test_huge_sizes_are_refused_with_the_estimate(tmp_path, capsys, extra) -> None:
    argv = ["train", "--out", str(tmp_path / "run"), "--no-progress", "--no-plot", "--hidden"]
    argv += ["4", "--batch", "2", "--steps", "2"]
    if "copy" not in extra:  # the copy task's length is fixed by --delay and --copy-len
        argv += ["--seq-len", "5"]
    if "--task" not in extra:
        argv += ["--text", str(_text(tmp_path))]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bptt train: error:") and "of memory, more than the" in err
    assert not (tmp_path / "run").exists()


def test_an_endless_text_is_refused_at_once(tmp_path, capsys) -> None:
    argv = ["train", "--text", "/dev/zero", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 2
    assert "'/dev/zero' looks binary" in capsys.readouterr().err


def test_sample_and_inspect_refuse_or_cap_huge_sizes(tmp_path, capsys) -> None:
    Trainer(_config(tmp_path, steps=2), echo=None).train()
    run = str(tmp_path / "run")
    assert main(["sample", run, "--length", "10000000000"]) == 2
    assert "--length 10000000000 needs about" in capsys.readouterr().err
    ins = ["inspect", "--no-plots", "--out", str(tmp_path / "i")]
    assert main([*ins, "--hidden", "1000000"]) == 2
    assert "of memory, more than the" in capsys.readouterr().err
    assert main([*ins, run, "--max-lag", "1000000000"]) == 0  # capped at T - 1
    report = json.loads((tmp_path / "i" / "inspect.json").read_text())
    assert report["batch"]["seq_len"] == 5
    # capped at T − 1 = 4: every lag of the batch is kept, which the report writes as None
    assert report["lag_contributions"]["max_lag"] is None
    assert report["lag_contributions"]["labels"] == ["0", "1", "2", "3", "4"]


def test_a_failure_while_sampling_keeps_the_steps_before_it(tmp_path, monkeypatch) -> None:
    def boom(self) -> str:
        raise MemoryError("sampling")

    monkeypatch.setattr(Trainer, "_sample_text", boom)
    cfg = _config(tmp_path, steps=20, sample_every=7, checkpoint_every=100)
    with pytest.raises(MemoryError):
        Trainer(cfg, echo=None).train()
    assert load_checkpoint(cfg.out).step == 7
    Trainer(_config(tmp_path, steps=9), resume=True, echo=None).train()  # and it resumes


def test_an_unforeseen_memory_error_is_an_error_message(tmp_path, capsys, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.3 TiB")

    monkeypatch.setattr("bptt.cli.commands.gradcheck", boom)
    assert main(["gradcheck"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bptt gradcheck: error: out of memory (Unable to allocate 7.3 TiB)")
