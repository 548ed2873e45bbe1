"""bptt: recurrent networks trained by explicit, exact, inspectable backpropagation through time.

The core (:class:`RNN`, :class:`ElmanRNN`, activations, heads, parameters) and
:mod:`bptt.diagnostics` are imported with the package; the other rooms and modules load on
first use (``bptt.training``, ``bptt.algorithms``, ``bptt.optim``, …), and :func:`fit` trains a
model on your own arrays (:mod:`bptt.training.fitting`). The map of the rooms is in the
README's "Where things are".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import algorithms, diagnostics
from .activations import ACTIVATIONS, Activation, get_activation
from .cells import CELLS
from .heads import HEADS, Head, get_head
from .model import RNN, BPTTResult, ElmanRNN
from .params import PARAM_NAMES, Gradients, Params

if TYPE_CHECKING:
    from .training import fit

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


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "fit":
        return importlib.import_module(".training", __name__).fit
    raise AttributeError(f"module 'bptt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES) | {"fit"})


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
