"""``--workers N``: one training run on N Ray Train workers (docs/data-parallel.md).

    train(config, resume=…)     # workers == 1: Trainer(config).train(), in this process
                                # workers  > 1: N Ray Train workers, this process the driver

Each worker builds the same :class:`~bptt.training.loop.Trainer` (same seed: same weights,
same data order) in a scratch folder of its own, draws the whole global batch and computes
the gradient of its share (:class:`~bptt.training.parallel.ShardedGradient`); the all-reduce
runs on torch.distributed (gloo), set up by Ray Train's TorchTrainer with a timeout.

The run directory lives where this driver runs (no shared filesystem needed): rank 0 writes
its checkpoint, ``metrics.jsonl``, ``best/`` and ``loss.png`` with the usual writers into its
scratch folder and sends each new file back through a Ray queue; the driver writes it into
``--out`` atomically (:mod:`bptt.atomic`) and prints rank 0's progress. On ``--resume`` the
driver sends the run directory's files to every worker first.

A worker that dies ends the run: its peers' collective fails (gloo sees the closed connection,
else the timeout), Ray Train stops the group, and the driver raises :class:`WorkerLost`
naming the last checkpoint in ``--out``. Ray starts only here, only for ``workers > 1``.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from ..data.tasks import SequenceTask
from ..model import RNN
from ..rundir import LOCK_NAME, RunDirLock
from .config import TrainConfig
from .loop import (
    Callback,
    Trainer,
    TrainEvent,
    TrainingDiverged,
    TrainResult,
    install_stop_signals,
    restore_stop_signals,
)
from .parallel import ShardedGradient, TorchCollective, check_parallel

CONNECT_TIMEOUT_S = 15.0
"""How long ``--address HOST:PORT`` waits for the cluster to answer."""
COLLECTIVE_TIMEOUT_S = 300
"""torch.distributed's timeout: a collective that waits longer for a peer fails."""
KILL_ENV = "BPTT_TEST_KILL_WORKER"
"""Fault injection for the tests: ``RANK:STEP`` kills that worker (SIGKILL) after that step."""


class WorkerLost(RuntimeError):
    """A data-parallel worker stopped; the run directory holds the last checkpoint."""


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    echo: Callable[[str], None] | None = print,
    task: SequenceTask | None = None,
    model: RNN | None = None,
    **trainer_options: Any,
) -> TrainResult:
    """Run ``config``: in this process (``workers == 1``), or on ``config.workers`` Ray Train
    workers. With workers, ``model`` (``bptt.fit``) ends holding the trained weights.
    ``trainer_options``: further keywords of :class:`~bptt.training.loop.Trainer`, passed to
    the one process's Trainer or to every worker's.

    Raises:
        ValueError: what ``--workers`` refuses (:func:`~bptt.training.parallel.check_parallel`),
            callbacks with workers, an unreachable ``--address``.
        CheckpointError, TrainingDiverged: as the one-process run.
        WorkerLost: a worker died (the last checkpoint is in ``--out``).
    """
    if config.address is not None and config.workers <= 1:
        raise ValueError(
            f"--address {config.address} runs --workers N (N > 1) on a Ray cluster; with "
            "--workers 1 the run stays in this process: add --workers N or leave --address out"
        )
    if config.workers <= 1:
        trainer = Trainer(
            config,
            resume=resume,
            callbacks=callbacks,
            echo=echo,
            task=task,
            model=model,
            **trainer_options,
        )
        return trainer.train()
    check_parallel(config)
    out = config.out
    if out is None:  # a run kept in memory: the workers' files have nowhere to go
        raise ValueError(
            f"workers={config.workers} writes its run directory (checkpoint, metrics): give out=DIR"
        )
    if trainer_options.get("overwrite"):
        raise ValueError(
            f"--overwrite with --workers {config.workers}: not supported yet; remove the old "
            "run directory or choose another --out"
        )
    if config.address is not None:
        _host_port(config.address)
    if callbacks:
        raise ValueError(
            f"callbacks run in the training process; with workers={config.workers} the steps "
            "run in Ray workers: leave callbacks out (metrics.jsonl holds every logged step)"
        )
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"--workers {config.workers} runs on Ray Train and torch.distributed "
            f"({err}): pip install 'bptt[parallel]'"
        ) from None
    return _Driver(config, Path(out), resume, echo, task, model, trainer_options).run()


