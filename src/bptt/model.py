"""The model: input (dense | ids) → layers of cells (one or two directions) → head.

Layer l = 0..L−1, direction d (0 forward, 1 reverse, when bidirectional):

    s^{l,d}_t = F(x^l_t, s^{l,d}_{t∓1})          h^{l,d}_t = out(s^{l,d}_t)
    x^0_t = x_t        x^{l+1}_t = [h^{l,0}_t ‖ h^{l,1}_t]
    ŷ_t = f_y(U x^L_t + b_y)
    L   = (1/B) Σ_t Σ_b mask_tb L(ŷ_tb, y_tb)

For one Elman layer in one direction this is the seed's E_t = V x_t + W h_{t-1} + b_h,
h_t = f_h(E_t), ŷ_t = f_y(U h_t + b_y), with parameters ``U V W b_h b_y``.

This module holds the ONE forward → head → backward sequence (:meth:`RNN.sweep`) and its
public parts (:meth:`RNN.forward_layers`, :meth:`RNN.head_logits`, :meth:`RNN.backward_layers`,
:meth:`RNN.split_state` / :meth:`RNN.join_state`, :meth:`RNN.loss_weights`); the gradient
algorithms (:mod:`bptt.algorithms`) and the diagnostics run the model through these alone.

The model imports nothing from :mod:`bptt.algorithms` (the arrow runs one way: algorithms →
model). The one schedule the model runs itself is the segmented sweep behind
``loss_and_grads(checkpoint=…)`` (:meth:`RNN.sweep_segments`, with :func:`segment_length`): it
is the same sweep regrouped by segment, a memory layout of the model's own backward (as
PyTorch's ``checkpoint=`` is), so it lives here; the algorithm entry ``recompute`` and its
memory model (:mod:`bptt.algorithms.recompute`) call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .activations import Activation, get_activation
from .cells import Cell, get_cell
from .heads import Head, get_head, output_backward, output_forward
from .params import Gradients, Params
from .validation import (
    check_dtype,
    check_float_array,
    check_inputs,
    check_mask,
    check_positive_int,
)


@dataclass(frozen=True)
class BPTTResult:
    """Everything one forward + backward sweep produces.

    Attributes:
        loss: L = (1/B) Σ_t Σ_b mask_tb L_tb, a Python float.
        grads: dL/dθ under the parameters' names, and ``grads.h0`` = dL/d(initial state).
        h_last: the final state, laid out as ``h0`` (to carry into the next chunk).
    """

    loss: float
    grads: Gradients
    h_last: Any


@dataclass(frozen=True)
class Layer:
    """One layer in one direction: its cell and the global names of the cell's parameters."""

    index: int
    reverse: bool
    cell: Cell
    names: dict[str, str]  # cell-local name → model parameter name

    def take(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cell's parameters under their local names."""
        return {local: params[name] for local, name in self.names.items()}


@dataclass
class Sweep:
    """A forward pass kept for the backward: each layer's input, cache and final state."""

    inputs: list[Any]  # per layer: its input sequence, (T, B, I) / (T, B) ids, or (T, B, D·H)
    caches: list[Any]  # per layer-direction
    finals: list[np.ndarray]  # per layer-direction, (B, S)
    top: np.ndarray  # (T, B, D·H) the head's input


def segment_length(n_steps: int, checkpoint: object) -> int | None:
    """The segment length K that ``checkpoint`` asks for, or None for full storage.

    ``False`` → None (store every step); ``True`` → K = round(√T) (at least 1);
    a positive int K → K. A K ≥ T is one segment, the same as full storage.

    Raises:
        TypeError: ``checkpoint`` is not a bool or an int.
        ValueError: an int below 1.
    """
    if isinstance(checkpoint, (bool, np.bool_)):
        return max(1, round(math.sqrt(n_steps))) if checkpoint else None
    if not isinstance(checkpoint, (int, np.integer)):
        raise TypeError(
            "checkpoint must be False (store every step), True (segments of about √T steps) "
            f"or a positive int K (segments of K steps), got {type(checkpoint).__name__} "
            f"{checkpoint!r}"
        )
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be a positive segment length in steps, got {checkpoint}")
    return int(checkpoint)


def _drop_layer_axis(state: object) -> object:
    """A one-layer model's state in PyTorch's (L·D, B, H) = (1, B, H) layout as (B, H)."""
    if getattr(state, "ndim", None) == 3 and getattr(state, "shape", (0,))[0] == 1:
        return state[0]  # type: ignore[index]
    return state


#: The sweep planned under a memory budget (``memory_budget=``) is an algorithm,
#: :func:`bptt.algorithms.budget.forward_backward`, which registers itself here when imported
#: (``import bptt`` imports it): the model imports no algorithm, the algorithm runs on the
#: model's public sweep.
_memory_budget_runner: Callable[..., BPTTResult] | None = None


def register_memory_budget_runner(runner: Callable[..., BPTTResult]) -> None:
    """Set what ``forward_backward(..., memory_budget=)`` runs (called by
    :mod:`bptt.algorithms.budget` on import): ``runner(model, x, y, h0, mask, *, dh_last,
    memory_budget) -> BPTTResult``."""
    global _memory_budget_runner
    _memory_budget_runner = runner


class RNN:
    """A recurrent network trained by explicit backpropagation through time.

    Args:
        input_size: I, the number of input features (or the vocabulary size for token ids).
        hidden_size: H, per layer and direction.
        output_size: O, the number of outputs (or classes for the softmax head).
        cell: the recurrent cell, a name in :data:`bptt.cells.CELLS` (``elman``, …).
        num_layers: L, stacked layers; layer l reads layer l−1's states.
        bidirectional: each layer runs a forward and a reverse cell, their states concatenated.
        hidden_activation: f_h for cells that take one (Elman): ``tanh``, ``relu``,
            ``sigmoid``, ``identity``.
        output: the head f_y with its loss: ``softmax`` (cross-entropy on class ids),
            ``sigmoid`` (binary cross-entropy), ``identity`` (½ squared error).
        seed: seeds the initialisation (PyTorch's defaults: U(−1/√H, 1/√H) for every array).
        dtype: float32 or float64; inputs, outputs and gradients all have this dtype.

    Parameters are named ``U`` (O, D·H) and ``b_y`` (O,) for the head and, for one layer in
    one direction, by the cell's local names (Elman: ``V W b_h``); otherwise each cell name
    is suffixed ``_l{l}`` and ``_reverse`` as PyTorch does (``W_l1_reverse``).

    Initial states ``h0``, ``grads.h0``, ``dh_last`` and the returned final state are (B, H)
    for one layer in one direction and (L·D, B, H) otherwise, in PyTorch's order; a cell whose
    state is several arrays (the LSTM's (h, c)) takes and returns a tuple of them.

    Raises:
        ValueError: a non-positive size, an unknown cell, activation or head.
        TypeError: a size that is not an int, a dtype that is not float32/float64.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        cell: str = "elman",
        num_layers: int = 1,
        bidirectional: bool = False,
        hidden_activation: str = "tanh",
        output: str = "softmax",
        seed: int | None = 0,
        dtype: DTypeLike = np.float64,
    ) -> None:
        self._setup(
            input_size,
            hidden_size,
            output_size,
            cell,
            num_layers,
            bidirectional,
            hidden_activation,
            output,
            dtype,
        )
        self.params = self.init_params(np.random.default_rng(seed))

    def _setup(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        cell: str,
        num_layers: int,
        bidirectional: bool,
        hidden_activation: str,
        output: str,
        dtype: DTypeLike,
    ) -> None:
        """Check the structure and build the layers; no weights are allocated here."""
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.output_size = check_positive_int("output_size", output_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be a bool, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        cell_class = get_cell(cell)
        if not cell_class.takes_activation and hidden_activation != "tanh":
            raise ValueError(
                f"the {cell} cell has fixed nonlinearities; hidden_activation must be 'tanh' "
                f"(the default), got {hidden_activation!r}"
            )
        self.activation: Activation = get_activation(hidden_activation)
        self.head: Head = get_head(output)
        self.dtype = check_dtype(dtype)
        self.layers: list[Layer] = []
        simple = self.num_layers == 1 and not self.bidirectional
        for index in range(self.num_layers):
            layer_in = self.input_size if index == 0 else self.num_directions * self.hidden_size
            for reverse in (False, True)[: self.num_directions]:
                the_cell = cell_class(layer_in, self.hidden_size, hidden_activation)
                suffix = "" if simple else f"_l{index}" + ("_reverse" if reverse else "")
                names = {local: local + suffix for local in the_cell.param_shapes()}
                self.layers.append(Layer(index, reverse, the_cell, names))
        self._shapes = self._build_param_shapes()  # fixed by the structure
        self.w_mask: np.ndarray | None = None  # (H, H) bools: a fixed sparsity pattern of W

    # -- structure --------------------------------------------------------------------------

    @property
    def cell(self) -> str:
        return self.layers[0].cell.name

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def simple(self) -> bool:
        """One layer in one direction: states are (B, H), not (L·D, B, H)."""
        return self.num_layers == 1 and not self.bidirectional

    @property
    def hidden_activation(self) -> str:
        return self.activation.name

    @property
    def output(self) -> str:
        return self.head.name

    @property
    def state_parts(self) -> int:
        """How many arrays make up one state (the LSTM's (h, c): 2)."""
        return self.layers[0].cell.state_factor

    def structure(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (not the weights)."""
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
            "cell": self.cell,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "hidden_activation": self.hidden_activation,
            "output": self.output,
            "dtype": self.dtype.name,
        }

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape, in storage order: ``U``, the cells', ``b_y``."""
        return dict(self._shapes)

    def _build_param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {
            "U": (self.output_size, self.num_directions * self.hidden_size)
        }
        for layer in self.layers:
            for local, shape in layer.cell.param_shapes().items():
                shapes[layer.names[local]] = shape
        shapes["b_y"] = (self.output_size,)
        return shapes

    def param_roles(self) -> dict[str, str]:
        """Each parameter's role (``output``, ``input``, ``recurrent``, ``bias``), storage order."""
        roles = {"U": "output"}
        for layer in self.layers:
            for local, role in layer.cell.param_roles().items():
                roles[layer.names[local]] = role
        roles["b_y"] = "bias"
        return roles

    def init_params(self, rng: np.random.Generator) -> Params:
        """PyTorch's default initialisation, drawn in storage order (U, cells, b_y).

        For the one-layer Elman model this is the draw order of the first version, so a seed
        gives the same weights as it always has.
        """
        bound = 1.0 / np.sqrt(self.hidden_size)
        params = Params(U=rng.uniform(-bound, bound, size=self.param_shapes()["U"]))
        for layer in self.layers:
            for local, array in layer.cell.init_params(rng, self.dtype).items():
                params[layer.names[local]] = array
        params["b_y"] = rng.uniform(-bound, bound, size=self.output_size)
        return params.map(lambda a: a.astype(self.dtype, copy=False))

    def n_parameters(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.param_shapes().values())

    def __repr__(self) -> str:
        extra = ""
        if self.cell != "elman":
            extra += f", cell={self.cell!r}"
        if self.num_layers != 1:
            extra += f", num_layers={self.num_layers}"
        if self.bidirectional:
            extra += ", bidirectional=True"
        name = "ElmanRNN" if type(self) is ElmanRNN else "RNN"
        if self.layers[0].cell.takes_activation:
            extra += f", hidden_activation={self.hidden_activation!r}"
        return (
            f"{name}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}{extra}, "
            f"output={self.output!r}, dtype={self.dtype.name})"
        )

    # -- parameters -------------------------------------------------------------------------

    @property
    def params(self) -> Params:
        return self._params

    @params.setter
    def params(self, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(
                f"model.params must be a bptt.Params mapping name → array, got "
                f"{type(value).__name__}"
            )
        self._params = value if isinstance(value, Params) else Params(value)

    def validated_params(self) -> Params:
        """``self.params`` after checking names, shapes and dtype against the structure.

        Raises:
            KeyError: a parameter is missing or unexpected.
            ValueError: a shape differs from the structure's.
            TypeError: an array is not a NumPy array, or its dtype differs from the model's.
        """
        self._params.check_shapes(self._shapes, self.dtype, "model.params")
        return self._params

    # -- a fixed sparsity pattern on the recurrent weights ---------------------------------------

    def set_recurrent_mask(self, mask: object) -> None:
        """Fix W's sparsity: W ← W ⊙ M now, and dL/dW ← dL/dW ⊙ M in every gradient after.

        M (H, H) of bools or 0/1 applies to every (H, H) recurrent parameter (each layer's W);
        None removes it. Because every optimizer's update of an entry with θ = 0 and g = 0 is
        0, masked entries stay exactly zero through training. Assigning ``model.params`` later
        does not re-zero them: call this again.

        Raises:
            ValueError: not (H, H), not 0/1, or the cell has no (H, H) recurrent matrix.
        """
        if mask is None:
            self.w_mask = None
            return
        H = self.hidden_size
        m = np.asarray(mask)
        if m.shape != (H, H) or m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
            raise ValueError(
                f"mask must be (H, H) = ({H}, {H}) of bools or 0/1, got shape {m.shape} "
                f"dtype {m.dtype}"
            )
        names = self._recurrent_names()
        if not names:
            raise ValueError(f"the {self.cell} cell has no (H, H) recurrent matrix to mask")
        self.w_mask = m.astype(bool)
        for name in names:
            self.params[name] *= self.w_mask

    def _recurrent_names(self) -> list[str]:
        roles, shapes = self.param_roles(), self.param_shapes()
        H = self.hidden_size
        return [n for n, r in roles.items() if r == "recurrent" and shapes[n] == (H, H)]

    def mask_gradients(self, grads: Mapping[str, np.ndarray]) -> None:
        """dL/dW ← dL/dW ⊙ M in place for every masked matrix (no-op without a mask)."""
        if self.w_mask is None:
            return
        for name in self._recurrent_names():
            grads[name][~self.w_mask] = 0.0

    # -- states in the public layout ----------------------------------------------------------

    def _state_doc(self) -> str:
        return "(B, H)" if self.simple else "(L·D, B, H)"  # (1, B, H) is taken too

    def _state_shape(self, batch: int) -> tuple[int, ...]:
        if self.simple:
            return (batch, self.hidden_size)
        return (len(self.layers), batch, self.hidden_size)

    def split_state(self, state: object, batch: int, name: str = "h0") -> list[np.ndarray]:
        """A public-layout state (None → zeros) as one (B, S) array per layer-direction.

        A one-layer model takes (B, H) or PyTorch's (L·D, B, H) = (1, B, H) alike.
        """
        H = self.hidden_size
        parts = self.state_parts
        S = parts * H
        if state is None:
            return [np.zeros((batch, S), dtype=self.dtype) for _ in self.layers]
        if self.simple and parts == 1:  # PyTorch's (1, B, H) for one layer too
            state = _drop_layer_axis(state)
        elif self.simple and isinstance(state, (tuple, list)):
            state = tuple(_drop_layer_axis(s) for s in state)
        if parts > 1:
            if not isinstance(state, (tuple, list)) or len(state) != parts:
                raise ValueError(
                    f"{name} for the {self.cell} cell must be a tuple of {parts} arrays "
                    f"(h, c), each {self._state_doc()}; got {type(state).__name__}"
                )
            arrays = [
                check_float_array(
                    f"{name}[{i}]", s, self._state_shape(batch), self.dtype, self._state_doc()
                )
                for i, s in enumerate(state)
            ]
        else:
            arrays = [
                check_float_array(
                    name, state, self._state_shape(batch), self.dtype, self._state_doc()
                )
            ]
        if self.simple:
            arrays = [a[None] for a in arrays]
        return [
            np.concatenate([a[k] for a in arrays], axis=-1) if parts > 1 else arrays[0][k]
            for k in range(len(self.layers))
        ]

    def join_state(self, states: Sequence[np.ndarray]) -> Any:
        """Inverse of :meth:`split_state`: per layer-direction (B, S) → the public layout."""
        H = self.hidden_size
        if self.simple and self.state_parts == 1:
            return np.ascontiguousarray(states[0])  # (B, H): no stacking for one layer
        stacked = np.stack(states)  # (L·D, B, S)
        arrays = [stacked[..., i * H : (i + 1) * H] for i in range(self.state_parts)]
        if self.simple:
            arrays = [a[0] for a in arrays]
        arrays = [np.ascontiguousarray(a) for a in arrays]
        return tuple(arrays) if self.state_parts > 1 else arrays[0]

    def loss_weights(self, mask: object, shape_tb: tuple[int, int]) -> np.ndarray:
        """w_tb = mask_tb / B (T, B), the weight of each step's loss; mask None means all ones."""
        batch = shape_tb[1]
        if mask is None:
            return np.full(shape_tb, 1.0 / batch, dtype=self.dtype)
        return check_mask(mask, shape_tb, self.dtype) / self.dtype.type(batch)

    def require_unidirectional(self, what: str) -> None:
        if self.bidirectional:
            raise ValueError(
                f"{what} needs a unidirectional model: a bidirectional layer reads the whole "
                "sequence, future included, which a step-by-step run does not have"
            )

    # -- the one forward, head and backward ---------------------------------------------------

    def forward_layers(
        self,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        states: Sequence[np.ndarray],
        keep: bool = True,
    ) -> Sweep:
        """The layers over a validated sequence x (T, B, I) or (T, B) ids, from ``states``.

        Public to the package: algorithms and diagnostics run the model through this, the
        head (:meth:`head_logits`) and :meth:`backward_layers`; ``states`` comes from
        :meth:`split_state`. ``keep=False`` drops the caches (no backward will follow).
        """
        if self.simple:  # one layer, one direction: the loop below without its bookkeeping
            layer = self.layers[0]
            h, s_last, cache = layer.cell.forward(layer.take(params), x, states[0])
            return Sweep([x] if keep else [], [cache] if keep else [], [s_last], h)
        inputs: list[Any] = []
        caches: list[Any] = []
        finals: list[np.ndarray] = []
        layer_in: np.ndarray = x
        D = self.num_directions
        for index in range(self.num_layers):
            if keep:
                inputs.append(layer_in)
            outs = []
            for k in range(index * D, index * D + D):
                layer = self.layers[k]
                seq = layer_in[::-1] if layer.reverse else layer_in
                h, s_last, cache = layer.cell.forward(layer.take(params), seq, states[k])
                outs.append(h[::-1] if layer.reverse else h)  # (T, B, H) in time order
                finals.append(s_last)
                if keep:
                    caches.append(cache)
            layer_in = outs[0] if D == 1 else np.concatenate(outs, axis=-1)  # (T, B, D·H)
        return Sweep(inputs=inputs, caches=caches, finals=finals, top=layer_in)

    def head_logits(self, params: Mapping[str, np.ndarray], top: np.ndarray) -> np.ndarray:
        """z_t = U x^L_t + b_y for every step at once: (T, B, D·H) → (T, B, O)."""
        return output_forward(params, top)

    def backward_layers(
        self,
        params: Mapping[str, np.ndarray],
        sweep: Sweep,
        dz: np.ndarray,
        ds_last: Sequence[np.ndarray | None],
        capture: dict[int, np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """dL/dθ and dL/ds_0 per layer-direction from dL/dz (T, B, O).

        ``capture``, if given, receives for each layer-direction k the gradient arriving on
        its outputs from above, ∂L/∂h^k_t (T, B, H) in the cell's own time order: the
        "direct" term of that layer's BPTT (what diagnostics decompose by lag).
        """
        # dL/dU, dL/db_y: one term per step, no BPTT; d_in (T, B, D·H) = ∂L/∂x^L_t = U^T dz_t
        dU, db_y, d_in = output_backward(dz, sweep.top, params)
        if self.simple and capture is None:  # the loop below for one layer-direction
            layer = self.layers[0]
            result = layer.cell.backward(
                d_in, sweep.caches[0], layer.take(params), ds_last[0], False
            )
            named = {layer.names[local]: g for local, g in result.params.items()}
            named["U"], named["b_y"] = dU, db_y
            return {name: named[name] for name in self._shapes}, [result.ds0]
        grads: dict[str, np.ndarray] = {"U": dU, "b_y": db_y}
        ds0: list[Any] = [None] * len(self.layers)  # every entry set below
        H, D = self.hidden_size, self.num_directions
        for index in range(self.num_layers - 1, -1, -1):
            d_below: np.ndarray | None = None
            for k in range(index * D, index * D + D):
                layer = self.layers[k]
                dh = d_in if D == 1 else d_in[..., (k - index * D) * H : (k - index * D + 1) * H]
                if layer.reverse:
                    dh = dh[::-1]
                if capture is not None:
                    capture[k] = np.array(dh)
                result = layer.cell.backward(
                    np.ascontiguousarray(dh),
                    sweep.caches[k],
                    layer.take(params),
                    ds_last[k],
                    need_dx=index > 0,
                )
                for local, g in result.params.items():
                    grads[layer.names[local]] = g
                ds0[k] = result.ds0
                if result.dx is not None:
                    dx = result.dx[::-1] if layer.reverse else result.dx
                    d_below = dx if d_below is None else d_below + dx
            if index > 0:
                assert d_below is not None
                d_in = d_below
        ordered = {name: grads[name] for name in self._shapes}
        return ordered, ds0

    def sweep(
        self,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
        states: Sequence[np.ndarray],
        ds_last: Sequence[np.ndarray | None],
    ) -> tuple[float, dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Forward, head, loss and backward over validated arrays.

        Returns:
            ``(loss, grads, ds0, finals)``: per layer-direction dL/ds_0 and s_T, each (B, S).
        """
        sweep = self.forward_layers(params, x, states)
        z = self.head_logits(params, sweep.top)  # (T, B, O)
        loss, dz = self.head.loss_and_dz(z, y, weight)
        del z
        grads, ds0 = self.backward_layers(params, sweep, dz, ds_last)
        return loss, grads, ds0, sweep.finals

    def sweep_segments(
        self,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
        states: Sequence[np.ndarray],
        ds_last: Sequence[np.ndarray | None],
        segment: int,
    ) -> tuple[float, dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`sweep` storing only the states at segment boundaries (Chen et al. 2016).

        The sequence is cut into segments [0, K), [K, 2K), …, [(S−1)K, T), S = ⌈T/K⌉:

        1. forward: each layer's state at sK, s = 0..S, is all that is kept;
        2. backward, s = S−1 down to 0: recompute segment s from its boundary, its head, loss
           and dL/dz, and backpropagate through it with the carries dL/ds_{(s+1)K} from the
           segment after it (``ds_last``); its parameter gradients add to the totals and the
           carries it returns, dL/ds_{sK}, go on to the segment before.

        The same sums as :meth:`sweep`, regrouped by segment (equal to rounding). Memory:
        (S+1)·B·H boundaries plus one segment's work instead of T steps' (O(√T) with K ≈ √T);
        time: the forward runs twice. Unidirectional only (the caller checks): a reverse
        direction would need the segments from right to left.

        Args:
            x, y, weight, states, ds_last: as :meth:`sweep` (validated arrays).
            segment: K ≥ 1, steps per segment.

        Returns:
            ``(loss, grads, ds0, finals)`` as :meth:`sweep` gives them.
        """
        T = x.shape[0]
        starts = list(range(0, T, segment))
        # 1. forward: keep every layer's state at each segment start, nothing else
        boundaries: list[list[np.ndarray]] = [list(states)]  # (S+1) × layers × (B, S)
        for a in starts:
            boundaries.append(
                self.forward_layers(params, x[a : a + segment], boundaries[-1], False).finals
            )
        # 2. backward: recompute a segment, its head and loss, backpropagate, accumulate
        carry: Sequence[np.ndarray | None] = ds_last  # dL/ds at the end of the current segment
        loss = 0.0
        totals: dict[str, np.ndarray] | None = None
        for s in range(len(starts) - 1, -1, -1):
            seg = slice(starts[s], starts[s] + segment)
            seg_loss, grads, ds0, _ = self.sweep(
                params, x[seg], y[seg], weight[seg], boundaries[s], carry
            )
            carry = ds0
            loss += seg_loss
            if totals is None:
                totals = grads
            else:
                for name, g in grads.items():
                    totals[name] += g
        assert totals is not None  # at least one segment ran (T ≥ 1)
        return loss, totals, list(carry), boundaries[-1]  # type: ignore[arg-type]

    # -- validated entry points ---------------------------------------------------------------

    def _check_xy(self, x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
        x_arr = check_inputs(x, self.input_size, self.dtype)
        T, B = x_arr.shape[:2]
        return x_arr, self.head.check_targets(y, (T, B), self.output_size, self.dtype)

    def logits(self, x: object, h0: object = None) -> tuple[np.ndarray, Any]:
        """z_t = U x^L_t + b_y for every step, and the final state (the layout of ``h0``).

        Args:
            x: (T, B, I) dense inputs of the model's dtype, or (T, B) integer token ids.
            h0: initial state; zeros when None.
        """
        params = self.validated_params()
        x_arr = check_inputs(x, self.input_size, self.dtype)
        sweep = self.forward_layers(params, x_arr, self.split_state(h0, x_arr.shape[1]), keep=False)
        return self.head_logits(params, sweep.top), self.join_state(sweep.finals)

    def hidden_states(self, x: object, h0: object = None) -> np.ndarray:
        """The top layer's states.

        Returns:
            For one layer in one direction, (T+1, B, H) with row 0 = h_0 (as the seed writes
            them); otherwise the top layer's outputs (T, B, D·H) in time order.
        """
        params = self.validated_params()
        x_arr = check_inputs(x, self.input_size, self.dtype)
        states = self.split_state(h0, x_arr.shape[1])
        sweep = self.forward_layers(params, x_arr, states, keep=False)
        if not self.simple:
            return sweep.top
        h_first = self.layers[0].cell.output(states[0])
        return np.concatenate([h_first[None], sweep.top])  # (T+1, B, H)

    def final_state(self, x: object, h0: object = None) -> Any:
        """The state after the last step of x, in the layout of ``h0``."""
        return self.logits(x, h0)[1]

    def predict(self, x: object, h0: object = None) -> tuple[np.ndarray, np.ndarray]:
        """ŷ_t = f_y(U x^L_t + b_y) for every step.

        Args:
            x: (T, B, I) dense inputs of the model's dtype, or (T, B) integer token ids.
            h0: initial state; zeros when None.

        Returns:
            y_hat (T, B, O) and the top layer's states as :meth:`hidden_states` gives them.
        """
        hs = self.hidden_states(x, h0)
        top = hs[1:] if self.simple else hs
        return self.head.predict(self.head_logits(self.params, top)), hs

    def step(self, x_t: object, state: object = None) -> tuple[np.ndarray, Any]:
        """One step through every layer: (z_t (B, O), s_t) for inputs (B, I) or ids (B,).

        Raises:
            ValueError: a bidirectional model (it needs the future), or bad shapes.
        """
        self.require_unidirectional("step()")
        x_arr = np.asarray(x_t)
        z, final = self.logits(x_arr[None], state)
        return z[0], final

    def loss(self, x: object, y: object, h0: object = None, mask: object = None) -> float:
        """L = (1/B) Σ_t Σ_b mask_tb L_tb without the backward (for evaluation)."""
        params = self.validated_params()
        x_arr, y_arr = self._check_xy(x, y)
        T, B = x_arr.shape[:2]
        weight = self.loss_weights(mask, (T, B))
        sweep = self.forward_layers(params, x_arr, self.split_state(h0, B), keep=False)
        z = self.head_logits(params, sweep.top)
        return float(np.sum(weight * self.head.step_losses(z, y_arr), dtype=np.float64))

    def forward_backward(
        self,
        x: object,
        y: object,
        h0: object = None,
        mask: object = None,
        *,
        dh_last: object = None,
        checkpoint: bool | int = False,
        memory_budget: int | str | None = None,
    ) -> BPTTResult:
        """One forward pass and full backpropagation through time.

        Args:
            x: (T, B, I) dense inputs of the model's dtype, or (T, B) integer token ids.
            y: targets: class ids (T, B) for ``softmax``; (T, B, O) for ``sigmoid``
                (values in [0, 1]) and ``identity``.
            h0: initial state, (B, H) for one layer in one direction, else (L·D, B, H)
                (a tuple (h0, c0) for the LSTM); zeros when None.
            mask: (T, B) of 0/1 or bool; masked steps contribute no loss.
            dh_last: gradient of a downstream loss with respect to the final state, laid out
                as ``h0``, added to the sweep (for chunked schedules); None means zero.
            checkpoint: memory schedule of the sweep (the same gradients either way).
                ``False`` stores every step; ``True`` stores only the states at segment
                boundaries, segments of about √T steps, and recomputes each segment during
                the backward sweep (memory O(√T) instead of O(T), about a third more time); a
                positive int K uses segments of K steps. See :meth:`sweep_segments`.
            memory_budget: bytes (an int, or a string such as ``"200MB"``) that the sweep's
                peak working memory must fit: the binomial recompute schedule that fits it
                with the least recomputation, full storage when that fits (the same
                gradients). Refused, naming the smallest that works, when nothing fits. See
                :mod:`bptt.algorithms.budget`; not with ``checkpoint=``.

        Returns:
            A :class:`BPTTResult` with the loss, the gradients (and dL/dh_0) and the final state.

        Raises:
            ValueError: a shape, range or value is wrong (the message names the argument).
            TypeError: a dtype is wrong.
        """
        if memory_budget is not None:
            if checkpoint is not False:
                raise ValueError(
                    f"give checkpoint= or memory_budget=, not both: got checkpoint={checkpoint!r} "
                    f"and memory_budget={memory_budget!r}"
                )
            if _memory_budget_runner is None:
                raise RuntimeError("memory_budget= needs bptt.algorithms.budget imported")
            return _memory_budget_runner(
                self, x, y, h0, mask, dh_last=dh_last, memory_budget=memory_budget
            )
        params = self.validated_params()
        x_arr, y_arr = self._check_xy(x, y)
        T, B = x_arr.shape[:2]
        states = self.split_state(h0, B)
        weight = self.loss_weights(mask, (T, B))
        ds_last: list[np.ndarray | None] = (
            [None] * len(self.layers)
            if dh_last is None
            else list(self.split_state(dh_last, B, "dh_last"))
        )
        segment = segment_length(T, checkpoint)
        if segment is not None and segment < T:
            if self.bidirectional:
                raise ValueError(
                    "checkpoint= recomputes segments from left to right, but a bidirectional "
                    "layer's reverse direction needs them from right to left: use "
                    "checkpoint=False for bidirectional models"
                )
            loss, grads, ds0, finals = self.sweep_segments(
                params, x_arr, y_arr, weight, states, ds_last, segment
            )
        else:
            loss, grads, ds0, finals = self.sweep(params, x_arr, y_arr, weight, states, ds_last)
        self.mask_gradients(grads)
        return BPTTResult(
            loss=loss,
            grads=Gradients.from_backward(grads, h0=self.join_state(ds0)),
            h_last=self.join_state(finals),
        )

    def loss_and_grads(
        self,
        x: object,
        y: object,
        h0: object = None,
        mask: object = None,
        *,
        dh_last: object = None,
        checkpoint: bool | int = False,
        memory_budget: int | str | None = None,
    ) -> tuple[float, Gradients]:
        """L and dL/dθ by BPTT; see :meth:`forward_backward` for the arguments.

        ``checkpoint=True`` (or a segment length K) trades a second forward pass for
        O(√T) memory; ``memory_budget=BYTES`` (or ``"200MB"``) picks the least recomputation
        that fits a budget. The gradients are the same.

        Returns:
            ``(loss, grads)``: loss a Python float; grads a :class:`~bptt.params.Gradients`
            under the parameters' names (``grads.U .V .W .b_h .b_y`` for one Elman layer) and
            ``grads.h0`` = dL/dh_0 laid out as ``h0``.
        """
        result = self.forward_backward(
            x, y, h0, mask, dh_last=dh_last, checkpoint=checkpoint, memory_budget=memory_budget
        )
        return result.loss, result.grads


class ElmanRNN(RNN):
    """An Elman RNN: :class:`RNN` with ``cell="elman"``.

        E_t = V x_t + W h_{t-1} + b_h        h_t = f_h(E_t)        ŷ_t = f_y(U h_t + b_y)

    Args:
        input_size, hidden_size, output_size, hidden_activation, output, num_layers,
        bidirectional, seed, dtype: as for :class:`RNN`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        hidden_activation: str = "tanh",
        output: str = "softmax",
        num_layers: int = 1,
        bidirectional: bool = False,
        seed: int | None = 0,
        dtype: DTypeLike = np.float64,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            output_size,
            cell="elman",
            num_layers=num_layers,
            bidirectional=bidirectional,
            hidden_activation=hidden_activation,
            output=output,
            seed=seed,
            dtype=dtype,
        )


def param_shapes_for(**structure: Any) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of ``RNN(**structure)`` without allocating its weights (to check
    a file's declared sizes before reading them).

    Raises:
        ValueError/TypeError: as the constructor does for a bad structure.
    """
    return unallocated_model(**structure).param_shapes()


def unallocated_model(**structure: Any) -> RNN:
    """``RNN(**structure)``'s structure (layers, sizes, dtype, ``w_mask`` None) without its
    weights: ``params`` is never set. For sizing memory before anything large is allocated
    (the trainer's check of an algorithm's carried state); any weight access fails.

    Raises:
        ValueError/TypeError: as the constructor does for a bad structure.
    """
    args = {k: v for k, v in structure.items() if k != "seed"}
    args = {
        "cell": "elman",
        "num_layers": 1,
        "bidirectional": False,
        "hidden_activation": "tanh",
        "output": "softmax",
        "dtype": np.float64,
        **args,
    }
    shell = RNN.__new__(RNN)
    shell._setup(**args)
    return shell


def build_model(**structure: Any) -> RNN:
    """``RNN(**structure)``, as an :class:`ElmanRNN` when the cell is Elman (the default)."""
    if structure.get("cell", "elman") == "elman":
        return ElmanRNN(**{k: v for k, v in structure.items() if k != "cell"})
    return RNN(**structure)
