"""bptt train --algorithm: online training on carried streams, its resume, the sparse W mask
and the lagged-dependencies task."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bptt.checkpoint import load_checkpoint
from bptt.data.tasks import LaggedDependenciesTask, get_task
from bptt.model import ElmanRNN
from bptt.optim import OPTIMIZERS, make_optimizer
from bptt.training import TrainConfig, Trainer


def _text(tmp_path) -> str:
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat. ", "and ", "dog\n"]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(words[i] for i in rng.integers(0, 8, size=400)), encoding="utf-8")
    return str(path)


def _config(tmp_path, out, **kw) -> TrainConfig:
    base = dict(
        out=str(tmp_path / out),
        hidden=5,
        seq_len=12,
        batch=3,
        steps=20,
        eval_every=10,
        eval_size=16,
        checkpoint_every=7,
        log_every=1,
        sample_every=0,
        progress=False,
        plot=False,
        dtype="float64",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize(
    "extra",
    [
        {"task": "lagged", "algorithm": "uoro", "update_every": 3},
        {"task": "lagged", "algorithm": "tbptt", "truncation": 4, "recurrent_density": 0.5},
        {"task": "adding", "algorithm": "kf-rtrl", "update_every": 4},  # batches restart streams
        {"task": "charlm", "algorithm": "rtrl", "update_every": 5},
        {"task": "charlm", "algorithm": "snap-2", "recurrent_density": 0.3},
        {"task": "charlm", "algorithm": "tbptt", "layers": 2, "truncation": 4},  # any model
    ],
    ids=[
        "lagged-uoro",
        "lagged-tbptt-sparse",
        "adding-kf",
        "charlm-rtrl",
        "charlm-snap2-sparse",
        "charlm-tbptt-2-layers",
    ],
)
def test_online_resume_is_bit_exact(tmp_path, extra) -> None:
    if extra["task"] == "charlm":
        extra = extra | {"text": _text(tmp_path)}
    Trainer(_config(tmp_path, "full", steps=20, **extra), echo=None).train()
    Trainer(_config(tmp_path, "half", steps=9, **extra), echo=None).train()
    Trainer(_config(tmp_path, "half", steps=20, **extra), resume=True, echo=None).train()
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "half")
    for name in a.model.params:
        np.testing.assert_array_equal(a.model.params[name], b.model.params[name], err_msg=name)
    assert sorted(a.arrays) == sorted(b.arrays)
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)
    if extra.get("recurrent_density", 1.0) < 1.0:
        W = a.model.params["W"]
        assert 0 < np.count_nonzero(W) < W.size  # masked entries stayed exactly zero


def test_rtrl_learns_both_lagged_dependencies(tmp_path) -> None:
    """RTRL goes past the `first` level to the `both` level (closer to it than to `first`)."""
    levels = LaggedDependenciesTask.levels()
    cfg = _config(
        tmp_path,
        "lagged",
        task="lagged",
        algorithm="rtrl",
        hidden=8,
        batch=16,
        seq_len=50,
        steps=3000,
        lr=1e-2,
        schedule="cosine",
        eval_every=3000,
        eval_size=512,
        checkpoint_every=10_000,
        log_every=100,
    )
    result = Trainer(cfg, echo=None).train()
    ce = result.metrics["val_cross_entropy"]
    assert ce < (levels["first"] + levels["both"]) / 2, (ce, levels)
    assert ce > levels["both"] - 0.02  # no model beats the task's entropy (up to noise)


def test_the_readme_online_command_runs_as_written(tmp_path, monkeypatch) -> None:
    """README's `--algorithm` command, verbatim (4-space indented, backslash-continued)."""
    import shlex
    from pathlib import Path

    from bptt.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^    (bptt train [^\n]*--algorithm[^\n]*\\\n[^\n]+)$", readme, re.M)
    assert match, "README shows no `bptt train ... --algorithm` command"
    command = " ".join(match.group(1).replace("\\\n", " ").split())
    monkeypatch.chdir(tmp_path)
    assert main([*shlex.split(command)[1:], "--no-progress", "--no-plot"]) == 0
    evals = [
        json.loads(line)
        for line in Path("runs/lagged-rtrl/metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    levels = LaggedDependenciesTask.levels()
    assert evals[-1]["val_cross_entropy"] < (levels["first"] + levels["both"]) / 2


def test_the_docs_train_commands_start_as_written(tmp_path, monkeypatch) -> None:
    """docs/online.md's `bptt train` commands, cut to 3 steps (appended options win)."""
    import shlex
    from pathlib import Path

    from bptt.cli import main

    doc = (Path(__file__).resolve().parents[1] / "docs" / "online.md").read_text(encoding="utf-8")
    commands = [
        " ".join(m.replace("\\\n", " ").split())
        for m in re.findall(r"^    (bptt train (?:[^\n]*\\\n)*[^\n]*)$", doc, re.M)
    ]
    assert commands, "docs/online.md shows no bptt train command"
    monkeypatch.chdir(tmp_path)
    short = ["--steps", "3", "--eval-every", "3", "--eval-size", "16", "--no-progress"]
    for command in commands:
        assert main([*shlex.split(command)[1:], *short, "--no-plot"]) == 0, command


def test_lagged_task_levels_and_stream() -> None:
    levels = LaggedDependenciesTask.levels()
    assert levels["none"] == pytest.approx(0.6616, abs=1e-4)
    assert levels["first"] == pytest.approx(0.5192, abs=1e-4)
    assert levels["both"] == pytest.approx(0.4545, abs=1e-4)
    task = get_task("lagged", seq_len=20, lag1=2, lag2=5)
    rng = np.random.default_rng(0)
    first, carry = task.stream(rng, 4000, np.float64, None)
    assert first.mask is not None and first.mask[:5].sum() == 0 and first.mask[5:].all()
    second, _ = task.stream(rng, 4000, np.float64, carry)
    assert second.mask is None
    # across the chunk boundary the stream continues: y_t's law follows x_{t−2}, x_{t−5}
    full_x = np.concatenate([first.x, second.x])  # (40, B)
    full_y = np.concatenate([first.y, second.y])
    t = np.arange(20, 24)  # the first steps of the second chunk
    p = 0.5 + 0.5 * full_x[t - 2] - 0.25 * full_x[t - 5]  # (4, B)
    for value in (0.25, 0.5, 0.75, 1.0):
        sel = p == value
        assert full_y[t][sel].mean() == pytest.approx(value, abs=0.03)
    # the memoryless baseline scores the `none` level
    batch = task.sample(rng, 4000, np.float64)
    assert task.baseline(batch)["cross_entropy"] == pytest.approx(levels["none"], abs=0.01)
    with pytest.raises(ValueError, match="lag2 must exceed lag1"):
        get_task("lagged", lag1=3, lag2=3)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_masked_w_stays_zero_under_every_optimizer(name: str) -> None:
    rng = np.random.default_rng(1)
    model = ElmanRNN(3, 6, 2, output="softmax", seed=0)
    mask = rng.uniform(size=(6, 6)) < 0.5
    model.set_recurrent_mask(mask)
    opt = make_optimizer(name, 1e-2, weight_decay=0.1, momentum=0.9)
    for _ in range(5):
        x = rng.integers(0, 3, size=(7, 2))
        y = rng.integers(0, 2, size=(7, 2))
        _, g = model.loss_and_grads(x, y)
        opt.step(model.params, g)
    W = model.params["W"]
    assert np.all(W[~mask] == 0) and np.all(W[mask] != 0)


def test_online_memory_is_checked_before_allocating(tmp_path) -> None:
    from bptt.resources import ResourceError

    cfg = _config(tmp_path, "huge", task="adding", algorithm="rtrl", hidden=4096, batch=64)
    with pytest.raises(ResourceError, match="--algorithm rtrl carries state per stream"):
        Trainer(cfg, echo=None)


def test_online_config_errors() -> None:
    # which cells and depths an online method runs is the method's to say (at make), not
    # the configuration's
    TrainConfig(algorithm="rtrl", layers=2, cell="gru")
    with pytest.raises(ValueError, match="bidirectional"):
        TrainConfig(algorithm="uoro", task="adding", bidirectional=True)
    with pytest.raises(ValueError, match="--k2 applies to --algorithm bptt"):
        TrainConfig(algorithm="rtrl", k2=100)
    with pytest.raises(ValueError, match="--truncation applies to --algorithm tbptt"):
        TrainConfig(truncation=5)
    with pytest.raises(ValueError, match="--recurrent-density must lie in"):
        TrainConfig(recurrent_density=0.0)
    with pytest.raises(ValueError, match="--profile-every records BPTT"):
        TrainConfig(algorithm="snap-1", profile_every=10)
    with pytest.raises(ValueError, match="--algorithm must be one of"):
        TrainConfig(algorithm="magic")


def test_the_memory_check_sizes_snap_on_the_runs_own_sparse_mask(tmp_path, monkeypatch) -> None:
    """--recurrent-density: the memory check counts SnAp-n's sparse storage on the very mask
    the run then carries, not RTRL's dense upper bound."""
    from bptt.training import loop

    needs: list[int] = []
    monkeypatch.setattr(loop, "check_memory", lambda need, *a, **k: needs.append(need))
    kw = dict(task="lagged", algorithm="snap-2", hidden=48, steps=1)
    sparse = Trainer(_config(tmp_path, "sparse", recurrent_density=0.02, **kw))
    Trainer(_config(tmp_path, "dense", **kw))
    assert np.array_equal(sparse.model.w_mask, loop._recurrent_mask(sparse.config))
    assert needs[0] < needs[1] / 5
