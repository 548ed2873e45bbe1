"""The common interface of the online algorithms, and the one step they share.

At step t, for B parallel streams (b = 1..B) and the model's weights θ held fixed:

    s_t = F(x_t, s_{t-1})                 (the cell's own step)
    z_t = U h_t + b_y                     L_t = (1/B) Σ_b m_tb ℓ(z_tb, y_tb)
    dU_t = dz_tᵀ h_t    db_y,t = Σ_b dz_tb    c_t = ∂L_t/∂h_t = dz_t U          (exact)
    dθ_rec,t ≈ Σ_b c_tb M_tb,   M_t = ∂s_t/∂θ_rec  (the influence; each algorithm's estimate)

so Σ_t grads_t is the algorithm's estimate of the gradient of the whole stream's loss. The head
gradients are exact for every algorithm; algorithms differ only in how they carry M_t.

For the one-layer Elman cell, E_t = V x_t + W h_{t-1} + b_h is linear in Θ = [V | W | b_h]
(H, Q), Q = I + H + 1, through ĥ_t = [x_t; h_{t-1}; 1] (ids: x_t one-hot):

    ∂h_t/∂h_{t-1} = J_t = diag(f'(E_t)) W          (the cell's ``state_jacobian``)
    ∂h_{t,k}/∂Θ_{rq} (immediate) = Ī_t[k, (r, q)] = δ_kr f'_k(E_t) ĥ_{t,q}

Both are used in this Elman closed form, never formed per stream: J_t X = f' ⊙ (W X) (one
product for all streams), and Ī_t is a diagonal in k = r, so it is added, never stored. This
closed form is each algorithm's fast path for one Elman layer; every other unidirectional
model (GRU, LSTM, 1–3 or more layers) gets the cell-protocol form of :mod:`.cellwise`, built
by the same class (:meth:`OnlineAlgorithm.__new__`; ``fast=False`` picks it on an Elman layer
too). ``rflo`` runs one Elman layer only, ``kf-rtrl`` one Elman or LSTM layer (they say why
elsewhere); ``tbptt`` runs any unidirectional model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..cells import ElmanCell
from ..model import RNN
from ..params import Gradients
from ..validation import check_inputs, check_mask, check_positive_int

StateDict = dict[str, np.ndarray]


@dataclass(frozen=True)
class _Chunk:
    """A chunk's forward and head (T steps, B streams), for the hoisted :meth:`run`."""

    hs: np.ndarray  # (T, B, H): h_1..h_T
    hhat: np.ndarray  # (T, B, Q): ĥ_t = [x_t; h_{t-1}; 1]
    fprime: np.ndarray  # (T, B, H): f'(E_t)
    dz: np.ndarray  # (T, B, O): ∂L_t/∂z_t
    c: np.ndarray  # (T, B, H): ∂L_t/∂h_t
    losses: np.ndarray  # (T,) float64
    head: dict[str, np.ndarray]  # Σ_t of the head's gradients: U, b_y


def is_elman_layer(model: RNN) -> bool:
    """One Elman layer in one direction: where the closed forms (the fast paths) apply."""
    return model.simple and isinstance(model.layers[0].cell, ElmanCell)


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's full state as 6 64-bit words, stored as int64 (checkpoints keep
    int64, not uint64; the bits are the same)."""
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise TypeError(f"only PCG64 generators are saved, got {state.get('bit_generator')}")
    mask = (1 << 64) - 1
    s, inc = state["state"]["state"], state["state"]["inc"]
    words = [s >> 64, s & mask, inc >> 64, inc & mask, state["has_uint32"], state["uinteger"]]
    return np.array(words, dtype=np.uint64).view(np.int64)


def rng_from_array(words: np.ndarray) -> np.random.Generator:
    """Inverse of :func:`rng_to_array`."""
    arr = np.ascontiguousarray(words).reshape(-1)
    if arr.size != 6 or arr.dtype.itemsize != 8 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"a saved generator state is 6 64-bit integers, got {arr.dtype} {arr.shape}"
        )
    w = [int(v) for v in arr.view(np.uint64)]
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return rng


def _outer_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_t Σ_b a_tb ⊗ b_tb: (T, B, H), (T, B, Q) → (H, Q), one product over T·B rows."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def _outer_per_stream(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_t a_tb ⊗ b_tb per stream: (T, B, H), (T, B, Q) → (B, H, Q), B products over T."""
    return np.matmul(a.transpose(1, 2, 0), b.transpose(1, 0, 2))


