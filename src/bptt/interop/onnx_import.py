"""ONNX → bptt: a graph that is a stack of standard ``RNN``/``GRU``/``LSTM`` operators, optionally
followed by a linear head, as a :class:`~bptt.model.RNN` with the same weights.

The ONNX operators compute, per direction (gates as ONNX stacks them, B = [Wb ‖ Rb]):

    RNN   H_t = f(X_t Wᵀ + H_{t-1} Rᵀ + Wb + Rb)
    GRU   z, r = σ(X_t W_{z,r}ᵀ + H_{t-1} R_{z,r}ᵀ + Wb + Rb)
          h̃ = tanh(X_t W_hᵀ + r ⊙ (H_{t-1} R_hᵀ + Rb_h) + Wb_h)     linear_before_reset = 1
          h̃ = tanh(X_t W_hᵀ + (r ⊙ H_{t-1}) R_hᵀ + Rb_h + Wb_h)     linear_before_reset = 0
          H_t = (1 − z) ⊙ h̃ + z ⊙ H_{t-1}
    LSTM  i, o, f = σ(…), c̃ = tanh(…) (gate order i, o, f, c; no peepholes);
          C_t = f ⊙ C_{t-1} + i ⊙ c̃,  H_t = o ⊙ tanh(C_t)

which are bptt's ``elman`` (V = W, W = R, b_h = Wb + Rb), ``gru`` (linear_before_reset = 1;
gates reordered z, r, h → r, z, n, b_hn = Rb_h) or ``gru_reset_before`` (= 0; b = Wb + Rb)
and ``lstm`` (i, o, f, c → i, f, g, o; b = Wb + Rb) cells. The head is ``MatMul`` (or ``Gemm``)
and ``Add``, optionally followed by ``Softmax`` or ``Sigmoid``; without one the model gets
the identity head U = I, b_y = 0, so its outputs are the top layer's states.

The nodes between the operators (``Transpose``, ``Reshape``, ``Squeeze``, the shape arithmetic
``torch.onnx.export`` writes for zero initial states, the one-hot of ``bptt export --ids``) are
only allowed from a fixed list of layout operators, and are not interpreted: the imported model
is checked against the graph itself, run by ONNX's reference evaluator on a random probe
(random inputs and initial states), and refused when the two differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import RNN, build_model
from ..params import Params
from . import InteropError

RECURRENT_OPS = ("RNN", "GRU", "LSTM")
LAYOUT_OPS = frozenset(
    {
        "Cast", "Concat", "Constant", "ConstantOfShape", "Equal", "Expand", "Flatten", "Gather",
        "Identity", "Reshape", "Shape", "Slice", "Squeeze", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
HEAD_OPS = frozenset({"MatMul", "Gemm", "Add"})
OUTPUT_OPS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}
_RNN_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "sigmoid": "sigmoid", "affine": "identity"}
_DEFAULT_ACTIVATIONS = {
    "RNN": ("tanh",),
    "GRU": ("sigmoid", "tanh"),
    "LSTM": ("sigmoid", "tanh", "tanh"),
}
_GRU_FROM_ONNX = (1, 0, 2)  # ONNX z, r, h → bptt r, z, n
_LSTM_FROM_ONNX = (0, 2, 3, 1)  # ONNX i, o, f, c → bptt i, f, g, o


def _blocks(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """The gate blocks of a stacked (kH, …) array, reordered: block j of the result is
    ``order[j]`` of ``a``."""
    parts = np.split(a, len(order), axis=0)
    return np.concatenate([parts[k] for k in order], axis=0)


@dataclass
class _Layer:
    """One recurrent operator: its cell, attributes and each direction's local weights."""

    node: Any
    cell: str
    activation: str
    direction: str
    layout: int
    hidden_size: int
    input_size: int
    dtype: np.dtype
    weights: list[dict[str, np.ndarray]] = field(default_factory=list)  # per direction

    @property
    def directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


