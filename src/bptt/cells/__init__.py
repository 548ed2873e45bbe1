"""Recurrent cells behind one small protocol, and the registry that names them.

A cell maps an input sequence and an initial state to a state sequence:

    s_t = F_θ(x_t, s_{t-1})        h_t = out(s_t)        t = 1..T

(Elman: s = h; LSTM: s = (h, c) stored side by side as one (B, 2H) array, h first.) Everything
the model, the gradient algorithms and the diagnostics need from a cell is in :class:`Cell`:
its parameter shapes and initialisation, the forward over a whole sequence returning the
outputs, the last state and a minimal cache, the backward taking the upstream gradient on the
outputs and the cache, one step, and the Jacobian-vector products ∂s_t/∂s_{t-1}·v,
uᵀ·∂s_t/∂s_{t-1}, ∂s_t/∂θ·dθ and uᵀ·∂s_t/∂θ; for stacked layers ∂s_t/∂x_t·dx and
uᵀ·∂s_t/∂x_t (``jvp_input``, ``vjp_input``, dense inputs), and the immediate Jacobian ∂s_t/∂θ
column by column (``param_jacobian``: a generic default from ``jvp_params``, a sparse closed
form in each cell here), which the online algorithms carry forward.

A new cell is a module beside :mod:`bptt.cells.elman` that subclasses :class:`Cell` and calls
:func:`register`; the model, training, checkpoints and the parametrised tests then cover it.
"""

from __future__ import annotations

from .base import Cell, CellGrads, ParamJacobian, StepArgs
from .elman import ElmanCell
from .gru import GRUCell
from .gru_reset_before import GRUResetBeforeCell
from .lstm import LSTMCell

CELLS: dict[str, type[Cell]] = {}


def register(cell: type[Cell]) -> type[Cell]:
    """Add a cell class to :data:`CELLS` under ``cell.name`` (usable as a decorator)."""
    CELLS[cell.name] = cell
    return cell


def get_cell(name: str) -> type[Cell]:
    """The cell class registered as ``name``.

    Raises:
        ValueError: no cell of that name.
    """
    if not isinstance(name, str) or name not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {name!r}")
    return CELLS[name]


register(ElmanCell)
register(GRUCell)
register(GRUResetBeforeCell)
register(LSTMCell)

__all__ = [
    "CELLS",
    "Cell",
    "CellGrads",
    "ElmanCell",
    "GRUCell",
    "GRUResetBeforeCell",
    "LSTMCell",
    "ParamJacobian",
    "StepArgs",
    "get_cell",
    "register",
]
