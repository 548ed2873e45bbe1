"""The trainer: the loop, checkpoints, logs, early stopping and resume, for one
:class:`~bptt.training.config.TrainConfig` on one :class:`~bptt.training.sources.DataSource`
and one gradient algorithm of :mod:`bptt.algorithms` (``config.algorithm``).

Each optimizer step s = 0 … steps − 1:

    batch, restart ← source.next_batch(): the next window (charlm: B parallel streams) or a
                     fresh task batch; for a streaming (online) algorithm the next
                     ``update_every`` steps of the streams. restart: new streams start here
    estimate       ← algorithm.gradient(batch, restart): loss L and gradient g (BPTT through
                     the window from the carried state, TBPTT(k1, k2), recompute, or the sum
                     of an online method's per-step estimates), the carried state moved on
    L̄, ḡ           ← L, g · B / Σ mask: the mean loss per counted step (per character), as
                     PyTorch's mean-reduced losses, so --lr and --clip transfer from there
    η_s            ← schedule(s);  g ← clip(g);  θ ← optimizer(θ, g, η_s) unless L, g not finite

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per log line),
``checkpoint.safetensors`` (see ``docs/checkpoint-format.md``), ``loss.png`` and, with
``profile_every``, ``profile.json``; with ``out=None`` nothing is written and the log lines are
kept in :attr:`TrainResult.history`. Resuming restores parameters, optimizer state, the
source's state (data position, RNG) and the algorithm's (its ``state_dict``: carried hidden
state, TBPTT buffer, online influence), so N steps + resume to 2N equals 2N steps.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import algorithms
from ..algorithms import Estimate, GradientAlgorithm
from ..atomic import atomic_write_text
from ..checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from ..data import registry as task_registry
from ..data.tasks import Batch, SequenceTask
from ..diagnostics.compute import GradientProfileRecorder
from ..diagnostics.trace import layer_name
from ..init import init_params
from ..model import RNN, build_model, unallocated_model
from ..optim import Schedule, guarded_step, make_optimizer
from ..resources import check_memory, estimate_bytes
from ..rundir import (
    RunDirLock,
    append_line,
    check_no_links,
    clear_run,
    metrics_line,
    truncate_log,
)
from ..sample import sample_text
from ..validation import strict_initial_weights
from .config import TrainConfig
from .evaluation import absolute_paths, format_eval
from .plots import plot_metrics
from .sources import DataSource, make_source

#: The trainer's progress lines go here unless an ``echo`` is given (the CLI passes ``print``).
logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Events and results
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainEvent:
    """Passed to callbacks: ``kind`` is ``step``, ``eval``, ``checkpoint`` or ``end``."""

    kind: str
    step: int
    metrics: dict[str, Any]
    trainer: Trainer


@dataclass
class TrainResult:
    """How a run ended: ``reason`` is ``done``, ``early_stop``, ``interrupted`` (SIGINT),
    ``terminated`` (SIGTERM), ``diverged`` or ``stopped`` (a callback asked)."""

    step: int
    reason: str
    metrics: dict[str, Any]
    checkpoint: Path | None  # None for a run kept in memory (``out=None``)
    best_checkpoint: Path | None = None  # OUT/best: the best evaluation's weights, if kept
    history: list[dict[str, Any]] = field(default_factory=list)  # this session's log lines


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; a checkpoint of the last good state was saved."""


Callback = Callable[[TrainEvent], None]


def _check_model_fits(model: RNN, n_in: int, n_out: int, output: str, config: TrainConfig) -> None:
    """A model handed to the trainer must match the task and the configuration it records."""
    want = {
        "input_size": n_in,
        "output_size": n_out,
        "output": output,
        "hidden_size": config.hidden,
        "hidden_activation": config.activation,
        "dtype": np.dtype(config.dtype),
        "cell": config.cell,
        "num_layers": config.layers,
        "bidirectional": config.bidirectional,
    }
    wrong = [
        f"{k} {getattr(model, k)!r} (task/config: {v!r})"
        for k, v in want.items()
        if getattr(model, k) != v
    ]
    if wrong:
        raise ValueError("the model does not fit the data: " + "; ".join(wrong))


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def _recurrent_mask(config: TrainConfig) -> np.ndarray | None:
    """W's fixed sparsity mask (H, H) for ``--recurrent-density`` below 1, drawn from the seed
    (the same mask every time, so the memory check sizes what the run will carry)."""
    if config.recurrent_density >= 1.0:
        return None
    H = config.hidden
    mask_rng = np.random.default_rng([config.seed, 104729])  # fixed by the seed
    return mask_rng.uniform(size=(H, H)) < config.recurrent_density