class _Graph:
    """Producers, constants and value sources of an ONNX graph (no evaluation)."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in graph.initializer
        }
        self.producer: dict[str, tuple[Any, int]] = {}
        for node in graph.node:
            for k, name in enumerate(node.output):
                if name:
                    self.producer[name] = (node, k)
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
        self.inputs = [i.name for i in graph.input if i.name not in self.constants]
        self._sources: dict[str, frozenset[tuple[str, Any]]] = {}

    def sources(self, name: str) -> frozenset[tuple[str, Any]]:
        """The graph inputs (``("input", name)``) and recurrent outputs (``("rec", (node
        name/id, k))``) whose values reach ``name``; shapes (``Shape``) carry no values."""
        if name in self._sources:
            return self._sources[name]
        found: set[tuple[str, Any]] = set()
        stack = [name]
        seen: set[str] = set()
        while stack:
            current = stack.pop()
            if not current or current in seen:
                continue
            seen.add(current)
            if current in self._sources:
                found |= self._sources[current]
            elif current in self.inputs:
                found.add(("input", current))
            elif current in self.producer:
                node, k = self.producer[current]
                if node.op_type in RECURRENT_OPS:
                    found.add(("rec", (id(node), k)))
                elif node.op_type != "Shape":
                    stack.extend(node.input)
        result = frozenset(found)
        self._sources[name] = result
        return result

    def constant(self, node: Any, index: int, what: str) -> np.ndarray | None:
        """The constant at input ``index`` of ``node`` (None when the input is absent).

        Raises:
            InteropError: the input is computed or fed at run time.
        """
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise InteropError(
                f"{_describe(node)}: its {what} ({name!r}) is not a constant of the graph; "
                "from_onnx reads weights stored in the model"
            )
        return self.constants[name]


def _describe(node: Any) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[attr.name] = value
    return out


def _read_layer(g: _Graph, node: Any) -> _Layer:
    """One recurrent operator's attributes and weights, refused where bptt has no counterpart."""
    attrs = _attributes(node)
    op = node.op_type
    allowed = {"hidden_size", "direction", "layout", "activations", "activation_alpha",
               "activation_beta", "linear_before_reset", "input_forget", "clip"}  # fmt: skip
    for name in attrs:
        if name not in allowed:
            raise InteropError(f"{_describe(node)}: attribute {name!r} is not supported")
    if "clip" in attrs:
        raise InteropError(f"{_describe(node)}: attribute 'clip' (cell clipping) is not supported")
    if attrs.get("input_forget", 0):
        raise InteropError(
            f"{_describe(node)}: attribute input_forget=1 (coupled input and forget gates) is "
            "not supported"
        )
    direction = attrs.get("direction", "forward")
    layout = int(attrs.get("layout", 0))
    D = 2 if direction == "bidirectional" else 1
    W = g.constant(node, 1, "W")
    R = g.constant(node, 2, "R")
    assert W is not None and R is not None  # both are required inputs of the operators
    if W.dtype not in (np.float32, np.float64):
        raise InteropError(f"{_describe(node)}: weights of dtype {W.dtype}; bptt needs float32/64")
    H = int(attrs["hidden_size"]) if "hidden_size" in attrs else int(R.shape[-1])
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    if W.shape[:2] != (D, gates * H) or R.shape != (D, gates * H, H):
        raise InteropError(
            f"{_describe(node)}: W {W.shape} and R {R.shape} do not fit hidden_size={H}, "
            f"direction={direction!r}"
        )
    B = g.constant(node, 3, "B")
    if B is None:
        B = np.zeros((D, 2 * gates * H), dtype=W.dtype)
    if len(node.input) > 4 and node.input[4]:
        raise InteropError(
            f"{_describe(node)}: input sequence_lens is not supported (every sequence runs all "
            "T steps; use a mask in bptt instead)"
        )
    if op == "LSTM":
        P = g.constant(node, 7, "P (peepholes)")
        if P is not None and np.any(P != 0):
            raise InteropError(
                f"{_describe(node)}: input P (peephole weights) is non-zero; bptt's LSTM has "
                "no peepholes"
            )
    # activations: the defaults for GRU/LSTM; tanh, relu, sigmoid or Affine(1, 0) for RNN
    default = _DEFAULT_ACTIVATIONS[op]
    names = [a.lower() for a in attrs.get("activations", list(default) * D)]
    if len(names) != len(default) * D:
        raise InteropError(
            f"{_describe(node)}: attribute 'activations' {names} has the wrong length"
        )
    activation = "tanh"
    if op == "RNN":
        if len(set(names)) != 1 or names[0] not in _RNN_ACTIVATIONS:
            raise InteropError(
                f"{_describe(node)}: attribute activations={attrs['activations']}; bptt reads "
                "one of Tanh, Relu, Sigmoid, Affine for both directions"
            )
        activation = _RNN_ACTIVATIONS[names[0]]
        if names[0] == "affine" and (
            list(attrs.get("activation_alpha", [1.0] * D)) != [1.0] * D
            or list(attrs.get("activation_beta", [0.0] * D)) != [0.0] * D
        ):
            raise InteropError(
                f"{_describe(node)}: attribute activation_alpha/activation_beta: only the "
                "identity Affine(alpha=1, beta=0) is supported"
            )
    elif names != list(default) * D:
        raise InteropError(
            f"{_describe(node)}: attribute activations={attrs['activations']}; bptt's "
            f"{op} uses the defaults {list(default)}"
        )
    cell = {"RNN": "elman", "LSTM": "lstm"}.get(op, "")
    if op == "GRU":
        cell = "gru" if attrs.get("linear_before_reset", 0) else "gru_reset_before"
    layer = _Layer(node, cell, activation, direction, layout, H, int(W.shape[2]), W.dtype)
    for d in range(D):
        Wb, Rb = B[d, : gates * H], B[d, gates * H :]
        local: dict[str, np.ndarray]
        order: tuple[int, ...]
        if cell == "elman":
            local = {"V": W[d], "W": R[d], "b_h": Wb + Rb}
        elif cell == "lstm":
            order = _LSTM_FROM_ONNX
            local = {"V": _blocks(W[d], order), "W": _blocks(R[d], order),
                     "b": _blocks(Wb + Rb, order)}  # fmt: skip
        else:
            order = _GRU_FROM_ONNX
            local = {"V": _blocks(W[d], order), "W": _blocks(R[d], order)}
            if cell == "gru_reset_before":
                local["b"] = _blocks(Wb + Rb, order)
            else:  # r ⊙ (R_h h + Rb_h): Rb_h stays apart as b_hn
                b = _blocks(Wb, order)
                b[: 2 * H] += _blocks(Rb, order)[: 2 * H]
                local["b"], local["b_hn"] = b, Rb[2 * H :]
        layer.weights.append({k: np.array(v, dtype=W.dtype) for k, v in local.items()})
    return layer


