"""Sequence tasks with a metric and an honest baseline: adding, copy, sine, order, CSV series,
lagged dependencies.

Every task draws time-major batches ready for ``ElmanRNN.loss_and_grads(x, y, mask=mask)``:

    x     (T, B, I) floats of the model dtype, or (T, B) integer ids
    y     (T, B, O) floats (identity head) or (T, B) class ids (softmax head)
    mask  None, or (T, B) of 0/1: only steps with mask_tb = 1 count (many-to-one = last step)

and scores predictions ŷ = ``model.predict(x)[0]`` on the unmasked steps S = {(t, b): m_tb = 1}:

    mse           = 1/(|S| O) Σ_{(t,b)∈S} ‖ŷ_tb − y_tb‖²
    cross_entropy = 1/|S| Σ_{(t,b)∈S} −log ŷ_tb[y_tb]         (nats per step)
    accuracy      = 1/|S| Σ_{(t,b)∈S} [argmax_c ŷ_tb[c] = y_tb]

``baseline(batch)`` scores, on the same batch and with the same keys, the predictor that has
no memory of the sequence (or the naive last-value forecast); a trained model is only worth
reporting beside it.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..validation import check_dtype, check_positive_int
from .errors import DataError
from .text import read_text_file


class Batch(NamedTuple):
    """One time-major batch: inputs, targets and an optional 0/1 loss mask.

    Attributes:
        x: (T, B, I) floats or (T, B) integer ids.
        y: (T, B, O) floats or (T, B) integer class ids.
        mask: None (every step counts) or (T, B) of 0/1 in the batch dtype.
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _step_weights(batch: Batch) -> np.ndarray:
    """m_tb as float64 (T, B); all ones without a mask."""
    shape_tb = batch.y.shape[:2]
    if batch.mask is None:
        return np.ones(shape_tb)
    mask = np.asarray(batch.mask, dtype=np.float64)
    if mask.shape != shape_tb:
        raise ValueError(f"mask must have shape (T, B) = {shape_tb}, got {mask.shape}")
    if mask.sum() == 0:
        raise ValueError("mask selects no step: nothing to evaluate")
    return mask


