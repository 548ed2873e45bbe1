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
class ParamJacobian:
    """The immediate Jacobian Ī_t = ∂s_t/∂θ of one step (θ = the cell's parameters flattened in
    :meth:`Cell.param_shapes` order, P numbers), stored by column: parameter p moves only the
    state entries ``rows[:, p]`` within the step.

        Ī_t[b, rows[i, p], p] = values[b, i, p]          (every other entry 0)

    Attributes:
        rows: (R, P) int, the state entries each parameter reaches (R = S when dense).
        values: (B, R, P).
    """

    rows: np.ndarray
    values: np.ndarray

    def dense(self, state_size: int) -> np.ndarray:
        """Ī_t as a (B, S, P) array."""
        B, R, P = self.values.shape
        out = np.zeros((B, state_size, P), dtype=self.values.dtype)
        cols = np.broadcast_to(np.arange(P), (R, P))
        out[:, self.rows, cols] = self.values  # a parameter's R rows are distinct
        return out


def unit_rows(shapes: dict[str, tuple[int, ...]], hidden: int) -> np.ndarray:
    """(1, P): for each parameter entry, in storage order, its unit: the row of its (kH, …)
    array modulo H (gate g's row r drives unit r)."""
    parts = [
        np.repeat(np.arange(shape[0]) % hidden, int(np.prod(shape[1:], dtype=np.int64)))
        for shape in shapes.values()
    ]
    return np.concatenate(parts)[None, :]


def outer_rows(d: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """d_g x_i for every stream, flattened (g, i) row-major: d (B, G), x (B, n) dense or (B,)
    ids (one-hot) → (B, G·n), the immediate Jacobian of a (G, n) weight read as W x."""
    B, G = d.shape
    if x.ndim == 1:  # ids: x = e_id
        out = np.zeros((B, G, n), dtype=d.dtype)
        out[np.arange(B), :, x] = d
        return out.reshape(B, G * n)
    return (d[:, :, None] * x[:, None, :]).reshape(B, G * n)


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
        kronecker_immediate: whether the immediate Jacobian is one Kronecker product,
            Ī_t = ĥ_t ⊗ D_t with ĥ_t = [x_t; h_{t-1}; 1], i.e. every row of [V | W | b] reads
            that same ĥ_t (Elman, LSTM; not a GRU, whose reset gate scales one block's
            input or output), which KF-RTRL needs.
    """

    name: ClassVar[str]
    state_factor: ClassVar[int] = 1
    takes_activation: ClassVar[bool] = False
    kronecker_immediate: ClassVar[bool] = False

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

    def init_params(self, rng: np.random.Generator, dtype: np.dtype) -> CellParams:
        """PyTorch's default initialisation for the matching ``torch.nn`` module: every array
        ~ U(−1/√H, 1/√H), drawn in storage order (``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` alike)."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {
            name: rng.uniform(-bound, bound, size=shape).astype(dtype)
            for name, shape in self.param_shapes().items()
        }

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

    def jvp_input(self, p: CellParams, at: StepArgs, dx: np.ndarray) -> np.ndarray:
        """∂s_t/∂x_t · dx for each stream (dense inputs): dx (B, I) → (B, S). Stacked layers
        need it: a layer's input is the output of the layer below.

        Raises:
            NotImplementedError: a cell that does not provide it.
        """
        raise NotImplementedError(f"the {self.name} cell does not define jvp_input")

    def vjp_input(self, p: CellParams, at: StepArgs, u: np.ndarray) -> np.ndarray:
        """uᵀ · ∂s_t/∂x_t for each stream (dense inputs): u (B, S) → (B, I).

        Raises:
            NotImplementedError: a cell that does not provide it.
        """
        raise NotImplementedError(f"the {self.name} cell does not define vjp_input")

    def input_jacobian(self, p: CellParams, at: StepArgs) -> np.ndarray:
        """The full (B, S, I) Jacobian ∂s_t/∂x_t from :meth:`jvp_input` (dense inputs), all I
        columns in one call as :meth:`state_jacobian` does."""
        B, S = at.s_prev.shape
        n_in = at.x.shape[1]
        tiled = StepArgs(
            x=np.repeat(at.x, n_in, axis=0),
            s_prev=np.repeat(at.s_prev, n_in, axis=0),
            s=np.repeat(at.s, n_in, axis=0),
        )
        basis = np.tile(np.eye(n_in, dtype=at.s.dtype), (B, 1))  # (B·I, I)
        columns = self.jvp_input(p, tiled, basis).reshape(B, n_in, S)  # [b, i] = K_b e_i
        return np.ascontiguousarray(columns.transpose(0, 2, 1))

    def param_jacobian(self, p: CellParams, at: StepArgs) -> ParamJacobian:
        """Ī_t = ∂s_t/∂θ (immediate, through this step only), one column per parameter entry.

        This default pushes forward the P unit tangents through :meth:`jvp_params`, one call
        each, and returns the dense form (R = S); cells whose parameters each move a few state
        entries (every gated cell here: a row of V, W or b moves one unit) override it with
        that sparse form, tested against this default.
        """
        B, S = at.s_prev.shape
        shapes = self.param_shapes()
        P = sum(int(np.prod(shape)) for shape in shapes.values())
        values = np.empty((B, S, P), dtype=at.s.dtype)
        col = 0
        for name, shape in shapes.items():
            for flat in range(int(np.prod(shape))):
                dp = {k: np.zeros(v, dtype=at.s.dtype) for k, v in shapes.items()}
                dp[name].reshape(-1)[flat] = 1.0
                values[:, :, col] = self.jvp_params(p, at, dp)
                col += 1
        rows = np.broadcast_to(np.arange(S)[:, None], (S, P))
        return ParamJacobian(rows=np.ascontiguousarray(rows), values=values)

    def state_jacobian(self, p: CellParams, at: StepArgs) -> np.ndarray:
        """The full (B, S, S) Jacobian ∂s_t/∂s_{t-1} from :meth:`jvp_state`.

        All S columns in one call: the operating point of each stream is repeated S times and
        pushed forward along the S unit vectors. Cells with a closed form (Elman:
        diag(f'(E_t)) W) override this.
        """
        B, S = at.s_prev.shape
        tiled = StepArgs(
            x=np.repeat(at.x, S, axis=0),
            s_prev=np.repeat(at.s_prev, S, axis=0),
            s=np.repeat(at.s, S, axis=0),
        )
        basis = np.tile(np.eye(S, dtype=at.s.dtype), (B, 1))  # (B·S, S): e_j for row b·S + j
        columns = self.jvp_state(p, tiled, basis).reshape(B, S, S)  # [b, j] = J_b e_j
        return np.ascontiguousarray(columns.transpose(0, 2, 1))
