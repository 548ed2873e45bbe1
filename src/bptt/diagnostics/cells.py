"""The names under which the gated cells' diagnostics first came; the one implementation for
every cell is :mod:`.lags` and :mod:`.jacobians` (importing from here keeps working)."""

from __future__ import annotations

from .jacobians import JacobianReport, state_jacobian_norms
from .lags import LagContributions, lag_contributions

CellLagContributions = LagContributions
StateJacobianReport = JacobianReport

__all__ = [
    "CellLagContributions",
    "StateJacobianReport",
    "lag_contributions",
    "state_jacobian_norms",
]
