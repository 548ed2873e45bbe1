"""Runs every ```python block of README.md and docs/*.md as a test (Sybil).

Blocks of one document share a namespace and run in order, in a fresh temporary directory
(so files they write, such as ``runs/mine``, never land in the checkout), with floating-point
errors left at NumPy's defaults as a user would have them. ``SHARED_DATA`` in the namespace is
the absolute path of ``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent


def _setup(namespace: dict[str, Any]) -> None:
    tmp = tempfile.TemporaryDirectory(prefix="bptt-docs-")
    namespace["_tmp"] = tmp
    namespace["_cwd"] = os.getcwd()
    namespace["SHARED_DATA"] = str(ROOT.parent / "shared" / "data")
    os.chdir(tmp.name)


def _teardown(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_cwd"])
    namespace["_tmp"].cleanup()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    excludes=["docs/tutorial.md"],
    setup=_setup,
    teardown=_teardown,
    path=str(ROOT),
).pytest()
