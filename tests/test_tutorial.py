"""docs/tutorial.md runs as a notebook: converted with jupytext, executed by nbclient in a
fresh Python kernel; a failing cell fails the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"


@pytest.mark.slow
def test_tutorial_notebook_executes(tmp_path, monkeypatch) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the kernel is a child process: it finds this checkout's bptt through PYTHONPATH
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(TUTORIAL)
    assert all(not cell.get("outputs") for cell in nb.cells)  # outputs are never committed
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 10
    printed = "".join(
        o.get("text", "") for c in code for o in c.outputs if o.get("output_type") == "stream"
    )
    assert "by hand   h1, h2, h3: [ 0.4621  0.1974 -0.0997]" in printed
    assert "t=3 k=2 lag=1" in printed
    # the backward recursion, coded step by step, equals loss_and_grads (its cell asserts it)
    assert "t=1: ∂L_t/∂h_t = " in printed
    assert "the recursion equals loss_and_grads: dW, dV, db_h, dL/dh_0 and every dL/dh_t" in printed
    assert "mask is 1 only at t = [60]" in printed  # the adding task and its mask, shown