def _check_node_types(graph: Any) -> None:
    for node in graph.node:
        known = RECURRENT_OPS + tuple(LAYOUT_OPS | HEAD_OPS) + tuple(OUTPUT_OPS)
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            raise InteropError(
                f"{_describe(node)}: operator {node.domain + '.' if node.domain else ''}"
                f"{node.op_type} is not supported; from_onnx reads a stack of RNN/GRU/LSTM "
                f"operators, the layout operators {sorted(LAYOUT_OPS)}, a MatMul/Gemm + Add "
                "head and Softmax/Sigmoid"
            )


def _read_head(
    g: _Graph, last: Any, width: int
) -> tuple[str, np.ndarray | None, np.ndarray | None, str]:
    """(main output name, U (O, width) or None, b_y or None, output) from the nodes after the
    last recurrent operator's Y.

    Raises:
        InteropError: no graph output reads the last Y, or the head is not MatMul/Gemm + Add.
    """
    y_last = ("rec", (id(last), 0))
    outputs = [o.name for o in g.graph.output if y_last in g.sources(o.name)]
    if not outputs:
        raise InteropError("no graph output reads the last recurrent operator's output Y")
    main = outputs[0]
    on_path = []  # non-recurrent nodes between Y_last and the main output, in graph order
    ancestors = _ancestor_nodes(g, main)
    for node in g.graph.node:
        if node.op_type in RECURRENT_OPS or id(node) not in ancestors:
            continue
        if any(y_last in g.sources(o) for o in node.output if o):
            on_path.append(node)
    U: np.ndarray | None = None
    b_y: np.ndarray | None = None
    output = "identity"
    for node in on_path:
        op = node.op_type
        if output != "identity":
            raise InteropError(f"{_describe(node)}: nothing may follow the output {output}")
        if op in ("MatMul", "Gemm"):
            if U is not None:
                raise InteropError(f"{_describe(node)}: a second linear map after the RNN")
            U, c = _linear(g, node, y_last, width)
            b_y = c
        elif op == "Add":
            if U is None:
                raise InteropError(f"{_describe(node)}: an Add before the head's MatMul/Gemm")
            const = [g.constants[n] for n in node.input if n in g.constants]
            if len(const) != 1:
                raise InteropError(f"{_describe(node)}: the head's Add needs one constant bias")
            bias = np.asarray(const[0]).reshape(-1)
            if bias.size not in (1, U.shape[0]):
                raise InteropError(f"{_describe(node)}: bias of shape {const[0].shape}")
            assert b_y is not None
            b_y = b_y + bias
        elif op in OUTPUT_OPS:
            output = OUTPUT_OPS[op]
            if op == "Softmax" and _attributes(node).get("axis", -1) not in (-1, 2, 3):
                raise InteropError(f"{_describe(node)}: Softmax over an axis other than the last")
        elif op not in LAYOUT_OPS:
            raise InteropError(f"{_describe(node)}: not allowed between the RNN and the output")
    return main, U, b_y, output


