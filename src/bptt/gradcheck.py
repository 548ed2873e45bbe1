"""Verify hand-written BPTT gradients against independent computations.

For each parameter θ and each checked entry (or random direction d):

    finite differences   ⟨∇L, d⟩  vs  (L(θ + εd) − L(θ − εd)) / 2ε
    seed formula         the literal double sum of :mod:`bptt.algorithms.seed_formula`

and report the largest relative error |a − b| / max(|a|, |b|, tiny) per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from .algorithms.seed_formula import seed_gradients
from .model import RNN
from .params import Params


def relative_error(a: ArrayLike, b: ArrayLike, floor: float = 1e-12) -> float:
    """max |a − b| / max(|a|, |b|, floor), elementwise."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.maximum(np.abs(a_arr), np.abs(b_arr)), floor)
    return float(np.max(np.abs(a_arr - b_arr) / scale)) if a_arr.size else 0.0


def directional_derivative(
    model: RNN,
    name: str,
    direction: np.ndarray,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    eps: float = 1e-6,
) -> float:
    """(L(θ + εd) − L(θ − εd)) / 2ε, moving only the parameter ``name``."""
    param = model.params[name]
    saved = param.copy()
    try:
        param += eps * direction
        loss_plus = model.loss(x, y, h0, mask)
        param[...] = saved - eps * direction
        loss_minus = model.loss(x, y, h0, mask)
    finally:
        param[...] = saved
    return (loss_plus - loss_minus) / (2.0 * eps)


@dataclass
class GradcheckReport:
    """Largest relative error per parameter against each reference."""

    finite_differences: dict[str, float] = field(default_factory=dict)
    seed_formula: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-5

    @property
    def passed(self) -> bool:
        errors = [*self.finite_differences.values(), *self.seed_formula.values()]
        return all(err <= self.tolerance for err in errors)

    def format(self) -> str:
        lines = [f"{'parameter':<14}{'finite diff.':>16}{'seed formula':>16}"]
        for name in self.finite_differences:
            fd = self.finite_differences.get(name, float("nan"))
            seed = self.seed_formula.get(name, float("nan"))
            lines.append(f"{name:<14}{fd:>16.3e}{seed:>16.3e}")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"max relative error tolerance {self.tolerance:.0e}: {verdict}")
        return "\n".join(lines)


def gradcheck(
    model: RNN,
    x: object,
    y: object,
    h0: object = None,
    mask: object = None,
    *,
    n_directions: int = 8,
    eps: float = 1e-6,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> GradcheckReport:
    """Compare ``model.loss_and_grads`` with finite differences and the seed formula.

    Finite differences run along ``n_directions`` random unit directions per parameter (every
    parameter of any model); in float32 they are too noisy to say much, so use a float64
    model. The seed formula is the one-layer, one-direction reference, so it is compared
    only for such models (``nan`` in the report otherwise).
    """
    rng = np.random.default_rng(seed)
    _, grads = model.loss_and_grads(x, y, h0, mask)
    report = GradcheckReport(tolerance=tolerance)
    for name in model.param_shapes():
        grad = grads[name]
        analytic, numeric = [], []
        for _ in range(n_directions):
            direction = rng.standard_normal(grad.shape).astype(model.dtype)
            direction /= np.linalg.norm(direction)
            analytic.append(float(np.vdot(grad, direction)))
            numeric.append(directional_derivative(model, name, direction, x, y, h0, mask, eps))
        report.finite_differences[name] = relative_error(analytic, numeric, floor=1e-8)
    if model.simple:
        oracle: Params = seed_gradients(model, x, y, h0, mask)
        for name in oracle:
            report.seed_formula[name] = relative_error(grads[name], oracle[name], floor=1e-10)
    return report
