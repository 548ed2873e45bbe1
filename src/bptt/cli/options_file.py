"""``bptt train --config FILE.toml``: training options read from a TOML file.

The file holds :class:`~bptt.training.TrainConfig` fields, the names of ``bptt train``'s
options with ``_`` for ``-`` (``seq_len = 100``, ``lr = 2e-3``), either at the top level or in
a ``[base]`` table, so a sweep spec's ``[base]`` (``bptt sweep``) trains as one run with
``bptt train --config spec.toml`` (its ``[space]`` and ``[sweep]`` tables belong to the sweep
and are not read). The file's values replace the defaults; options given on the command line
replace the file's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..training.config import config_fields

__all__ = ["read_train_options"]

_SWEEP_TABLES = ("space", "sweep")  # a sweep spec's own tables, not training options


def read_train_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TrainConfig fields a TOML file sets (top level or ``[base]``).

    Raises:
        ValueError: no such file, not TOML, options both at the top level and in [base], or
            a key that is not a ``bptt train`` option (the message names it and the file).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config: {str(p)!r} is not a file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config: {str(p)!r} is not valid TOML: {err}") from None
    top = {k: v for k, v in raw.items() if k not in ("base", *_SWEEP_TABLES)}
    base = raw.get("base")
    if base is not None and not isinstance(base, dict):
        raise ValueError(f"--config: [base] in {str(p)!r} must be a table, got {base!r}")
    if base is not None and top:
        raise ValueError(
            f"--config: {str(p)!r} sets options both at the top level ({', '.join(sorted(top))})"
            " and in [base]; keep them in one place"
        )
    options = dict(base if base is not None else top)
    known = {name for name, *_ in config_fields()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"--config: {str(p)!r} has unknown option(s) {', '.join(unknown)}; the options are "
            "bptt train's, with _ for - (bptt train --help lists them)"
        )
    return options
