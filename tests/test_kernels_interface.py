"""The shared kernels module (``bptt._kernels``) is used through its listed interface only.

Every public name it defines is listed in its docstring's "Interface", and no other module of
the package reaches for an underscored name of it (or of the cells' kernel modules): the
contract that lets the shared plumbing change without breaking the cells, the optimizers'
fused updates or the online algorithms.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bptt
from bptt import _kernels

SRC = Path(bptt.__file__).resolve().parent
KERNEL_MODULES = ("_kernels", "_elman_kernels", "_gated_kernels")
OWN_FILES = {
    SRC / "_kernels.py",
    SRC / "cells" / "_elman_kernels.py",
    SRC / "cells" / "_gated_kernels.py",
}


def _defined_names(path: Path) -> list[str]:
    """Top-level functions, classes and assigned names of a module."""
    names: list[str] = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def test_every_public_name_is_in_the_listed_interface() -> None:
    doc = _kernels.__doc__ or ""
    assert "Interface" in doc
    interface = doc.split("Interface", 1)[1].split("Which path runs", 1)[0]
    public = [n for n in _defined_names(Path(_kernels.__file__)) if not n.startswith("_")]
    assert {"run_shards", "sharding_gemms", "tanh_any", "matmul"} <= set(public)
    assert callable(_kernels.cached_njit)  # re-exported from _numba_cache (the cache location)
    missing = [n for n in public if not re.search(rf"\b{n}\b", interface)]
    assert not missing, f"public names of bptt._kernels not listed in its docstring: {missing}"


def _private_uses(text: str, own: str) -> list[str]:
    """``mod._name`` and ``from …mod import _name`` for the kernel modules other than ``own``."""
    found = []
    for mod in KERNEL_MODULES:
        if mod == own:
            continue
        found += re.findall(rf"(?<![\w.]){mod}\._\w+", text)
        for names in re.findall(rf"from \.*(?:\w+\.)*{mod} import \(?([^)\n]*)", text):
            found += [f"{mod}.{n.strip()}" for n in names.split(",") if n.strip().startswith("_")]
    return found


def test_the_check_sees_private_uses() -> None:
    code = "x = _kernels._load()\nfrom .._kernels import cached_njit, _tanh\n"
    assert _private_uses(code, own="") == ["_kernels._load", "_kernels._tanh"]
    assert _private_uses("_kernels.run_shards(k, 1, 1, 0)\n", own="") == []


def test_no_module_reaches_into_a_kernel_module_s_private_names() -> None:
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        own = path.stem if path in OWN_FILES else ""  # not online/_kernels.py: another module
        uses = _private_uses(path.read_text(encoding="utf-8"), own)
        if uses:
            offenders[str(path.relative_to(SRC))] = uses
    assert not offenders, offenders