def _ancestor_nodes(g: _Graph, name: str) -> set[int]:
    found: set[int] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in g.producer:
            node, _ = g.producer[current]
            if id(node) not in found:
                found.add(id(node))
                stack.extend(i for i in node.input if i)
    return found


def _linear(
    g: _Graph, node: Any, y_last: tuple[str, Any], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(U (O, width), b) of a MatMul(top, M) or Gemm(top, M, C) head."""
    if not node.input[0] or y_last not in g.sources(node.input[0]):
        raise InteropError(
            f"{_describe(node)}: the head must read the RNN's output as its first input"
        )
    M = g.constants.get(node.input[1])
    if M is None:
        raise InteropError(f"{_describe(node)}: the head's weight is not a constant")
    attrs = _attributes(node) if node.op_type == "Gemm" else {}
    if attrs.get("transA", 0):
        raise InteropError(f"{_describe(node)}: attribute transA=1 is not supported")
    M = M.T if attrs.get("transB", 0) else M  # (width, O)
    if M.ndim != 2 or M.shape[0] != width:
        raise InteropError(
            f"{_describe(node)}: head weight of shape {M.shape}; the RNN emits {width} features"
        )
    U = np.ascontiguousarray(float(attrs.get("alpha", 1.0)) * M.T)
    b = np.zeros(U.shape[0], dtype=U.dtype)
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        C = g.constants.get(node.input[2])
        if C is None:
            raise InteropError(f"{_describe(node)}: the Gemm's C is not a constant")
        b = b + float(attrs.get("beta", 1.0)) * np.broadcast_to(np.asarray(C).reshape(-1), b.shape)
    return U, b


def load_onnx(path_or_model: Any) -> Any:
    """An ``onnx.ModelProto`` from a path or a proto (returned as is)."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX import needs onnx: pip install 'bptt[onnx]'") from err
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise TypeError(
            "path_or_model must be a path or an onnx.ModelProto, got "
            f"{type(path_or_model).__name__}"
        )
    try:
        return onnx.load(str(path_or_model))
    except Exception as err:  # onnx raises DecodeError, OSError …
        raise InteropError(f"{path_or_model} is not a readable ONNX model: {err}") from None


