"""Optimizers, gradient clipping and learning-rate schedules on :class:`~bptt.params.Params`.

Every update follows ``torch.optim`` step for step (same defaults, same order of operations),
with g = dL/dθ, t the 1-based step and λ the weight decay:

    SGD       d = g + λθ;  m ← μ m + d (m₁ = d);  θ ← θ − η (d + μ m if Nesterov else m)
    Adagrad   g ← g + λθ;  s ← s + g²;            θ ← θ − η g / (√s + ε)
    RMSprop   g ← g + λθ;  v ← α v + (1−α) g²;    θ ← θ − η g / (√v + ε)   (momentum, centred)
    Adam      g ← g + λθ;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
              θ ← θ − (η / (1−β₁ᵗ)) m / (√v / √(1−β₂ᵗ) + ε)
    AdamW     θ ← θ (1 − ηλ), then Adam with λ = 0

Clipping (Pascanu, Mikolov & Bengio 2013):  g ← g · min(1, c / (‖g‖₂ + 10⁻⁶)) over all five
arrays at once (as ``torch.nn.utils.clip_grad_norm_``), or g ← clip(g, −c, c) elementwise.

A step is computed out of place and committed only if every new weight and state entry is
finite; a non-finite gradient is never applied (see :func:`guarded_step`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import _workspace
from ._fused_optim import can_fuse, fused_compute, grad_sum_squares
from .params import Params, all_finite

OPTIMIZERS: tuple[str, ...] = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine")

StateValue = np.ndarray | int | float | str | bool


def _new(*operands: np.ndarray | float) -> np.ndarray:
    """The array ``ufunc(*operands)`` would return (NumPy's result dtype and broadcast shape),
    from :mod:`bptt._workspace`: the updates below write each step into reused arrays."""
    return _workspace.empty(
        np.broadcast_shapes(*map(np.shape, operands)), np.result_type(*operands)
    )


def _add(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.add(a, b, out=_new(a, b))


def _sub(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.subtract(a, b, out=_new(a, b))


def _mul(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.multiply(a, b, out=_new(a, b))


def _div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.true_divide(a, b, out=_new(a, b))


def _sqrt(a: np.ndarray) -> np.ndarray:
    return np.sqrt(a, out=_new(a))


class _Slots(dict[str, np.ndarray]):
    """A parameter's slot arrays; a missing one is ``np.zeros_like(p)``."""

    def __init__(self, p: np.ndarray, slots: dict[str, np.ndarray]) -> None:
        super().__init__(slots)
        self._p = p

    def __missing__(self, key: str) -> np.ndarray:
        return np.zeros_like(self._p)


def _check_nonneg(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


class Optimizer(ABC):
    """A first-order optimizer over the five Elman RNN arrays.

    Args:
        lr: the base learning rate η (a schedule may override it per step).
        weight_decay: λ.

    State: ``self.t`` (steps taken) and per-parameter slot arrays ``self.slots[slot][name]``.
    """

    name: str
    slot_names: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = _check_nonneg("lr", lr)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.t = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}

    @abstractmethod
    def _update(
        self, p: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], t: int, lr: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """New θ and new slot arrays for one parameter; must not modify its inputs."""

    def _slots_for(self, name: str, p: np.ndarray) -> dict[str, np.ndarray]:
        """The parameter's slot arrays; a slot not yet made reads as zeros, made when read
        (RMSprop without momentum never reads its momentum slot)."""
        return _Slots(p, {s: self.slots[s][name] for s in self.slot_names if name in self.slots[s]})

    def compute(
        self, params: Params, grads: Params, lr: float | None = None
    ) -> tuple[Params, dict[str, dict[str, np.ndarray]]]:
        """The updated parameters and slots, out of place (nothing is modified)."""
        lr = self.lr if lr is None else lr
        t = self.t + 1
        new_p: dict[str, np.ndarray] = {}
        new_slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}
        for name, p in params.items():
            g = grads[name]
            dtype = p.dtype
            p_new, s_new = self._update(
                p, g.astype(dtype, copy=False), self._slots_for(name, p), t, lr
            )
            new_p[name] = np.asarray(p_new, dtype=dtype)
            for s, arr in s_new.items():
                new_slots[s][name] = np.asarray(arr, dtype=dtype)
        return Params(new_p), new_slots

    def commit(
        self, params: Params, new_params: Params, new_slots: dict[str, dict[str, np.ndarray]]
    ) -> None:
        """Write ``new_params`` into ``params``' arrays in place and adopt the new slots."""
        for name, arr in new_params.items():
            params[name][...] = arr
        self.slots = new_slots
        self.t += 1

    def step(self, params: Params, grads: Params, lr: float | None = None) -> None:
        """θ ← update(θ, g) in place on ``params``' arrays (no finiteness guard)."""
        fused = fused_compute(self, params, grads, lr)  # one pass where a kernel exists
        new_params, new_slots = fused[:2] if fused is not None else self.compute(params, grads, lr)
        self.commit(params, new_params, new_slots)

    # -- serialisation ---------------------------------------------------------------------

    def hyperparameters(self) -> dict[str, float | bool]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict[str, StateValue]:
        """Flat, pickle-free state: ``name``, ``t``, hyperparameters and ``slot.param`` arrays."""
        state: dict[str, StateValue] = {"name": self.name, "t": self.t}
        state.update(self.hyperparameters())
        for s, arrays in self.slots.items():
            for name, arr in arrays.items():
                state[f"{s}.{name}"] = arr
        return state

    def load_state_dict(
        self, state: dict[str, StateValue], names: Iterable[str] | None = None
    ) -> None:
        """Restore the step count and slot arrays saved by :meth:`state_dict`.

        Args:
            state: from :meth:`state_dict`.
            names: the parameters' names; a slot for any other name is an error (None: any).

        Raises:
            ValueError: the state belongs to another optimizer or holds unknown entries.
        """
        allowed = None if names is None else set(names)
        if state.get("name") != self.name:
            raise ValueError(
                f"optimizer state is for {state.get('name')!r}, but the optimizer is {self.name!r}"
            )
        slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}
        known = {"name", "t", *self.hyperparameters()}
        for key, value in state.items():
            if key in known:
                continue
            slot, _, pname = key.partition(".")
            if slot not in slots or not pname or (allowed is not None and pname not in allowed):
                raise ValueError(f"optimizer state has an unknown entry {key!r}")
            slots[slot][pname] = np.array(value)
        t = state.get("t", 0)
        if not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"optimizer state step t must be an int >= 0, got {t!r}")
        self.t = int(t)
        self.slots = slots


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum, as ``torch.optim.SGD`` with dampening 0."""

    name = "sgd"
    slot_names = ("momentum",)

    def __init__(
        self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = _check_nonneg("momentum", momentum)
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov momentum requires momentum > 0")
        self.nesterov = bool(nesterov)

    def hyperparameters(self) -> dict[str, float | bool]:
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}

    def _update(self, p, g, slots, t, lr):  # type: ignore[no-untyped-def]
        # each line the expression in the comment, computed into reused arrays (see _new)
        d = _add(g, _mul(self.weight_decay, p)) if self.weight_decay else g  # g + λ p
        if self.momentum == 0.0:
            return _sub(p, _mul(lr, d)), {}  # p − η d
        if t == 1:
            buf = _new(d)
            np.copyto(buf, d)
        else:
            buf = _add(_mul(self.momentum, slots["momentum"]), d)  # μ m + d
        step = _add(d, _mul(self.momentum, buf)) if self.nesterov else buf  # d + μ m
        return _sub(p, _mul(lr, step)), {"momentum": buf}  # p − η step


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011) as ``torch.optim.Adagrad`` (no lr decay, zero accumulator)."""

    name = "adagrad"
    slot_names = ("sum",)

    def __init__(self, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.eps = _check_nonneg("eps", eps)

    def hyperparameters(self) -> dict[str, float | bool]:
        return {**super().hyperparameters(), "eps": self.eps}

    def _update(self, p, g, slots, t, lr):  # type: ignore[no-untyped-def]
        if self.weight_decay:
            g = _add(g, _mul(self.weight_decay, p))  # g + λ p
        s = _add(slots["sum"], _mul(g, g))  # s + g g
        # p − η g / (√s + ε)
        return _sub(p, _div(_mul(lr, g), _add(_sqrt(s), self.eps))), {"sum": s}


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012) as ``torch.optim.RMSprop``."""

    name = "rmsprop"
    slot_names = ("square_avg", "momentum", "grad_avg")

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.alpha = _check_nonneg("alpha", alpha)
        self.eps = _check_nonneg("eps", eps)
        self.momentum = _check_nonneg("momentum", momentum)
        self.centered = bool(centered)

    def hyperparameters(self) -> dict[str, float | bool]:
        return {
            **super().hyperparameters(),
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def _update(self, p, g, slots, t, lr):  # type: ignore[no-untyped-def]
        if self.weight_decay:
            g = _add(g, _mul(self.weight_decay, p))  # g + λ p
        a, c = self.alpha, 1 - self.alpha
        sq = _add(_mul(a, slots["square_avg"]), _mul(_mul(c, g), g))  # α v + (1 − α) g g
        new = {"square_avg": sq}
        if self.centered:
            ga = _add(_mul(a, slots["grad_avg"]), _mul(c, g))  # α ḡ + (1 − α) g
            avg = _add(_sqrt(_sub(sq, _mul(ga, ga))), self.eps)  # √(v − ḡ ḡ) + ε
            new["grad_avg"] = ga
        else:
            avg = _add(_sqrt(sq), self.eps)  # √v + ε
        if self.momentum > 0:
            buf = _add(_mul(self.momentum, slots["momentum"]), _div(g, avg))  # μ b + g / avg
            new["momentum"] = buf
            return _sub(p, _mul(lr, buf)), new  # p − η b
        return _sub(p, _div(_mul(lr, g), avg)), new  # p − η g / avg


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) as ``torch.optim.Adam``; L2 weight decay added to g."""

    name = "adam"
    slot_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        b1, b2 = betas
        self.beta1 = _check_nonneg("beta1", b1)
        self.beta2 = _check_nonneg("beta2", b2)
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        self.eps = _check_nonneg("eps", eps)

    def hyperparameters(self) -> dict[str, float | bool]:
        return {
            **super().hyperparameters(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }

    def _update(self, p, g, slots, t, lr):  # type: ignore[no-untyped-def]
        if self.decoupled:
            p = _mul(p, 1 - lr * self.weight_decay)  # p (1 − η λ)
        elif self.weight_decay:
            g = _add(g, _mul(self.weight_decay, p))  # g + λ p
        b1, b2 = self.beta1, self.beta2
        m = _add(_mul(b1, slots["exp_avg"]), _mul(1 - b1, g))  # β₁ m + (1 − β₁) g
        v = _add(_mul(b2, slots["exp_avg_sq"]), _mul(_mul(1 - b2, g), g))  # β₂ v + (1 − β₂) g g
        bc1 = 1 - self.beta1**t
        bc2 = 1 - self.beta2**t
        denom = _add(_div(_sqrt(v), math.sqrt(bc2)), self.eps)  # √v / √(1 − β₂ᵗ) + ε
        # p − (η / (1 − β₁ᵗ)) m / denom
        return _sub(p, _div(_mul(lr / bc1, m), denom)), {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019) as ``torch.optim.AdamW``: θ ← θ(1 − ηλ) then Adam."""

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay)


def make_optimizer(
    name: str,
    lr: float,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float | None = None,
) -> Optimizer:
    """An optimizer by name (one of :data:`OPTIMIZERS`) with the options that apply to it.

    Raises:
        ValueError: an unknown name.
    """
    if name == "sgd":
        return SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adagrad":
        return Adagrad(lr, eps=1e-10 if eps is None else eps, weight_decay=weight_decay)
    if name == "rmsprop":
        return RMSprop(
            lr, eps=1e-8 if eps is None else eps, momentum=momentum, weight_decay=weight_decay
        )
    if name in ("adam", "adamw"):
        cls = Adam if name == "adam" else AdamW
        return cls(lr, betas=betas, eps=1e-8 if eps is None else eps, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


# -- clipping ------------------------------------------------------------------------------


def clip_grad_norm(grads: Params, max_norm: float, *, norm: float | None = None) -> float:
    """g ← g · min(1, c / (‖g‖ + 10⁻⁶)) in place over all arrays; returns ‖g‖ before clipping.

    ‖g‖ = √(Σ over every array of Σ g²), as ``torch.nn.utils.clip_grad_norm_``; ``norm``
    passes ‖g‖ when the caller has just computed it (:func:`guarded_step`), saving a pass.
    """
    _check_nonneg("max_norm", max_norm)
    total = grads.global_norm() if norm is None else norm
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for _, arr in grads.items():
            arr *= arr.dtype.type(coef)
    return total


def clip_grad_value(grads: Params, clip_value: float) -> None:
    """g ← clip(g, −c, c) elementwise, in place (``torch.nn.utils.clip_grad_value_``)."""
    _check_nonneg("clip_value", clip_value)
    for _, arr in grads.items():
        np.clip(arr, -clip_value, clip_value, out=arr)


# -- schedules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """η(s) for the 0-based step s.

    constant   η(s) = η₀
    step       η(s) = η₀ γ^⌊s / step_size⌋                          (torch StepLR)
    cosine     η(s) = η₀ (s+1)/w                               s < w  (linear warm-up)
               η(s) = η_min + ½(η₀ − η_min)(1 + cos(π (s−w)/(S−w)))  otherwise
                     with η_min = min_lr_ratio · η₀ and S the total number of steps.
    The warm-up also applies to ``constant`` and ``step``.
    """

    kind: str = "constant"
    base_lr: float = 1e-3
    total_steps: int = 1
    warmup: int = 0
    step_size: int = 1000
    gamma: float = 0.5
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if self.warmup < 0 or self.step_size < 1 or self.total_steps < 1:
            raise ValueError(
                "schedule needs warmup >= 0, step_size >= 1 and total_steps >= 1, got "
                f"{self.warmup}, {self.step_size}, {self.total_steps}"
            )
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"schedule gamma must lie in (0, 1], got {self.gamma}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"schedule min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return self.base_lr * (s + 1) / self.warmup
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** ((s - self.warmup) // self.step_size)
        lo = self.min_lr_ratio * self.base_lr
        span = max(self.total_steps - self.warmup, 1)
        frac = min(s - self.warmup, span) / span
        return lo + 0.5 * (self.base_lr - lo) * (1 + math.cos(math.pi * frac))


# -- the guarded step ------------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    """What :func:`guarded_step` did: the gradient norm before clipping, and whether it applied."""

    grad_norm: float
    applied: bool
    reason: str = ""


def guarded_step(
    optimizer: Optimizer,
    params: Params,
    grads: Params,
    *,
    lr: float | None = None,
    clip_norm: float = 0.0,
    clip_value: float = 0.0,
    loss: float = 0.0,
) -> StepInfo:
    """Clip, update and commit only if the loss, gradient and result are all finite.

    Args:
        optimizer: updates ``params`` in place on success.
        params: the weights (modified in place only when the step is applied).
        grads: dL/dθ (clipped in place).
        lr: this step's learning rate (the optimizer's base rate when None).
        clip_norm: global-norm threshold c; 0 disables.
        clip_value: elementwise threshold; 0 disables.
        loss: the step's loss; a non-finite loss skips the step too.

    Returns:
        :class:`StepInfo`; when ``applied`` is False, nothing was modified but ``grads``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if not math.isfinite(loss):
            return StepInfo(float("nan"), False, f"non-finite loss {loss}")
        fusable = can_fuse(optimizer, params, grads)
        # finite ⇒ every gradient entry is finite. Where the norm only reports (no norm clip),
        # one compiled call gives it; a norm clip scales by global_norm()'s exact value
        quick = fusable and clip_norm <= 0
        norm = math.sqrt(grad_sum_squares(grads)) if quick else grads.global_norm()
        if not math.isfinite(norm):
            if not grads.is_finite():
                return StepInfo(float("nan"), False, "non-finite gradient")
            return StepInfo(norm, False, "gradient norm overflows")
        # the value clip rides in the fused pass when nothing needs the clipped norm first
        fuse_clip = clip_value > 0 and clip_norm <= 0 and fusable
        if clip_value > 0 and not fuse_clip:
            clip_grad_value(grads, clip_value)
        if clip_norm > 0:  # ‖g‖ is the one above unless the value clip changed g since
            clip_grad_norm(grads, clip_norm, norm=None if clip_value > 0 else norm)
        fused = (
            fused_compute(
                optimizer, params, grads, lr, clip_value if fuse_clip else 0.0, checked=True
            )
            if fusable
            else None
        )
        if fused is not None:
            new_params, new_slots, finite = fused
        else:
            new_params, new_slots = optimizer.compute(params, grads, lr)
            finite = new_params.is_finite() and all(
                all_finite(a) for slot in new_slots.values() for a in slot.values()
            )
    if not finite:
        return StepInfo(norm, False, "update would make weights or optimizer state non-finite")
    optimizer.commit(params, new_params, new_slots)
    return StepInfo(norm, True)
