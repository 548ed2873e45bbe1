"""Each registered cell beside its ``torch.nn`` module, with the weights mapped by hand.

PyTorch keeps two bias vectors per layer; the equations need only their sum except for the
GRU's b_hn (the reset gate multiplies W_hn h + b_hn), so:

    elman   V = weight_ih   W = weight_hh   b_h = bias_ih + bias_hh
    gru     V = weight_ih   W = weight_hh   b = bias_ih + [bias_hh_r, bias_hh_z, 0]
            b_hn = bias_hh_n
    lstm    V = weight_ih   W = weight_hh   b = bias_ih + bias_hh
    gru_reset_before   as lstm, against :class:`GRUResetBefore` below (PyTorch has no such
            GRU: it is written here from ONNX's linear_before_reset=0 equations)

and the gradients map back as dV = ∂/∂weight_ih, dW = ∂/∂weight_hh, db = ∂/∂bias_ih,
db_hn = ∂/∂bias_hh_n. Written independently of bptt's code (no interop module is used).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bptt import RNN

TORCH_STEMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def gru_reset_before_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """h' of the GRU with the reset gate before the recurrent product (see below)."""
    w_r, w_z, w_n = weight_hh.chunk(3, 0)
    b_r, b_z, b_n = bias_hh.chunk(3)
    i_r, i_z, i_n = (x @ weight_ih.T + bias_ih).chunk(3, 1)
    r = torch.sigmoid(i_r + h @ w_r.T + b_r)
    z = torch.sigmoid(i_z + h @ w_z.T + b_z)
    n = torch.tanh(i_n + (r * h) @ w_n.T + b_n)
    return (1 - z) * n + z * h


class GRUResetBeforeCell(torch.nn.Module):
    """One step of the GRU with the reset gate before the recurrent product, from ONNX's GRU
    operator equations (linear_before_reset = 0), gates r, z, n as nn.GRUCell's rows:

        r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
        h' = (1 − z) ⊙ n + z ⊙ h
    """

    def __init__(self, input_size: int, hidden_size: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        H = hidden_size
        bound = 1.0 / np.sqrt(H)

        def param(*shape: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.empty(*shape, dtype=dtype).uniform_(-bound, bound))

        self.weight_ih, self.weight_hh = param(3 * H, input_size), param(3 * H, H)
        self.bias_ih, self.bias_hh = param(3 * H), param(3 * H)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return gru_reset_before_step(
            x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        )


class GRUResetBefore(torch.nn.Module):
    """nn.GRU's interface (time-major, layers, directions, weight_ih_l{k}{_reverse} names) over
    :class:`GRUResetBeforeCell` steps."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.directions = 2 if bidirectional else 1
        self.steps = {}
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else self.directions * hidden_size
            for d in range(self.directions):
                step = GRUResetBeforeCell(n_in, hidden_size, dtype)
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                for key, value in step.named_parameters():
                    setattr(self, key + suffix, value)
                self.steps[(layer, d)] = suffix

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        T, B = x.shape[:2]
        D, H = self.directions, self.hidden_size
        if h0 is None:
            h0 = torch.zeros(self.num_layers * D, B, H, dtype=x.dtype)
        finals, layer_in = [], x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                suffix = self.steps[(layer, d)]
                w = [getattr(self, k + suffix) for k in TORCH_STEMS]
                h, seq = h0[layer * D + d], [None] * T
                for t in reversed(range(T)) if d else range(T):
                    h = gru_reset_before_step(layer_in[t], h, *w)
                    seq[t] = h
                outs.append(torch.stack(seq))
                finals.append(h)
            layer_in = torch.cat(outs, dim=2)
        return layer_in, torch.stack(finals)


MODULES: dict[str, Callable[..., torch.nn.Module]] = {
    "elman": torch.nn.RNN,
    "gru": torch.nn.GRU,
    "lstm": torch.nn.LSTM,
    "gru_reset_before": GRUResetBefore,
}
STEP_MODULES: dict[str, Callable[..., torch.nn.Module]] = {
    "elman": torch.nn.RNNCell,
    "gru": torch.nn.GRUCell,
    "lstm": torch.nn.LSTMCell,
    "gru_reset_before": GRUResetBeforeCell,
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
    elif cell in ("lstm", "gru_reset_before"):
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
    elif cell in ("lstm", "gru_reset_before"):
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
    elif cell in ("lstm", "gru_reset_before"):
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