# ---------------------------------------------------------------------------------------------
# The driver: Ray, the run directory, the progress
# ---------------------------------------------------------------------------------------------


def _start_ray(config: TrainConfig) -> bool:
    """Start a local Ray with a CPU per worker, or connect to ``--address`` (unless Ray is
    up already); True when this call started it (the driver then shuts it down)."""
    import ray

    from ..sweep import start_ray

    n = config.workers
    started = not ray.is_initialized()
    if started:
        if config.address is not None:
            _probe(config.address)
        start_ray(address=config.address, num_cpus=max(n, os.cpu_count() or 1))
    have = ray.cluster_resources().get("CPU", 0)
    if have < n:
        if started:
            ray.shutdown()
        raise ValueError(
            f"--workers {n}: the Ray cluster has {have:g} CPUs, one per worker is needed "
            "(add machines with `ray start --address …`, or use fewer --workers)"
        )
    return started


def _host_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` → (host, port); None for ``auto`` and ``ray://…`` (Ray resolves those).

    Raises:
        ValueError: anything else.
    """
    if address == "auto" or address.startswith("ray://"):
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"--address must be HOST:PORT (what `ray start --head` prints), auto or "
            f"ray://HOST:PORT, got {address!r}"
        )
    return host, int(port)


def _probe(address: str) -> None:
    """A bounded wait for ``host:port`` to answer (ray.init would retry for minutes)."""
    where = _host_port(address)
    if where is None:
        return
    host, port = where
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ValueError(
            f"--address {address}: no Ray cluster answers there within {CONNECT_TIMEOUT_S:g} s "
            f"({err}); start one with `ray start --head` on that machine"
        ) from None


def _run_files(folder: Path) -> dict[str, bytes]:
    """The run directory's files (relative path → content), without the lock and temporaries."""
    out = {}
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != LOCK_NAME and not path.name.startswith("."):
                out[path.relative_to(folder).as_posix()] = path.read_bytes()
    return out


class _Driver:
    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        resume: bool,
        echo: Callable[[str], None] | None,
        task: SequenceTask | None,
        model: RNN | None,
        trainer_options: dict[str, Any],
    ) -> None:
        self.config, self.resume, self.echo = config, resume, echo
        self.task, self.model = task, model
        self.trainer_options = trainer_options
        self.out = out
        self.error: tuple[str, str] | None = None
        self.result: dict[str, Any] | None = None
        self.bar: Any = None

    def _say(self, text: str) -> None:
        if self.echo is None:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.echo(text)

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "say":
            self._say(item[1])
        elif kind == "step" and self.bar is not None:
            self.bar.n = item[1]
            self.bar.set_postfix(loss=f"{item[2]:.4f}", refresh=False)
            self.bar.refresh()
        elif kind == "write":
            rel, data = item[1], item[2]
            if rel == "config.json":  # the driver's configuration (rank 0 runs without a bar)
                import json

                data = (json.dumps(self.config.to_dict(), indent=2) + "\n").encode()
            target = self.out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        elif kind == "error":
            self.error = (item[1], item[2])
        elif kind == "result":
            self.result = item[1]

    def _check_run_dir(self) -> None:
        have = any((self.out / n).is_file() for n in ("checkpoint.safetensors", "checkpoint.npz"))
        if have and not self.resume:
            raise CheckpointError(
                f"{str(self.out)!r} already holds a run; pass --resume to continue it, or "
                "choose another --out"
            )
        if self.resume and not have:
            raise CheckpointError(f"--resume: no checkpoint in {str(self.out)!r}")

    def run(self) -> TrainResult:
        lock = RunDirLock(self.out)
        lock.acquire()
        try:
            self._check_run_dir()
            return self._run()
        finally:
            lock.release(discard=True)

    def _run(self) -> TrainResult:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.util.queue import Queue

        cfg = self.config
        started = _start_ray(cfg)
        outbox = Queue(actor_options={"num_cpus": 0})
        control = Queue(actor_options={"num_cpus": 0})
        kill = os.environ.get(KILL_ENV)
        loop_config = {
            "config": cfg.to_dict(),
            "resume": self.resume,
            "files": _run_files(self.out) if self.resume else {},
            "task": self.task,
            "model": self.model,
            "trainer_options": self.trainer_options,
            "outbox": outbox,
            "control": control,
            "kill": None if not kill else tuple(int(v) for v in kill.split(":")),
        }
        storage = tempfile.mkdtemp(prefix="bptt-ray-train-")
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config=loop_config,
            torch_config=TorchConfig(backend="gloo", timeout_s=COLLECTIVE_TIMEOUT_S),
            scaling_config=ScalingConfig(
                num_workers=cfg.workers, use_gpu=False, resources_per_worker={"CPU": 1}
            ),
            run_config=RunConfig(
                name="bptt",
                storage_path=storage,
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        self._say(
            f"data parallel: {cfg.workers} Ray Train workers"
            + (f" on {cfg.address}" if cfg.address else " on this machine")
            + f", global batch {cfg.batch}"
        )
        if cfg.progress and self.echo is not None:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                self.bar = None
        done = threading.Event()
        stop: list[str] = []  # set by the signal handler, passed on by the pump

        def pump() -> None:
            asked = False
            while not done.is_set() or not outbox.empty():
                if stop and not asked:
                    control.put(stop[0])
                    asked = True
                try:
                    items = outbox.get_nowait_batch(max(1, min(outbox.qsize(), 64)))
                except Exception:
                    time.sleep(0.1)
                    continue
                for item in items:
                    self._handle(item)

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        previous = install_stop_signals(stop.append)  # the trainer's: stop after a step
        failures: list[BaseException] = []

        def fit() -> None:
            # off the main thread, so that Ray Train leaves SIGINT to us (on the main thread
            # it installs a handler that aborts the workers without a checkpoint)
            try:
                trainer.fit()
            except BaseException as err:
                failures.append(err)

        fitter = threading.Thread(target=fit, daemon=True)
        try:
            fitter.start()
            while fitter.is_alive():
                fitter.join(0.2)  # the main thread stays free to take Ctrl-C
        finally:
            restore_stop_signals(previous)
            done.set()
            pumper.join()
            if self.bar is not None:
                self.bar.close()
            shutil.rmtree(storage, ignore_errors=True)
            if started:
                ray.shutdown()
        known = {
            "TrainingDiverged": TrainingDiverged,
            "CheckpointError": CheckpointError,
            "ValueError": ValueError,
            "TypeError": TypeError,
            "RunDirBusyError": ValueError,
            "ResourceError": ValueError,
        }
        failure = failures[0] if failures else None
        if failure is not None and not isinstance(failure, TrainingFailedError):
            raise failure
        if self.error is not None and self.error[0] in known:
            # what one process would have raised (every worker raised it alike)
            raise known[self.error[0]](self.error[1])
        if failure is not None or self.result is None:
            why = self.error[1] if self.error is not None else str(failure or "")
            raise WorkerLost(self._lost_message(why))
        res = self.result
        path = checkpoint_path(self.out)
        best = checkpoint_path(self.out / "best") if res["best"] else None
        if self.model is not None:  # bptt.fit: the caller's model holds the result
            keep = best if (res["reason"] == "early_stop" and best is not None) else path
            self.model.params = load_checkpoint(keep).model.params
        return TrainResult(res["step"], res["reason"], res["metrics"], path, best)

    def _lost_message(self, why: str) -> str:
        lines = [line.strip() for line in why.strip().splitlines() if line.strip()][:2]
        why = " ".join(lines) or "no result came back"
        try:
            step = load_checkpoint(self.out).step
            where = (
                f"the last checkpoint (step {step}) is in {str(self.out)!r}: continue with the "
                "same options and --resume"
            )
        except (OSError, CheckpointError):
            where = f"no checkpoint was written to {str(self.out)!r} yet"
        return f"a data-parallel worker stopped, so the run stopped ({why[:300]}); {where}"


# ---------------------------------------------------------------------------------------------
# A worker
# ---------------------------------------------------------------------------------------------

_STOP_CODES = {"interrupted": 1.0, "terminated": 2.0}


class _Rank0Link:
    """Rank 0's messages to the driver: text, progress, the run directory's new files."""

    def __init__(self, outbox: Any, control: Any, run_dir: Path, out: str) -> None:
        self.outbox, self.control, self.run_dir, self.out = outbox, control, run_dir, out
        self.pending: list[tuple[Any, ...]] = []
        self.sent: dict[str, tuple[int, int]] = {}
        self.last_flush = time.monotonic()
        self.last_poll = 0.0

    def say(self, text: str) -> None:
        # the driver's --out, not this scratch folder, in what the user reads
        self.pending.append(("say", text.replace(str(self.run_dir), self.out)))
        self.flush()

    def step(self, step: int, loss: float) -> None:
        self.pending.append(("step", step, loss))
        if time.monotonic() - self.last_flush > 0.5:
            self.flush()

    def sync(self) -> None:
        """Send every file of the run directory that is new or changed since the last sync."""
        for path in sorted(self.run_dir.rglob("*")):
            if not path.is_file() or path.name == LOCK_NAME or path.name.startswith("."):
                continue
            st = path.stat()
            key = path.relative_to(self.run_dir).as_posix()
            if self.sent.get(key) != (st.st_mtime_ns, st.st_size):
                self.pending.append(("write", key, path.read_bytes()))
                self.sent[key] = (st.st_mtime_ns, st.st_size)
        self.flush()

    def flush(self) -> None:
        if self.pending:
            self.outbox.put_nowait_batch(self.pending)
            self.pending = []
        self.last_flush = time.monotonic()

    def stop_request(self) -> float:
        """The driver's stop request (a code of :data:`_STOP_CODES`), polled twice a second."""
        now = time.monotonic()
        if now - self.last_poll < 0.5:
            return 0.0
        self.last_poll = now
        if self.control.empty():
            return 0.0
        return _STOP_CODES.get(self.control.get_nowait(), 1.0)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the run's Trainer on this worker's share, in a scratch folder."""
    import ray.train

    context = ray.train.get_context()
    rank = context.get_world_rank()
    scratch = Path(tempfile.mkdtemp(prefix=f"bptt-worker{rank}-"))
    run_dir = scratch / "run"
    link = None
    if rank == 0:
        out = str(loop_config["config"]["out"])
        link = _Rank0Link(loop_config["outbox"], loop_config["control"], run_dir, out)
    try:
        for rel, data in loop_config["files"].items():
            target = run_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        values = dict(loop_config["config"])
        values["progress"] = False  # the driver draws the bar
        if rank != 0:
            values["plot"] = False
        config = TrainConfig.from_dict(values)
        collective = TorchCollective()
        sharded: list[ShardedGradient] = []

        def shard(algorithm: Any) -> Any:
            sharded.append(ShardedGradient(algorithm, config, collective))
            return sharded[-1]

        kill = loop_config["kill"]

        def on_event(event: TrainEvent) -> None:
            if event.kind == "step":
                if link is not None:
                    link.step(event.step, float(event.metrics["loss"]))
                    sharded[0].stop_local = link.stop_request()
                if sharded[0].stop_code:
                    reason = "terminated" if sharded[0].stop_code == 2.0 else "interrupted"
                    event.trainer.request_stop(reason)
                if kill is not None and kill[0] == rank and event.step == kill[1]:
                    os.kill(os.getpid(), signal.SIGKILL)  # the tests' dying worker
            elif link is not None and event.kind in ("checkpoint", "eval", "end"):
                link.sync()

        trainer = Trainer(
            config,
            resume=loop_config["resume"],
            callbacks=[on_event],
            echo=link.say if link is not None else None,
            # Ray hands over arrays read-only (zero-copy): the worker's own, writable copies
            task=copy.deepcopy(loop_config["task"]),
            model=copy.deepcopy(loop_config["model"]),
            shard=shard,
            run_dir=run_dir,
            **loop_config["trainer_options"],
        )
        result = trainer.train()
        if link is not None:
            link.sync()  # loss.png and the summary come after the last event
            link.pending.append(
                (
                    "result",
                    {
                        "step": result.step,
                        "reason": result.reason,
                        "metrics": result.metrics,
                        "best": result.best_checkpoint is not None,
                    },
                )
            )
            link.flush()
    except Exception as err:
        if link is not None:
            try:
                link.sync()
                link.pending.append(("error", type(err).__name__, str(err)))
                link.flush()
            except Exception:
                pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
