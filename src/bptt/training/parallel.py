"""Synchronous data parallelism: one optimizer step from N workers' shares of the global batch.

The loss of a batch of B streams is a mean over the streams (:mod:`bptt.algorithms.base`),

    L = Σ_t (1/B) Σ_b mask_tb ℓ_tb = Σ_r (B_r/B) · L_r,    L_r = Σ_t (1/B_r) Σ_{b ∈ r} mask_tb ℓ_tb

so worker r computes the gradient of its contiguous share of B_r streams with the run's own
algorithm, scales loss and gradient by B_r/B, and an all-reduce (sum) gives every worker
dL/dθ of the global batch, to rounding; the optimizer step that follows is then the same on
every worker. Each worker carries the state of its own streams (TBPTT's h_start and buffer).

    shares(B, N)            the contiguous split of B streams over N workers (sizes differ
                            by at most one, the larger first)
    ShardedGradient         a GradientAlgorithm around the run's algorithm on one share: its
                            gradient() is the global batch's, its state_dict() the global
                            streams' (gathered, in the one-process layout: a checkpoint of a
                            parallel run is an ordinary one)
    TorchCollective         the all-reduce and gather: torch.distributed (gloo) on NumPy
                            buffers through torch.from_numpy, which shares their memory
    check_parallel(config)  what --workers refuses, before anything starts

The launcher (Ray Train, the run directory, resume) is :mod:`bptt.training.distributed`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from .. import algorithms
from ..algorithms import Estimate, GradientAlgorithm
from ..algorithms.base import StateDict
from ..data.tasks import Batch
from ..model import RNN
from ..params import Gradients
from .config import TrainConfig


def shares(batch: int, workers: int) -> list[tuple[int, int]]:
    """The contiguous shares [lo, hi) of ``batch`` streams over ``workers`` workers.

    The first ``batch % workers`` workers take one stream more; every worker takes at least
    one (``workers <= batch``).

    Raises:
        ValueError: ``workers`` not in 1 … ``batch``.
    """
    if not 1 <= workers <= batch:
        raise ValueError(f"workers must lie in 1 … batch ({batch}), got {workers}")
    base, extra = divmod(batch, workers)
    out, lo = [], 0
    for r in range(workers):
        hi = lo + base + (1 if r < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def check_parallel(config: TrainConfig) -> None:
    """Refuse what ``--workers N`` (N > 1) cannot run, naming the option.

    Raises:
        ValueError: more workers than sequences in the batch; a streaming (online) algorithm;
            ``--profile-every``.
    """
    n = config.workers
    if n <= 1:
        return
    if n > config.batch:
        raise ValueError(
            f"--workers {n} exceeds --batch {config.batch}: the global batch is split between "
            "the workers and each needs at least one sequence; use --workers <= --batch"
        )
    entry = algorithms.get(config.algorithm)
    if entry.streaming:
        raise ValueError(
            f"--workers {n} runs window algorithms (bptt, recompute); --algorithm "
            f"{config.algorithm} is online: it updates the weights every --update-every "
            "stream steps from a carried influence that is not split between workers yet; "
            "use --workers 1 or --algorithm bptt"
        )
    if config.profile_every:
        raise ValueError(
            f"--profile-every records one process's per-lag gradient profile; it does not run "
            f"with --workers {n}: leave one of them out"
        )


class Collective(Protocol):
    """The collectives a sharded gradient needs (every worker calls each, in the same order)."""

    rank: int
    world: int

    def all_reduce_sum(self, buffer: np.ndarray) -> None:
        """Replace the contiguous ``buffer`` in place by its sum over the workers."""

    def all_gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, in rank order."""