class OnlineAlgorithm(ABC):
    """grads_t ≈ dL_t/dθ = (exact head terms, Σ_b c_tb M̂_tb): one online algorithm over B streams.

    Args:
        model: the RNN; its current ``params`` are read at every step (an optimizer may change
            them between steps; the carried influence is then, as in every online method, an
            approximation built with the older weights).
        batch: B, the number of streams.
        seed: seeds the algorithm's random generator (stochastic algorithms and RFLO's
            feedback matrix).

    Use: ``reset(h0)`` once, then ``loss_t, grads_t = step(x_t, y_t, mask_t)`` per step.
    """

    name: str  # the registry name (an instance may refine it: snap-3)
    needs_elman: ClassVar[bool] = True
    generic: ClassVar[Any] = None
    """For an Elman closed form: the factory of its cell-protocol form (:mod:`.cellwise`), built
    instead for any other model, or for an Elman one with ``fast=False``."""

    def __new__(cls, model: RNN | None = None, *args: Any, fast: bool = True, **kwargs: Any) -> Any:
        generic = cls.__dict__.get("generic")  # the class's own, not a parent's (copy: no model)
        if generic is not None and isinstance(model, RNN) and not (fast and is_elman_layer(model)):
            return generic(model, *args, **kwargs)  # not an instance of cls: no __init__ after
        return super().__new__(cls)

    def __init__(self, model: RNN, batch: int, seed: int = 0, fast: bool = True) -> None:
        if not isinstance(model, RNN):
            raise TypeError(f"model must be a bptt RNN, got {type(model).__name__}")
        self.model = model
        self.batch = check_positive_int("batch", batch)
        self.rng = np.random.default_rng(seed)
        model.require_unidirectional(f"online {self.name}")
        if self.needs_elman and not (model.simple and isinstance(model.layers[0].cell, ElmanCell)):
            raise ValueError(
                f"online {self.name} is implemented for a one-layer, one-direction Elman model; "
                f"got cell={model.cell!r}, num_layers={model.num_layers} "
                "(use 'tbptt', which runs any unidirectional model)"
            )
        self.t = 0
        self.h = np.zeros((self.batch, model.hidden_size), dtype=model.dtype)
        self._hhat_buf = np.empty((self.batch, self.Q), dtype=model.dtype)  # (B, Q)
        self._streams = np.arange(self.batch)
        self._all = np.ones(self.batch, dtype=model.dtype)  # the mask when none is given

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def H(self) -> int:
        return self.model.hidden_size

    @property
    def I(self) -> int:  # noqa: E743 (the papers' name for the input size)
        return self.model.input_size

    @property
    def Q(self) -> int:
        """Columns of Θ = [V | W | b_h]: I + H + 1."""
        return self.I + self.H + 1

    # -- the public interface ------------------------------------------------------------------

    def reset(self, h0: object = None) -> None:
        """Start every stream at h_0 (B, H) (zeros when None) with a zero influence (M_0 = 0)."""
        self.t = 0
        self.h = np.array(self.model.split_state(h0, self.batch)[0])
        self._reset_traces()

    def step(self, x_t: object, y_t: object, mask_t: object = None) -> tuple[float, Gradients]:
        """Advance every stream one step and estimate dL_t/dθ.

        Args:
            x_t: (B, I) dense inputs of the model's dtype, or (B,) integer ids.
            y_t: (B,) class ids (softmax head) or (B, O) targets.
            mask_t: (B,) of 0/1 or bool, or None (every stream counts).

        Returns:
            ``(loss_t, grads_t)``: L_t = (1/B) Σ_b m_tb ℓ_tb and the estimate of dL_t/dθ under
            the model's parameter names; ``grads_t.h0`` (B, H) estimates dL_t/dh_0: exact for
            ``rtrl`` and, while its window reaches h_0, ``tbptt``; SnAp's on its pattern
            (exact where the pattern is); zeros for ``uoro``, ``kf-rtrl``, ``rflo``
            (docs/online.md says why).
        """
        x, y, mask = self._check_step(x_t, y_t, mask_t)
        loss, grads = self._step(x, y, mask)
        self.t += 1
        if self.model.w_mask is not None:
            self.model.mask_gradients(grads)
        return loss, grads

    def run(self, xs: object, ys: object, masks: object = None) -> tuple[np.ndarray, Gradients]:
        """Advance every stream T steps with the weights fixed: the same as T calls of
        :meth:`step`, returning the per-step losses and the summed estimate Σ_t grads_t.

            (L_1, …, L_T),  Σ_t grads_t          (grads_t as :meth:`step` gives it)

        The chunk is validated once, and the Elman algorithms hoist it (:meth:`_chunk`): one
        forward over the T steps (the model's compiled loop where it has one) and the head
        over T·B rows. Then RFLO, SnAp-1 and online TBPTT sum their traces' contributions by a
        backward recursion over the chunk and one product; UORO and KF-RTRL run the chunk's
        updates in one compiled loop (Numba; else step by step); RTRL (and SnAp-n where its
        pattern is full) runs BPTT inside the chunk and advances its influence with one
        product (``bptt.online.rtrl``); SnAp-n on a partial pattern carries its influence step
        by step. tbptt on other models, and every cell-protocol form (gated and stacked models,
        :mod:`.cellwise`), loop their step. Equal to the step-by-step results to rounding (the
        order of the sums differs).

        Args:
            xs: (T, B, I) dense inputs of the model's dtype, or (T, B) integer ids.
            ys: (T, B) class ids (softmax head) or (T, B, O) targets.
            masks: (T, B) of 0/1 or bool, or None.

        Returns:
            ``(losses, grads)``: losses (T,) float64, L_t = (1/B) Σ_b m_tb ℓ_tb, and
            Σ_t grads_t under the model's parameter names (``grads.h0`` the sum as well).
        """
        model, B = self.model, self.batch
        x = check_inputs(xs, model.input_size, model.dtype)
        if x.shape[1] != B:
            raise ValueError(f"xs must hold B={B} streams in axis 1, got shape {x.shape}")
        T = x.shape[0]
        y = model.head.check_targets(ys, (T, B), model.output_size, model.dtype)
        mask = (
            np.ones((T, B), dtype=model.dtype)
            if masks is None
            else check_mask(masks, (T, B), model.dtype)
        )
        losses, grads = self._run(x, y, mask)
        if model.w_mask is not None:
            model.mask_gradients(grads)
        return losses, grads

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """T validated steps with the forward and head hoisted (:meth:`_chunk`), the influence
        carried step by step (see :meth:`run`)."""
        ch = self._chunk(x, y, mask)
        theta = np.zeros((self.H, self.Q), dtype=self.model.dtype)
        h0 = np.zeros_like(self.h)
        for t in range(x.shape[0]):
            self._propagate(ch.fprime[t], ch.hhat[t])
            theta += self._theta_grad(ch.c[t], ch.dz[t])
            h0 += self._h0_grad(ch.c[t])
            self.t += 1
        return ch.losses, self._gradients(ch, theta, h0)

    def _run_steps(
        self, x: np.ndarray, y: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, Gradients]:
        """T validated steps, one :meth:`_step` at a time (any model)."""
        T = x.shape[0]
        losses = np.empty(T)
        total: Gradients | None = None
        for t in range(T):
            losses[t], g = self._step(x[t], y[t], mask[t])
            self.t += 1
            if total is None:
                total = g
                continue
            for name, value in g.items():
                total[name] += value
            if isinstance(total.h0, tuple):  # (h, c) of the LSTM: add part by part
                h0 = tuple(a + b for a, b in zip(total.h0, g.h0, strict=True))
                total = Gradients.from_backward(dict(total.items()), h0)
            else:
                total.h0 += g.h0
        assert total is not None  # T >= 1 (check_inputs)
        return losses, total

    def state_is_finite(self) -> bool:
        """Whether every carried array is finite (a diverging run resets the streams if not)."""
        return all(bool(np.isfinite(v).all()) for v in self._carried())

    def state_dict(self) -> StateDict:
        """Everything that defines the run from here on, as named arrays (RNG included)."""
        return {
            "t": np.array([self.t], dtype=np.int64),
            "h": self.h.copy(),
            "rng": rng_to_array(self.rng),
        } | {k: np.array(v) for k, v in self._traces().items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s arrays; the run then continues bit for bit.

        Raises:
            KeyError: an array is missing. ValueError: a shape differs from this algorithm's.
        """
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise KeyError(f"online {self.name} state lacks {missing}")
        for key, ref in expected.items():
            if np.shape(state[key]) != ref.shape:
                raise ValueError(
                    f"online {self.name} state {key!r} must have shape {ref.shape}, "
                    f"got {np.shape(state[key])}"
                )
        self.t = int(np.asarray(state["t"]).reshape(-1)[0])
        self.h = np.array(state["h"], dtype=self.model.dtype)
        self.rng = rng_from_array(state["rng"])
        self._load_traces({k: np.array(state[k]) for k in expected if k not in ("t", "h", "rng")})

    # -- what each algorithm supplies ------------------------------------------------------

    def _reset_traces(self) -> None:  # noqa: B027 (tbptt carries no influence)
        """Zero the algorithm's carried state (called by :meth:`reset`)."""

    def _traces(self) -> StateDict:
        """The algorithm's carried arrays (influence, traces, fixed random matrices)."""
        return {}

    def _load_traces(self, arrays: StateDict) -> None:
        for key, value in arrays.items():
            setattr(self, key, value)

    def _carried(self) -> list[np.ndarray]:
        """Every carried array, for :meth:`state_is_finite` (RTRL's avoid the copies)."""
        return list(self.state_dict().values())

    def _step(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[float, Gradients]:
        """The Elman step shared by the influence-carrying algorithms (see the module)."""
        model = self.model
        weight = mask / model.dtype.type(self.batch)  # (B,): w_b = m_b / B
        p = model.layers[0].take(model.params)
        cell = model.layers[0].cell
        assert isinstance(cell, ElmanCell)
        h_prev = self.h
        h = cell.step(p, x, h_prev)  # (B, H)
        fprime = cell.activation.grad_from_output(h)  # (B, H): f'(E_t)
        self._propagate(fprime, self._hhat(x, h_prev))  # M_{t-1} → M_t
        U = model.params["U"]
        z = h @ U.T
        z += model.params["b_y"]
        loss, dz = model.head.loss_and_dz(z[None], y[None], weight[None])
        dz = dz[0]  # (B, O)
        c = dz @ U  # (B, H): ∂L_t/∂h_t
        theta = self._theta_grad(c, dz)  # (H, Q)
        grads = self._named(dz.T @ h, dz.sum(axis=0), theta, self._h0_grad(c))
        self.h = h
        return loss, grads

    def _chunk(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> _Chunk:
        """The chunk's forward and head, hoisted over T·B rows (see :meth:`run`); advances
        ``h`` to h_T (the caller advances ``t``)."""
        model = self.model
        T, B = x.shape[:2]
        I, H, Q = self.I, self.H, self.Q
        layer = model.layers[0]
        cell = layer.cell
        assert isinstance(cell, ElmanCell)
        hs, _, _ = cell.forward(layer.take(model.params), x, self.h)  # (T, B, H)
        hhat = np.empty((T, B, Q), dtype=model.dtype)  # ĥ_t = [x_t; h_{t-1}; 1]
        if x.ndim == 2:
            hhat[:, :, :I] = 0.0
            np.put_along_axis(hhat[:, :, :I], x[:, :, None], 1.0, axis=2)
        else:
            hhat[:, :, :I] = x
        hhat[0, :, I : I + H] = self.h
        hhat[1:, :, I : I + H] = hs[:-1]
        hhat[:, :, I + H] = 1.0
        fprime = cell.activation.grad_from_output(hs)  # (T, B, H)
        U = model.params["U"]
        weight = mask / model.dtype.type(B)  # (T, B)
        z = hs.reshape(T * B, H) @ U.T
        z += model.params["b_y"]
        z = z.reshape(T, B, -1)
        losses = np.asarray(np.sum(weight * model.head.step_losses(z, y), axis=1, dtype=np.float64))
        _, dz = model.head.loss_and_dz(z, y, weight)  # (T, B, O)
        c = dz @ U  # (T, B, H): ∂L_t/∂h_t
        head = {
            "U": dz.reshape(T * B, -1).T @ hs.reshape(T * B, H),
            "b_y": dz.sum(axis=(0, 1)),
        }
        self.h = hs[-1].copy()
        return _Chunk(hs=hs, hhat=hhat, fprime=fprime, dz=dz, c=c, losses=losses, head=head)

    def _gradients(self, chunk: _Chunk, theta: np.ndarray, h0: np.ndarray) -> Gradients:
        """Named gradients from a chunk's head sums and Θ's (H, Q) sum."""
        return self._named(chunk.head["U"], chunk.head["b_y"], theta, h0)

    def _named(
        self, dU: np.ndarray, db_y: np.ndarray, theta: np.ndarray, h0: np.ndarray
    ) -> Gradients:
        """The model's names for dU (O, H), db_y (O,), Θ = [V | W | b_h] (H, Q) and dh_0;
        fresh arrays of the right shapes, so adopted without the constructor's checks."""
        I, H = self.I, self.H
        arrays = {
            "U": dU,
            "V": np.ascontiguousarray(theta[:, :I]),
            "W": np.ascontiguousarray(theta[:, I : I + H]),
            "b_h": np.ascontiguousarray(theta[:, I + H]),
            "b_y": db_y,
        }
        return Gradients.from_backward(arrays, h0)

    @abstractmethod
    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        """Carry the influence estimate from step t−1 to t, given f'(E_t) (B, H) and
        ĥ_t = [x_t; h_{t-1}; 1] (B, Q)."""

    @abstractmethod
    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """Σ_b c_b M_b as Θ's gradient (H, Q), given c = ∂L_t/∂h_t (B, H)."""

    def _h0_grad(self, c: np.ndarray) -> np.ndarray:
        return np.zeros_like(self.h)

    # -- helpers ---------------------------------------------------------------------------

    def _hhat(self, x: np.ndarray, h_prev: np.ndarray) -> np.ndarray:
        """ĥ_t = [x_t; h_{t-1}; 1] (B, Q); token ids become one-hot rows."""
        I, H = self.I, self.H
        out = self._hhat_buf  # reused: every caller consumes ĥ_t within the step
        if x.ndim == 1:
            out[:, :I] = 0.0
            out[self._streams, x] = 1.0
        else:
            out[:, :I] = x
        out[:, I : I + H] = h_prev
        out[:, I + H] = 1.0
        return out

    def _check_step(
        self, x_t: object, y_t: object, mask_t: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate one step; returns x (B, I)/(B,), y (B,)/(B, O) and the mask m (B,)."""
        model, B = self.model, self.batch
        x_arr = np.asarray(x_t)
        if x_arr.ndim not in (1, 2) or x_arr.shape[0] != B:
            raise ValueError(
                f"x_t must be one step for B={B} streams: (B, I) dense or (B,) ids, "
                f"got shape {x_arr.shape}"
            )
        x = check_inputs(x_arr[None], model.input_size, model.dtype)[0]
        y_arr = np.asarray(y_t)
        y = model.head.check_targets(y_arr[None], (1, B), model.output_size, model.dtype)[0]
        if mask_t is None:
            return x, y, self._all
        return x, y, check_mask(np.asarray(mask_t)[None], (1, B), model.dtype)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch={self.batch}, t={self.t}, model={self.model!r})"
