"""Random-feedback local online learning (RFLO, Murray 2019), in Marschall et al.'s (2020) form.

RFLO drops the recurrent term of J_t: for a leaky network h_t = (1 − α) h_{t-1} + α f(E_t),
J_t ≈ (1 − α)·1, so the influence keeps only the diagonal k = r, an eligibility trace:

    e_t[r, q] = (1 − α) e_{t-1}[r, q] + α f'_r(E_t) ĥ_{t,q}          e (B, H, Q)
    dΘ_t[r, q] = Σ_b c̃_tb,r e_tb[r, q]      c̃_t = dz_t B_fb  (random feedback, fixed)

The Elman model here is not leaky (α = 1: e_t = f' ⊗ ĥ_t, one step of credit only); α < 1 keeps
a longer, heuristic trace. B_fb (O, H) is drawn once from the seed (its own stream) with U's
initial scale U(−1/√H, 1/√H) and saved in the state; ``feedback="symmetric"`` uses U itself
(c̃ = c).
Cost O(B·H·Q) per step; biased.
"""

from __future__ import annotations

import numpy as np

from ..model import RNN
from ..params import Gradients
from .base import OnlineAlgorithm, StateDict, _outer_per_stream, _outer_sum
from .cellwise import rflo_reason


class RFLO(OnlineAlgorithm):
    """e_t = (1 − α) e_{t-1} + α f'(E_t) ⊗ ĥ_t, dΘ_t = c̃_t ⊙ e_t: RFLO (see the module).

    Args:
        alpha: the trace's leak α in (0, 1] (1: the model's own, memoryless).
        feedback: ``random`` (Murray's fixed B_fb) or ``symmetric`` (Uᵀ, the true c_t).
    """

    name = "rflo"

    @staticmethod
    def generic(model: RNN, *args: object, **kwargs: object) -> RFLO:
        raise ValueError(f"online rflo: {rflo_reason(model)}")

    def __init__(
        self,
        model: RNN,
        batch: int,
        seed: int = 0,
        alpha: float = 1.0,
        feedback: str = "random",
        fast: bool = True,
    ) -> None:
        super().__init__(model, batch, seed)
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"rflo alpha must lie in (0, 1], got {alpha!r}")
        if feedback not in ("random", "symmetric"):
            raise ValueError(f"rflo feedback must be 'random' or 'symmetric', got {feedback!r}")
        self.alpha = float(alpha)
        self.feedback = feedback
        bound = 1.0 / np.sqrt(self.H)
        shape = (model.output_size, self.H)
        # its own stream of the seed: the model's U is drawn from default_rng(seed) first too
        fb_rng = np.random.default_rng([seed, 0xFEED])
        self.B_fb = fb_rng.uniform(-bound, bound, size=shape).astype(model.dtype)  # (O, H)
        self._reset_traces()

    def _reset_traces(self) -> None:
        self.e = np.zeros((self.batch, self.H, self.Q), dtype=self.model.dtype)  # (B, H, Q)

    def _traces(self) -> StateDict:
        return {"e": self.e, "B_fb": self.B_fb}

    def _propagate(self, fprime: np.ndarray, hhat: np.ndarray) -> None:
        a = self.model.dtype.type(self.alpha)
        self.e *= 1 - a
        self.e += (a * fprime)[:, :, None] * hhat[:, None, :]

    def _theta_grad(self, c: np.ndarray, dz: np.ndarray) -> np.ndarray:
        c_tilde = c if self.feedback == "symmetric" else dz @ self.B_fb  # (B, H)
        return np.einsum("br,brq->rq", c_tilde, self.e)  # (H, Q)

    def _run(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Gradients]:
        """T steps hoisted (see ``OnlineAlgorithm.run``). With a₁ = 1 − α and the chunk's
        e_t = a₁ᵗ e_0 + Σ_{s≤t} a₁^{t−s} α f'_s ⊗ ĥ_s:

            Σ_t c̃_t ⊙ e_t = a₁ g_1 ⊙ e_0 + Σ_s (α f'_s ⊙ g_s) ⊗ ĥ_s,   g_s = c̃_s + a₁ g_{s+1}
            e_T = a₁ᵀ e_0 + Σ_s a₁^{T−s} α f'_s ⊗ ĥ_s
        """
        dt = self.model.dtype
        ch = self._chunk(x, y, mask)
        T = ch.c.shape[0]
        a = dt.type(self.alpha)
        a1 = dt.type(1) - a
        c_tilde = ch.c if self.feedback == "symmetric" else ch.dz @ self.B_fb  # (T, B, H)
        g = c_tilde.copy()  # (T, B, H): g_s = Σ_{t≥s} a₁^{t−s} c̃_t
        if a1 != 0:
            for s in range(T - 2, -1, -1):
                g[s] += a1 * g[s + 1]
        theta = _outer_sum(a * ch.fprime * g, ch.hhat)  # (H, Q)
        theta += np.einsum("br,brq->rq", a1 * g[0], self.e)
        decay = (a1 ** np.arange(T - 1, -1, -1)).astype(dt)  # (T,): a₁^{T−s}
        e = _outer_per_stream((a * decay)[:, None, None] * ch.fprime, ch.hhat)  # (B, H, Q)
        e += a1**T * self.e
        self.e = e
        self.t += T
        return ch.losses, self._gradients(ch, theta, np.zeros_like(self.h))
