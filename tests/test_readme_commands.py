"""The README's shell commands, run as written where they are quick, and shortened (fewer
steps, smaller evaluations, appended options win in argparse) where they are long runs.

The Python blocks of README.md and docs/*.md run through Sybil (conftest.py at the root)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bptt.checkpoint import load_checkpoint
from bptt.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHORT = ["--steps", "3", "--eval-every", "3", "--no-progress", "--no-plot"]


def shell_commands(text: str) -> list[str]:
    """Indented (4-space) command lines outside ``` fences, backslash continuations joined."""
    out, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith("    "):
            pending = ""
            continue
        piece = line.strip()
        joined = (pending + " " + piece).strip()
        if joined.endswith("\\"):
            pending = joined[:-1]
            continue
        pending = ""
        out.append(joined)
    return out


def table_commands(text: str) -> list[str]:
    """The `bptt train ...` options of the reference-results table rows."""
    return re.findall(r"^\| [^|]+ \| `(--task [^`]+)` \|", text, flags=re.M)


def run(command: str, *extra: str) -> int:
    argv = shlex.split(command)
    assert argv[0] == "bptt", command
    return main([*argv[1:], *extra])


def test_the_task_table_commands_each_write_their_own_run(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    generator = next(c for c in shell_commands(README) if c.startswith("python -c"))
    subprocess.run(
        generator.replace("python", shlex.quote(sys.executable), 1), shell=True, check=True
    )
    assert len(Path("series.csv").read_text().splitlines()) == 5001
    commands = table_commands(README)
    assert len(commands) == 3
    outs = [shlex.split(c)[shlex.split(c).index("--out") + 1] for c in commands]
    assert len(set(outs)) == 3, outs  # no two runs collide in one folder
    for command, out in zip(commands, outs, strict=True):
        assert run("bptt train " + command, *SHORT, "--eval-size", "16") == 0, command
        assert load_checkpoint(out).step == 3
    capsys.readouterr()
    assert run("bptt predict runs/csv --csv series.csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "load,load_pred+1" and len(lines) == 5001


def test_reference_runs_start_as_written(tmp_path, monkeypatch) -> None:
    """The adding and tiny-Shakespeare reference commands, cut to a few steps."""
    commands = [c for c in shell_commands(README) if c.startswith("bptt train --")]
    adding = [c for c in commands if "--task adding" in c]
    assert adding
    for k, command in enumerate(adding):
        out = str(tmp_path / f"adding{k}")
        assert run(command, *SHORT, "--eval-size", "16", "--out", out) == 0, command
    shakespeare = [c for c in commands if "tinyshakespeare" in c]
    assert shakespeare
    if not (ROOT.parent / "shared" / "data" / "tinyshakespeare.txt").is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is not beside this checkout")
    monkeypatch.chdir(ROOT)  # the command's path is relative to the repository root
    for k, command in enumerate(shakespeare):
        extra = [*SHORT, "--eval-windows", "2", "--out", str(tmp_path / f"shakespeare{k}")]
        assert run(command, *extra) == 0, command


def test_main_job_then_sample(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    setup = next(c for c in shell_commands(README) if c.startswith("pip install -e . && "))
    main_job = setup.split("&&")[1].strip()
    assert main_job == "bptt train"
    assert (
        run(
            main_job,
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--eval-windows",
            "2",
            "--hidden",
            "16",
            "--no-progress",
            "--no-plot",
        )
        == 0
    )
    sample = re.search(r"`(bptt sample runs/bptt --prime \"VIOLA:\")`", README).group(1)
    capsys.readouterr()
    assert run(sample, "--length", "20") == 0
    assert capsys.readouterr().out.startswith("VIOLA:")


def test_gradcheck_and_inspect_commands_of_the_docs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    verification = (ROOT / "docs" / "verification.md").read_text(encoding="utf-8")
    (gradcheck,) = [c for c in shell_commands(verification) if c.startswith("bptt gradcheck")]
    assert run(gradcheck) == 0
    diagnostics = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    fresh = next(c for c in shell_commands(diagnostics) if c.startswith("bptt inspect --task"))
    assert run(fresh, "--no-plots") == 0
    assert (tmp_path / "out" / "inspect.json").is_file()
