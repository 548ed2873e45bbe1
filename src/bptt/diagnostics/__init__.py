"""Gradient-flow diagnostics: the BPTT sum taken apart, lag by lag.

    compute   :mod:`.compute`: for the Elman cell (any depth), the part of dL/dW, dL/dV, dL/db_h
              that flows over each lag, dL/dh_t per step, Jacobian-product norms against the
              spectrum of W and the Pascanu et al. (2013) condition, the bias of truncated
              BPTT, and :class:`GradientProfileRecorder` for the profile during training
    cells     :mod:`.cells`: the per-lag parts and state-Jacobian norms of any cell (GRU,
              LSTM) through its one-step Jacobian products
    report    :mod:`.report`: ``bptt inspect``'s sample batch, report (``inspect.json``) and
              summary
    plots     :mod:`.plots`: a matplotlib figure per diagnostic

The names of :mod:`.compute` are importable from here: ``bptt.diagnostics.lag_contributions``.
"""

from . import cells, plots
from .compute import (
    RECURRENT_NAMES,
    GradientProfileRecorder,
    HiddenStateGradients,
    JacobianReport,
    LagContributions,
    TruncationBias,
    hidden_state_gradients,
    jacobian_report,
    lag_contributions,
    layer_lag_contributions,
    layer_name,
    truncation_bias,
)

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
    "truncation_bias",
]
