"""Issues 20 and 22: runs that move, and a configuration that is input, not trust.

A run's configuration names its data files by absolute path; ``eval`` reads a data file only
when its content is the checkpoint's (SHA-256 and size), wherever it lies now (``--data``),
so a forged or stale configuration cannot make bptt read or print another file; ``.npz``
data is checked on ``--resume`` exactly as text is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bptt.cli import main
from checkpoint_forge import forge, split

SMALL = ["--hidden", "3", "--batch", "2", "--steps", "2", "--eval-every", "1"]
QUIET = ["--no-progress", "--no-plot", "--checkpoint-every", "1"]


def _text(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("".join(rng.choice(list("abcde \n"), size=400)), encoding="utf-8")
    return path


def _csv(path: Path) -> Path:
    t = np.arange(80)
    rows = "\n".join(f"{np.sin(0.3 * k):.4f}" for k in t)
    path.write_text("x\n" + rows + "\n")
    return path


def _npz(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, X=rng.standard_normal((6, 10, 2)), Y=rng.standard_normal((6, 10, 1)))
    return path


def _err(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _charlm_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _text(work / "small.txt")
    argv = ["train", "--text", "small.txt", "--seq-len", "5", "--sample-every", "0"]
    assert main([*argv, *SMALL, *QUIET, "--out", "run"]) == 0
    return work


def test_config_names_data_by_absolute_path(tmp_path, monkeypatch):
    work = _charlm_run(tmp_path, monkeypatch)
    saved = json.loads((work / "run" / "config.json").read_text())
    assert saved["text"] == str(work / "small.txt")


def test_eval_from_another_directory_reads_the_runs_text(tmp_path, monkeypatch, capsys):
    work = _charlm_run(tmp_path, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _text(elsewhere / "small.txt", seed=9)  # same name, other content: must not be scored
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(work / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"].endswith(str(work / "small.txt"))


def test_a_moved_text_is_found_with_data_and_its_content_checked(tmp_path, monkeypatch, capsys):
    work = _charlm_run(tmp_path, monkeypatch)
    moved = tmp_path / "moved.txt"
    shutil.move(work / "small.txt", moved)
    capsys.readouterr()
    assert main(["eval", "run"]) == 2
    _err(capsys, "--data")
    assert main(["eval", "run", "--data", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    _text(moved, seed=5)  # rewritten in place: another content
    assert main(["eval", "run", "--data", str(moved)]) == 2
    _err(capsys, "not the data the checkpoint was trained on")


def test_a_forged_config_cannot_read_or_echo_another_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "series.csv")
    argv = ["train", "--task", "csv", "--csv", "series.csv", "--seq-len", "6", "--eval-size", "4"]
    assert main([*argv, *SMALL, *QUIET, "--out", "run"]) == 0
    secret = tmp_path / "secret.env"
    secret.write_text("SECRET_TOKEN=abc123\n1\n")
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    fmt, meta, tensors = split(ckpt)
    meta["config"]["csv"] = str(secret)
    forge(ckpt, meta, tensors, fmt)
    capsys.readouterr()
    for argv in (["eval", "run"], ["inspect", "run", "--no-plots", "--out", "insp"]):
        assert main(argv) == 2
        err = _err(capsys, "not the data the checkpoint was trained on")
        assert "SECRET" not in err and "abc123" not in err


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [("eval_size", 10**12, "--eval-size"), ("delay", 10**9, "memory"), ("hidden", -1, "hidden")],
)
def test_a_forged_config_is_validated_as_the_cli_would(
    tmp_path, monkeypatch, capsys, field, value, word
):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--task", "copy", "--delay", "2", "--copy-len", "2", "--eval-size", "4"]
    assert main([*argv, *SMALL, *QUIET, "--out", "run"]) == 0
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    fmt, meta, tensors = split(ckpt)
    meta["config"][field] = value
    forge(ckpt, meta, tensors, fmt)
    capsys.readouterr()
    assert main(["eval", "run"]) == 2
    _err(capsys, word)


def _arrays_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "data.npz")
    argv = ["train", "--task", "arrays", "--data", "data.npz", "--eval-size", "4"]
    assert main([*argv, *SMALL, *QUIET, "--out", "run"]) == 0
    return tmp_path


def test_npz_rewritten_in_place_is_refused_on_resume(tmp_path, monkeypatch, capsys):
    _arrays_run(tmp_path, monkeypatch)
    _npz(tmp_path / "data.npz", seed=1)
    argv = ["train", "--task", "arrays", "--data", "data.npz", "--eval-size", "4"]
    capsys.readouterr()
    assert main([*argv, *SMALL, *QUIET, "--out", "run", "--steps", "3", "--resume"]) == 2
    _err(capsys, "--data", "not the data")


def test_npz_moved_elsewhere_resumes(tmp_path, monkeypatch, capsys):
    _arrays_run(tmp_path, monkeypatch)
    shutil.move(tmp_path / "data.npz", tmp_path / "moved.npz")
    argv = ["train", "--task", "arrays", "--data", "moved.npz", "--eval-size", "4"]
    assert main([*argv, *SMALL, *QUIET, "--out", "run", "--steps", "3", "--resume"]) == 0
    capsys.readouterr()
    assert main(["eval", "run", "--data", "moved.npz", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 3 and out["data"] == "1 validation sequences of arrays"
