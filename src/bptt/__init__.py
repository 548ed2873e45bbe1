"""bptt: recurrent networks trained by explicit, exact, inspectable backpropagation through time.

The core (:class:`ElmanRNN`, activations, heads, parameters) is imported with the package; the
submodules below load on first use (``bptt.seed_formula``, ``bptt.optim``, …), and
:func:`fit` trains a model on your own arrays (:mod:`bptt.fitting`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import diagnostics
from .activations import ACTIVATIONS, Activation, get_activation
from .cells import CELLS
from .heads import HEADS, Head, get_head
from .model import RNN, BPTTResult, ElmanRNN
from .params import PARAM_NAMES, Gradients, Params

if TYPE_CHECKING:
    from .fitting import fit

__version__ = "0.1.0"

#: Submodules loaded on first attribute access (``import bptt; bptt.optim.Adam``).
SUBMODULES = (
    "activations",
    "atomic",
    "cell_diagnostics",
    "cells",
    "checkpoint",
    "checkpointing",
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
    "plots",
    "diagnostic_plots",
    "fitting",
    "rnn",
    "sample",
    "seed_formula",
    "train",
    "truncation",
    "validation",
)


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "fit":
        return importlib.import_module(".fitting", __name__).fit
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
    "diagnostics",
    "fit",
    "get_activation",
    "get_head",
]