def from_onnx(
    path_or_model: str | os.PathLike[str] | Any,
    *,
    output: str | None = None,
    allow_reverse: bool = False,
    check: bool = True,
) -> RNN:
    """The bptt model computing an ONNX graph of stacked ``RNN``/``GRU``/``LSTM`` operators.

    ``ŷ_t = f_y(U x^L_t + b_y)`` with x^L the top operator's output Y as (T, B, D·H) and
    U, b_y from the graph's MatMul/Gemm + Add (the identity U = I, b_y = 0 when there is none).

    Args:
        path_or_model: a ``.onnx`` file or an ``onnx.ModelProto``.
        output: the head's f_y and loss for a graph that ends in logits (no Softmax/Sigmoid):
            ``softmax``, ``sigmoid`` or ``identity`` (default). A graph's own Softmax/Sigmoid
            fixes it.
        allow_reverse: import a stack whose every operator runs ``direction="reverse"`` as the
            forward model of the time-reversed sequence: the graph's output on x is then
            ``predict(x[::-1])[0][::-1]``. Refused by default (bptt has no reverse-only layer).
        check: run the graph with ONNX's reference evaluator on a random probe (T=5, B=3,
            random initial states where the graph takes them) and refuse the import if the
            model's output differs (float32: 1e-4, float64: 1e-9).

    Returns:
        A model taking time-major inputs (T, B, I) (or (T, B) ids, for a graph that one-hots
        int64 inputs) whatever the graph's ``layout``, with ``h0`` (and for the LSTM a tuple
        ``(h0, c0)``) in PyTorch's (L·D, B, H) layout ((B, H) for one layer in one direction).

    Raises:
        InteropError: a node, attribute or input with no bptt counterpart (named), or a graph
            whose function the model does not reproduce.
        ImportError: ``onnx`` is missing.
    """
    proto = load_onnx(path_or_model)
    graph = proto.graph
    _check_node_types(graph)
    g = _Graph(graph)
    nodes = [node for node in graph.node if node.op_type in RECURRENT_OPS]
    if not nodes:
        raise InteropError("the graph has no RNN, GRU or LSTM operator")
    layers = [_read_layer(g, node) for node in nodes]
    first = layers[0]
    for layer in layers[1:]:
        for what in ("cell", "activation", "direction", "hidden_size", "dtype"):
            if getattr(layer, what) != getattr(first, what):
                raise InteropError(
                    f"{_describe(layer.node)}: {what} {getattr(layer, what)!r} differs from the "
                    f"first operator's {getattr(first, what)!r}; a bptt model has one of each"
                )
    H, D = first.hidden_size, first.directions
    if first.direction == "reverse" and not allow_reverse:
        raise InteropError(
            f"{_describe(first.node)}: direction 'reverse' alone has no bptt layer; pass "
            "allow_reverse=True to import it as the forward model of the time-reversed input"
        )
    if first.direction not in ("forward", "reverse", "bidirectional"):
        raise InteropError(f"{_describe(first.node)}: direction {first.direction!r}")
    # the stack: operator k reads operator k−1's Y (or one graph input), nothing else
    x_name = ""
    for k, layer in enumerate(layers):
        src = g.sources(layer.node.input[0])
        if k == 0:
            if len(src) != 1 or next(iter(src))[0] != "input":
                raise InteropError(f"{_describe(layer.node)}: its X must come from one graph input")
            x_name = next(iter(src))[1]
        else:
            if src != {("rec", (id(layers[k - 1].node), 0))}:
                raise InteropError(
                    f"{_describe(layer.node)}: its X must be the previous operator's output Y"
                )
            if layer.input_size != D * H:
                raise InteropError(
                    f"{_describe(layer.node)}: input size {layer.input_size}, but the layer "
                    f"below emits {D * H}"
                )
    main, U, b_y, graph_output = _read_head(g, layers[-1].node, D * H)
    if output is not None and graph_output != "identity" and output != graph_output:
        raise InteropError(
            f"output={output!r}, but the graph applies {graph_output} to the head's output"
        )
    dtype = first.dtype
    if U is None:  # the top layer's states: U = I, b_y = 0
        U, b_y = np.eye(D * H, dtype=dtype), np.zeros(D * H, dtype=dtype)
    assert b_y is not None
    structure: dict[str, Any] = {
        "input_size": first.input_size,
        "hidden_size": H,
        "output_size": U.shape[0],
        "cell": first.cell,
        "num_layers": len(layers),
        "bidirectional": D == 2,
        "output": graph_output if graph_output != "identity" else (output or "identity"),
        "dtype": dtype,
    }
    if first.cell == "elman":
        structure["hidden_activation"] = first.activation
    model = build_model(**structure, seed=0)
    params = Params(U=np.asarray(U, dtype=dtype))
    for index, layer in enumerate(layers):
        for d in range(D):
            model_layer = model.layers[index * D + d]
            for local, array in layer.weights[d].items():
                params[model_layer.names[local]] = array
    params["b_y"] = np.asarray(b_y, dtype=dtype)
    model.params = Params({name: params[name] for name in model.param_shapes()})
    model.validated_params()
    if check:
        logits = graph_output == "identity"  # the graph's output is z = U x^L + b_y
        _probe(proto, g, model, layers, x_name, main, first.direction == "reverse", logits)
    return model


