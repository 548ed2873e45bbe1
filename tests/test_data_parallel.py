"""Data-parallel training (--workers N): the same weights as one process, to rounding.

Two layers of tests:

- the sharded step itself (:class:`bptt.training.parallel.ShardedGradient` inside the real
  Trainer) with an in-process collective: two threads, each a worker with its own Trainer,
  summing through a barrier in rank order (what gloo does for two ranks). Fast, so it covers
  the cells, depths and algorithms: the weights after K steps against one process's, bit-exact
  resume, another worker count on resume;
- the real engine (Ray Train, torch.distributed gloo on loopback, the CLI and the driver's
  run directory), marked slow: the weights against one process, a killed worker, resume.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bptt.checkpoint import load_checkpoint
from bptt.cli.commands import main
from bptt.training import TrainConfig, Trainer
from bptt.training.parallel import ShardedGradient, shares

# float64 runs: the sums differ from one process's only in their order (a few ulps per step,
# carried through K Adam steps); 1e-9 relative is far above that and far below any real bug.
RTOL = 1e-9


# ---------------------------------------------------------------------------------------------
# an in-process collective: N threads, sums in rank order
# ---------------------------------------------------------------------------------------------


class _Hub:
    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world, timeout=120)
        self.slots: list[Any] = [None] * world


class ThreadCollective:
    """Every rank gets Σ_r buffer_r summed in rank order (bit-identical on every rank)."""

    def __init__(self, hub: _Hub, rank: int) -> None:
        self.hub, self.rank, self.world = hub, rank, hub.world

    def all_reduce_sum(self, buffer: np.ndarray) -> None:
        self.hub.slots[self.rank] = buffer.copy()
        self.hub.barrier.wait()
        total = self.hub.slots[0].copy()
        for part in self.hub.slots[1:]:
            total += part
        self.hub.barrier.wait()
        buffer[...] = total

    def all_gather(self, obj: Any) -> list[Any]:
        self.hub.slots[self.rank] = obj
        self.hub.barrier.wait()
        out = list(self.hub.slots)
        self.hub.barrier.wait()
        return out


def _config(out: Path, **kw: Any) -> TrainConfig:
    base = dict(
        hidden=6,
        batch=4,
        steps=4,
        dtype="float64",
        eval_every=100,
        eval_size=8,
        eval_windows=1,
        sample_every=0,
        checkpoint_every=2,
        progress=False,
        plot=False,
        out=str(out),
    )
    return TrainConfig(**(base | kw))


def _one_process(config: TrainConfig, resume: bool = False) -> Any:
    trainer = Trainer(config, resume=resume, echo=None)
    trainer.train()
    return trainer.model.params


def _threads(
    config: TrainConfig, world: int, tmp: Path, resume_from: Path | None = None
) -> list[Any]:
    """``world`` Trainers in threads, each on its share; each rank's final params. Rank r works
    in tmp/rank{r}; with ``resume_from``, every rank starts from that run directory's files."""
    hub = _Hub(world)
    params: list[Any] = [None] * world
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        run_dir = tmp / f"rank{rank}"
        if resume_from is not None:
            shutil.copytree(resume_from, run_dir, ignore=shutil.ignore_patterns(".lock"))
        collective = ThreadCollective(hub, rank)
        try:
            trainer = Trainer(
                config,
                resume=resume_from is not None,
                echo=None,
                shard=lambda alg: ShardedGradient(alg, config, collective),
                run_dir=run_dir,
            )
            trainer.train()
            params[rank] = trainer.model.params
        except BaseException as err:  # reported by the main thread
            errors.append(err)
            hub.barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return params


def _assert_close(a: Any, b: Any, rtol: float = RTOL) -> None:
    for name in a:
        scale = max(float(np.max(np.abs(a[name]))), 1e-300)
        err = float(np.max(np.abs(a[name] - b[name]))) / scale
        assert err <= rtol, f"{name}: relative difference {err:.3g} > {rtol:g}"


def _assert_equal(a: Any, b: Any) -> None:
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


