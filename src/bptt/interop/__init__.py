"""PyTorch and ONNX interop: the same function under PyTorch's names and operators.

A bptt model with cell ``elman`` is ``torch.nn.RNN`` followed by ``torch.nn.Linear``
(``gru``: ``torch.nn.GRU``, ``lstm``: ``torch.nn.LSTM``, mapped as their sections below say):

    bptt                      PyTorch (layer l, suffix "" or "_reverse")
    V_l{l}                    rnn.weight_ih_l{l}
    W_l{l}                    rnn.weight_hh_l{l}
    b_h_l{l}                  rnn.bias_ih_l{l} + rnn.bias_hh_l{l}     (one bias holds both)
    U, b_y                    head.weight, head.bias

For weights, PyTorch's two biases are summed into ``b_h`` (from PyTorch) and ``b_h`` goes to
``bias_ih`` with ``bias_hh = 0`` (to PyTorch): the same function either way. For gradients,
dL/dbias_ih = dL/dbias_hh = dL/db_h, since each enters E_t as b_h does.

Other cells register a :class:`TorchCellMap` in :data:`TORCH_CELLS`. PyTorch stays an optional
extra (``pip install 'bptt[torch]'``); ONNX export needs ``onnx`` (``pip install 'bptt[onnx]'``).

Importers beside this module: :func:`from_onnx` (:mod:`bptt.interop.onnx_import`: stacks of
ONNX RNN/GRU/LSTM operators) and :func:`from_keras` / :func:`to_keras`
(:mod:`bptt.interop.keras_import`: Keras 3 recurrent layers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..checkpoint import load_checkpoint
from ..model import RNN, build_model
from ..params import Gradients, Params

TORCH_STATE_FORMAT = "bptt-torch-state-dict"


class InteropError(ValueError):
    """A model or module that has no counterpart on the other side (the message says why)."""


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "PyTorch interop needs torch: pip install 'bptt[torch]' "
            "(with -c constraints.txt for the pinned CPU build)"
        ) from err
    return torch


@dataclass(frozen=True)
class TorchCellMap:
    """How one cell's local parameters map to one ``torch.nn`` recurrent layer's.

    Attributes:
        module: the ``torch.nn`` class name (``RNN``, ``GRU``, ``LSTM``), or None where PyTorch
            has no such layer (the GRU with the reset gate before the product: ONNX only).
        to_torch: local arrays and a kind (``weights``/``gradients``) → torch arrays under
            the stems ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``.
        from_torch: torch arrays under those stems → local arrays (weights).
        onnx_op: the ONNX operator (``RNN``, ``GRU``, ``LSTM``).
        onnx_weights: local arrays → the ONNX operator's (W, R, B) for one direction.
        onnx_attributes: fixed attributes of the ONNX operator (the GRU's
            ``linear_before_reset``).
    """

    module: str | None
    to_torch: Callable[[Mapping[str, np.ndarray], str], dict[str, np.ndarray]]
    from_torch: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    onnx_op: str
    onnx_weights: Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray, np.ndarray]]
    onnx_attributes: tuple[tuple[str, int], ...] = ()


def _elman_to_torch(p: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    # weights: b_h = bias_ih + bias_hh with bias_hh = 0; gradients: each bias gets db_h
    bias_hh = p["b_h"] if kind == "gradients" else np.zeros_like(p["b_h"])
    return {"weight_ih": p["V"], "weight_hh": p["W"], "bias_ih": p["b_h"], "bias_hh": bias_hh}


def _elman_from_torch(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"V": t["weight_ih"], "W": t["weight_hh"], "b_h": t["bias_ih"] + t["bias_hh"]}


def _elman_onnx(p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # ONNX RNN: H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb); B = [Wb ‖ Rb]
    return p["V"], p["W"], np.concatenate([p["b_h"], np.zeros_like(p["b_h"])])


def _blocks(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """The gate blocks of a stacked (kH, …) array, reordered: ``order[j]`` is our block j'."""
    parts = np.split(a, len(order), axis=0)
    return np.concatenate([parts[k] for k in order], axis=0)


# GRU (bptt.cells.gru): gates r, z, n as nn.GRU; b = b_ih + b_hh for r, z and b_in for n, b_hn
# apart (the reset gate multiplies W_hn h + b_hn). ONNX GRU: gates z, r, h, B = [Wb ‖ Rb], and
# linear_before_reset = 1 is PyTorch's r ⊙ (W_hn h + b_hn).
_GRU_TO_ONNX = (1, 0, 2)


