"""The cell protocol (see :mod:`bptt.cells`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

CellParams = dict[str, np.ndarray]
"""A cell's own parameters under its local names (``V``, ``W``, ``b_h`` for Elman)."""


@dataclass(frozen=True)
class CellGrads:
    """What a cell's backward returns.

    Attributes:
        params: dL/dθ under the cell's local names.
        dx: (T, B, I) dL/dx_t, or None for token-id inputs (or when not asked for).
        ds0: (B, S) dL/ds_0.
    """

    params: CellParams
    dx: np.ndarray | None
    ds0: np.ndarray


@dataclass(frozen=True)
class StepArgs:
    """One step's operating point for the Jacobian products: x_t, s_{t-1} and s_t.

    Attributes:
        x: (B, I) dense input or (B,) integer ids.
        s_prev: (B, S) s_{t-1}.
        s: (B, S) s_t = F(x_t, s_{t-1}).
    """

    x: np.ndarray
    s_prev: np.ndarray
    s: np.ndarray


class Cell(ABC):
    """One recurrent layer's equations over NumPy arrays, in one direction.

    Args:
        input_size: I (the vocabulary size for token-id inputs).
        hidden_size: H, the width of the output h_t.
        activation: the hidden activation, for cells that take one (Elman).

    Class attributes:
        name: the registry name.
        state_factor: S / H, the state width in units of H (LSTM: 2, for (h, c)).
        takes_activation: whether ``activation`` is a free choice.
    """

    name: ClassVar[str]
    state_factor: ClassVar[int] = 1
    takes_activation: ClassVar[bool] = False

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh") -> None:
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.activation_name = activation

    @property
    def state_size(self) -> int:
        """S, the width of the state s_t."""
        return self.state_factor * self.hidden_size

    def output(self, s: np.ndarray) -> np.ndarray:
        """h = out(s): the part of the state the layer emits, (…, H)."""
        return s[..., : self.hidden_size]

    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The cell's parameters, local name → shape, in storage order."""

    def param_roles(self) -> dict[str, str]:
        """Each parameter's role for initialisation schemes: ``input`` (reads x_t),
        ``recurrent`` (reads the state; its (H, H) blocks are what orthogonal and identity
        initialisations and the spectral radius act on) or ``bias``.

        By default read off the local name's first letter: ``V…`` input, ``W…`` recurrent,
        ``b…`` bias.
        """
        roles = {"V": "input", "W": "recurrent", "b": "bias"}
        return {name: roles[name[0]] for name in self.param_shapes()}

    @abstractmethod
    def init_params(self, rng: np.random.Generator, dtype: np.dtype) -> CellParams:
        """PyTorch's default initialisation for the matching ``torch.nn`` module."""

    # -- a whole sequence ------------------------------------------------------------------

    @abstractmethod
    def forward(
        self, p: CellParams, x: np.ndarray, s0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """Run the cell over a sequence.

        Args:
            p: the cell's parameters.
            x: (T, B, I) dense inputs or (T, B) integer ids.
            s0: (B, S) the initial state.

        Returns:
            ``(h, s_T, cache)``: the outputs h_1..h_T (T, B, H), the last state (B, S) and
            what :meth:`backward` needs.
        """

    @abstractmethod
    def backward(
        self,
        dh: np.ndarray,
        cache: Any,
        p: CellParams,
        ds_last: np.ndarray | None = None,
        need_dx: bool = True,
    ) -> CellGrads:
        """Backpropagate through time.

        Args:
            dh: (T, B, H) ∂L/∂h_t arriving from above at each step (may be overwritten).
            cache: from :meth:`forward`.
            p: the cell's parameters.
            ds_last: (B, S) gradient arriving on s_T from beyond the sequence, or None.
            need_dx: compute dL/dx (False for the first layer, whose input needs none).
        """

    # -- one step and its Jacobians ---------------------------------------------------------

    @abstractmethod
    def step(self, p: CellParams, x_t: np.ndarray, s_prev: np.ndarray) -> np.ndarray:
        """s_t = F(x_t, s_{t-1}) for one step: x_t (B, I) or (B,) ids, s_prev (B, S) → (B, S)."""

    @abstractmethod
    def jvp_state(self, p: CellParams, at: StepArgs, v: np.ndarray) -> np.ndarray:
        """∂s_t/∂s_{t-1} · v for each stream: v (B, S) → (B, S)."""

    @abstractmethod
    def vjp_state(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        """uᵀ · ∂s_t/∂s_{t-1} for each stream: u (B, S) → (B, S)."""

    @abstractmethod
    def jvp_params(self, p: CellParams, at: StepArgs, dp: CellParams) -> np.ndarray:
        """Σ_θ ∂s_t/∂θ · dθ for each stream: a tangent dθ per parameter → (B, S)."""

    @abstractmethod
    def vjp_params(self, p: CellParams, at: StepArgs, u: np.ndarray) -> CellParams:
        """Σ_b u_bᵀ · ∂s_{t,b}/∂θ: the parameter gradient of ⟨u, s_t⟩ through this step only."""

    def state_jacobian(self, p: CellParams, at: StepArgs) -> np.ndarray:
        """The full (B, S, S) Jacobian ∂s_t/∂s_{t-1}, column by column from :meth:`jvp_state`.

        Cells with a closed form (Elman: diag(f'(E_t)) W) override this.
        """
        B, S = at.s_prev.shape
        jac = np.empty((B, S, S), dtype=at.s.dtype)
        basis = np.zeros((B, S), dtype=at.s.dtype)
        for j in range(S):
            basis[:, j] = 1.0
            jac[:, :, j] = self.jvp_state(p, at, basis)
            basis[:, j] = 0.0
        return jac