CASES = {
    # charlm: carried streams, each worker its own; TBPTT(k1=8, k2=12) buffers per worker
    "elman-charlm-truncated": dict(task="charlm", seq_len=8, k2=12),
    "lstm-charlm-full-window": dict(task="charlm", seq_len=6, cell="lstm"),
    # plain SGD: the update is proportional to the gradient (Adam would hide a wrong scale)
    "gru-2layers-adding-sgd": dict(
        task="adding", seq_len=7, cell="gru", layers=2, optimizer="sgd", lr=0.1
    ),
    "elman-recompute-charlm": dict(task="charlm", seq_len=9, algorithm="recompute", segment=3),
    # 5 sequences over 2 workers: shares of 3 and 2, each weighted by B_r/B
    "elman-sine-uneven-sgd": dict(task="sine", seq_len=6, batch=5, optimizer="sgd", lr=0.1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_workers_give_the_one_process_weights(case: str, tmp_path: Path) -> None:
    one = _one_process(_config(tmp_path / "one", **CASES[case]))
    ranks = _threads(_config(tmp_path / "par", **CASES[case]), 2, tmp_path / "par")
    _assert_equal(ranks[0], ranks[1])  # every worker applies the same step
    _assert_close(one, ranks[0])
    # and the step is not trivially equal: an untrained model is far from both
    fresh = Trainer(_config(tmp_path / "fresh", **CASES[case]), echo=None).model.params
    assert any(not np.allclose(fresh[n], one[n]) for n in one)


RESUME_CASES = {
    "elman-truncated": CASES["elman-charlm-truncated"],
    # an LSTM carries (h, c): h_start.0, h_start.1; 5 streams: shares of 3 and 2
    "lstm-uneven": dict(task="charlm", seq_len=6, k2=9, cell="lstm", batch=5),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_with_the_same_workers_is_bit_exact(case: str, tmp_path: Path) -> None:
    kw = RESUME_CASES[case]
    whole = _threads(_config(tmp_path / "w", steps=6, **kw), 2, tmp_path / "w")
    _threads(_config(tmp_path / "a", steps=4, **kw), 2, tmp_path / "a")  # then "interrupted"
    ckpt = load_checkpoint(tmp_path / "a" / "rank0")
    assert ckpt.step == 4
    # the checkpoint holds the global batch's carried streams, in the one-process layout
    B = kw.get("batch", 4)
    starts = [v for k, v in ckpt.arrays.items() if k.startswith("tbptt.h_start")]
    assert starts and all(v.shape == (B, 6) for v in starts)
    assert ckpt.arrays["tbptt.x_buf"].shape[1] == B
    resumed = _threads(
        _config(tmp_path / "b", steps=6, **kw), 2, tmp_path / "b", tmp_path / "a" / "rank0"
    )
    _assert_equal(whole[0], resumed[0])


def test_resume_with_another_worker_count_continues_the_run(tmp_path: Path) -> None:
    kw = CASES["elman-charlm-truncated"]
    one = _one_process(_config(tmp_path / "one", steps=6, **kw))
    _threads(_config(tmp_path / "a", steps=4, **kw), 2, tmp_path / "a")
    shutil.copytree(
        tmp_path / "a" / "rank0", tmp_path / "b", ignore=shutil.ignore_patterns(".lock")
    )
    # a 2-worker checkpoint resumed by one process: the same run, to rounding
    resumed = _one_process(_config(tmp_path / "b", steps=6, **kw), resume=True)
    _assert_close(one, resumed)
    # and a one-process checkpoint resumed by 2 workers (each takes its share of the streams)
    _one_process(_config(tmp_path / "c", steps=4, **kw))
    ranks = _threads(_config(tmp_path / "d", steps=6, **kw), 2, tmp_path / "d", tmp_path / "c")
    _assert_close(one, ranks[0])


def test_shares_split_the_batch_contiguously() -> None:
    assert shares(8, 2) == [(0, 4), (4, 8)]
    assert shares(5, 2) == [(0, 3), (3, 5)]
    assert shares(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shares(3, 3) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError, match="workers must lie in 1 … batch"):
        shares(2, 3)


# ---------------------------------------------------------------------------------------------
# bad --workers values: refused before Ray starts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "-2"], "--workers must be >= 1, got -2"),
        (["--workers", "9", "--batch", "8"], "--workers 9 exceeds --batch 8"),
        (["--workers", "2", "--algorithm", "rtrl"], "--algorithm rtrl is online"),
        (["--workers", "2", "--profile-every", "5"], "--profile-every"),
        (["--workers", "2", "--address", "nonsense"], "--address must be HOST:PORT"),
        (["--address", "127.0.0.1:6379"], "--address 127.0.0.1:6379 runs --workers N"),
        # nothing listens on port 1: refused within the bounded wait, never a hang
        (["--workers", "2", "--address", "127.0.0.1:1"], "no Ray cluster answers there"),
    ],
)
def test_bad_workers_values_are_refused_naming_the_option(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["train", "--task", "adding", "--hidden", "4", "--out", str(out), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "checkpoint.safetensors").exists()


def test_a_non_integer_workers_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--workers", "two"])
    assert exc.value.code == 2
    assert "argument --workers: invalid int value: 'two'" in capsys.readouterr().err


def test_one_worker_never_imports_ray(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from bptt.cli.commands import main\n"
        f"rc = main(['train', '--task', 'adding', '--hidden', '4', '--steps', '2', "
        f"'--no-progress', '--no-plot', '--out', {str(tmp_path / 'r')!r}])\n"
        "print(rc, 'ray' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-3:] == ["0", "False", "False"], done.stderr


# ---------------------------------------------------------------------------------------------
# the real engine: Ray Train, gloo on loopback, the CLI and the driver (slow)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    pytest.importorskip("torch")
    from bptt.sweep import start_ray

    if ray.is_initialized():
        ray.shutdown()
    start_ray(num_cpus=2)
    yield
    ray.shutdown()


RAY_RUN = [
    "train",
    "--task",
    "charlm",
    "--seq-len",
    "8",
    "--k2",
    "12",
    "--hidden",
    "6",
    "--batch",
    "4",
    "--dtype",
    "float64",
    "--eval-every",
    "3",
    "--eval-windows",
    "1",
    "--sample-every",
    "0",
    "--checkpoint-every",
    "2",
    "--no-progress",
]


@pytest.mark.slow
def test_ray_workers_a_killed_worker_and_resume(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*RAY_RUN, "--steps", "6", "--no-plot", "--out", str(one)]) == 0
    # 2 Ray Train workers, gloo all-reduce on loopback: the one-process weights
    assert main([*RAY_RUN, "--steps", "6", "--workers", "2", "--out", str(two)]) == 0
    said = capsys.readouterr().out
    assert "data parallel: 2 workers (global batch 4, 2 on rank 0); all-reduce" in said
    assert f"checkpoint: {two / 'checkpoint.safetensors'}" in said
    ref = load_checkpoint(two)
    assert ref.step == 6 and ref.config["workers"] == 2
    _assert_close(load_checkpoint(one).model.params, ref.model.params)
    for name in ("config.json", "metrics.jsonl", "loss.png"):
        assert (two / name).is_file(), name
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert [ln for ln in lines if '"eval"' in ln] and [ln for ln in lines if '"train"' in ln]
    # an ordinary run for every other command
    assert main(["eval", str(two)]) == 0
    assert main(["sample", str(two), "--length", "5"]) == 0
    assert main(["export", str(two), "--format", "torch", "--out", str(tmp_path / "w.pt")]) == 0

    # rank 1 dies (SIGKILL) after step 5: the run stops, exit 1, the step-4 checkpoint remains
    killed = tmp_path / "killed"
    monkeypatch.setenv("BPTT_TEST_KILL_WORKER", "1:5")
    code = main([*RAY_RUN, "--steps", "6", "--workers", "2", "--no-plot", "--out", str(killed)])
    assert code == 1
    err = capsys.readouterr().err
    assert "a data-parallel worker stopped" in err and "step 4" in err and "--resume" in err
    assert load_checkpoint(killed).step == 4
    monkeypatch.delenv("BPTT_TEST_KILL_WORKER")
    # resumed with the same worker count: bit for bit the uninterrupted run
    args = [*RAY_RUN, "--steps", "6", "--workers", "2", "--no-plot", "--out", str(killed)]
    assert main([*args, "--resume"]) == 0
    _assert_equal(ref.model.params, load_checkpoint(killed).model.params)


@pytest.mark.slow
def test_fit_with_two_workers_trains_the_callers_model(local_ray: None, tmp_path: Path) -> None:
    import bptt

    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 7, 2))  # (N, T, I), batch_first
    Y = rng.normal(size=(30, 7, 1))
    kw = dict(batch_first=True, steps=4, batch=6, eval_every=2, plot=False, progress=False)
    models = [bptt.ElmanRNN(2, 5, 1, output="identity", seed=1) for _ in range(2)]
    bptt.fit(models[0], X, Y, out=str(tmp_path / "one"), echo=None, **kw)
    result = bptt.fit(models[1], X, Y, out=str(tmp_path / "two"), echo=None, workers=2, **kw)
    assert result.step == 4 and result.reason == "done"
    _assert_close(models[0].params, models[1].params)
    with pytest.raises(ValueError, match="callbacks"):
        bptt.fit(models[1], X, Y, out=str(tmp_path / "cb"), callbacks=[print], workers=2, **kw)


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_after_a_step_with_a_checkpoint(tmp_path: Path) -> None:
    """SIGINT at the driver: the workers stop at the same step and save (exit 130); Ray
    Train's own handler (which aborts the workers without a checkpoint) is kept out."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    args = [*RAY_RUN, "--steps", "100000", "--eval-every", "5", "--no-plot", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bptt", *args, "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    while not (out / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout and "--resume" in stdout
    step = load_checkpoint(out).step
    assert step >= 5 and f"interrupted at step {step};" in stdout
