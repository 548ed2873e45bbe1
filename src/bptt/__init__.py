"""bptt: Elman RNNs trained by explicit, exact, inspectable backpropagation through time."""

from . import diagnostics
from .activations import ACTIVATIONS, Activation, get_activation
from .heads import HEADS, Head, get_head
from .model import RNN, BPTTResult, ElmanRNN
from .params import PARAM_NAMES, Gradients, Params

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
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
    "get_activation",
    "get_head",
]
