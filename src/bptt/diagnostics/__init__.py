"""Gradient-flow diagnostics: the BPTT sum taken apart, lag by lag, for any model.

Every function takes any :class:`bptt.RNN` (Elman, GRU, LSTM; any depth; one or two
directions) and works through the model's one sweep and the cell protocol; the Elman cell's
closed forms are a fast path, tested against the generic one.

    trace      :mod:`.trace`: the batch through the model, layer by layer (each layer's steps,
               the direct gradient arriving from above)
    lags       :mod:`.lags`: the part of each parameter's gradient that flows over each lag,
               dL/ds_t per step, the bias of truncated BPTT
    jacobians  :mod:`.jacobians`: ‖∂s_t/∂s_{t−d}‖₂ against the lag, the spectrum of W and the
               Pascanu et al. (2013) condition (Elman)
    recorder   :mod:`.recorder`: :class:`GradientProfileRecorder`, the profile during training
    report     :mod:`.report`: ``bptt inspect``'s sample batch, report (``inspect.json``) and
               summary
    plots      :mod:`.plots`: a matplotlib figure per diagnostic

The names below are importable from here: ``bptt.diagnostics.lag_contributions``.
"""

from . import cells, plots
from .compute import RECURRENT_NAMES
from .jacobians import JacobianReport, jacobian_report, state_jacobian_norms
from .lags import (
    HiddenStateGradients,
    LagContributions,
    TruncationBias,
    hidden_state_gradients,
    lag_contributions,
    layer_lag_contributions,
    truncation_bias,
)
from .recorder import GradientProfileRecorder
from .trace import layer_name

__all__ = [
    "RECURRENT_NAMES",
    "GradientProfileRecorder",
    "HiddenStateGradients",
    "JacobianReport",
    "LagContributions",
    "TruncationBias",
    "cells",
    "hidden_state_gradients",
    "jacobian_report",
    "lag_contributions",
    "layer_lag_contributions",
    "layer_name",
    "plots",
    "state_jacobian_norms",
    "truncation_bias",
]