def _state_inputs(g: _Graph, layers: list[_Layer]) -> dict[str, tuple[int, list[int]]]:
    """Graph inputs feeding initial states: name → (state part 0 = h / 1 = c, operator indices).

    Raises:
        InteropError: an initial state that mixes graph inputs with other values.
    """
    found: dict[str, tuple[int, list[int]]] = {}
    for k, layer in enumerate(layers):
        for part, index in ((0, 5), (1, 6)):
            node = layer.node
            if index >= len(node.input) or not node.input[index]:
                continue
            src = g.sources(node.input[index])
            if any(kind != "input" for kind, _ in src):
                raise InteropError(
                    f"{_describe(node)}: its initial state depends on another operator"
                )
            for _, name in src:
                role, ks = found.setdefault(name, (part, []))
                if role != part:
                    raise InteropError(f"graph input {name!r} feeds both h and c initial states")
                ks.append(k)
    return found


def _probe(
    proto: Any,
    g: _Graph,
    model: RNN,
    layers: list[_Layer],
    x_name: str,
    main: str,
    rev: bool,
    logits: bool,
) -> None:
    """Run the graph (ONNX reference evaluator) and the model on a random probe; refuse the
    import when they differ.

    The probe is tried time-major, then batch-major (the layout is the graph's business); its
    T and B are the graph input's static dims where it has them, else T = 5, B = 3.
    """
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    H, D, L = model.hidden_size, model.num_directions, model.num_layers
    declared = {i.name: i.type.tensor_type for i in g.graph.input}
    ids = declared[x_name].elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in declared[x_name].shape.dim]
    dims += [None] * (2 - len(dims))
    state_inputs = _state_inputs(g, layers)
    unknown = [i for i in g.inputs if i != x_name and i not in state_inputs]
    if unknown:
        raise InteropError(
            f"graph input(s) {unknown} are neither the sequence nor an initial state"
        )
    session = ReferenceEvaluator(proto, new_ops=[_reference_rnn()])
    errors = []
    for batch_major in (False, True):
        T, B = (dims[1] or 5, dims[0] or 3) if batch_major else (dims[0] or 5, dims[1] or 3)
        x = (
            rng.integers(0, model.input_size, (T, B))
            if ids
            else rng.standard_normal((T, B, model.input_size)).astype(model.dtype)
        )  # (T, B) or (T, B, I)
        states = [  # (L·D, B, H) per state part
            (0.5 * rng.standard_normal((L * D, B, H))).astype(model.dtype)
            for _ in range(model.state_parts)
        ]
        feeds: dict[str, np.ndarray] = {
            x_name: _batch(x.astype(np.int64) if ids else x, batch_major)
        }
        for name, (part, ks) in state_inputs.items():
            if len(ks) == L:
                value = states[part]
            elif len(ks) == 1:
                value = states[part][ks[0] * D : (ks[0] + 1) * D]
            else:
                raise InteropError(f"graph input {name!r} feeds {len(ks)} of {L} operators")
            if len(declared[name].shape.dim) == 2:
                value = value[0]
            feeds[name] = _batch(value, batch_major and len(declared[name].shape.dim) != 2)
        h0: Any = None
        if state_inputs:
            parts = [st[0] if model.simple else st for st in states]
            h0 = tuple(parts) if model.state_parts > 1 else parts[0]
        x_model = x[::-1] if rev else x
        run = model.logits if logits else model.predict
        expected = run(x_model, h0)[0]  # (T, B, O)
        if rev:
            expected = expected[::-1]
        try:
            result: Any = session.run([main], feeds)
            got = np.asarray(result[0])
        except Exception as err:  # a layout that does not fit this probe's shapes
            errors.append(f"{type(err).__name__}: {err}".strip())
            continue
        wants = [expected, expected.swapaxes(0, 1)]  # (T, B, O) or (B, T, O)
        if got.ndim == 4:  # a raw Y: (T, D, B, H), or (B, T, D, H) for layout 1
            top = expected.reshape(T, B, D, H)
            wants = [top.transpose(1, 0, 2, 3) if layers[-1].layout else top.transpose(0, 2, 1, 3)]
        fitting = [w for w in wants if w.shape == got.shape]
        if not fitting:
            errors.append(f"output {main!r} has shape {got.shape}, the model's is {wants[0].shape}")
            continue
        tol = 1e-4 if model.dtype == np.float32 else 1e-9
        for want in fitting:
            error = float(np.max(np.abs(got - want), initial=0.0))
            if error <= tol * (1.0 + float(np.max(np.abs(want), initial=0.0))):
                return
        errors.append(f"largest difference {error:.3g}")
    raise InteropError(
        f"the imported {model!r} does not reproduce the graph's output {main!r} on a random "
        f"probe ({'; '.join(errors)}): some node between the operators does more than layout"
    )


