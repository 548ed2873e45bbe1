"""The gradcheck command: exit codes and report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bptt.cli import main


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--ids", "--activation", "relu", "--output", "sigmoid"],
        ["--output", "identity", "--activation", "identity"],
    ],
)
def test_gradcheck_passes(args, capsys):
    assert main(["gradcheck", *args]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    for name in ("U", "V", "W", "b_h", "b_y"):
        assert f"\n{name} " in out


def test_gradcheck_fails_on_an_impossible_tolerance(capsys):
    assert main(["gradcheck", "--tolerance", "1e-30"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_gradcheck_reports_bad_sizes_clearly(capsys):
    assert main(["gradcheck", "--hidden", "0"]) == 2
    assert "--hidden must be >= 1, got 0" in capsys.readouterr().err


def test_module_entry_point():
    src = Path(__file__).resolve().parents[1] / "src"  # this checkout, not another install
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "bptt", "gradcheck", "--seq-len", "3"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout
