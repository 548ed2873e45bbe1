"""Each registered cell beside its ``torch.nn`` module, with the weights mapped by hand.

PyTorch keeps two bias vectors per layer; the equations need only their sum except for the
GRU's b_hn (the reset gate multiplies W_hn h + b_hn), so:

    elman   V = weight_ih   W = weight_hh   b_h = bias_ih + bias_hh
    gru     V = weight_ih   W = weight_hh   b = bias_ih + [bias_hh_r, bias_hh_z, 0]
            b_hn = bias_hh_n
    lstm    V = weight_ih   W = weight_hh   b = bias_ih + bias_hh

and the gradients map back as dV = ∂/∂weight_ih, dW = ∂/∂weight_hh, db = ∂/∂bias_ih,
db_hn = ∂/∂bias_hh_n. Written independently of bptt's code (no interop module is used).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bptt import RNN

MODULES: dict[str, Callable[..., torch.nn.Module]] = {
    "elman": torch.nn.RNN,
    "gru": torch.nn.GRU,
    "lstm": torch.nn.LSTM,
}
STEP_MODULES: dict[str, Callable[..., torch.nn.Module]] = {
    "elman": torch.nn.RNNCell,
    "gru": torch.nn.GRUCell,
    "lstm": torch.nn.LSTMCell,
}


def cell_params_from_torch(cell: str, w: dict[str, np.ndarray], H: int) -> dict[str, np.ndarray]:
    """Our cell's local parameters from PyTorch's four arrays (weight_ih, weight_hh, bias_ih,
    bias_hh)."""
    out = {"V": w["weight_ih"], "W": w["weight_hh"]}
    if cell == "elman":
        out["b_h"] = w["bias_ih"] + w["bias_hh"]
    elif cell == "gru":
        b = w["bias_ih"].copy()
        b[: 2 * H] += w["bias_hh"][: 2 * H]
        out["b"], out["b_hn"] = b, w["bias_hh"][2 * H :].copy()
    elif cell == "lstm":
        out["b"] = w["bias_ih"] + w["bias_hh"]
    else:
        raise KeyError(f"no torch mapping for cell {cell!r}: add it to tests/torch_cells.py")
    return out


def cell_grads_from_torch(cell: str, g: dict[str, np.ndarray], H: int) -> dict[str, np.ndarray]:
    """Our cell's local gradients from PyTorch's gradients of its four arrays."""
    out = {"V": g["weight_ih"], "W": g["weight_hh"]}
    if cell == "elman":
        out["b_h"] = g["bias_ih"]
    elif cell == "gru":
        out["b"], out["b_hn"] = g["bias_ih"], g["bias_hh"][2 * H :]
    elif cell == "lstm":
        out["b"] = g["bias_ih"]
    else:
        raise KeyError(f"no torch mapping for cell {cell!r}: add it to tests/torch_cells.py")
    return out


def torch_from_cell_params(cell: str, p: dict[str, np.ndarray], H: int) -> dict[str, np.ndarray]:
    """PyTorch's four arrays for our cell parameters (linear: also maps tangents)."""
    if cell == "elman":
        b_ih, b_hh = p["b_h"], np.zeros_like(p["b_h"])
    elif cell == "gru":
        b_ih = p["b"]
        b_hh = np.concatenate([np.zeros(2 * H, dtype=p["b"].dtype), p["b_hn"]])
    elif cell == "lstm":
        b_ih, b_hh = p["b"], np.zeros_like(p["b"])
    else:
        raise KeyError(f"no torch mapping for cell {cell!r}: add it to tests/torch_cells.py")
    return {"weight_ih": p["V"], "weight_hh": p["W"], "bias_ih": b_ih, "bias_hh": b_hh}


def torch_module(model: RNN, seed: int) -> torch.nn.Module:
    """A float64 ``nn.RNN/GRU/LSTM`` shaped as the model's layers, randomly initialised."""
    torch.manual_seed(seed)
    kwargs = {"nonlinearity": model.hidden_activation} if model.cell == "elman" else {}
    return MODULES[model.cell](
        model.input_size,
        model.hidden_size,
        num_layers=model.num_layers,
        bidirectional=model.bidirectional,
        dtype=torch.float64,
        **kwargs,
    )


def _torch_arrays(module: torch.nn.Module, suffix: str, grad: bool) -> dict[str, np.ndarray]:
    out = {}
    for key in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        t = getattr(module, key + suffix)
        out[key] = (t.grad if grad else t.detach()).numpy().copy()
    return out


def load_from_torch(model: RNN, module: torch.nn.Module) -> None:
    """Copy the module's weights into the model's recurrent parameters (by hand)."""
    for layer in model.layers:
        torch_suffix = f"_l{layer.index}" + ("_reverse" if layer.reverse else "")
        ours = cell_params_from_torch(
            model.cell, _torch_arrays(module, torch_suffix, False), model.hidden_size
        )
        for local, array in ours.items():
            model.params[layer.names[local]][...] = array


def grads_from_torch(model: RNN, module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The module's weight gradients under the model's parameter names."""
    out = {}
    for layer in model.layers:
        torch_suffix = f"_l{layer.index}" + ("_reverse" if layer.reverse else "")
        ours = cell_grads_from_torch(
            model.cell, _torch_arrays(module, torch_suffix, True), model.hidden_size
        )
        for local, array in ours.items():
            out[layer.names[local]] = array
    return out
