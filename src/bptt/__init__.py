"""bptt: recurrent networks trained by explicit, exact, inspectable backpropagation through time.

The core (:class:`RNN`, :class:`ElmanRNN`, activations, heads, parameters) and
:mod:`bptt.diagnostics` are imported with the package; the other rooms and modules load on
first use (``bptt.training``, ``bptt.algorithms``, ``bptt.optim``, …), and :func:`fit` trains a
model on your own arrays (:mod:`bptt.training.fitting`). The map of the rooms is in the
README's "Where things are".

The library prints nothing: it reports through the ``bptt`` logger (:mod:`logging`; no
handlers installed, so configure logging to see its INFO lines); the ``bptt`` command prints.
"""

import importlib as _importlib
import typing as _typing

from . import algorithms, diagnostics
from .activations import ACTIVATIONS, Activation, get_activation
from .cells import CELLS
from .heads import HEADS, Head, get_head
from .model import RNN, BPTTResult, ElmanRNN
from .params import PARAM_NAMES, Gradients, Params

if _typing.TYPE_CHECKING:
    from .training import fit

#: The one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``),
#: and ``bptt --version`` prints it.
__version__ = "0.1.0"

#: Submodules and rooms loaded on first attribute access (``import bptt; bptt.optim.Adam``).
SUBMODULES = (
    "activations",
    "algorithms",
    "atomic",
    "cells",
    "checkpoint",
    "cli",
    "data",
    "diagnostics",
    "gradcheck",
    "heads",
    "init",
    "interop",
    "model",
    "online",
    "optim",
    "params",
    "predict",
    "sample",
    "sweep",
    "training",
    "validation",
)


def __getattr__(name: str) -> _typing.Any:
    if name in SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    if name == "fit":
        return _importlib.import_module(".training", __name__).fit
    raise AttributeError(f"module 'bptt' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names and the rooms (not the helpers this module imports for itself)."""
    return sorted(set(__all__) | set(SUBMODULES))


__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "HEADS",
    "PARAM_NAMES",
    "RNN",
    "Activation",
    "BPTTResult",
    "ElmanRNN",
    "Gradients",
    "Head",
    "Params",
    "__version__",
    "algorithms",
    "diagnostics",
    "fit",
    "get_activation",
    "get_head",
]
