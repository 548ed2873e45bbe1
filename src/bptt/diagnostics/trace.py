"""One batch through the model, seen layer by layer: what every diagnostic starts from.

For layer-direction k (l·D + d: layer l, direction d, 0 forward and 1 reverse) the model's one
sweep (:meth:`bptt.model.RNN.forward_layers`, :meth:`~bptt.model.RNN.head_logits`,
:meth:`~bptt.model.RNN.backward_layers` with ``capture``) gives

    s^k_t = F_θ(x^k_t, s^k_{t−1})        t = 1..T in the cell's own time order (a reverse
                                         direction's step 1 is the sequence's last)
    g^k_t = ∂L/∂s^k_t through what reads h^k_t directly (the head, or the layer above), with
            no carry along the layer's own recurrence: [∂L/∂h^k_t ‖ 0] (the "direct" term)

and every diagnostic takes the layer's BPTT sum apart with two products per step,

    u ↦ u ∂s_t/∂s_{t−1}      (:meth:`LayerSteps.back`, one step further into the past)
    u ↦ uᵀ ∂s_t/∂θ           (:meth:`LayerSteps.param_grads`, onto the parameters)

taken through the cell protocol (:meth:`bptt.cells.Cell.vjp_state`,
:meth:`~bptt.cells.Cell.vjp_params`, :meth:`~bptt.cells.Cell.state_jacobian`) for any cell. The
Elman cell's closed forms (∂h_t/∂h_{t−1} = diag(f'(E_t)) W, f' read once from h_t) are a fast
path, :class:`ElmanSteps`, that the tests compare with the generic one (``fast_path=False``).

The operating points of all T steps are stacked into one (T·B)-row
:class:`~bptt.cells.StepArgs`, so a product over the steps first..first+n−1 is one call on n·B
rows, not n small ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..cells import Cell, ElmanCell, StepArgs
from ..model import RNN
from ..validation import check_inputs


def check_model(model: object) -> RNN:
    """The model, its parameters checked against its structure.

    Raises:
        TypeError: not a :class:`bptt.RNN` (any cell, depth and direction; ``ElmanRNN`` is one).
    """
    if not isinstance(model, RNN):
        raise TypeError(
            f"model must be a bptt.RNN (any cell, depth and direction; ElmanRNN is one), got "
            f"{type(model).__name__}"
        )
    model.validated_params()
    return model


def layer_name(model: RNN, k: int) -> str:
    """``l0``, ``l1_reverse``, …: the suffix of layer-direction k's parameters (PyTorch's)."""
    layer = model.layers[k]
    return f"l{layer.index}" + ("_reverse" if layer.reverse else "")


def check_layer(model: RNN, layer: object) -> int:
    """The layer-direction index k = l·D + d from an int k, a name (``"l1_reverse"``) or None
    (only for a one-layer, one-direction model).

    Raises:
        ValueError: None for a deeper model, or not one of its layer-directions.
    """
    n = len(model.layers)
    names = [layer_name(model, k) for k in range(n)]
    if layer is None:
        if n == 1:
            return 0
        raise ValueError(
            f"this model has {n} layer-directions; pass layer=k with k = l·D + d in 0..{n - 1} "
            f"(layer l, direction d: 0 forward, 1 reverse) or a name in {names}, or use "
            "layer_lag_contributions"
        )
    if isinstance(layer, str) and layer in names:
        return names.index(layer)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in 0..{n - 1} or one of {names}, got {layer!r}")
    return int(layer)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for loops of many small products (threadpoolctl, when installed).

    On a shared machine a second BLAS thread waits for a core at every small product, which
    makes such loops many times slower (see docs/benchmarks.md); big products are unaffected
    in comparison with the work they do.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the fast and test extras
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@dataclass(frozen=True)
class LayerSteps:
    """One layer-direction's recurrence on one batch, through the cell protocol.

    Attributes:
        index: k = l·D + d.
        name: ``l0``, ``l1_reverse``, …
        cell: the cell.
        p: its parameters under their local names (``V``, ``W``, …).
        names: local name → the model's parameter name (``W`` → ``W_l1_reverse``).
        roles: the model's parameter name → role (``input``, ``recurrent``, ``bias``).
        at: the operating points of steps 1..T stacked in the cell's time order, (T·B) rows.
        s0: (B, S) the initial state.
        T, B: sizes.
    """

    index: int
    name: str
    cell: Cell
    p: dict[str, np.ndarray]
    names: dict[str, str]
    roles: dict[str, str]
    at: StepArgs
    s0: np.ndarray
    T: int
    B: int

    @property
    def S(self) -> int:
        return int(self.s0.shape[1])

    def rows(self, first: int, n: int) -> StepArgs:
        """The operating points of steps first..first+n−1 (1-based), n·B rows."""
        a, b = (first - 1) * self.B, (first - 1 + n) * self.B
        return StepArgs(x=self.at.x[a:b], s_prev=self.at.s_prev[a:b], s=self.at.s[a:b])

    def back(self, first: int, u: np.ndarray) -> np.ndarray:
        """u[i] ∂s_j/∂s_{j−1} with j = first + i, for u (n, B, S) → (n, B, S)."""
        n = u.shape[0]
        out = self.cell.vjp_state(self.p, self.rows(first, n), u.reshape(n * self.B, -1))
        return out.reshape(n, self.B, -1)

    def param_grads(self, first: int, u: np.ndarray) -> dict[str, np.ndarray]:
        """Σ_i u[i]ᵀ ∂s_j/∂θ with j = first + i, for u (n, B, S): local name → gradient."""
        n = u.shape[0]
        return self.cell.vjp_params(self.p, self.rows(first, n), u.reshape(n * self.B, -1))

    def product_step(self, step: int, product: np.ndarray) -> np.ndarray:
        """P ∂s_step/∂s_{step−1} for each sequence, P (B, S, S) → (B, S, S).

        A cell with its own closed-form :meth:`~bptt.cells.Cell.state_jacobian` (an
        override) gives J and the product is one batched matrix product. Otherwise row r of
        P_b is a cotangent, so the new product is one :meth:`~bptt.cells.Cell.vjp_state` over
        B·S rows at the step's operating point repeated S times: the same work as the
        protocol's default ``state_jacobian`` (a jvp over as many rows) without the product.
        """
        at = self.rows(step, 1)
        if type(self.cell).state_jacobian is not Cell.state_jacobian:
            return product @ self.cell.state_jacobian(self.p, at)
        B, S = self.B, self.S
        tiled = StepArgs(
            x=np.repeat(at.x, S, axis=0),
            s_prev=np.repeat(at.s_prev, S, axis=0),
            s=np.repeat(at.s, S, axis=0),
        )
        return self.cell.vjp_state(self.p, tiled, product.reshape(B * S, S)).reshape(B, S, S)

    def as_float64(self) -> LayerSteps:
        """The same layer with its parameters and states in float64 (ids stay ids)."""
        x = self.at.x if self.at.x.dtype.kind in "iu" else self.at.x.astype(np.float64)
        return dataclasses.replace(
            self,
            p={k: v.astype(np.float64) for k, v in self.p.items()},
            at=StepArgs(
                x=x, s_prev=self.at.s_prev.astype(np.float64), s=self.at.s.astype(np.float64)
            ),
            s0=self.s0.astype(np.float64),
        )


@dataclass(frozen=True)
class ElmanSteps(LayerSteps):
    """The Elman layer's closed forms, the fast path of :class:`LayerSteps`.

        u ∂h_t/∂h_{t−1} = (u ⊙ f'(E_t)) W          uᵀ ∂h_t/∂θ: δ = u ⊙ f'(E_t),
        dW = Σ δ h_{t−1}ᵀ, dV = Σ δ x_tᵀ, db_h = Σ δ

    with f'(E_t) read once from h_t (:meth:`bptt.activations.Activation.grad_from_output`)
    for all steps, instead of once per call.
    """

    @property
    def fprime(self) -> np.ndarray:
        """(T·B, H) f'(E_t) of every step, computed on first use."""
        cached = self.__dict__.get("_fprime_rows")
        if cached is None:
            assert isinstance(self.cell, ElmanCell)
            cached = self.cell.activation.grad_from_output(self.at.s)
            object.__setattr__(self, "_fprime_rows", cached)
        return cached

    def _fp(self, first: int, n: int) -> np.ndarray:
        return self.fprime[(first - 1) * self.B : (first - 1 + n) * self.B]

    def back(self, first: int, u: np.ndarray) -> np.ndarray:
        n = u.shape[0]
        delta = u.reshape(n * self.B, -1) * self._fp(first, n)  # (n·B, H)
        return (delta @ self.p["W"]).reshape(n, self.B, -1)

    def param_grads(self, first: int, u: np.ndarray) -> dict[str, np.ndarray]:
        n = u.shape[0]
        at = self.rows(first, n)
        delta = u.reshape(n * self.B, -1) * self._fp(first, n)  # (n·B, H): dL/dE
        if at.x.ndim == 1:  # ids: Σ δ e_xᵀ, a scatter-add into the columns of dV
            dV_t = np.zeros(self.p["V"].shape[::-1], dtype=delta.dtype)  # (I, H)
            np.add.at(dV_t, at.x, delta)
            dV = np.ascontiguousarray(dV_t.T)
        else:
            dV = delta.T @ at.x
        return {"V": dV, "W": delta.T @ at.s_prev, "b_h": delta.sum(axis=0)}

    def product_step(self, step: int, product: np.ndarray) -> np.ndarray:
        fp = self._fp(step, 1)  # (B, H)
        return (product * fp[:, None, :]) @ self.p["W"]  # P diag(f'_step) W


@dataclass(frozen=True)
class Trace:
    """A batch through the model: every layer-direction's steps, and with targets the loss,
    the full gradient and each layer's direct term.

    Attributes:
        model: the model.
        layers: one :class:`LayerSteps` per layer-direction, bottom layer first.
        loss: L, or None without targets.
        grads: dL/dθ under the model's names from the ordinary backward (None without targets).
        direct: per layer-direction (T, B, S), g^k_t = [∂L/∂h^k_t from above ‖ 0], in the
            cell's time order (None without targets).
    """

    model: RNN
    layers: list[LayerSteps]
    loss: float | None
    grads: dict[str, np.ndarray] | None
    direct: list[np.ndarray] | None

    @property
    def T(self) -> int:
        return self.layers[0].T

    @property
    def B(self) -> int:
        return self.layers[0].B


def _states(cell: Cell, p: dict[str, np.ndarray], x: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """s_0..s_T (T+1, B, S), one :meth:`~bptt.cells.Cell.step` at a time."""
    T = x.shape[0]
    states = np.empty((T + 1, *s0.shape), dtype=s0.dtype)
    states[0] = s0
    for t in range(T):
        states[t + 1] = cell.step(p, x[t], states[t])
    return states


def trace(
    model: object,
    x: object,
    y: object = None,
    h0: object = None,
    mask: object = None,
    *,
    fast_path: bool = True,
) -> Trace:
    """Run the batch through the model's one sweep and collect every layer's steps.

    Args:
        model: any :class:`bptt.RNN`.
        x, y, h0, mask: as :meth:`bptt.RNN.loss_and_grads`; ``y`` None runs the forward only.
        fast_path: use the Elman closed forms (:class:`ElmanSteps`) where the cell is Elman;
            False always goes through the cell protocol.

    Raises:
        TypeError, ValueError: as :meth:`bptt.RNN.loss_and_grads` for bad inputs.
    """
    model = check_model(model)
    params = model.params
    x_arr = check_inputs(x, model.input_size, model.dtype)
    T, B = x_arr.shape[:2]
    y_arr = None
    weight = None
    if y is not None:
        y_arr = model.head.check_targets(y, (T, B), model.output_size, model.dtype)
        weight = model.loss_weights(mask, (T, B))  # (T, B): mask_tb / B
    starts = model.split_state(h0, B)
    sweep = model.forward_layers(params, x_arr, starts)
    H, D = model.hidden_size, model.num_directions
    layers: list[LayerSteps] = []
    roles = model.param_roles()
    for k, layer in enumerate(model.layers):
        cell = layer.cell
        p = layer.take(params)
        seq = sweep.inputs[layer.index]  # the layer's input in time order
        seq = np.ascontiguousarray(seq[::-1]) if layer.reverse else seq
        if cell.state_factor == 1:  # s = h: the states are the layer's outputs in the sweep
            above = sweep.inputs[layer.index + 1] if layer.index + 1 < model.num_layers else None
            outs = (sweep.top if above is None else above)[..., (k % D) * H : (k % D + 1) * H]
            outs = outs[::-1] if layer.reverse else outs  # (T, B, H) in the cell's order
            states = np.concatenate([starts[k][None], outs])  # (T+1, B, S)
        else:  # the state holds more than h (the LSTM's c): step the cell again
            states = _states(cell, p, seq, starts[k])
        at = StepArgs(
            x=seq.reshape(T * B, *seq.shape[2:]),
            s_prev=states[:-1].reshape(T * B, -1),
            s=states[1:].reshape(T * B, -1),
        )
        kind = ElmanSteps if fast_path and isinstance(cell, ElmanCell) else LayerSteps
        names = dict(layer.names)
        layers.append(
            kind(
                index=k,
                name=layer_name(model, k),
                cell=cell,
                p=p,
                names=names,
                roles={names[local]: roles[names[local]] for local in names},
                at=at,
                s0=np.array(starts[k]),
                T=T,
                B=B,
            )
        )
    if y_arr is None:
        return Trace(model, layers, None, None, None)
    assert weight is not None
    loss, dz = model.head.loss_and_dz(model.head_logits(params, sweep.top), y_arr, weight)
    captured: dict[int, np.ndarray] = {}
    grads, _ = model.backward_layers(params, sweep, dz, [None] * len(layers), capture=captured)
    grads = {name: np.array(g) for name, g in grads.items()}
    model.mask_gradients(grads)
    direct = []
    for k, steps in enumerate(layers):
        g = np.zeros((T, B, steps.S), dtype=model.dtype)  # (T, B, S): [∂L/∂h_t ‖ 0]
        g[..., :H] = captured[k]
        direct.append(g)
    return Trace(model, layers, float(loss), grads, direct)
