"""The shell commands of docs/deep-and-interop.md run as written (in a temporary folder)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bptt.cli import main

DOC = Path(__file__).parent.parent / "docs" / "deep-and-interop.md"


def doc_commands() -> list[str]:
    section = DOC.read_text(encoding="utf-8").split("## From the command line", 1)[1]
    return re.findall(r"^    (bptt .+)$", section, flags=re.MULTILINE)


def test_the_documented_commands_run(tmp_path, monkeypatch, capsys):
    commands = doc_commands()
    assert len(commands) == 5, commands
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] == "train":
            argv.append("--no-progress")  # the bar is for terminals; the output is the same
        if argv[0] == "inspect":
            pytest.importorskip("matplotlib")
        assert main(argv) == 0, command
    out = capsys.readouterr().out
    assert "gradient flow by layer" in out
    assert (tmp_path / "runs" / "deep-adding.onnx").stat().st_size > 0
    assert (tmp_path / "runs" / "deep-adding-inspect" / "layer_lag_profile.png").exists()
    assert (tmp_path / "runs" / "deep-adding-finetuned" / "checkpoint.safetensors").exists()
