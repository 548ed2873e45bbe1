"""Issue 20, data loss: bptt writes only inside what it owns (a run directory it created or
recognises by its marker), never over a run's own files, never through a symbolic link."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from bptt.cli import main
from bptt.rundir import RUN_MARKER, metrics_line

TRAIN = [
    "train",
    "--task",
    "sine",
    "--hidden",
    "3",
    "--seq-len",
    "4",
    "--batch",
    "2",
    "--steps",
    "2",
    "--eval-every",
    "1",
    "--eval-size",
    "4",
    "--checkpoint-every",
    "1",
    "--no-progress",
    "--no-plot",
]


def _train(out: str | Path, *extra: str) -> int:
    return main([*TRAIN, "--out", str(out), *extra])


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: file bytes, link targets (not followed)."""
    out: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run (read-only for the tests: copy before changing)."""
    out = tmp_path_factory.mktemp("owned") / "run"
    assert _train(out) == 0
    assert (out / RUN_MARKER).is_file()
    return out


def _copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_empty_out_is_refused_and_the_current_directory_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("config.json", "metrics.jsonl", "loss.png"):
        (tmp_path / name).write_text("mine\n")
    before = _snapshot(tmp_path)
    assert _train("") == 2
    _one_line_error(capsys, "--out", "empty")
    assert _snapshot(tmp_path) == before


def test_foreign_directory_is_refused(tmp_path, capsys):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": 1}\n')
    (mine / "metrics.jsonl").write_text('{"step": 1}\n')
    before = _snapshot(tmp_path)
    assert _train(mine) == 2
    _one_line_error(capsys, "not a bptt run directory")
    assert _train(mine, "--overwrite") == 2  # --overwrite replaces runs only
    capsys.readouterr()
    assert _snapshot(tmp_path) == before


def test_an_empty_existing_directory_becomes_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty") == 0
    assert (tmp_path / "empty" / RUN_MARKER).is_file()


def test_overwrite_is_the_one_way_to_replace_a_run(run, tmp_path, capsys):
    out = _copy_run(run, tmp_path / "run")
    (out / "notes.txt").write_text("keep me")
    assert _train(out) == 2
    _one_line_error(capsys, "--overwrite")
    assert _train(out, "--overwrite", "--seed", "5") == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 5
    assert (out / "notes.txt").read_text() == "keep me"
    assert _train(out, "--overwrite", "--resume") == 2
    capsys.readouterr()


@pytest.mark.parametrize("name", ["checkpoint.safetensors", "config.json", ".lock", RUN_MARKER])
def test_predict_and_export_never_write_over_a_run(run, tmp_path, capsys, name):
    out = _copy_run(run, tmp_path / "run")
    x = np.random.default_rng(0).standard_normal((5, 2, 1)).astype(np.float32)
    np.savez(tmp_path / "x.npz", X=x)
    before = _snapshot(out)
    assert main(["predict", str(out), "--data", str(tmp_path / "x.npz"), "--out", str(out / name)])
    _one_line_error(capsys, "--out", "run")
    assert main(["export", str(out), "--format", "torch", "--out", str(out / name)]) == 2
    _one_line_error(capsys, "--out", "run")
    assert _snapshot(out) == before


def test_outputs_never_land_in_best(run, tmp_path, capsys):
    out = _copy_run(run, tmp_path / "run")
    (out / "best").mkdir(exist_ok=True)
    assert main(["export", str(out), "--format", "torch", "--out", str(out / "best/x")]) == 2
    _one_line_error(capsys, "best")
    # a file of another name beside the run's own is allowed
    assert main(["export", str(out), "--format", "torch", "--out", str(out / "w.st")]) == 0


def test_output_through_a_link_is_refused(run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.npz"
    link.symlink_to(victim)
    assert main(["export", str(run), "--format", "torch", "--out", str(link)]) == 2
    _one_line_error(capsys, "symbolic link")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "config.json", "loss.png", "best"])
def test_links_in_a_run_directory_are_not_written_through(run, tmp_path, capsys, name):
    out = _copy_run(run, tmp_path / "run")
    other = _copy_run(run, tmp_path / "other")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = other if name == "best" else victim
    p = out / name
    if p.is_dir():
        import shutil

        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
    p.symlink_to(target)
    before_other, before_victim = _snapshot(other), victim.read_bytes()
    assert _train(out, "--steps", "4", "--resume") == 2
    _one_line_error(capsys, "symbolic link")
    assert _snapshot(other) == before_other
    assert victim.read_bytes() == before_victim


def test_a_lock_link_is_not_truncated_on_a_fresh_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".lock").symlink_to(victim)
    assert _train(out) == 2
    _one_line_error(capsys, "--out")
    (out / RUN_MARKER).write_text("")
    assert _train(out) == 2
    _one_line_error(capsys, "symbolic link")
    assert victim.read_text() == "precious"


def test_metrics_lines_of_any_json_shape_are_dropped_on_resume(run, tmp_path, capsys):
    out = _copy_run(run, tmp_path / "run")
    log = out / "metrics.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    junk = ["[1, 2]", "3", '"text"', "null", deep, '{"step": "x"}', '{"step": null}', "{"]
    log.write_text(log.read_text() + "\n".join(junk) + "\n")
    assert _train(out, "--steps", "3", "--resume") == 0
    for line in log.read_text().splitlines():
        assert isinstance(json.loads(line), dict)


def test_metrics_lines_are_strict_json():
    line = metrics_line({"step": 1, "loss": math.nan, "val": {"x": math.inf}})

    def strict(token: str) -> None:
        raise ValueError(f"bare {token} in metrics.jsonl")

    assert json.loads(line, parse_constant=strict) == {"step": 1, "loss": None, "val": {"x": None}}


def test_a_run_from_before_the_marker_resumes(run, tmp_path):
    out = _copy_run(run, tmp_path / "run")
    (out / RUN_MARKER).unlink()
    assert _train(out, "--steps", "3", "--resume") == 0
    assert (out / RUN_MARKER).is_file()


def test_a_foreign_lock_file_does_not_make_a_run(tmp_path, capsys):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / ".lock").write_text("another tool's lock")
    (mine / "metrics.jsonl").write_text("mine\n")
    before = _snapshot(mine)
    assert _train(mine) == 2
    _one_line_error(capsys, "not a bptt run directory")
    assert _snapshot(mine) == before


def test_the_plot_reads_null_numbers_and_other_shapes(run, tmp_path):
    pytest.importorskip("matplotlib")
    from bptt.training.plots import plot_metrics

    out = _copy_run(run, tmp_path / "run")
    record = {"step": 3, "kind": "train", "loss": math.nan, "lr": 0.1, "grad_norm": math.inf}
    log = out / "metrics.jsonl"
    log.write_text(log.read_text() + metrics_line(record) + "[1, 2]\n3\nnull\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert plot_metrics(out).is_file()
