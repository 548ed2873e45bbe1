"""The package as users meet it: one version, typed, licensed, a clean namespace, no handlers,
no Numba cache files inside the package. (Building and installing the wheel: ``.ci/run``.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bptt

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_version_is_written_once() -> None:
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    source = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]
    assert source == {"attr": "bptt.__version__"}
    init = (SRC / "bptt" / "__init__.py").read_text(encoding="utf-8")
    assert init.count(f'__version__ = "{bptt.__version__}"') == 1
    parts = bptt.__version__.split(".")
    assert len(parts) >= 3 and all(p.isdigit() for p in parts[:3])


def test_cli_version_prints_the_package_version() -> None:
    env = os.environ | {"PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-m", "bptt", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == f"bptt {bptt.__version__}"


def test_changelog_names_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{bptt.__version__}]" in changelog and "## [Unreleased]" in changelog


def test_typed_and_licensed() -> None:
    assert (SRC / "bptt" / "py.typed").is_file()
    project = _pyproject()["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["bptt"]
    assert "py.typed" in package_data


def test_fast_path_dependencies_are_ordinary() -> None:
    deps = " ".join(_pyproject()["project"]["dependencies"])
    assert "numba" in deps and "threadpoolctl" in deps


def test_dir_shows_only_the_public_api() -> None:
    names = dir(bptt)
    for leaked in ("Any", "importlib", "annotations", "TYPE_CHECKING", "_importlib", "_typing"):
        assert leaked not in names
    for public in ("RNN", "ElmanRNN", "fit", "training", "__version__"):
        assert public in names
    assert all(hasattr(bptt, name) for name in names)


def test_the_library_installs_no_logging_handlers() -> None:
    import bptt.training  # noqa: F401  (the rooms that log)

    assert logging.getLogger("bptt").handlers == []


def test_numba_cache_goes_to_the_user_cache_dir(tmp_path: Path) -> None:
    pytest.importorskip("numba")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "BPTT_CACHE_DIR")}
    env |= {"PYTHONPATH": str(SRC), "XDG_CACHE_HOME": str(tmp_path)}
    code = (
        "import json, numpy as np, bptt\n"
        "from bptt.cells import _elman_kernels\n"
        "m = bptt.ElmanRNN(5, 8, 5, seed=0, dtype=np.float64)\n"
        "x = np.zeros((4, 2), dtype=np.int64)\n"
        "m.loss_and_grads(x, x)\n"
        "f = _elman_kernels._load()['forward_loop']\n"
        "hits = sum(f.stats.cache_hits.values())\n"
        "print(json.dumps({'path': f.stats.cache_path, 'hits': hits}))\n"
    )
    runs = []
    for _ in range(2):  # the second process reads what the first compiled
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if sys.platform.startswith("linux"):
        assert runs[0]["path"].startswith(str(tmp_path / "bptt" / "numba"))
    assert not runs[0]["path"].startswith(str(SRC))
    assert list(Path(runs[0]["path"]).glob("*.nbi"))
    assert runs[1]["hits"] >= 1