def _check_prediction(y_hat: object, expected: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(y_hat)
    if array.shape != expected:
        raise ValueError(f"y_hat must have shape (T, B, O) = {expected}, got {array.shape}")
    if array.dtype.kind != "f":
        raise TypeError(f"y_hat must be floats, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def mean_squared_error(y_hat: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """1/(|S| O) Σ_{(t,b)∈S} ‖ŷ_tb − y_tb‖², S = {m_tb = 1}, for (T, B, O) arrays."""
    diff = np.asarray(y_hat, dtype=np.float64) - np.asarray(y, dtype=np.float64)  # (T, B, O)
    per_step = np.einsum("tbo,tbo->tb", diff, diff)  # (T, B)
    return float((weights * per_step).sum() / (weights.sum() * diff.shape[-1]))


def classification_metrics(
    probs: np.ndarray, y: np.ndarray, weights: np.ndarray
) -> dict[str, float]:
    """Cross-entropy −log p_tb[y_tb] and accuracy [argmax p_tb = y_tb], averaged over S.

    Args:
        probs: (T, B, C) probabilities (the softmax head's ŷ).
        y: (T, B) class ids.
        weights: (T, B) mask m_tb.
    """
    p_true = np.take_along_axis(probs, y[..., None], axis=-1)[..., 0]  # (T, B)
    tiny = np.finfo(np.float64).tiny
    ce = -np.log(np.maximum(p_true, tiny))  # (T, B)
    hit = (probs.argmax(axis=-1) == y).astype(np.float64)  # (T, B)
    n = weights.sum()
    return {
        "cross_entropy": float((weights * ce).sum() / n),
        "accuracy": float((weights * hit).sum() / n),
    }


def score_predictions(
    y_hat: np.ndarray, y: np.ndarray, mask: np.ndarray | None, output: str
) -> dict[str, float]:
    """Scores of ŷ (T, N, O) against y over the steps the mask counts, S = {m_tn = 1}:

        softmax:  accuracy = 1/|S| Σ_S [argmax ŷ_tn = y_tn]
                  cross_entropy = −1/|S| Σ_S log ŷ_tn[y_tn]
        identity: mse = 1/(|S| O) Σ_S ‖ŷ_tn − y_tn‖²
        sigmoid:  mse, and accuracy = 1/(|S| O) Σ_S Σ_o [ŷ_tno > ½ = y_tno > ½]

    ``mask`` None counts every step. y: (T, N) class ids (softmax), (T, N, O) or (T, N).
    """
    T, N = y_hat.shape[:2]
    weights = np.ones((T, N)) if mask is None else np.asarray(mask, dtype=np.float64)
    if weights.shape != (T, N):
        raise ValueError(f"mask must have shape (T, N) = {(T, N)}, got {weights.shape}")
    if output == "softmax":
        return classification_metrics(np.asarray(y_hat, np.float64), np.asarray(y), weights)
    y = np.asarray(y)
    y = y[..., None] if y.ndim == 2 else y
    out = {"mse": mean_squared_error(y_hat, y, weights)}
    if output == "sigmoid":
        hit = ((np.asarray(y_hat) > 0.5) == (y > 0.5)).mean(axis=-1)  # (T, N)
        out["accuracy"] = float((weights * hit).sum() / weights.sum())
    return out


# ---------------------------------------------------------------------------------------------
# Task interface
# ---------------------------------------------------------------------------------------------


class SequenceTask(ABC):
    """A source of batches with a head, a metric and a memoryless baseline.

    Attributes:
        name: registry name (``get_task(name)``).
        input_size: I (for id inputs, the number of input symbols).
        output_size: O (for the softmax head, the number of classes).
        output: the model head: ``identity``, ``sigmoid`` or ``softmax``.
        seq_len: T, the steps of one sample.
        metric: the key of :meth:`evaluate` to report: ``mse`` (lower is better) or
            ``accuracy`` (higher is better).
    """

    name: ClassVar[str]
    output: ClassVar[str]
    metric: ClassVar[str]
    input_size: int
    output_size: int
    seq_len: int

    @property
    def higher_is_better(self) -> bool:
        """True for accuracy, False for mse."""
        return self.metric == "accuracy"

    @abstractmethod
    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        """Draw B sequences of T steps (see the module docstring for shapes).

        ``split`` is ``train`` or ``val``; synthetic tasks draw both from the same
        distribution (use a separate generator for validation), CSV series from disjoint
        stretches of time.
        """

    @abstractmethod
    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        """Score predictions ŷ (T, B, O) on the batch's unmasked steps; includes ``metric``."""

    @abstractmethod
    def baseline(self, batch: Batch) -> dict[str, float]:
        """The memoryless (or naive last-value) predictor's scores, same keys as evaluate."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """{"name": ..., constructor arguments...}: ``get_task(**config)`` rebuilds the task."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_sample_args(rng: object, batch: int, dtype: DTypeLike, split: str) -> np.dtype:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    check_positive_int("batch", batch)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return check_dtype(dtype)


def _last_step_mask(T: int, B: int, dtype: np.dtype) -> np.ndarray:
    """m_tb = [t = T − 1]: many-to-one, only the last step's output counts."""
    mask = np.zeros((T, B), dtype=dtype)  # (T, B)
    mask[-1] = 1
    return mask


def _regression_scores(task: SequenceTask, y_hat: object, batch: Batch) -> dict[str, float]:
    T, B = batch.y.shape[:2]
    pred = _check_prediction(y_hat, (T, B, task.output_size))
    return {"mse": mean_squared_error(pred, batch.y, _step_weights(batch))}


# ---------------------------------------------------------------------------------------------
# Adding problem
# ---------------------------------------------------------------------------------------------


class AddingTask(SequenceTask):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015).

    x_t = (u_t, m_t), u_t ~ U[0, 1], m_t = 1 at one step i in [0, T/2) and one step j in
    [T/2, T), else 0;  target y_{T−1} = u_i + u_j at the last step only (mask = e_{T−1}),
    identity head.  Baseline: always predict E[y] = 1, MSE = Var(u_i + u_j) = 2/12 = 1/6.

    Args:
        seq_len: T ≥ 2.
    """

    name = "adding"
    output = "identity"
    metric = "mse"

    def __init__(self, seq_len: int = 50) -> None:
        self.seq_len = check_positive_int("seq_len", seq_len)
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 for the adding problem, got {seq_len}")
        self.input_size = 2
        self.output_size = 1

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "seq_len": self.seq_len}

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        dt = _check_sample_args(rng, batch, dtype, split)
        T, B, half = self.seq_len, batch, self.seq_len // 2
        values = rng.uniform(0.0, 1.0, size=(T, B))  # (T, B)
        first = rng.integers(0, half, size=B)  # (B,)
        second = rng.integers(half, T, size=B)  # (B,)
        markers = np.zeros((T, B))  # (T, B)
        cols = np.arange(B)
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        x = np.stack([values, markers], axis=-1).astype(dt)  # (T, B, 2)
        y = np.zeros((T, B, 1), dtype=dt)  # (T, B, 1)
        y[-1, :, 0] = values[first, cols] + values[second, cols]
        return Batch(x, y, _last_step_mask(T, B, dt))

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        return _regression_scores(self, y_hat, batch)

    def baseline(self, batch: Batch) -> dict[str, float]:
        """MSE of the constant prediction ŷ = 1 = E[u_i + u_j] (expected value 1/6)."""
        return {"mse": mean_squared_error(np.ones(batch.y.shape), batch.y, _step_weights(batch))}


# ---------------------------------------------------------------------------------------------
# Copy memory task
# ---------------------------------------------------------------------------------------------


class CopyTask(SequenceTask):
    """The copy memory task (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016).

    With K = n_symbols, n = copy_len, D = delay, T = D + 2n:
        x = (s_1 … s_n, 0 × (D − 1), K + 1, 0 × n),   s_i ~ U{1 … K}
        y = (0 × (D + n), s_1 … s_n)
    ids 0 = blank, 1 … K = symbols, K + 1 = "recall now"; softmax head over the K + 1 outputs
    {blank, symbols}; every step counts (no mask). The best memoryless predictor knows the
    position but not the symbols: blank for the first D + n steps, uniform over K after, so

        cross_entropy = n log K / T,  accuracy (of the recalled symbols) = 1/K.

    ``evaluate`` reports ``cross_entropy`` per step over all T steps (Arjovsky et al.'s
    curve), ``accuracy`` on the n recalled symbols (the metric) and ``step_accuracy`` over all
    steps.

    Args:
        n_symbols: K ≥ 2.
        copy_len: n ≥ 1.
        delay: D ≥ 1, the steps between the last symbol and the recall marker plus one.
    """

    name = "copy"
    output = "softmax"
    metric = "accuracy"

    def __init__(self, n_symbols: int = 8, copy_len: int = 10, delay: int = 20) -> None:
        self.n_symbols = check_positive_int("n_symbols", n_symbols)
        if self.n_symbols < 2:
            raise ValueError(f"n_symbols must be at least 2, got {n_symbols}")
        self.copy_len = check_positive_int("copy_len", copy_len)
        self.delay = check_positive_int("delay", delay)
        self.seq_len = self.delay + 2 * self.copy_len
        self.input_size = self.n_symbols + 2
        self.output_size = self.n_symbols + 1

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_symbols": self.n_symbols,
            "copy_len": self.copy_len,
            "delay": self.delay,
        }

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        _check_sample_args(rng, batch, dtype, split)
        n, D, T = self.copy_len, self.delay, self.seq_len
        symbols = rng.integers(1, self.n_symbols + 1, size=(n, batch))  # (n, B)
        x = np.zeros((T, batch), dtype=np.int64)  # (T, B)
        x[:n] = symbols
        x[n + D - 1] = self.n_symbols + 1
        y = np.zeros((T, batch), dtype=np.int64)  # (T, B)
        y[T - n :] = symbols
        return Batch(x, y, None)

    def _scores(self, probs: np.ndarray, batch: Batch) -> dict[str, float]:
        weights = _step_weights(batch)  # (T, B)
        scores = classification_metrics(probs, batch.y, weights)
        recall = np.zeros_like(weights)
        recall[self.seq_len - self.copy_len :] = 1.0
        recall *= weights
        if recall.sum() == 0:
            raise ValueError("the mask hides every recalled symbol: nothing to evaluate")
        recalled = classification_metrics(probs, batch.y, recall)
        return {
            "cross_entropy": scores["cross_entropy"],
            "accuracy": recalled["accuracy"],
            "step_accuracy": scores["accuracy"],
        }

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        T, B = batch.y.shape
        probs = _check_prediction(y_hat, (T, B, self.output_size))
        return self._scores(probs, batch)

    def baseline(self, batch: Batch) -> dict[str, float]:
        """Scores of p_t = e_blank for t < D + n and uniform over the K symbols after.

        Its argmax breaks the tie among symbols towards symbol 1, so its recall accuracy on a
        batch is the share of 1s among the recalled symbols (expected 1/K).
        """
        T, B = batch.y.shape
        probs = np.zeros((T, B, self.output_size))  # (T, B, K + 1)
        probs[: T - self.copy_len, :, 0] = 1.0
        probs[T - self.copy_len :, :, 1:] = 1.0 / self.n_symbols
        # A strictly larger p for symbol 1 would change the cross-entropy; argmax of a tie
        # already picks the first maximum, i.e. symbol 1 (id 1).
        return self._scores(probs, batch)


# ---------------------------------------------------------------------------------------------
# Noisy multi-sine forecasting
# ---------------------------------------------------------------------------------------------


class SineTask(SequenceTask):
    """One-step-ahead forecasting of a noisy sum of sines.

    s_t = Σ_k a_k sin(2π t / P_k + φ_k),  o_t = s_t + σ ε_t,  a_k ~ U[0.5, 1], φ_k ~ U[0, 2π),
    ε_t ~ N(0, 1), per sequence;  x_t = o_t,  y_t = o_{t+h}  (t = 0 … T−1), identity head.
    Baseline: the naive last-value forecast ŷ_t = x_t = o_t. The noise floor of any forecast
    is MSE = σ².

    Args:
        seq_len: T.
        periods: the periods P_k in steps.
        noise: σ ≥ 0.
        horizon: h ≥ 1 steps ahead.
        last_only: many-to-one: mask every step but the last, so the model forecasts
            o_{T−1+h} from the whole window (default: every step is a forecast).
    """

    name = "sine"
    output = "identity"
    metric = "mse"

    def __init__(
        self,
        seq_len: int = 50,
        periods: Sequence[float] = (7.0, 13.0, 29.0),
        noise: float = 0.1,
        horizon: int = 1,
        last_only: bool = False,
    ) -> None:
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.horizon = check_positive_int("horizon", horizon)
        self.last_only = _check_bool("last_only", last_only)
        periods = tuple(float(p) for p in periods)
        if not periods or not all(math.isfinite(p) and p > 0 for p in periods):
            raise ValueError(f"periods must be positive numbers, got {periods!r}")
        self.periods = periods
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        self.noise = float(noise)
        self.input_size = 1
        self.output_size = 1

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seq_len": self.seq_len,
            "periods": list(self.periods),
            "noise": self.noise,
            "horizon": self.horizon,
            "last_only": self.last_only,
        }

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        dt = _check_sample_args(rng, batch, dtype, split)
        K = len(self.periods)
        steps = np.arange(self.seq_len + self.horizon, dtype=np.float64)  # (T + h,)
        amp = rng.uniform(0.5, 1.0, size=(K, batch))  # (K, B)
        phase = rng.uniform(0.0, 2 * np.pi, size=(K, batch))  # (K, B)
        freq = 2 * np.pi / np.asarray(self.periods)  # (K,)
        angle = steps[:, None, None] * freq[None, :, None] + phase[None]  # (T + h, K, B)
        clean = np.einsum("kb,tkb->tb", amp, np.sin(angle))  # (T + h, B)
        obs = clean + self.noise * rng.standard_normal(clean.shape)  # (T + h, B)
        x = obs[: self.seq_len, :, None].astype(dt)  # (T, B, 1)
        y = obs[self.horizon :, :, None].astype(dt)  # (T, B, 1)
        mask = _last_step_mask(self.seq_len, batch, dt) if self.last_only else None
        return Batch(x, y, mask)

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        return _regression_scores(self, y_hat, batch)

    def baseline(self, batch: Batch) -> dict[str, float]:
        """MSE of the naive forecast ŷ_t = x_t (the last observed value)."""
        return {"mse": mean_squared_error(batch.x, batch.y, _step_weights(batch))}


# ---------------------------------------------------------------------------------------------
# Temporal order (many-to-one classification)
# ---------------------------------------------------------------------------------------------


class TemporalOrderTask(SequenceTask):
    """The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a), scaled to T.

    Ids 0 … 3 = distractors a, b, c, d;  4 = start B;  5 = end E;  6 = X;  7 = Y.
        x = (B, d_1, …, d_{T−2}, E), d ~ U{a, b, c, d}, except x_{t1} = r_1, x_{t2} = r_2 with
        r_i ~ U{X, Y}, t1 ∈ [T/10, 2T/10], t2 ∈ [5T/10, 6T/10]
        class  = 2 [r_1 = Y] + [r_2 = Y]  ∈ {XX, XY, YX, YY},  at the last step only (mask)
    Softmax head over 4 classes, classification from the last step (many-to-one).
    Baseline: without memory of r_1, r_2 every class has probability 1/4, so
    cross_entropy = log 4 and accuracy = 1/4 (its argmax, a tie, picks class 0 = XX).

    Args:
        seq_len: T ≥ 10.
    """

    name = "order"
    output = "softmax"
    metric = "accuracy"
    n_classes = 4

    def __init__(self, seq_len: int = 50) -> None:
        self.seq_len = check_positive_int("seq_len", seq_len)
        if self.seq_len < 10:
            raise ValueError(f"seq_len must be at least 10 for the order task, got {seq_len}")
        self.input_size = 8
        self.output_size = self.n_classes

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "seq_len": self.seq_len}

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        dt = _check_sample_args(rng, batch, dtype, split)
        T, B = self.seq_len, batch
        x = rng.integers(0, 4, size=(T, B))  # (T, B) distractors
        x[0], x[-1] = 4, 5
        t1 = rng.integers(T // 10, 2 * T // 10 + 1, size=B)  # (B,)
        t2 = rng.integers(5 * T // 10, 6 * T // 10 + 1, size=B)  # (B,)
        r1 = rng.integers(0, 2, size=B)  # (B,) 0 = X, 1 = Y
        r2 = rng.integers(0, 2, size=B)  # (B,)
        cols = np.arange(B)
        x[t1, cols] = 6 + r1
        x[t2, cols] = 6 + r2
        y = np.zeros((T, B), dtype=np.int64)  # (T, B); only the last step is scored
        y[-1] = 2 * r1 + r2
        return Batch(x.astype(np.int64), y, _last_step_mask(T, B, dt))

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        T, B = batch.y.shape
        probs = _check_prediction(y_hat, (T, B, self.output_size))
        return classification_metrics(probs, batch.y, _step_weights(batch))

    def baseline(self, batch: Batch) -> dict[str, float]:
        """Scores of the uniform prediction p = 1/4 (CE = log 4; argmax = class 0)."""
        probs = np.full((*batch.y.shape, self.output_size), 1.0 / self.output_size)
        return classification_metrics(probs, batch.y, _step_weights(batch))


# ---------------------------------------------------------------------------------------------
# Lagged dependencies (a binary stream)
# ---------------------------------------------------------------------------------------------


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = −p log p − (1 − p) log(1 − p) in nats, with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros_like(p)
    inside = (p > 0) & (p < 1)
    q = p[inside]
    out[inside] = -q * np.log(q) - (1 - q) * np.log1p(-q)
    return out


class LaggedDependenciesTask(SequenceTask):
    """The binary lagged-dependencies stream (Pitis 2016; Marschall, Cho & Savin 2020).

        x_t ~ Bernoulli(½) i.i.d.        P(y_t = 1) = ½ + ½ x_{t−t1} − ¼ x_{t−t2}

    ids x ∈ {0, 1}, softmax head over {0, 1}, every step scored. Its three cross-entropy
    levels (nats per step, from the joint law of (x_{t−t1}, x_{t−t2}); see :meth:`levels`):

        none   H(E p) = H(0.625)                                      ≈ 0.6616
        first  E_{x_{t−t1}} H(E[p | x_{t−t1}])  = ½H(0.875) + ½H(0.375) ≈ 0.5192
        both   E H(p) = ¼ (H(1) + H(.75) + H(.5) + H(.25))             ≈ 0.4545

    A model at ``first`` has learned the t1 dependency only; ``both`` is the lowest reachable.
    :meth:`sample` draws finite sequences whose first t2 steps (which depend on inputs before
    the sequence) are masked out; :meth:`stream` continues B unbroken streams chunk by chunk.
    Baseline: the memoryless prediction P(y = 1) = 0.625 (the ``none`` level).

    Args:
        seq_len: T > t2, steps per sample or chunk.
        lag1: t1 ≥ 1.   lag2: t2 > t1.
    """

    name = "lagged"
    output = "softmax"
    metric = "cross_entropy"

    def __init__(self, seq_len: int = 50, lag1: int = 3, lag2: int = 8) -> None:
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.lag1 = check_positive_int("lag1", lag1)
        self.lag2 = check_positive_int("lag2", lag2)
        if self.lag2 <= self.lag1:
            raise ValueError(f"lag2 must exceed lag1, got lag1={lag1}, lag2={lag2}")
        if self.seq_len <= self.lag2:
            raise ValueError(f"seq_len must exceed lag2={self.lag2}, got {seq_len}")
        self.input_size = 2
        self.output_size = 2

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "seq_len": self.seq_len, "lag1": self.lag1, "lag2": self.lag2}

    @staticmethod
    def levels() -> dict[str, float]:
        """The three cross-entropy levels (nats/step): ``none``, ``first``, ``both``."""
        x1, x2 = np.meshgrid([0.0, 1.0], [0.0, 1.0], indexing="ij")  # (2, 2): x_{t−t1}, x_{t−t2}
        p = 0.5 + 0.5 * x1 - 0.25 * x2
        return {
            "none": float(_binary_entropy(p.mean())),
            "first": float(_binary_entropy(p.mean(axis=1)).mean()),
            "both": float(_binary_entropy(p).mean()),
        }

    def _targets(self, rng: np.random.Generator, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (T, B) and y (T, B) from ``full`` = t2 earlier inputs then the T new ones."""
        t2 = self.lag2
        x = full[t2:]
        p = 0.5 + 0.5 * full[t2 - self.lag1 : -self.lag1] - 0.25 * full[:-t2]  # (T, B)
        y = (rng.uniform(size=p.shape) < p).astype(np.int64)
        return x, y

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        dt = _check_sample_args(rng, batch, dtype, split)
        full = rng.integers(0, 2, size=(self.seq_len + self.lag2, batch))  # (t2 + T, B)
        x, y = self._targets(rng, full)
        mask = np.ones(x.shape, dtype=dt)
        mask[: self.lag2] = 0  # their targets depend on inputs the model never saw
        return Batch(x.astype(np.int64), y, mask)

    def stream(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike,
        carry: np.ndarray | None,
    ) -> tuple[Batch, np.ndarray]:
        """The next T steps of B continuing streams.

        Args:
            carry: (t2, B) the streams' last t2 inputs, or None to start them (the first t2
                targets, which depend on unseen inputs, are then masked).

        Returns:
            The chunk and the new carry.
        """
        dt = _check_sample_args(rng, batch, dtype, "train")
        new = rng.integers(0, 2, size=(self.seq_len, batch))  # (T, B)
        mask = None
        if carry is None:
            carry = rng.integers(0, 2, size=(self.lag2, batch))
            mask = np.ones(new.shape, dtype=dt)
            mask[: self.lag2] = 0
        full = np.concatenate([np.asarray(carry, dtype=np.int64), new])
        x, y = self._targets(rng, full)
        return Batch(x.astype(np.int64), y, mask), full[-self.lag2 :].copy()

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        T, B = batch.y.shape
        probs = _check_prediction(y_hat, (T, B, self.output_size))
        return classification_metrics(probs, batch.y, _step_weights(batch))

    def baseline(self, batch: Batch) -> dict[str, float]:
        """Scores of the memoryless P(y = 1) = 0.625 (expected cross-entropy: ``none``)."""
        probs = np.empty((*batch.y.shape, 2))
        probs[..., 1] = 0.625
        probs[..., 0] = 0.375
        return classification_metrics(probs, batch.y, _step_weights(batch))


# ---------------------------------------------------------------------------------------------
# CSV time series
# ---------------------------------------------------------------------------------------------

MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-"})


def _parse_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv_columns(
    path: str | os.PathLike[str], wanted: Sequence[str] | None = None, delimiter: str = ","
) -> tuple[tuple[str, ...], np.ndarray]:
    """The named columns (default: those numeric in the first data row) as (R, C) float64.

    Raises:
        CorpusNotFoundError, DataError: as :class:`CsvTask` (file, line and column named).
    """
    text = read_text_file(str(path))
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    where = f"CSV file {str(path)!r}"
    try:
        header = next(rows)
    except StopIteration:
        raise DataError(f"{where} has no header row") from None
    except csv.Error as err:
        raise DataError(f"{where}, line 1: {err}") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{where} repeats column name(s) {dupes} in its header")
    body: list[tuple[int, list[str]]] = []
    try:
        for fields in rows:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                raise DataError(
                    f"{where}, line {rows.line_num}: {len(fields)} fields, but the header "
                    f"has {len(header)}"
                )
            body.append((rows.line_num, fields))
    except csv.Error as err:
        raise DataError(f"{where}, line {rows.line_num}: {err}") from None
    if not body:
        raise DataError(f"{where} has a header but no data rows")
    if wanted is None:
        first = body[0][1]
        names = [
            h for h, cell in zip(header, first, strict=True) if _parse_number(cell) is not None
        ]
        if not names:
            raise DataError(
                f"{where}: no column holds a number in its first data row "
                f"(line {body[0][0]}); columns: {header}"
            )
    else:
        names = list(wanted)
        if not names:
            raise DataError(f"{where}: columns is empty; choose from {header}")
        unknown = [c for c in names if c not in header]
        if unknown:
            raise DataError(f"{where} has no column(s) {unknown}; its columns are {header}")
        if len(set(names)) != len(names):
            raise DataError(f"{where}: columns {names} repeat a name")
    index = [header.index(c) for c in names]
    data = np.empty((len(body), len(names)))  # (R, C)
    for r, (line, fields) in enumerate(body):
        for c, (name, j) in enumerate(zip(names, index, strict=True)):
            cell = fields[j].strip()
            value = _parse_number(cell)
            if cell.lower() in MISSING_MARKERS or (value is not None and math.isnan(value)):
                raise DataError(
                    f"{where}, line {line}, column {name!r}: missing value {cell!r}; "
                    "fill or drop the row first"
                )
            if value is None:
                raise DataError(f"{where}, line {line}, column {name!r}: non-numeric cell {cell!r}")
            if not math.isfinite(value):
                raise DataError(f"{where}, line {line}, column {name!r}: infinite value {cell!r}")
            data[r, c] = value
    return tuple(names), data


class CsvTask(SequenceTask):
    """Forecast column(s) of a CSV time series h steps ahead from a window of T rows.

    With the chosen columns as a series z_r ∈ R^C (rows r in file order, the first
    ⌊R (1 − val_fraction)⌋ for training, the rest for validation), standardised with the
    training rows' statistics, z̃_r = (z_r − μ_train) / σ_train:

        x_t = z̃_{s+t},  y_t = z̃_{s+t+h}  (t = 0 … T−1, window start s drawn within a split)

    identity head, I = O = C. Baseline: the naive last-value forecast ŷ_t = x_t. MSE is in
    standardised units (1.0 = predicting the training mean).

    Args:
        path: a UTF-8 CSV file with a header row.
        columns: the column names to use (a list, or one comma-separated string); default:
            every column whose first data cell is a number (so a date column is skipped).
        window: T, the rows per window.
        horizon: h ≥ 1.
        val_fraction: the share of rows, at the end, held out for validation, in (0, 1).
        delimiter: the CSV field separator.
        last_only: many-to-one: mask every step but the last, so the model forecasts
            z̃_{s+T−1+h} from the window (default: every step is a forecast).

    Raises:
        CorpusNotFoundError: the file does not exist.
        DataError: empty, binary or non-UTF-8 file; no header; a row with the wrong number of
            fields; an unknown column; a missing value or non-numeric cell (file, line and
            column named); too few rows for one window in each split.
    """

    name = "csv"
    output = "identity"
    metric = "mse"

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str] | str | None = None,
        window: int = 50,
        horizon: int = 1,
        val_fraction: float = 0.2,
        delimiter: str = ",",
        last_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.last_only = _check_bool("last_only", last_only)
        self.seq_len = check_positive_int("window", window)
        self.horizon = check_positive_int("horizon", horizon)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
            raise TypeError(f"val_fraction must be a float, got {type(val_fraction).__name__}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.val_fraction = float(val_fraction)
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {delimiter!r}")
        self.delimiter = delimiter
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        self.columns, raw = self._read(columns)  # raw: (R, C) float64
        R = raw.shape[0]
        self.n_train = int(R * (1.0 - self.val_fraction))
        need = self.seq_len + self.horizon
        for what, n in (("training", self.n_train), ("validation", R - self.n_train)):
            if n < need:
                raise DataError(
                    f"CSV file {self.path!r} has {R} data rows, so its {what} part "
                    f"(val_fraction={self.val_fraction}) has {n} rows, fewer than window "
                    f"{self.seq_len} + horizon {self.horizon} = {need}; use a shorter --seq-len "
                    f"or a longer series"
                )
        self.mean, self.std, self.series = self._standardise(raw)
        self.input_size = self.output_size = len(self.columns)

    def _standardise(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(μ, σ, z̃) of the training rows, computed on raw / max|train| so that values near
        the float64 limit neither overflow σ nor vanish: z̃ = (x/m − μ/m) / (σ/m).

        Raises:
            DataError: a column constant over the training rows, or one whose validation rows
                lie too far outside the training range to standardise in float64.
        """
        where = f"CSV file {self.path!r}"
        train = raw[: self.n_train]  # (R_train, C)
        peak = np.abs(train).max(axis=0)  # (C,)
        with np.errstate(over="ignore", under="ignore"):
            scaled = raw / np.where(peak > 0, peak, 1.0)  # (R, C), |training rows| <= 1
            mu = scaled[: self.n_train].mean(axis=0)  # (C,)
            sd = scaled[: self.n_train].std(axis=0)  # (C,)
            series = (scaled - mu) / np.where(sd > 0, sd, 1.0)  # (R, C) standardised
        for c, name in enumerate(self.columns):
            if not sd[c] > 0:
                raise DataError(
                    f"{where}, column {name!r} is constant ({train[0, c]!r}) over the "
                    f"{self.n_train} training rows, so it cannot be standardised; leave it out "
                    "with --columns"
                )
            if not np.isfinite(series[:, c]).all():
                raise DataError(
                    f"{where}, column {name!r}: its validation rows lie too far outside the "
                    "training range to standardise in float64"
                )
        return mu * peak, sd * peak, series

    def _read(self, wanted: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
        return read_csv_columns(self.path, wanted, self.delimiter)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "columns": list(self.columns),
            "window": self.seq_len,
            "horizon": self.horizon,
            "val_fraction": self.val_fraction,
            "delimiter": self.delimiter,
            "last_only": self.last_only,
        }

    def _segment(self, split: str) -> np.ndarray:
        return self.series[: self.n_train] if split == "train" else self.series[self.n_train :]

    def n_windows(self, split: str = "train") -> int:
        """The number of distinct windows in a split: R_split − T − h + 1."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return len(self._segment(split)) - self.seq_len - self.horizon + 1

    def windows(
        self, starts: np.ndarray, dtype: DTypeLike = np.float32, split: str = "val"
    ) -> Batch:
        """The windows starting at the given rows of a split (e.g. ``np.arange(n_windows)``).

        Returns:
            Batch with x, y (T, len(starts), C); mask None, or the last step if ``last_only``.
        """
        dt = check_dtype(dtype)
        n = self.n_windows(split)
        starts = np.asarray(starts)
        if starts.ndim != 1 or starts.dtype.kind not in "iu" or starts.size == 0:
            raise ValueError(f"starts must be a non-empty 1-D integer array, got {starts!r}")
        if starts.min() < 0 or starts.max() >= n:
            raise ValueError(f"starts must lie in [0, {n - 1}] for the {split} split")
        seg = self._segment(split)  # (R_split, C)
        t = np.arange(self.seq_len)  # (T,)
        rows = starts[None, :] + t[:, None]  # (T, B)
        x = seg[rows].astype(dt)  # (T, B, C)
        y = seg[rows + self.horizon].astype(dt)  # (T, B, C)
        mask = _last_step_mask(self.seq_len, len(starts), dt) if self.last_only else None
        return Batch(x, y, mask)

    def sample(
        self,
        rng: np.random.Generator,
        batch: int,
        dtype: DTypeLike = np.float32,
        *,
        split: str = "train",
    ) -> Batch:
        _check_sample_args(rng, batch, dtype, split)
        starts = rng.integers(0, self.n_windows(split), size=batch)  # (B,)
        return self.windows(starts, dtype, split)

    def evaluate(self, y_hat: np.ndarray, batch: Batch) -> dict[str, float]:
        return _regression_scores(self, y_hat, batch)

    def baseline(self, batch: Batch) -> dict[str, float]:
        """MSE of the naive forecast ŷ_t = x_t (the last observed row)."""
        return {"mse": mean_squared_error(batch.x, batch.y, _step_weights(batch))}


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

TASKS: dict[str, type[SequenceTask]] = {
    "adding": AddingTask,
    "copy": CopyTask,
    "sine": SineTask,
    "order": TemporalOrderTask,
    "csv": CsvTask,
    "lagged": LaggedDependenciesTask,
}
"""The generated (and CSV) sequence tasks by name, for :func:`get_task`."""


def __getattr__(name: str) -> Any:
    """``TASK_NAMES``: the one list of what ``bptt train --task`` trains on, read from the task
    registry (:mod:`bptt.data.registry`): ``charlm`` (character streams over a text), the tasks
    of :data:`TASKS`, and ``arrays`` (your own arrays, :mod:`bptt.data.arrays`)."""
    if name == "TASK_NAMES":
        from .registry import TASK_NAMES

        return TASK_NAMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_task(name: str, **kwargs: Any) -> SequenceTask:
    """Build a task by name: ``get_task("adding", seq_len=100)``; ``get_task(**task.config())``.

    Raises:
        ValueError: unknown name (the choices are listed).
        TypeError: an argument the task does not take (its accepted arguments are listed).
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    cls = TASKS[name]
    accepted = list(inspect.signature(cls).parameters)
    unexpected = sorted(k for k in kwargs if k not in accepted)
    if unexpected:
        raise TypeError(f"task {name!r} takes arguments {accepted}, got unexpected {unexpected}")
    return cls(**kwargs)
