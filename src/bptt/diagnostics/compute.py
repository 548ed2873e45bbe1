"""The names this module held before the diagnostics became one set for every cell.

They live in :mod:`.lags` (per-lag parts, state gradients, truncation bias),
:mod:`.jacobians` (Jacobian products, the spectrum of W) and :mod:`.recorder` (the profile
during training); importing them from here keeps working.
"""

from __future__ import annotations

from .jacobians import JacobianReport, jacobian_report
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

RECURRENT_NAMES: tuple[str, ...] = ("W", "V", "b_h")
"""The one-layer Elman model's recurrent-layer parameters."""

__all__ = [
    "RECURRENT_NAMES",
    "GradientProfileRecorder",
    "HiddenStateGradients",
    "JacobianReport",
    "LagContributions",
    "TruncationBias",
    "hidden_state_gradients",
    "jacobian_report",
    "lag_contributions",
    "layer_lag_contributions",
    "layer_name",
    "truncation_bias",
]