def _gru_to_torch(p: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    H = p["b_hn"].shape[0]
    if kind == "gradients":  # dL/dbias_ih = db; dL/dbias_hh = [db_r, db_z, db_hn]
        bias_hh = np.concatenate([p["b"][: 2 * H], p["b_hn"]])
    else:
        bias_hh = np.concatenate([np.zeros(2 * H, dtype=p["b"].dtype), p["b_hn"]])
    return {"weight_ih": p["V"], "weight_hh": p["W"], "bias_ih": p["b"], "bias_hh": bias_hh}


def _gru_from_torch(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    H = t["weight_hh"].shape[1]
    b = np.array(t["bias_ih"], copy=True)
    b[: 2 * H] += t["bias_hh"][: 2 * H]
    return {"V": t["weight_ih"], "W": t["weight_hh"], "b": b, "b_hn": t["bias_hh"][2 * H :]}


def _gru_onnx(p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    H = p["b_hn"].shape[0]
    Rb = np.concatenate([np.zeros(2 * H, dtype=p["b"].dtype), p["b_hn"]])  # z, r: 0; h: b_hn
    Wb = _blocks(p["b"], _GRU_TO_ONNX)
    return _blocks(p["V"], _GRU_TO_ONNX), _blocks(p["W"], _GRU_TO_ONNX), np.concatenate([Wb, Rb])


# GRU with the reset gate before the product (bptt.cells.gru_reset_before): gates r, z, n, one
# bias b (the n row's two biases only enter summed). ONNX GRU with linear_before_reset = 0:
# R_h (r ⊙ h) + Rb_h. PyTorch has no such layer.


def _no_torch(p: Mapping[str, np.ndarray], kind: str = "weights") -> dict[str, np.ndarray]:
    raise InteropError(_RESET_BEFORE_NO_TORCH)


_RESET_BEFORE_NO_TORCH = (
    "the gru_reset_before cell (reset gate before the recurrent product: ONNX "
    "linear_before_reset=0, Keras reset_after=False) has no torch.nn counterpart: nn.GRU applies "
    "the reset gate after the product. Export it with --format onnx (export_onnx)"
)


def _gru_reset_before_onnx(
    p: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Wb = _blocks(p["b"], _GRU_TO_ONNX)
    return (
        _blocks(p["V"], _GRU_TO_ONNX),
        _blocks(p["W"], _GRU_TO_ONNX),
        np.concatenate([Wb, np.zeros_like(Wb)]),
    )


# LSTM (bptt.cells.lstm): gates i, f, g, o as nn.LSTM; b = b_ih + b_hh. ONNX LSTM: gates
# i, o, f, c, B = [Wb ‖ Rb], no peepholes.
_LSTM_TO_ONNX = (0, 3, 1, 2)


def _lstm_to_torch(p: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    bias_hh = p["b"] if kind == "gradients" else np.zeros_like(p["b"])
    return {"weight_ih": p["V"], "weight_hh": p["W"], "bias_ih": p["b"], "bias_hh": bias_hh}


def _lstm_from_torch(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"V": t["weight_ih"], "W": t["weight_hh"], "b": t["bias_ih"] + t["bias_hh"]}


def _lstm_onnx(p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Wb = _blocks(p["b"], _LSTM_TO_ONNX)
    return (
        _blocks(p["V"], _LSTM_TO_ONNX),
        _blocks(p["W"], _LSTM_TO_ONNX),
        np.concatenate([Wb, np.zeros_like(Wb)]),
    )


TORCH_CELLS: dict[str, TorchCellMap] = {
    "elman": TorchCellMap("RNN", _elman_to_torch, _elman_from_torch, "RNN", _elman_onnx),
    "gru": TorchCellMap(
        "GRU", _gru_to_torch, _gru_from_torch, "GRU", _gru_onnx, (("linear_before_reset", 1),)
    ),
    "gru_reset_before": TorchCellMap(
        None, _no_torch, _no_torch, "GRU", _gru_reset_before_onnx, (("linear_before_reset", 0),)
    ),
    "lstm": TorchCellMap("LSTM", _lstm_to_torch, _lstm_from_torch, "LSTM", _lstm_onnx),
}

TORCH_STEMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _cell_map(model: RNN, torch: bool = True) -> TorchCellMap:
    """The cell's mapping; for PyTorch (``torch``) also the activation nn.RNN can express."""
    if model.cell not in TORCH_CELLS:
        raise InteropError(f"the {model.cell} cell has no PyTorch/ONNX counterpart registered")
    if torch and TORCH_CELLS[model.cell].module is None:
        raise InteropError(_RESET_BEFORE_NO_TORCH)
    if torch and model.cell == "elman" and model.hidden_activation not in ("tanh", "relu"):
        raise InteropError(
            f"torch.nn.RNN has nonlinearity 'tanh' or 'relu'; this model's hidden_activation "
            f"is {model.hidden_activation!r}"
        )
    return TORCH_CELLS[model.cell]


def _torch_suffix(index: int, reverse: bool) -> str:
    return f"_l{index}" + ("_reverse" if reverse else "")


# -- names ------------------------------------------------------------------------------------


def state_dict(
    model: RNN, arrays: Mapping[str, np.ndarray] | None = None, kind: str | None = None
) -> dict[str, np.ndarray]:
    """``{torch name: array}`` for the model's parameters or any parameter-shaped collection.

    Names are those of the module pair ``(rnn, head)``, prefixed: ``rnn.weight_ih_l0``,
    ``rnn.bias_hh_l1_reverse``, ``head.weight``, ``head.bias``.

    Args:
        model: supplies the structure (and the weights when ``arrays`` is None).
        arrays: a collection under the model's parameter names, e.g. ``grads``; None means
            ``model.params``.
        kind: ``weights`` (b_h → bias_ih, bias_hh = 0) or ``gradients`` (db_h → each of
            bias_ih and bias_hh). None: ``weights`` for the model's own parameters,
            ``gradients`` for a :class:`~bptt.params.Gradients`; any other collection must
            say which.

    Raises:
        InteropError: the cell or activation has no PyTorch counterpart.
        ValueError: ``kind`` missing for an ambiguous collection, or unknown.
        KeyError: ``arrays`` lacks one of the model's parameters.
    """
    cell_map = _cell_map(model)
    if arrays is None:
        arrays = model.params
    if kind is None:
        if arrays is model.params:
            kind = "weights"
        elif isinstance(arrays, Gradients):
            kind = "gradients"
        else:
            raise ValueError(
                "state_dict(model, arrays): say kind='weights' or kind='gradients' for a "
                "collection that is neither model.params nor a Gradients (PyTorch's two biases "
                "map differently for the two)"
            )
    if kind not in ("weights", "gradients"):
        raise ValueError(f"kind must be 'weights' or 'gradients', got {kind!r}")
    missing = [name for name in model.param_shapes() if name not in arrays]
    if missing:
        raise KeyError(f"arrays lacks the model's parameter(s) {missing}")
    out: dict[str, np.ndarray] = {}
    for layer in model.layers:
        local = layer.take(arrays)
        suffix = _torch_suffix(layer.index, layer.reverse)
        for stem, array in cell_map.to_torch(local, kind).items():
            out[f"rnn.{stem}{suffix}"] = array
    out["head.weight"] = arrays["U"]
    out["head.bias"] = arrays["b_y"]
    return out


def params_from_state_dict(model: RNN, tensors: Mapping[str, Any]) -> Params:
    """The model's parameters (weights) from a torch-named state dict (``rnn.*``, ``head.*``).

    Raises:
        InteropError: a name is missing or a shape differs from the model's structure.
    """
    cell_map = _cell_map(model)

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise InteropError(
                f"the state dict has no {name!r} (it holds {sorted(tensors)[:8]}…); "
                f"expected {model!r}"
            )
        value = tensors[name]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        return np.asarray(array, dtype=model.dtype)

    params = Params(U=get("head.weight"))
    for layer in model.layers:
        suffix = _torch_suffix(layer.index, layer.reverse)
        local = cell_map.from_torch({stem: get(f"rnn.{stem}{suffix}") for stem in TORCH_STEMS})
        for name, array in local.items():
            params[layer.names[name]] = array
    params["b_y"] = get("head.bias")
    expected = model.param_shapes()
    ordered = Params({name: params[name] for name in expected})
    for name, shape in expected.items():
        if ordered[name].shape != shape:
            raise InteropError(
                f"{name}: the state dict gives shape {ordered[name].shape}, the model "
                f"{model!r} needs {shape}"
            )
    return ordered


# -- modules -------------------------------------------------------------------------------------


def from_torch(rnn: Any, head: Any, output: str = "softmax") -> RNN:
    """The bptt model computing exactly ``head(rnn(x)[0])`` followed by the head's f_y.

    Args:
        rnn: a ``torch.nn.RNN`` (any ``num_layers``, ``nonlinearity``, ``bidirectional``),
            or a module of another registered cell (``nn.GRU``, ``nn.LSTM``).
        head: a ``torch.nn.Linear(D·H, O)``.
        output: the head's f_y and loss (``softmax``, ``sigmoid``, ``identity``).

    The model has the torch weights' dtype (float32 or float64) and takes time-major inputs
    (T, B, I) (or ids (T, B), meaning one-hot inputs).

    Raises:
        InteropError: an unsupported module or option (``proj_size``, a head that does not
            fit the RNN's width).
    """
    torch = _require_torch()
    cells = {m.module: name for name, m in TORCH_CELLS.items() if m.module is not None}
    kind = type(rnn).__name__
    if not isinstance(rnn, torch.nn.RNNBase) or kind not in cells:
        raise InteropError(
            f"from_torch needs one of torch.nn.{', torch.nn.'.join(sorted(cells))}, got {kind}"
        )
    if getattr(rnn, "proj_size", 0):
        raise InteropError("LSTM projections (proj_size > 0) have no bptt counterpart")
    if not isinstance(head, torch.nn.Linear):
        raise InteropError(f"head must be a torch.nn.Linear, got {type(head).__name__}")
    D = 2 if rnn.bidirectional else 1
    if head.in_features != D * rnn.hidden_size:
        raise InteropError(
            f"head.in_features is {head.in_features}, but the RNN emits "
            f"{D} × {rnn.hidden_size} = {D * rnn.hidden_size} features"
        )
    dtype = np.dtype(str(rnn.weight_hh_l0.dtype).removeprefix("torch."))
    structure: dict[str, Any] = {
        "input_size": rnn.input_size,
        "hidden_size": rnn.hidden_size,
        "output_size": head.out_features,
        "cell": cells[kind],
        "num_layers": rnn.num_layers,
        "bidirectional": bool(rnn.bidirectional),
        "output": output,
        "dtype": dtype,
    }
    if kind == "RNN":
        structure["hidden_activation"] = rnn.nonlinearity
    model = build_model(**structure)
    tensors: dict[str, Any] = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}
    if not rnn.bias:  # no biases: zeros
        for layer in model.layers:
            suffix = _torch_suffix(layer.index, layer.reverse)
            shape = (rnn.weight_hh_l0.shape[0],)
            for stem in ("bias_ih", "bias_hh"):
                tensors[f"rnn.{stem}{suffix}"] = np.zeros(shape, dtype=dtype)
    tensors["head.weight"] = head.weight
    tensors["head.bias"] = head.bias if head.bias is not None else np.zeros(head.out_features)
    model.params = params_from_state_dict(model, tensors)
    return model


def torch_modules(structure: Mapping[str, Any]) -> tuple[Any, Any]:
    """Fresh ``(rnn, head)`` torch modules of a model's structure (:meth:`RNN.structure`)."""
    torch = _require_torch()
    cell = structure.get("cell", "elman")
    if cell not in TORCH_CELLS or TORCH_CELLS[cell].module is None:
        raise InteropError(f"the {cell} cell has no PyTorch counterpart registered")
    module = getattr(torch.nn, str(TORCH_CELLS[cell].module))
    dtype = getattr(torch, np.dtype(structure["dtype"]).name)
    kwargs: dict[str, Any] = {
        "input_size": structure["input_size"],
        "hidden_size": structure["hidden_size"],
        "num_layers": structure.get("num_layers", 1),
        "bidirectional": structure.get("bidirectional", False),
        "dtype": dtype,
    }
    if cell == "elman":
        kwargs["nonlinearity"] = structure.get("hidden_activation", "tanh")
    rnn = module(**kwargs)
    D = 2 if kwargs["bidirectional"] else 1
    head = torch.nn.Linear(D * structure["hidden_size"], structure["output_size"], dtype=dtype)
    return rnn, head


def to_torch(model: RNN) -> tuple[Any, Any]:
    """``(rnn, head)``: a ``torch.nn.RNN`` (or GRU/LSTM) and ``torch.nn.Linear`` computing the
    model's function (logits; apply the head's f_y as the model's ``output`` says).

    Raises:
        InteropError: the cell or activation has no PyTorch counterpart.
    """
    torch = _require_torch()
    _cell_map(model)
    rnn, head = torch_modules(model.structure())
    tensors = state_dict(model)
    with torch.no_grad():
        for name, value in rnn.state_dict(keep_vars=True).items():
            value.copy_(torch.from_numpy(np.ascontiguousarray(tensors[f"rnn.{name}"])))
        head.weight.copy_(torch.from_numpy(np.ascontiguousarray(tensors["head.weight"])))
        head.bias.copy_(torch.from_numpy(np.ascontiguousarray(tensors["head.bias"])))
    return rnn, head


# -- files ---------------------------------------------------------------------------------------


def save_torch_state(model: RNN, path: str | os.PathLike[str]) -> Path:
    """Write the torch-named state dict as safetensors, the constructor arguments in its header.

    The header's metadata key ``bptt`` holds JSON: ``{"format": "bptt-torch-state-dict",
    "structure": model.structure(), "rnn": {torch.nn constructor arguments}, "module": "RNN",
    "head": {"in_features", "out_features"}}``. Load in PyTorch with
    ``safetensors.torch.load_file`` and ``module.load_state_dict``; back into bptt with
    :func:`load_torch_state` (or ``bptt train --init-from``).
    """
    from safetensors.numpy import save

    cell_map = _cell_map(model)
    tensors = {k: np.ascontiguousarray(v) for k, v in state_dict(model).items()}
    structure = model.structure()
    rnn_args: dict[str, Any] = {
        "input_size": model.input_size,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "bidirectional": model.bidirectional,
    }
    if model.cell == "elman":
        rnn_args["nonlinearity"] = model.hidden_activation
    meta = {
        "format": TORCH_STATE_FORMAT,
        "module": cell_map.module,
        "rnn": rnn_args,
        "head": {
            "in_features": model.num_directions * model.hidden_size,
            "out_features": model.output_size,
        },
        "structure": structure,
    }
    data = save(tensors, metadata={"bptt": json.dumps(meta, sort_keys=True)})
    out = Path(path)
    atomic_write_bytes(out, data)
    return out


def read_torch_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header metadata, tensors) of a torch state-dict safetensors file.

    Raises:
        InteropError: not a readable safetensors file.
    """
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise ImportError("reading safetensors needs: pip install 'bptt[io]'") from err
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise InteropError(f"{path} is not a readable safetensors state dict: {err}") from None
    try:
        meta = json.loads(raw["bptt"]) if "bptt" in raw else {}
    except json.JSONDecodeError as err:
        raise InteropError(f"{path}: its 'bptt' header is not JSON: {err}") from None
    return meta, tensors


def load_torch_state(path: str | os.PathLike[str]) -> RNN:
    """The model saved by :func:`save_torch_state` (structure from the header).

    Raises:
        InteropError: the file has no bptt header or does not fit its structure.
    """
    meta, tensors = read_torch_state(path)
    if meta.get("format") != TORCH_STATE_FORMAT or "structure" not in meta:
        raise InteropError(
            f"{path} has no bptt structure in its header; build the model yourself and use "
            "params_from_state_dict(model, tensors)"
        )
    model = build_model(**{**meta["structure"], "seed": 0})
    model.params = params_from_state_dict(model, tensors)
    return model


# -- ONNX ----------------------------------------------------------------------------------------

ONNX_OPSET = 17
_ONNX_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid", "identity": "Affine"}


def onnx_model(model: RNN, *, ids: bool = False, initial_state: bool = False) -> Any:
    """An ONNX graph (``onnx.ModelProto``) of ``model.predict``, one recurrent operator a layer.

    Inputs: ``x``, (T, B, I) floats of the model's dtype or, with ``ids``, (T, B) int64 token
    ids; with ``initial_state``, ``h0`` in the model's state layout ((B, H) or (L·D, B, H);
    and ``c0`` for the LSTM). Outputs: ``y_hat`` (T, B, O) and ``h_last`` in the layout of
    ``h0`` (and ``c_last``). T and B are dynamic.

    Each layer is the ONNX ``RNN`` (``GRU``, ``LSTM``) operator with its direction
    (``forward`` or ``bidirectional``); its output Y (T, D, B, H) is transposed to (T, B, D·H)
    for the next layer and the head. Token ids become one-hot rows inside the graph.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as err:
        raise ImportError("ONNX export needs onnx: pip install 'bptt[onnx]'") from err
    cell_map = _cell_map(model, torch=False)
    if model.state_parts != 1 and cell_map.onnx_op != "LSTM":
        raise InteropError(f"no ONNX mapping for the state of the {model.cell} cell")
    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    H, D, L = model.hidden_size, model.num_directions, model.num_layers
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    inputs: list[Any] = []
    if ids:
        inputs.append(helper.make_tensor_value_info("x", TensorProto.INT64, ["T", "B"]))
        # one-hot as Cast(Equal(x[..., None], [0, 1, …, I−1])): (T, B, I)
        vocab = const("vocab", np.arange(model.input_size, dtype=np.int64))
        last_axis = const("last_axis", np.array([-1]))
        nodes.append(helper.make_node("Unsqueeze", ["x", last_axis], ["x_col"]))
        nodes.append(helper.make_node("Equal", ["x_col", vocab], ["x_hot"]))
        nodes.append(helper.make_node("Cast", ["x_hot"], ["x_dense"], to=elem))
        layer_in = "x_dense"
    else:
        inputs.append(helper.make_tensor_value_info("x", elem, ["T", "B", model.input_size]))
        layer_in = "x"
    state_shape: list[str | int | None] = ["B", H] if model.simple else [L * D, "B", H]
    parts = ["h0"] if model.state_parts == 1 else ["h0", "c0"]
    if initial_state:
        for part in parts:
            inputs.append(helper.make_tensor_value_info(part, elem, state_shape))
        if model.simple:
            for part in parts:
                nodes.append(
                    helper.make_node(
                        "Unsqueeze", [part, const(f"{part}_axis", np.array([0]))], [f"{part}_all"]
                    )
                )
    finals: dict[str, list[str]] = {part: [] for part in parts}
    act = _ONNX_ACTIVATIONS[model.hidden_activation] if model.cell == "elman" else None
    for index in range(L):
        layers = model.layers[index * D : index * D + D]
        Ws, Rs, Bs = zip(
            *(cell_map.onnx_weights(layer.take(model.params)) for layer in layers), strict=True
        )
        op_inputs = [
            layer_in,
            const(f"W_{index}", np.stack(Ws)),
            const(f"R_{index}", np.stack(Rs)),
            const(f"B_{index}", np.stack(Bs)),
            "",  # sequence_lens: every sequence runs all T steps
        ]
        if initial_state:
            for part in parts:
                source = f"{part}_all" if model.simple else part
                start = const(f"{part}_start_{index}", np.array([index * D]))
                stop = const(f"{part}_stop_{index}", np.array([index * D + D]))
                nodes.append(helper.make_node("Slice", [source, start, stop], [f"{part}_{index}"]))
                op_inputs.append(f"{part}_{index}")
        op_outputs = [f"Y_{index}", f"Yh_{index}"] + ([f"Yc_{index}"] if len(parts) > 1 else [])
        attrs: dict[str, Any] = {
            "hidden_size": H,
            "direction": "bidirectional" if D == 2 else "forward",
        }
        if act is not None:
            attrs["activations"] = [act] * D
            if act == "Affine":
                attrs["activation_alpha"] = [1.0] * D
                attrs["activation_beta"] = [0.0] * D
        attrs.update(cell_map.onnx_attributes)  # the GRU's linear_before_reset
        nodes.append(helper.make_node(cell_map.onnx_op, op_inputs, op_outputs, **attrs))
        finals["h0"].append(f"Yh_{index}")
        if len(parts) > 1:
            finals["c0"].append(f"Yc_{index}")
        # Y (T, D, B, H) → (T, B, D, H) → (T, B, D·H)
        nodes.append(
            helper.make_node("Transpose", [f"Y_{index}"], [f"Yt_{index}"], perm=[0, 2, 1, 3])
        )
        shape = const(f"flat_{index}", np.array([0, 0, D * H], dtype=np.int64))
        nodes.append(helper.make_node("Reshape", [f"Yt_{index}", shape], [f"out_{index}"]))
        layer_in = f"out_{index}"
    # head: z = top U^T + b_y, ŷ = f_y(z)
    nodes.append(helper.make_node("MatMul", [layer_in, const("U_T", model.params["U"].T)], ["zU"]))
    nodes.append(helper.make_node("Add", ["zU", const("b_y", model.params["b_y"])], ["z"]))
    head_op = {"softmax": "Softmax", "sigmoid": "Sigmoid", "identity": "Identity"}[model.output]
    extra: dict[str, Any] = {"axis": -1} if head_op == "Softmax" else {}
    nodes.append(helper.make_node(head_op, ["z"], ["y_hat"], **extra))
    out_names = ["h_last"] if len(parts) == 1 else ["h_last", "c_last"]
    for part, out_name in zip(parts, out_names, strict=True):
        nodes.append(helper.make_node("Concat", finals[part], [f"{out_name}_all"], axis=0))
        if model.simple:
            axis = const(f"{out_name}_axis", np.array([0]))
            nodes.append(helper.make_node("Squeeze", [f"{out_name}_all", axis], [out_name]))
        else:
            nodes.append(helper.make_node("Identity", [f"{out_name}_all"], [out_name]))
    outputs = [helper.make_tensor_value_info("y_hat", elem, ["T", "B", model.output_size])]
    outputs += [helper.make_tensor_value_info(name, elem, state_shape) for name in out_names]
    graph = helper.make_graph(nodes, "bptt", inputs, outputs, initializer=inits)
    onnx_proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="bptt"
    )
    onnx_proto.ir_version = min(onnx_proto.ir_version, 9)  # readable by current runtimes
    onnx.checker.check_model(onnx_proto)
    return onnx_proto


def export_onnx(
    model: RNN, path: str | os.PathLike[str], *, ids: bool = False, initial_state: bool = False
) -> Path:
    """Write the ONNX graph of ``model.predict`` to ``path`` (atomically).

    Args:
        model: any model whose cell has an ONNX operator (Elman: ``RNN``).
        path: the ``.onnx`` file.
        ids: the input ``x`` is (T, B) int64 token ids (one-hot inside the graph) instead of
            (T, B, I) floats.
        initial_state: add the input ``h0`` (and ``c0`` for the LSTM); without it the graph
            starts from zeros.

    Raises:
        InteropError: a cell or activation with no ONNX counterpart.
        ImportError: the ``onnx`` package is missing.
    """
    proto = onnx_model(model, initial_state=initial_state, ids=ids)
    out = Path(path)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


# -- starting weights ----------------------------------------------------------------------------


def initial_weights(path: str | os.PathLike[str], model: RNN) -> Params:
    """Weights for ``model`` from a bptt checkpoint (run directory or file), a torch-named
    safetensors state dict (``bptt export --format torch``, or a PyTorch user's own
    ``{"rnn." + k: v for k, v in rnn.state_dict().items()} | {"head.weight": …}``) or an
    ``.onnx`` graph that :func:`from_onnx` reads.

    Raises:
        InteropError: the file's model does not have ``model``'s structure (both are named).
        CheckpointError / OSError: an unreadable file.
    """
    p = Path(path)
    if p.suffix == ".onnx":
        return onnx_initial_weights(p, model)
    if p.is_dir() or p.suffix == ".npz" or _is_bptt_checkpoint(p):
        ckpt = load_checkpoint(p)
        theirs = {k: v for k, v in ckpt.model.structure().items() if k != "dtype"}
        ours = {k: v for k, v in model.structure().items() if k != "dtype"}
        if theirs != ours:
            differ = sorted(k for k in ours if theirs.get(k) != ours[k])
            raise InteropError(
                f"--init-from {p}: the checkpoint's model differs in {differ}: it is "
                f"{ckpt.model!r}, the configuration builds {model!r}"
            )
        return ckpt.model.params.map(lambda a: a.astype(model.dtype))
    _, tensors = read_torch_state(p)
    try:
        return params_from_state_dict(model, tensors)
    except InteropError as err:
        raise InteropError(f"--init-from {p}: {err}") from None


def _is_bptt_checkpoint(path: Path) -> bool:
    """Whether a safetensors file carries a bptt checkpoint header (not a torch state dict)."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(min(n, 1 << 24))
    except OSError:
        return False
    return b'"bptt-checkpoint' in header or b"bptt-checkpoint" in header


# the importers read the names above (imported last: their modules import this package)
from .keras_import import from_keras as from_keras  # noqa: E402
from .keras_import import to_keras as to_keras  # noqa: E402
from .onnx_import import from_onnx as from_onnx  # noqa: E402
from .onnx_import import onnx_initial_weights  # noqa: E402