class TorchCollective:
    """:class:`Collective` on the default ``torch.distributed`` process group (gloo, CPU:
    Ray Train's TorchTrainer sets it up with its timeout, so a dead peer raises instead of
    hanging). NumPy buffers are reduced in place: ``torch.from_numpy`` shares their memory."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("TorchCollective needs an initialised torch.distributed group")
        self._dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def all_reduce_sum(self, buffer: np.ndarray) -> None:
        import torch

        if not (buffer.flags.c_contiguous and buffer.flags.writeable):
            raise ValueError("all_reduce_sum needs a contiguous, writeable NumPy buffer")
        self._dist.all_reduce(torch.from_numpy(buffer), op=self._dist.ReduceOp.SUM)

    def all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self._dist.all_gather_object(out, obj)
        return out


def _batch_axis(key: str, value: np.ndarray) -> int:
    """The stream axis of a window algorithm's carried array (``WindowBPTT.state_dict``):
    ``h_start`` (B, S) or (L·D, B, S) → the second-to-last; the TBPTT buffer (T, B, …) → 1."""
    return value.ndim - 2 if key.startswith("h_start") else 1


class ShardedGradient(GradientAlgorithm):
    """The run's window algorithm on this worker's share of the streams, all-reduced.

        est = alg.gradient(batch)   # batch: the GLOBAL batch (T, B, …); every worker gets it
        est.loss, est.grads         # of the global batch: Σ_r (B_r/B)·(L_r, ∇L_r), summed
        est.counted, est.steps      # Σ over the workers (the global batch's)

    Args:
        algorithm: the run's algorithm built for the global batch (its model, name and seed;
            its state is replaced by this share's).
        config: the run (``--algorithm`` and its options rebuild it on B_r streams).
        collective: this worker's rank, the world size and the collectives.

    Timing: :attr:`compute_seconds` (this share's gradient) and :attr:`reduce_seconds` (the
    all-reduce, waiting for the slowest worker included) accumulate over the calls.
    """

    def __init__(
        self, algorithm: GradientAlgorithm, config: TrainConfig, collective: Collective
    ) -> None:
        super().__init__(algorithm.model, config.batch, algorithm.seed)
        entry = algorithms.get(config.algorithm)
        if entry.streaming:
            raise ValueError(f"ShardedGradient runs window algorithms, not {config.algorithm}")
        self.name = algorithm.name
        self.checkpoint_prefix = algorithm.checkpoint_prefix  # type: ignore[misc]
        self.collective = collective
        self.rank, self.world = collective.rank, collective.world
        self.lo, self.hi = shares(config.batch, self.world)[self.rank]
        self.inner = entry.make(
            algorithm.model,
            batch=self.hi - self.lo,
            seed=algorithm.seed,
            **config.algorithm_options(),
        )
        self.compute_seconds = 0.0
        self.reduce_seconds = 0.0
        self.calls = 0
        self.stop_local = 0.0  # a stop request this worker passes on with the next gradient
        self.stop_code = 0.0  # the sum of the workers' requests after the last gradient

    # -- the step ----------------------------------------------------------------------

    def _share(self, batch: Batch) -> Batch:
        x, y, mask = batch
        cut = slice(self.lo, self.hi)
        return Batch(
            np.ascontiguousarray(x[:, cut]),
            np.ascontiguousarray(y[:, cut]),
            None if mask is None else np.ascontiguousarray(mask[:, cut]),
        )

    def gradient(self, batch: Batch, restart: bool = False) -> Estimate:
        """The global batch's loss and gradient: this share's, scaled by B_r/B, summed."""
        self._check_batch(batch)
        t0 = time.perf_counter()
        est = self.inner.gradient(self._share(batch), restart)
        names = list(est.grads.keys())
        arrays = [est.grads[n] for n in names]
        dtype = arrays[0].dtype
        weight = (self.hi - self.lo) / self.batch  # B_r / B
        flat = np.concatenate([a.reshape(-1) for a in arrays])  # (P,) one bucket
        flat *= dtype.type(weight)
        # loss, counted steps, stream steps and a stop request ride one small all-reduce
        totals = np.array(
            [est.loss * weight, est.counted, est.steps, self.stop_local], dtype=np.float64
        )
        t1 = time.perf_counter()
        self.collective.all_reduce_sum(flat)
        self.collective.all_reduce_sum(totals)
        t2 = time.perf_counter()
        grads: dict[str, np.ndarray] = {}
        offset = 0
        for name, a in zip(names, arrays, strict=True):
            grads[name] = flat[offset : offset + a.size].reshape(a.shape)
            offset += a.size
        self.compute_seconds += t1 - t0
        self.reduce_seconds += t2 - t1
        self.calls += 1
        loss, counted, steps, self.stop_code = (float(v) for v in totals)
        return Estimate(
            loss, Gradients.from_backward(grads, np.zeros((0, 0))), round(steps), counted
        )

    # -- carried state: the global streams' ---------------------------------------------

    def reset(self, state: object = None) -> None:
        if state is None:
            self.inner.reset()
            return
        parts = self.model.split_state(state, self.batch)  # (B, S) per layer-direction
        self.inner.reset(self.model.join_state([p[self.lo : self.hi] for p in parts]))

    def state_dict(self) -> StateDict:
        """Every worker's carried arrays joined along the stream axis (a collective: every
        worker calls it, as every worker saves): the one-process layout and values."""
        everyone = self.collective.all_gather(self.inner.state_dict())
        keys = list(everyone[0])
        if any(list(d) != keys for d in everyone):
            raise RuntimeError("the workers carry different state arrays; the run is out of step")
        return {
            k: np.concatenate([d[k] for d in everyone], axis=_batch_axis(k, everyone[0][k]))
            for k in keys
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """This worker's share of the global carried arrays (any worker count)."""
        mine = {}
        for k, v in state.items():
            v = np.asarray(v)
            axis = _batch_axis(k, v)
            if v.ndim < 2 or v.shape[axis] != self.batch:
                raise ValueError(
                    f"carried array {k!r} of shape {v.shape} does not hold the global batch "
                    f"of {self.batch} streams"
                )
            mine[k] = np.ascontiguousarray(np.take(v, np.arange(self.lo, self.hi), axis=axis))
        self.inner.load_state_dict(mine)

    def state_is_finite(self) -> bool:
        """Whether every worker's carried state is finite (all agree, so all reset alike)."""
        flag = np.array([0.0 if self.inner.state_is_finite() else 1.0])
        self.collective.all_reduce_sum(flag)
        return bool(flag[0] == 0.0)

    @classmethod
    def carried_bytes(cls, model: RNN, batch: int, **options: Any) -> int:
        return 0  # the run's algorithm is sized on the global batch before this is built

    def summary_line(self, seconds: float = 0.0) -> str:
        """One line for the end of the run: the workers, this rank's share of the batch, and
        the all-reduce's time per step, as a share of the gradient's time (this share's
        gradient + the all-reduce) and of the run's ``seconds`` (evaluations included)."""
        total = self.compute_seconds + self.reduce_seconds
        per = 1e3 / max(self.calls, 1)
        of_run = f", {self.reduce_seconds / seconds:.0%} of the run's time" if seconds > 0 else ""
        return (
            f"  data parallel: {self.world} workers (global batch {self.batch}, "
            f"{self.hi - self.lo} on rank {self.rank}); all-reduce {self.reduce_seconds * per:.2f}"
            f" ms per step: {self.reduce_seconds / max(total, 1e-12):.0%} of the gradient's "
            f"{total * per:.2f} ms{of_run}"
        )
