"""An independent PyTorch float64 implementation of the seed's Elman RNN and its loss.

Written from the equations, step by step, with no code shared with ``bptt``: token ids go
through an explicit one-hot product, the losses use torch.nn.functional.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bptt import PARAM_NAMES, ElmanRNN

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda e: e,
}


def step_losses(z: torch.Tensor, y: torch.Tensor, head: str) -> torch.Tensor:
    """Per-sequence loss of one step: (B, O) logits -> (B,)."""
    if head == "softmax":
        return F.cross_entropy(z, y, reduction="none")
    if head == "sigmoid":
        return F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1)
    return 0.5 * ((z - y) ** 2).sum(-1)


def torch_loss_and_grads(
    model: ElmanRNN,
    x: np.ndarray,
    y: np.ndarray,
    h0: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    dh_last: np.ndarray | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and autograd gradients (float64) for the model's parameters and h0.

    With ``dh_last`` the objective is L + ⟨h_T, dh_last⟩, so the gradient arriving on h_T is
    exactly ``dh_last``.
    """
    p = {
        n: torch.tensor(np.asarray(a, np.float64), requires_grad=True)
        for n, a in model.params.items()
    }
    T, B = x.shape[:2]
    H, I = model.hidden_size, model.input_size
    if x.ndim == 2:
        x_dense = F.one_hot(torch.as_tensor(x, dtype=torch.long), I).double()
    else:
        x_dense = torch.tensor(np.asarray(x, np.float64))
    if model.output == "softmax":
        y_t = torch.as_tensor(y, dtype=torch.long)
    else:
        y_t = torch.tensor(np.asarray(y, np.float64))
    h0_t = torch.tensor(
        np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64), requires_grad=True
    )
    m = (
        torch.ones(T, B, dtype=torch.float64)
        if mask is None
        else torch.tensor(np.asarray(mask, np.float64))
    )
    f = ACTIVATIONS[model.hidden_activation]
    h = h0_t
    loss = torch.zeros((), dtype=torch.float64)
    for t in range(T):
        h = f(x_dense[t] @ p["V"].T + h @ p["W"].T + p["b_h"])
        z = h @ p["U"].T + p["b_y"]
        loss = loss + (m[t] * step_losses(z, y_t[t], model.output)).sum() / B
    objective = loss
    if dh_last is not None:
        objective = objective + (h * torch.tensor(np.asarray(dh_last, np.float64))).sum()
    objective.backward()
    grads = {n: p[n].grad.numpy() for n in PARAM_NAMES}
    grads["h0"] = h0_t.grad.numpy()
    return float(loss.detach()), grads