def _reference_rnn() -> type:
    """ONNX's reference ``RNN`` operator with the spec's Relu and Sigmoid activations added
    (the reference implements only Tanh and Affine)."""
    from onnx.reference.ops.op_rnn import RNN_14

    class RNN(RNN_14):  # named as the operator it implements
        op_domain = ""

        def choose_act(self, name: str, alpha: Any, beta: Any) -> Any:
            if name.lower() == "relu":
                return lambda a: np.maximum(a, 0)
            if name.lower() == "sigmoid":
                return lambda a: 1.0 / (1.0 + np.exp(-a))
            return super().choose_act(name, alpha, beta)

    return RNN


def _batch(a: np.ndarray, batch_major: bool) -> np.ndarray:
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if batch_major else a


def onnx_initial_weights(path: Path, model: RNN) -> Params:
    """Weights for ``model`` from an ONNX file (:func:`from_onnx`), whose structure must match.

    Raises:
        InteropError: the graph's model has another structure (both are named).
    """
    theirs = from_onnx(path)
    ours_s = {k: v for k, v in model.structure().items() if k not in ("dtype", "output")}
    theirs_s = {k: v for k, v in theirs.structure().items() if k not in ("dtype", "output")}
    if ours_s != theirs_s:
        differ = sorted(k for k in ours_s if theirs_s.get(k) != ours_s[k])
        raise InteropError(
            f"--init-from {path}: the ONNX graph's model differs in {differ}: it is {theirs!r}, "
            f"the configuration builds {model!r}"
        )
    return theirs.params.map(lambda a: a.astype(model.dtype))


__all__ = ["from_onnx", "load_onnx", "onnx_initial_weights"]
