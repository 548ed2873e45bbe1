"""Keras ⇄ bptt: ``SimpleRNN``, ``GRU`` (both ``reset_after``) and ``LSTM`` layers, stacked and
``Bidirectional``, with an optional ``Dense`` head.

Keras stores kernels as (inputs, gates·units) and stacks its gates z, r, h (GRU) and i, f, c, o
(LSTM), computing (batch-major)

    SimpleRNN  h_t = f(x_t K + h_{t-1} R + b)
    GRU        z, r = σ(x_t K_{z,r} + h_{t-1} R_{z,r} + …)
               h̃ = tanh(x_t K_h + b_h + r ⊙ (h_{t-1} R_h + b'_h))    reset_after=True
               h̃ = tanh(x_t K_h + (r ⊙ h_{t-1}) R_h + b_h)            reset_after=False
               h_t = z ⊙ h_{t-1} + (1 − z) ⊙ h̃
    LSTM       i, f, o = σ(…), c̃ = tanh(…), c_t = f c_{t-1} + i c̃, h_t = o tanh(c_t)

so V = Kᵀ and W = Rᵀ with the GRU's blocks reordered to r, z, n (``gru`` for reset_after=True,
its input bias row plus the recurrent one for r and z, b_hn = b'_h; ``gru_reset_before`` for
reset_after=False), the LSTM's kept (i, f, c, o is bptt's i, f, g, o), and U = Dense kernelᵀ.
Keras is imported only by :func:`to_keras`: :func:`from_keras` reads the layers it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..model import RNN, build_model
from ..params import Params
from . import InteropError

RECURRENT_LAYERS = {"SimpleRNN": "elman", "GRU": "gru", "LSTM": "lstm"}
_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "sigmoid": "sigmoid", "linear": "identity"}
_HEADS = {"linear": "identity", "softmax": "softmax", "sigmoid": "sigmoid"}
_GRU_ORDER = (1, 0, 2)  # Keras z, r, h ⇄ bptt r, z, n (its own inverse)


def _blocks(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    parts = np.split(a, len(order), axis=0)
    return np.concatenate([parts[k] for k in order], axis=0)


def _name(layer: Any) -> str:
    return f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__})"


def _activation(value: Any) -> str:
    """A Keras activation (name or function) as its name."""
    return value if isinstance(value, str) else getattr(value, "__name__", str(value))


def _cell_of(layer: Any, backward_half: bool = False) -> tuple[str, str]:
    """(bptt cell, hidden activation) of one Keras recurrent layer, refused where it differs
    (``backward_half``: a Bidirectional's backward layer, which goes backwards by design)."""
    kind = type(layer).__name__
    config = layer.get_config()
    for option in ("stateful",) if backward_half else ("stateful", "go_backwards"):
        if config.get(option):
            raise InteropError(f"{_name(layer)}: {option}=True is not supported")
    activation = _activation(config.get("activation", "tanh"))
    if kind == "SimpleRNN":
        if activation not in _ACTIVATIONS:
            raise InteropError(
                f"{_name(layer)}: activation {activation!r}; bptt has {sorted(_ACTIVATIONS)}"
            )
        return "elman", _ACTIVATIONS[activation]
    recurrent = _activation(config.get("recurrent_activation", "sigmoid"))
    if activation != "tanh" or recurrent != "sigmoid":
        raise InteropError(
            f"{_name(layer)}: activation={activation!r}, recurrent_activation={recurrent!r}; "
            "bptt's gated cells use tanh and sigmoid"
        )
    if kind == "GRU":
        return ("gru" if config.get("reset_after", True) else "gru_reset_before"), "tanh"
    return "lstm", "tanh"


def _local_weights(layer: Any, cell: str, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The cell's local parameters from a Keras recurrent layer's (kernel, recurrent, bias)."""
    weights = [np.asarray(w) for w in layer.get_weights()]
    kernel, recurrent = weights[0], weights[1]  # (I, kH), (H, kH)
    H = recurrent.shape[0]
    bias = weights[2] if len(weights) > 2 else None
    V, W = kernel.T, recurrent.T  # (kH, I), (kH, H)
    if cell == "elman":
        return {"V": V, "W": W, "b_h": np.zeros(H, dtype) if bias is None else bias}
    if cell == "lstm":
        return {"V": V, "W": W, "b": np.zeros(4 * H, dtype) if bias is None else bias}
    V, W = _blocks(V, _GRU_ORDER), _blocks(W, _GRU_ORDER)
    if cell == "gru_reset_before":
        b = np.zeros(3 * H, dtype) if bias is None else _blocks(bias, _GRU_ORDER)
        return {"V": V, "W": W, "b": b}
    if bias is None:
        bias = np.zeros((2, 3 * H), dtype)
    b = _blocks(bias[0], _GRU_ORDER)
    b[: 2 * H] += _blocks(bias[1], _GRU_ORDER)[: 2 * H]
    return {"V": V, "W": W, "b": b, "b_hn": bias[1][2 * H :]}


def _layers_of(layer_or_model: Any) -> list[Any]:
    layers = getattr(layer_or_model, "layers", None)
    if layers is None:
        return [layer_or_model]
    inputs, outputs = (
        getattr(layer_or_model, "inputs", None),
        getattr(layer_or_model, "outputs", None),
    )
    if inputs is not None and (len(inputs) != 1 or len(outputs or ()) != 1):
        raise InteropError("from_keras reads a model with one input and one output")
    return [layer for layer in layers if type(layer).__name__ != "InputLayer"]


def from_keras(layer_or_model: Any, *, output: str | None = None) -> RNN:
    """The bptt model computing a Keras recurrent layer, or a chain of them with a Dense head.

    ``ŷ_t = f_y(U x^L_t + b_y)``, x^L the top layer's outputs; without a ``Dense`` layer the
    model has the identity head U = I, b_y = 0 (its outputs are the top layer's).

    Args:
        layer_or_model: a ``SimpleRNN``/``GRU``/``LSTM`` or ``Bidirectional`` layer (built), or
            a ``Sequential``/functional model chaining such layers (one cell type and width,
            ``return_sequences=True`` below the top, ``Bidirectional`` with
            ``merge_mode="concat"``; ``Dropout`` between them, the identity at inference) and
            at most one final ``Dense``.
        output: the head's f_y for a linear ``Dense`` (or none): ``softmax``, ``sigmoid`` or
            ``identity`` (the default); a softmax/sigmoid ``Dense`` fixes it.

    Returns:
        A model with the layers' dtype taking time-major inputs (T, B, I): Keras's (B, T, I)
        with the first two axes swapped. Where the top layer has ``return_sequences=False``,
        Keras's output is the model's output at the last step.

    Raises:
        InteropError: a layer or option with no bptt counterpart (named).
    """
    layers = _layers_of(layer_or_model)
    for layer in layers:
        weighted = type(layer).__name__ in {*RECURRENT_LAYERS, "Bidirectional", "Dense"}
        if weighted and not layer.get_weights():
            raise InteropError(f"{_name(layer)} has no weights yet: build it (call it on an input)")
    recurrent: list[tuple[Any, list[Any]]] = []  # (Keras layer, its direction layers)
    dense = None
    for index, layer in enumerate(layers):
        kind = type(layer).__name__
        if dense is not None:
            raise InteropError(f"{_name(layer)}: nothing may follow the Dense head")
        if kind == "Bidirectional":
            if layer.merge_mode != "concat":
                raise InteropError(
                    f"{_name(layer)}: merge_mode={layer.merge_mode!r}; bptt concatenates the "
                    "directions (merge_mode='concat')"
                )
            backward = layer.backward_layer
            if not backward.go_backwards:
                raise InteropError(f"{_name(layer)}: its backward layer does not go backwards")
            recurrent.append((layer, [layer.forward_layer, backward]))
        elif kind in RECURRENT_LAYERS:
            recurrent.append((layer, [layer]))
        elif kind == "Dropout" and recurrent:
            continue  # the identity at inference
        elif kind == "Dense" and recurrent:
            dense = layer
        else:
            raise InteropError(
                f"{_name(layer)} (position {index}) is not supported; from_keras reads "
                f"{', '.join(RECURRENT_LAYERS)} and Bidirectional layers and a final Dense"
            )
    if not recurrent:
        raise InteropError("no SimpleRNN, GRU or LSTM layer to import")
    cells = []
    for position, (outer, directions) in enumerate(recurrent):
        for d, layer in enumerate(directions):
            cells.append(_cell_of(layer, backward_half=d == 1))
            if not layer.get_config().get("return_sequences", False):
                if position < len(recurrent) - 1:
                    raise InteropError(
                        f"{_name(outer)}: return_sequences=False below the top layer"
                    )
                if len(directions) == 2:
                    raise InteropError(
                        f"{_name(outer)}: a Bidirectional top layer with return_sequences=False "
                        "(its backward half ends at the first step)"
                    )
    if len(set(cells)) != 1:
        raise InteropError(f"the layers mix cells {sorted(set(cells))}; a bptt model has one")
    cell, activation = cells[0]
    widths = {np.asarray(d.get_weights()[1]).shape[0] for _, ds in recurrent for d in ds}
    counts = {len(ds) for _, ds in recurrent}
    if len(widths) != 1 or len(counts) != 1:
        raise InteropError(
            "the layers differ in units or directions; a bptt model has one width and all "
            "layers uni- or bidirectional"
        )
    H, D = widths.pop(), counts.pop()
    first_kernel = np.asarray(recurrent[0][1][0].get_weights()[0])
    dtype = first_kernel.dtype
    if dtype not in (np.float32, np.float64):
        raise InteropError(f"weights of dtype {dtype}; bptt needs float32 or float64")
    head_output = "identity"
    if dense is not None:
        act = _activation(dense.get_config().get("activation", "linear"))
        if act not in _HEADS:
            raise InteropError(f"{_name(dense)}: activation {act!r}; bptt has {sorted(_HEADS)}")
        head_output = _HEADS[act]
        dense_weights = [np.asarray(w) for w in dense.get_weights()]
        U = dense_weights[0].T  # (O, D·H)
        b_y = dense_weights[1] if len(dense_weights) > 1 else np.zeros(U.shape[0], dtype)
        if U.shape[1] != D * H:
            raise InteropError(f"{_name(dense)}: reads {U.shape[1]} features, not {D * H}")
    else:
        U, b_y = np.eye(D * H, dtype=dtype), np.zeros(D * H, dtype=dtype)
    if output is not None and head_output != "identity" and output != head_output:
        raise InteropError(f"output={output!r}, but the Dense layer applies {head_output}")
    structure: dict[str, Any] = {
        "input_size": int(first_kernel.shape[0]),
        "hidden_size": H,
        "output_size": int(U.shape[0]),
        "cell": cell,
        "num_layers": len(recurrent),
        "bidirectional": D == 2,
        "output": head_output if head_output != "identity" else (output or "identity"),
        "dtype": dtype,
    }
    if cell == "elman":
        structure["hidden_activation"] = activation
    model = build_model(**structure, seed=0)
    params = Params(U=np.array(U, dtype=dtype))
    for position, (_, directions) in enumerate(recurrent):
        for d, layer in enumerate(directions):
            names = model.layers[position * D + d].names
            for local, array in _local_weights(layer, cell, dtype).items():
                params[names[local]] = np.array(array, dtype=dtype)
    params["b_y"] = np.array(b_y, dtype=dtype)
    model.params = Params({name: params[name] for name in model.param_shapes()})
    model.validated_params()
    return model


def to_keras(model: RNN) -> Any:
    """A ``keras.Sequential`` computing the model's function on batch-major (B, T, I) inputs:
    its recurrent layers (``Bidirectional`` when the model is), then ``Dense`` with the head's
    f_y (linear for ``identity``).

    Raises:
        ImportError: Keras is missing (``pip install 'bptt[keras]'``, with a backend: JAX).
        InteropError: token-id models aside, a cell without a Keras layer (none today).
    """
    try:
        import keras
    except ImportError as err:
        raise ImportError(
            "Keras interop needs keras and a backend: pip install 'bptt[keras]' and set "
            "KERAS_BACKEND=jax"
        ) from err
    kinds = {v: k for k, v in RECURRENT_LAYERS.items()} | {"gru_reset_before": "GRU"}
    H, D = model.hidden_size, model.num_directions
    dtype = model.dtype.name
    stack: list[Any] = [keras.Input((None, model.input_size), dtype=dtype)]
    for _ in range(model.num_layers):
        options: dict[str, Any] = {"return_sequences": True, "dtype": dtype}
        if model.cell == "elman":
            act = model.hidden_activation
            options["activation"] = "linear" if act == "identity" else act
        if model.cell.startswith("gru"):
            options["reset_after"] = model.cell == "gru"
        layer = getattr(keras.layers, kinds[model.cell])(H, **options)
        stack.append(keras.layers.Bidirectional(layer) if D == 2 else layer)
    head = {"identity": "linear", "softmax": "softmax", "sigmoid": "sigmoid"}[model.output]
    stack.append(keras.layers.Dense(model.output_size, activation=head, dtype=dtype))
    net = keras.Sequential(stack)
    for position, keras_layer in enumerate(net.layers[:-1]):
        halves: Sequence[Any] = (
            [keras_layer.forward_layer, keras_layer.backward_layer] if D == 2 else [keras_layer]
        )
        for d, half in enumerate(halves):
            local = model.layers[position * D + d].take(model.params)
            half.set_weights(_keras_weights(model.cell, local, H))
    net.layers[-1].set_weights([model.params["U"].T, model.params["b_y"]])
    return net


def _keras_weights(cell: str, p: dict[str, np.ndarray], H: int) -> list[np.ndarray]:
    """Keras's (kernel, recurrent_kernel, bias) for one direction's local parameters."""
    if cell == "elman":
        return [p["V"].T, p["W"].T, p["b_h"]]
    if cell == "lstm":
        return [p["V"].T, p["W"].T, p["b"]]
    kernel, rec = _blocks(p["V"], _GRU_ORDER).T, _blocks(p["W"], _GRU_ORDER).T
    if cell == "gru_reset_before":
        return [kernel, rec, _blocks(p["b"], _GRU_ORDER)]
    b_rec = np.concatenate([np.zeros(2 * H, dtype=p["b"].dtype), p["b_hn"]])  # r, z, n
    return [kernel, rec, np.stack([_blocks(p["b"], _GRU_ORDER), _blocks(b_rec, _GRU_ORDER)])]


__all__ = ["from_keras", "to_keras"]
