"""Sampling characters from a trained character model.

    p(c | h_t) ∝ exp(z_t[c] / τ)  over the k most likely characters (all when k = 0)
    h_t = f_h(V x_t + W h_{t−1} + b_h),  z_t = U h_t + b_y

τ → 0 is greedy decoding (``temperature=0`` takes the argmax). The same seed gives the same
text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .model import RNN


def next_distribution(z: np.ndarray, temperature: float, top_k: int = 0) -> np.ndarray:
    """p ∝ exp(z / τ) restricted to the top-k logits, computed in float64; z is (O,)."""
    z = np.asarray(z, dtype=np.float64)
    if top_k and top_k < z.size:
        cutoff = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cutoff, z, -np.inf)
    if temperature == 0:
        p = np.zeros_like(z)
        p[int(np.argmax(z))] = 1.0
        return p
    with np.errstate(over="ignore", under="ignore"):  # a tiny τ: (z - max)/τ → -inf, exp → 0
        z = (z - z.max()) / temperature
        p = np.exp(z)
    return p / p.sum()


def sample_ids(
    model: RNN,
    prime_ids: np.ndarray,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int | None = 0,
) -> np.ndarray:
    """Feed ``prime_ids`` (at least one id), then draw ``length`` ids one at a time.

    Returns:
        (length,) int64 ids drawn after the prime.

    Raises:
        ValueError: an empty prime, a negative length or temperature, top_k < 0.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be an int >= 0, got {length!r}")
    if not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0
    ):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0: no limit), got {top_k!r}")
    prime_ids = np.asarray(prime_ids, dtype=np.int64)
    if prime_ids.ndim != 1 or prime_ids.size == 0:
        raise ValueError("the prime must hold at least one character")
    model.require_unidirectional("sampling")
    rng = np.random.default_rng(seed)
    z_prime, state = model.logits(prime_ids[:, None])  # (P, 1, O), the state after the prime
    z = z_prime[-1, 0]  # (O,) logits after the prime
    out = np.empty(length, dtype=np.int64)
    for i in range(length):
        p = next_distribution(z, temperature, top_k)
        c = int(rng.choice(p.size, p=p))
        out[i] = c
        z_t, state = model.step(np.array([c]), state)  # (1, O)
        z = z_t[0]
    return out


def sample_text(
    model: RNN,
    vocab: Any,
    length: int,
    *,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int | None = 0,
) -> str:
    """``prime`` followed by ``length`` sampled characters.

    An empty prime starts from a newline (or the first character of the vocabulary).

    Raises:
        ValueError: the prime holds characters outside the vocabulary (they are listed).
    """
    if not isinstance(prime, str):
        raise TypeError(f"prime must be a str, got {type(prime).__name__}")
    start = prime or ("\n" if "\n" in vocab.chars else vocab.chars[0])
    try:
        ids = vocab.encode(start)
    except ValueError as err:
        raise ValueError(f"--prime: {err}") from None
    drawn = sample_ids(model, ids, length, temperature=temperature, top_k=top_k, seed=seed)
    return prime + str(vocab.decode(drawn))
