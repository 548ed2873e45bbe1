"""benchmarks/run_all.py keeps each machine's tables: a run replaces its own machine's block of
a section, adds a block (under a heading naming the machine) on a new machine, and leaves the
other machines' blocks alone; docs/benchmarks.md holds a labelled block for every section."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _machine  # noqa: E402
import run_all  # noqa: E402

DOC = """intro
<!-- BEGIN generated: step@amd -->
AMD table
<!-- END generated: step@amd -->

text between
<!-- BEGIN generated: train@amd -->
AMD train
<!-- END generated: train@amd -->
"""


def test_a_run_replaces_only_its_own_machine_block() -> None:
    out = run_all.replace_machine_section(DOC, "step", "amd", "AMD EPYC", "new AMD table")
    assert "new AMD table" in out and "AMD table\n" not in out.replace("new AMD table", "")
    assert "AMD train" in out and out.count("<!-- BEGIN generated: step@") == 1


def test_a_new_machine_gets_its_own_block_after_the_others() -> None:
    out = run_all.replace_machine_section(DOC, "step", "intel", "Intel Xeon", "Intel table")
    assert "AMD table" in out  # the other machine's table stays
    order = [
        out.index("<!-- END generated: step@amd -->"),
        out.index("#### step: Intel Xeon"),
        out.index("<!-- BEGIN generated: step@intel -->"),
        out.index("Intel table"),
        out.index("<!-- END generated: step@intel -->"),
        out.index("text between"),
    ]
    assert order == sorted(order)
    again = run_all.replace_machine_section(out, "step", "intel", "Intel Xeon", "second run")
    assert "second run" in again and "Intel table" not in again
    assert again.count("#### step: Intel Xeon") == 1
    with pytest.raises(SystemExit, match="no '<!-- BEGIN generated: quality@"):
        run_all.replace_machine_section(DOC, "quality", "amd", "AMD", "x")


def test_the_document_has_a_labelled_block_for_every_section() -> None:
    doc = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    begins = re.findall(r"^<!-- BEGIN generated: (\S+) -->$", doc, re.M)
    ends = re.findall(r"^<!-- END generated: (\S+) -->$", doc, re.M)
    assert begins == ends
    assert all(re.fullmatch(r"[a-z_]+@[a-z0-9-]+", key) for key in begins), begins
    for name in run_all.sections(quick=False):
        assert any(key.split("@")[0] == name for key in begins), name


def test_the_machine_slug_is_marker_safe() -> None:
    assert re.fullmatch(r"[a-z0-9-]+", _machine.machine_slug())
    assert _machine.cpu_model() in _machine.machine_label()