class Trainer:
    """Builds the model, data and optimizer from a :class:`TrainConfig` and runs the loop.

    Args:
        config: the run; ``config.out = None`` keeps it in memory (no run directory, no
            checkpoint, no files: the log lines are in :attr:`TrainResult.history`).
        resume: continue the run in ``config.out`` (its configuration must match, except the
            resumable fields such as ``steps``).
        callbacks: called with a :class:`TrainEvent` after each step, evaluation and checkpoint;
            call :meth:`request_stop` to end the run after the current step.
        echo: where progress text goes (samples, evaluations, the summary), e.g. ``print``;
            None (the default) sends it to the ``bptt`` logger at INFO level, which shows
            nothing unless the application configures :mod:`logging`. The progress bar is drawn
            only with an ``echo`` and ``config.progress``, on a terminal; elsewhere (a file, a
            pipe) the mean training loss is echoed about five times between evaluations.
        cli: word messages for the command line (``--resume``, ``--out``) instead of
            Python (``resume=True``, ``out=``).
        task: a ready :class:`~bptt.data.tasks.SequenceTask` to train on instead of the one
            ``config.task`` names (``bptt.fit`` passes its in-memory arrays this way).
            The data, whatever it is, is reached through :attr:`source`
            (:class:`~bptt.training.sources.DataSource`).
        model: train this model (its own weights and structure) instead of building one from
            the configuration; its structure must fit the task and the configuration.
        start_from: begin from this checkpoint's state (weights, optimizer, step, data
            position, RNG) under ``config``, which may differ from the checkpoint's in any
            field that keeps the model's shape (population-based training's exploit step,
            ``bptt.sweep``). The run directory's own checkpoint, if any, is replaced at the
            next save.
        shard: wraps the run's algorithm (a data-parallel worker's share of the batch,
            :class:`~bptt.training.parallel.ShardedGradient`); None: the algorithm itself.
        run_dir: write the run here instead of ``config.out`` (a data-parallel worker's
            scratch folder; :mod:`bptt.training.distributed` moves rank 0's files to --out).

    The run directory ``config.out`` is locked (:mod:`bptt.rundir`) from construction until
    :meth:`train` returns; a Trainer that is never trained holds it until it is collected.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, a checkpoint from another task or
            configuration or data, or a fresh run into a directory that already holds one.
        ValueError: a ``model`` that does not fit the task; a ``--seq-len`` that the task
            cannot honour; a model the ``--algorithm`` does not run (its own message).
        RunDirBusyError: another process (or Trainer) holds ``config.out``.
        ResourceError: the configuration needs more memory than the machine has.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
        echo: Callable[[str], None] | None = None,
        task: SequenceTask | None = None,
        model: RNN | None = None,
        start_from: Checkpoint | None = None,
        cli: bool = False,
        overwrite: bool = False,
        shard: Callable[[GradientAlgorithm], GradientAlgorithm] | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        config.validate()
        self._overwrite = overwrite
        self.config = config = absolute_paths(config)  # config.json names the same files anywhere
        # a data-parallel worker writes into its own scratch run_dir (rank 0's files are sent
        # to --out by the driver: bptt.training.distributed)
        self.out: Path | None = (
            Path(run_dir)
            if run_dir is not None
            else None
            if config.out is None
            else Path(config.out)
        )
        self._shard = shard
        self.callbacks = list(callbacks)
        self.echo = echo
        self._cli = cli
        self._stop_reason = ""
        self.step = 0
        self.bad_steps = 0
        self.consecutive_bad = 0
        self.best: float | None = None
        self.evals_since_best = 0
        self.history: list[dict[str, Any]] = []
        self.profiler: GradientProfileRecorder | None = None
        self.best_step: int | None = None
        self.best_params: Any = None
        self._consistent = True  # False while a step is half done (data drawn, not applied)
        # the run directory is ours until train() ends (or this constructor fails)
        self._lock = None if self.out is None else RunDirLock(self.out)
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._setup(resume, task, model, start_from)
        except BaseException:
            if self._lock is not None:
                self._lock.release(discard=True)  # a refused run leaves no folder behind
            raise

    def _option(self, name: str, value: str = "") -> str:
        """An option as the user wrote it: ``--resume`` on the command line, ``resume=True``
        (``out=``) in Python."""
        if self._cli:
            flag = f"--{name.replace('_', '-')}"
            return flag if value in ("", "True") else f"{flag} {value}"
        return f"{name}={value}"

    def _setup(
        self,
        resume: bool,
        task: SequenceTask | None,
        model: RNN | None,
        start_from: Checkpoint | None,
    ) -> None:
        config = self.config
        ckpt = self._existing_checkpoint(resume) if start_from is None else start_from
        dtype = np.dtype(config.dtype)
        entry = algorithms.get(config.algorithm)
        self.source: DataSource = make_source(
            config,
            task=task,
            vocab=None if ckpt is None else ckpt.vocab,
            # a streaming (online) algorithm takes --update-every steps of its streams at a time
            steps=config.update_every if entry.streaming else None,
        )
        n_in, n_out, output = self.source.input_size, self.source.output_size, self.source.output
        self._check_memory(n_in, n_out, output)
        if ckpt is not None:
            self._check_source(ckpt)
        if model is not None:
            _check_model_fits(model, n_in, n_out, output, config)
            self.model = model
        else:
            self.model = build_model(
                input_size=n_in,
                hidden_size=config.hidden,
                output_size=n_out,
                cell=config.cell,
                num_layers=config.layers,
                bidirectional=config.bidirectional,
                hidden_activation=config.activation,
                output=output,
                seed=config.seed,
                dtype=dtype,
            )
            self.model.params = init_params(
                self.model,
                config.init,
                seed=config.seed,
                spectral_radius=config.spectral_radius or None,
            )
            if config.init_from is not None and ckpt is None:
                self.model.params = strict_initial_weights(config.init_from, self.model)
        w_mask = _recurrent_mask(config)
        if w_mask is not None:
            self.model.set_recurrent_mask(w_mask)
        self.optimizer = make_optimizer(
            config.optimizer,
            config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
        )
        self.schedule = Schedule(
            config.schedule,
            config.lr,
            total_steps=config.steps,
            warmup=config.warmup,
            step_size=config.lr_step_size,
            gamma=config.lr_gamma,
            min_lr_ratio=config.min_lr_ratio,
        )
        self.source.attach(self.model)
        # the one way this run computes gradients (which models it runs is its to say)
        self.algorithm: GradientAlgorithm = entry.make(
            self.model, batch=config.batch, seed=config.seed, **config.algorithm_options()
        )
        if self._shard is not None:  # --workers N: this worker's share, all-reduced
            self.algorithm = self._shard(self.algorithm)
        if ckpt is not None:
            try:
                self._restore(ckpt)
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(
                    f"{self._option('resume', 'True')}: the checkpoint in {str(self.out)!r} "
                    f"cannot be restored: {err}"
                ) from None
        self._init_profiler(resume=ckpt is not None)

    def _check_memory(self, n_in: int, n_out: int, output: str) -> None:
        """Refuse a configuration whose estimated memory exceeds what the machine has: the
        model and one window's BPTT workspace, plus the state the algorithm carries (its
        registry entry's estimate, sized on the model's structure before any weight exists)."""
        cfg = self.config
        window = max(cfg.seq_len, cfg.k2)
        batch = self.source.eval_batch
        sample = cfg.sample_length if self._samples else 0
        need = estimate_bytes(
            n_in,
            cfg.hidden,
            n_out,
            window,
            batch,
            itemsize=np.dtype(cfg.dtype).itemsize,
            dense_input=self.source.dense_input,
            sample=sample,
            layers=cfg.layers * (2 if cfg.bidirectional else 1),
        )
        entry = algorithms.get(cfg.algorithm)
        structure = unallocated_model(
            input_size=n_in,
            hidden_size=cfg.hidden,
            output_size=n_out,
            cell=cfg.cell,
            num_layers=cfg.layers,
            bidirectional=cfg.bidirectional,
            hidden_activation=cfg.activation,
            output=output,
            dtype=np.dtype(cfg.dtype),
        )
        structure.w_mask = _recurrent_mask(cfg)  # the very mask the run will carry
        need += entry.carried_bytes(structure, cfg.batch, **cfg.algorithm_options())
        check_memory(
            need,
            f"this configuration (I={n_in}, H={cfg.hidden}, O={n_out}, T={window}, B={batch}"
            + (f", --sample-length {sample}" if sample else "")
            + ")",
            "use a smaller --hidden, --seq-len, --k2, --batch"
            + (
                f" (--algorithm {cfg.algorithm} carries state per stream)"
                if entry.streaming
                else ""
            )
            + (", --sample-length" if sample else "")
            + "".join(f", {flag}" for flag in task_registry.get(cfg.task).memory_options),
        )

    def _check_source(self, ckpt: Any) -> None:
        """--resume on the same data: same content (SHA-256 and size), whatever its path."""
        saved = ckpt.data_state.get("source")
        fingerprint = self.source.fingerprint
        if saved == fingerprint:
            return
        option = self.source.data_option
        now = getattr(self.config, option[2:]) or "the built-in corpus"

        def show(fp: Any) -> str:
            return "none" if not fp else f"{fp['bytes']} bytes, sha256 {fp['sha256'][:12]}…"

        raise CheckpointError(
            f"{self._option('resume', 'True')}: {option} {now!r} is not the data the "
            f"checkpoint in {str(self.out)!r} "
            f"was trained on: its content is {show(fingerprint)}, the checkpoint's was "
            f"{show(saved)}"
        )

    # -- set-up and resume ----------------------------------------------------------------

    def _existing_checkpoint(self, resume: bool) -> Any:
        resume_opt = self._option("resume", "True")
        if self.out is None:
            if resume:
                raise CheckpointError(
                    f"{resume_opt} continues a run directory: give its {self._option('out')}"
                )
            return None
        have = any((self.out / n).is_file() for n in ("checkpoint.safetensors", "checkpoint.npz"))
        if not resume:
            if have and self._overwrite:
                clear_run(self.out)
            elif have:
                raise CheckpointError(
                    f"{str(self.out)!r} already holds a run; pass {resume_opt} to continue it, "
                    f"{self._option('overwrite', 'True')} to replace it, or choose another "
                    f"{self._option('out')}"
                )
            return None
        if not have:
            raise CheckpointError(f"{resume_opt}: no checkpoint in {str(self.out)!r}")
        ckpt = load_checkpoint(self.out)
        if ckpt.task != self.config.task:
            raise CheckpointError(
                f"{resume_opt}: the checkpoint in {str(self.out)!r} is for task {ckpt.task!r}, "
                f"not {self.config.task!r}"
            )
        try:
            saved = TrainConfig.from_dict(ckpt.config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"--resume: unreadable configuration: {err}") from None
        diff = saved.differences(self.config)
        if diff:
            raise CheckpointError(
                "--resume with a changed configuration (only --steps and other run-control "
                "options may change):\n  " + "\n  ".join(diff)
            )
        return ckpt

    def _restore(self, ckpt: Any) -> None:
        if ckpt.model.structure() != self.model.structure():
            raise ValueError(
                f"the checkpoint's model is {ckpt.model!r}, the configuration gives {self.model!r}"
            )
        self.model.params = ckpt.model.params
        self.optimizer.load_state_dict(ckpt.optimizer_state, names=self.model.params)
        self.step = ckpt.step
        self.source.restore(ckpt.data_state, ckpt.arrays, ckpt.rng_state)
        if self.model.w_mask is not None:
            self.model.set_recurrent_mask(self.model.w_mask)
        # the algorithm's carried state, saved under its prefix (tbptt.…, online.…: the names
        # checkpoints have always used, so older checkpoints load as they are)
        prefix = self.algorithm.checkpoint_prefix + "."
        self.algorithm.load_state_dict(
            {k[len(prefix) :]: v for k, v in ckpt.arrays.items() if k.startswith(prefix)}
        )
        m = ckpt.metrics
        self.bad_steps = int(m.get("bad_steps", 0))
        self.consecutive_bad = int(m.get("consecutive_bad", 0))
        self.best = m.get("best")
        self.evals_since_best = int(m.get("evals_since_best", 0))
        self.best_step = m.get("best_step")
        best_dir = None if self.out is None else self.out / "best"
        if self.keeps_best and self.best_step is not None and best_dir and best_dir.is_dir():
            self.best_params = load_checkpoint(best_dir).model.params
        self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint (a crash between checkpoints)."""
        if self.out is None:
            return
        truncate_log(self.out / "metrics.jsonl", step)

    # -- one step --------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; returns its metrics (loss per step/char, lr, grad norm, …)."""
        batch, restart = self.source.next_batch()
        estimate = self._gradient(batch, restart)
        return self._apply(estimate, batch)

    def _gradient(self, batch: Batch, restart: bool) -> Estimate:
        """The batch's loss and gradient by the run's algorithm (its carried state moves on)."""
        return self.algorithm.gradient(batch, restart)

    def _apply(self, res: Estimate, batch: Batch) -> dict[str, Any]:
        """Scale to the mean loss per counted step, clip, update; the step's metrics."""
        # The objective is the mean loss per counted step (per character for charlm), as in
        # PyTorch's mean-reduced losses, so --lr and --clip mean what they mean there:
        # L̄ = L · B / Σ mask  (L sums over steps and averages over the batch).
        B = self.config.batch
        scale = B / max(res.counted, 1.0)
        for _, arr in res.grads.items():
            arr *= arr.dtype.type(scale)
        lr = self.schedule(self.step)
        info = guarded_step(
            self.optimizer,
            self.model.params,
            res.grads,
            lr=lr,
            clip_norm=self.config.clip,
            clip_value=self.config.clip_value,
            loss=res.loss * scale,
        )
        self.step += 1
        if info.applied:
            self.consecutive_bad = 0
        else:
            self.bad_steps += 1
            self.consecutive_bad += 1
        loss = res.loss * scale
        if self.profiler is not None:  # window algorithms only (the configuration checks)
            x, y, mask = batch
            self.profiler.maybe_record(self.step, self.model, x, y, h0=res.start, mask=mask)
        return {
            "step": self.step,
            "kind": "train",
            "loss": loss,
            "lr": lr,
            "grad_norm": info.grad_norm,
            "applied": info.applied,
            "reason": info.reason,
            "tokens": res.steps,
        }

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics: charlm val loss (nats/char), bits/char, perplexity, accuracy;
        tasks: loss, the task's metrics on ``eval_size`` validation sequences, its baseline."""
        return self.source.evaluate()

    # -- checkpoints -----------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write the checkpoint (and profile.json when profiling) atomically; None (nothing
        written) for a run kept in memory."""
        if self.out is None:
            return None
        path = save_checkpoint(
            self.out,
            model=self.model,
            step=self.step,
            config=self.config.to_dict(),
            optimizer_state=self.optimizer.state_dict(),
            vocab_json=self._vocab_json(),
            rng=self.source.rng,
            data_state=self.source.data_state(),
            arrays=self._state_arrays(),
            metrics={
                "bad_steps": self.bad_steps,
                "consecutive_bad": self.consecutive_bad,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
                "best_step": self.best_step,
            },
            task=self.config.task,
        )
        if self.profiler is not None:
            self.profiler.save(self.out / "profile.json")
        self._emit("checkpoint", {"path": str(path)})
        return path

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """The carried state: the source's (the window being served, a stream's carry) and the
        algorithm's ``state_dict`` under its prefix (``tbptt.h_start``, ``online.…``)."""
        prefix = self.algorithm.checkpoint_prefix
        return self.source.state_arrays() | {
            f"{prefix}.{k}": v for k, v in self.algorithm.state_dict().items()
        }

    def _vocab_json(self) -> str | None:
        vocab = self.source.vocab
        return None if vocab is None else vocab.to_json()

    @property
    def _samples(self) -> bool:
        """Print samples during training: a character model with ``--sample-every``."""
        return self.source.vocab is not None and self.config.sample_every > 0

    def _save_best(self) -> None:
        """Keep the current weights as the best: in memory, and in ``out/best`` on disk."""
        self.best_params = self.model.params.copy()
        self.best_step = self.step
        if self.out is None:
            return
        check_no_links(self.out, ("best",))  # a link planted meanwhile is not written through
        save_checkpoint(
            self.out / "best",
            model=self.model,
            step=self.step,
            config=self.config.to_dict(),
            vocab_json=self._vocab_json(),
            data_state=self.source.data_state(),  # the data's digest (and csv's statistics)
            metrics={"best": self.best},
            task=self.config.task,
        )

    @property
    def keeps_best(self) -> bool:
        """``--keep-best``, or early stopping (which returns the best weights)."""
        return self.config.keep_best or self.config.patience > 0

    # -- the loop --------------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped") -> None:
        """End the run after the current step (a checkpoint is saved)."""
        self._stop_reason = reason

    def _emit(self, kind: str, metrics: dict[str, Any]) -> None:
        event = TrainEvent(kind, self.step, metrics, self)
        for cb in self.callbacks:
            cb(event)

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.out is None:
            return
        append_line(self.out / "metrics.jsonl", metrics_line(record))

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)
        else:
            logger.info(text)

    def _init_profiler(self, resume: bool = False) -> None:
        """A gradient-profile recorder; on resume, the run's profile.json continued (its
        records after the checkpoint's step dropped), so a resumed run's profile equals an
        uninterrupted one's."""
        if self.config.profile_every <= 0:
            return
        # a deep or bidirectional model: the top layer's forward direction, as bptt inspect
        top = (self.model.num_layers - 1) * self.model.num_directions  # forward direction
        layer = None if self.model.simple else layer_name(self.model, top)
        path = None if self.out is None else self.out / "profile.json"
        if not (resume and path is not None and path.is_file()):
            self.profiler = GradientProfileRecorder(every=self.config.profile_every, layer=layer)
            return
        try:
            rec = GradientProfileRecorder.load(path)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
            raise CheckpointError(
                f"--resume: {str(path)!r} is not a readable gradient profile ({err}); move it "
                "away to start a new profile"
            ) from None
        keep = sum(1 for s in rec.steps if s <= self.step)
        rec.steps, rec.losses, rec.labels = rec.steps[:keep], rec.losses[:keep], rec.labels[:keep]
        rec.history = {name: rows[:keep] for name, rows in rec.history.items()}
        rec.every = self.config.profile_every
        self.profiler = rec

    def _sample_text(self) -> str:
        assert self.source.vocab is not None
        return sample_text(
            self.model,
            self.source.vocab,
            self.config.sample_length,
            temperature=0.8,
            seed=self.config.seed + self.step,
        )

    def _after_eval(self, metrics: dict[str, Any]) -> bool:
        """Track the best score; True when early stopping triggers."""
        score, higher = self.source.score(metrics), self.source.higher_is_better
        better = self.best is None or (score > self.best if higher else score < self.best)
        if better:
            self.best, self.evals_since_best = float(score), 0
            self.best_step = self.step
            if self.keeps_best:
                self._save_best()
        else:
            self.evals_since_best += 1
        return self.config.patience > 0 and self.evals_since_best >= self.config.patience

    def train(self) -> TrainResult:
        """Run to ``config.steps``; returns how it ended (a checkpoint is always saved).

        Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and returns with
        reason ``interrupted``; a second Ctrl-C aborts at once. SIGTERM (``kill``, systemd,
        Slurm, containers) does the same with reason ``terminated``. The run directory stays
        locked (:mod:`bptt.rundir`) until this returns.

        Raises:
            TrainingDiverged: ``max_bad_steps`` consecutive non-finite steps (checkpoint saved
                first, holding the last finite weights).
        """
        if self._lock is None:  # kept in memory: no run directory to hold
            return self._train()
        self._lock.acquire()  # held since __init__; taken again if train() runs twice
        try:
            return self._train()
        finally:
            self._lock.release()

    def _train(self) -> TrainResult:
        cfg = self.config
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.step >= cfg.steps:  # config.json keeps the --steps the run went to
            have = self._option("steps", str(cfg.steps))
            self._say(f"{self.out}: already at step {self.step} >= {have}")
            where = None if self.out is None else checkpoint_path(self.out)
            return TrainResult(self.step, "done", {}, where)
        if self.out is not None:
            config_json = json.dumps(cfg.to_dict(), indent=2) + "\n"
            atomic_write_text(self.out / "config.json", config_json)
            if self.step == 0:  # a fresh run: no stale log lines from an earlier, deleted run
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
        self._say(self.source.describe())
        self._say(
            f"{self.model}: {self.model.n_parameters():,} parameters, "
            f"{self.model.params.global_norm():.3g} weight norm; "
            f"{cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps -> "
            + ("memory (no files)" if self.out is None else str(self.out))
        )
        bar = self._progress_bar()
        say = self._say if bar is None else _around_bar(bar, self._say)
        # without a bar, a line of training loss between evaluations (about 5 per interval)
        loss_every = 0 if bar is not None else max(cfg.log_every, cfg.eval_every // 5)
        start_step, window_losses = self.step, []
        interrupted = False
        previous = install_stop_signals(lambda reason: setattr(self, "_stop_reason", reason))
        reason = "done"
        last: dict[str, Any] = {}
        t0, tokens = time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                self._consistent = False
                rec = self.train_step()
                self._consistent = True
                tokens += rec["tokens"]
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                if not rec["applied"]:
                    say(
                        f"step {self.step}: skipped ({rec['reason']}); "
                        f"{self.consecutive_bad} in a row, {self.bad_steps} in all"
                    )
                    if self.consecutive_bad >= cfg.max_bad_steps:
                        self._rollback_for_divergence()
                        path = self.save()
                        self._log(
                            {"step": self.step, "kind": "diverged", "bad_steps": self.bad_steps}
                        )
                        raise TrainingDiverged(
                            f"{self.consecutive_bad} consecutive steps had a non-finite loss or "
                            f"gradient (last: {rec['reason']}) at step {self.step}; stopped. "
                            + (
                                "The model holds the last finite weights. "
                                if path is None
                                else f"The last finite weights are saved in {path}. "
                            )
                            + f"Try a lower {self._option('lr')}, a {self._option('clip')}, "
                            f"or {self._option('dtype', 'float64')}."
                        )
                if rec["applied"]:
                    window_losses.append(rec["loss"])
                if loss_every and self.step % loss_every == 0:
                    if window_losses and self.step % cfg.eval_every:
                        say(
                            f"step {self.step}: train loss {np.mean(window_losses):.4f} "
                            f"(mean of {len(window_losses)}), {rate:,.0f} tok/s"
                        )
                    window_losses = []
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(
                        {k: rec[k] for k in ("step", "kind", "loss", "lr", "grad_norm")}
                        | {"tokens_per_s": rate, "bad_steps": self.bad_steps}
                    )
                if bar is not None:
                    bar.update(1)
                    if self.step % 10 == 0 or self.step == cfg.steps:  # 10 µs: not every step
                        bar.set_postfix(
                            loss=f"{rec['loss']:.4f}", tok_s=f"{rate:,.0f}", refresh=False
                        )
                self._emit("step", rec)
                early = False
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    last = {"step": self.step, "kind": "eval"} | self.evaluate()
                    early = self._after_eval(last)
                    self._log(last)
                    say(format_eval(last))
                    self._emit("eval", last)
                if self._samples and self.step % cfg.sample_every == 0:
                    say(f"--- sample at step {self.step} ---\n{self._sample_text()}\n---")
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                if early:
                    reason = "early_stop"
                    say(
                        f"early stopping at step {self.step}: no improvement in "
                        f"{cfg.patience} evaluations (best {self.best:.4f} at step "
                        f"{self.best_step})"
                    )
                    break
                if self._stop_reason:
                    reason = self._stop_reason
                    interrupted = reason in ("interrupted", "terminated")
                    break
        except Exception as err:
            # a failure outside a step (evaluation, sampling, logging) loses no progress
            if self._consistent and not isinstance(err, TrainingDiverged):
                try:
                    self.save()
                except Exception:  # the original error is the one to report
                    pass
            raise
        finally:
            restore_stop_signals(previous)
            if bar is not None:
                bar.close()
        path = self.save()
        if interrupted and path is not None:
            self._say(
                f"{reason} at step {self.step}; checkpoint saved to {path}; continue "
                f"with the same options and {self._option('resume', 'True')}"
            )
        elif interrupted:
            self._say(f"{reason} at step {self.step}")
        if reason == "early_stop" and self.best_params is not None:
            # the model handed back (bptt.fit) holds the best weights; the checkpoint in
            # OUT keeps the last ones, so that --resume continues where the run stopped
            self.model.params = self.best_params.copy()
        self._emit("end", {"reason": reason})
        plot = self._plot() if cfg.plot else None
        best = None
        if self.best_params is not None and self.out is not None:
            best = checkpoint_path(self.out / "best")
        self._say(
            self._summary(reason, self.step - start_step, time.perf_counter() - t0, last, plot)
        )
        return TrainResult(self.step, reason, last, path, best, list(self.history))

    def _summary(
        self, reason: str, steps: int, seconds: float, last: dict[str, Any], plot: Path | None
    ) -> str:
        """The end-of-run lines: steps and time, the final and best metric, the files."""
        how = {
            "done": "done",
            "early_stop": "stopped early",
            "interrupted": "interrupted",
            "stopped": "stopped by a callback",
        }.get(reason, reason)
        lines = [f"{how}: {steps:,} steps in {seconds:.1f} s (step {self.step} of the run)"]
        parallel = getattr(self.algorithm, "summary_line", None)  # --workers N
        if parallel is not None:
            lines.append(parallel(seconds))
        key, name = self.source.metric_key, self.source.metric_name
        if key in last:
            line = f"  final {name}: {last[key]:.4f} at step {last['step']}"
            base = last.get(key.replace("val_", "baseline_"))
            if base is not None:
                line += f" (memoryless baseline {base:.4f})"
            lines.append(line)
        if self.best is not None:
            where = ""
            if self.best_params is not None:
                kept = "kept in memory" if self.out is None else f"in {self.out / 'best'}"
                where = f" (weights {kept})"
            at = f" at step {self.best_step}" if self.best_step is not None else ""
            lines.append(f"  best {name}: {self.best:.4f}{at}{where}")
        if self.out is None:
            lines.append("  kept in memory: no files written (give out= to keep a run directory)")
            return "\n".join(lines)
        lines.append(f"  checkpoint: {checkpoint_path(self.out)}")
        files = ["config.json", "metrics.jsonl"] + (["loss.png"] if plot else [])
        lines.append(f"  run directory {self.out}: " + ", ".join(files))
        return "\n".join(lines)

    def _rollback_for_divergence(self) -> None:
        """Weights are never made non-finite by a skipped step, so nothing to undo here;
        the algorithm's carried state is reset if it went non-finite."""
        if not self.algorithm.state_is_finite():
            self.algorithm.reset()

    def _progress_bar(self) -> Any:
        """tqdm on stderr when the run talks (``echo``), ``config.progress`` is on and stderr is
        a terminal; None otherwise (a log file gets plain periodic lines, no '\\r' frames)."""
        if not self.config.progress or self.echo is None or not _on_terminal(sys.stderr):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            self._say("(no progress bar: pip install 'bptt[progress]' for tqdm)")
            return None
        return tqdm(
            total=self.config.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _plot(self) -> Path | None:
        if self.out is None:
            return None
        try:
            return plot_metrics(self.out)
        except ImportError as err:
            self._say(f"(no loss.png: {err})")
            return None


def _around_bar(bar: Any, say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` with the progress bar cleared first and redrawn after (tqdm's external write
    mode), so that a line never lands inside a bar's frame."""

    def write(text: str) -> None:
        with bar.external_write_mode():
            say(text)

    return write


def _on_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (not a file, a pipe or a notebook's
    capture)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def install_stop_signals(on_interrupt: Callable[[str], None]) -> Any:
    """First Ctrl-C (SIGINT) or SIGTERM: ask the loop to stop after this step (the reason is
    ``interrupted`` or ``terminated``); a second one: the usual KeyboardInterrupt, or the
    default SIGTERM action (the process ends)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        on_interrupt("terminated" if signum == signal.SIGTERM else "interrupted")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler)


def restore_stop_signals(previous: Any) -> None:
    """Put back the handlers :func:`install_stop_signals` replaced (None: nothing was)."""
    if previous is not None:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
