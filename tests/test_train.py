"""The trainer: exact resume, non-finite steps, Ctrl-C, early stopping, logs, config checks."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import bptt.training.loop
from bptt.checkpoint import CheckpointError, load_checkpoint
from bptt.data.text import stream_batches
from bptt.training import TrainConfig, Trainer, TrainingDiverged


def _text(tmp_path) -> str:
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat. ", "and ", "dog\n"]
    text = "".join(words[i] for i in rng.integers(0, len(words), size=1500))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _config(tmp_path, out="run", **kw) -> TrainConfig:
    base = dict(
        text=_text(tmp_path),
        out=str(tmp_path / out),
        hidden=8,
        seq_len=6,
        batch=4,
        steps=24,
        eval_every=8,
        checkpoint_every=100,
        log_every=1,
        sample_every=0,
        progress=False,
        plot=False,
        dtype="float64",
    )
    base.update(kw)
    return TrainConfig(**base)


def _params(out) -> dict[str, np.ndarray]:
    return dict(load_checkpoint(out).model.params.items())


def _assert_same(a, b) -> None:
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    "extra",
    [
        {},  # charlm, chunked k1 = k2
        {"k2": 10, "optimizer": "sgd", "momentum": 0.9, "dtype": "float32"},  # TBPTT buffers
        {"task": "adding", "seq_len": 10, "text": None},  # task batches from the RNG
    ],
    ids=["charlm", "charlm-tbptt-sgd", "adding"],
)
def test_resume_is_bit_exact(tmp_path, extra) -> None:
    # the corpus is small: 1500 words over 4 streams of 6 steps wrap into a new epoch
    full = Trainer(_config(tmp_path, "full", steps=130, **extra), echo=None).train()
    half = Trainer(_config(tmp_path, "half", steps=65, **extra), echo=None).train()
    assert (full.step, half.step) == (130, 65)
    resumed = Trainer(_config(tmp_path, "half", steps=130, **extra), resume=True, echo=None)
    assert resumed.step == 65
    resumed.train()
    _assert_same(_params(tmp_path / "full"), _params(tmp_path / "half"))
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "half")
    assert a.data_state == b.data_state and a.rng_state == b.rng_state
    assert sorted(a.optimizer_state) == sorted(b.optimizer_state)
    log_a = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    log_b = (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()

    def train_records(lines):  # the stopped run also evaluated at its last step, 65
        recs = [json.loads(x) for x in lines]
        return [
            {k: v for k, v in r.items() if k != "tokens_per_s"}
            for r in recs
            if r["kind"] == "train"
        ]

    assert train_records(log_a) == train_records(log_b)
    assert len(train_records(log_a)) == 130


def test_training_lowers_validation_loss_and_writes_run_files(tmp_path) -> None:
    events = []
    res = Trainer(
        _config(tmp_path, steps=120, eval_every=40, hidden=16, lr=1e-2),
        callbacks=[events.append],
        echo=None,
    ).train()
    out = tmp_path / "run"
    evals = [
        json.loads(x)
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "eval"
    ]
    assert [e["step"] for e in evals] == [40, 80, 120]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < np.log(8 + 6)  # below uniform
    assert evals[-1]["val_bpc"] == pytest.approx(evals[-1]["val_loss"] / np.log(2))
    assert json.loads((out / "config.json").read_text())["hidden"] == 16
    assert res.reason == "done" and res.checkpoint == out / "checkpoint.safetensors"
    kinds = {e.kind for e in events}
    assert kinds == {"step", "eval", "checkpoint", "end"}


class _PoisonedTrainer(Trainer):
    """Returns NaN gradients from step ``poison_from`` on."""

    poison_from = 5

    def _gradient(self, batch, restart):
        res = super()._gradient(batch, restart)
        if self.step >= self.poison_from:
            res.grads.W[0, 0] = np.nan
        return res


def test_repeated_non_finite_steps_stop_with_checkpoint(tmp_path) -> None:
    t = _PoisonedTrainer(_config(tmp_path, max_bad_steps=3), echo=None)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps had a non-finite"):
        t.train()
    c = load_checkpoint(tmp_path / "run")
    assert c.step == 8 and c.metrics["bad_steps"] == 3
    assert c.model.params.is_finite()
    # the weights are those after the last good step: 5 applied updates
    assert t.optimizer.t == 5


def test_isolated_bad_step_is_skipped_and_counted(tmp_path) -> None:
    class OneBad(Trainer):
        def _gradient(self, batch, restart):
            res = super()._gradient(batch, restart)
            if self.step == 3:
                res.grads.U[...] = np.inf
            return res

    t = OneBad(_config(tmp_path, steps=10), echo=None)
    res = t.train()
    assert res.reason == "done" and t.bad_steps == 1 and t.optimizer.t == 9
    assert t.model.params.is_finite()


def test_ctrl_c_saves_checkpoint_and_resume_matches(tmp_path) -> None:
    def interrupt(event):
        if event.kind == "step" and event.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    t = Trainer(_config(tmp_path, "a", steps=20), callbacks=[interrupt], echo=None)
    res = t.train()
    assert res.reason == "interrupted" and res.step == 7
    assert load_checkpoint(tmp_path / "a").step == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    Trainer(_config(tmp_path, "a", steps=20), resume=True, echo=None).train()
    Trainer(_config(tmp_path, "b", steps=20), echo=None).train()
    _assert_same(_params(tmp_path / "a"), _params(tmp_path / "b"))


def test_early_stopping(tmp_path) -> None:
    res = Trainer(_config(tmp_path, lr=0.0, steps=100, eval_every=5, patience=2), echo=None).train()
    # lr 0: the first evaluation sets the best, the next two do not improve on it
    assert res.reason == "early_stop" and res.step == 15


def test_resume_refuses_changed_config_and_other_task(tmp_path) -> None:
    Trainer(_config(tmp_path, steps=4), echo=None).train()
    before = (tmp_path / "run" / "checkpoint.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match=r"--lr: 0.002 \(checkpoint\) -> 0.01"):
        Trainer(_config(tmp_path, steps=8, lr=0.01), resume=True, echo=None)
    with pytest.raises(CheckpointError, match="for task 'charlm', not 'adding'"):
        Trainer(_config(tmp_path, task="adding", text=None), resume=True, echo=None)
    with pytest.raises(CheckpointError, match="already holds a run"):
        Trainer(_config(tmp_path, steps=8), echo=None)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(_config(tmp_path, "fresh"), resume=True, echo=None)
    assert (tmp_path / "run" / "checkpoint.safetensors").read_bytes() == before


def test_resume_refuses_corrupted_checkpoint(tmp_path) -> None:
    Trainer(_config(tmp_path, steps=4), echo=None).train()
    path = tmp_path / "run" / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"truncated|corrupted"):
        Trainer(_config(tmp_path, steps=8), resume=True, echo=None)


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"hidden": 0}, ValueError, "--hidden must be >= 1"),
        ({"lr": "fast"}, TypeError, "--lr must be float"),
        ({"optimizer": "lbfgs"}, ValueError, "--optimizer must be one of"),
        ({"k2": 3, "seq_len": 6}, ValueError, "--k2 must be 0 or >= --seq-len"),
        ({"task": "csv"}, ValueError, "--task csv needs --csv FILE"),
        ({"task": "adding", "text": "a.txt"}, ValueError, "--text applies to --task charlm"),
        ({"task": "sine", "k2": 100}, ValueError, "--k2 applies to --task charlm"),
    ],
)
def test_config_rejects_bad_values(kw, err, match) -> None:
    with pytest.raises(err, match=match):
        TrainConfig(**kw)


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    c = TrainConfig(hidden=7)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown option"):
        TrainConfig.from_dict({**c.to_dict(), "frobnicate": 1})


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        ("adding", "val_mse"),
        ("copy", "val_accuracy"),
        ("sine", "val_mse"),
        ("order", "val_accuracy"),
    ],
)
def test_tasks_train_and_report_baseline(tmp_path, task, metric) -> None:
    kw = {"copy_len": 3, "delay": 4, "seq_len": 10} if task == "copy" else {"seq_len": 12}
    res = Trainer(
        _config(tmp_path, task=task, text=None, steps=10, eval_every=10, eval_size=64, **kw),
        echo=None,
    ).train()
    m = res.metrics
    assert metric in m and "baseline_" + metric.removeprefix("val_") in m
    assert np.isfinite(m["val_loss"])


def test_csv_task_trains(tmp_path) -> None:
    t = np.arange(300)
    rows = ["date,a,b"] + [f"d{i},{np.sin(i / 5):.5f},{np.cos(i / 7):.5f}" for i in t]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    cfg = _config(
        tmp_path,
        task="csv",
        text=None,
        csv=str(tmp_path / "s.csv"),
        seq_len=10,
        steps=6,
        eval_every=6,
        eval_size=32,
        last_only=True,
    )
    m = Trainer(cfg, echo=None).train().metrics
    assert np.isfinite(m["val_mse"]) and np.isfinite(m["baseline_mse"])


def test_step_follows_the_mean_per_character_gradient(tmp_path) -> None:
    cfg = _config(tmp_path, optimizer="sgd", lr=0.5, clip=0.0, steps=1, eval_every=1)
    t = Trainer(cfg, echo=None)
    before = t.model.params.copy()
    x, y = next(stream_batches(t.source.train_ids, cfg.batch, cfg.seq_len))
    loss, grads = t.model.loss_and_grads(x, y)  # summed over T, mean over B
    t.train()
    for name, g in grads.items():
        if name == "h0":
            continue
        expected = getattr(before, name) - 0.5 * g / cfg.seq_len
        np.testing.assert_allclose(
            getattr(t.model.params, name), expected, rtol=1e-12, atol=1e-15, err_msg=name
        )
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["loss"] == pytest.approx(loss / cfg.seq_len, rel=1e-12)


def test_profile_every_records_and_saves_with_each_checkpoint(tmp_path, monkeypatch) -> None:
    calls = []

    class FakeRecorder:
        def __init__(self, every, max_lag=None, layer=None):
            self.every = every

        def maybe_record(self, step, model, x, y, h0=None, mask=None):
            calls.append((step, x.shape, None if h0 is None else h0.shape))

        def save(self, path):
            path.write_text(json.dumps({"steps": [c[0] for c in calls]}))

    monkeypatch.setattr(bptt.training.loop, "GradientProfileRecorder", FakeRecorder)
    Trainer(_config(tmp_path, steps=6, checkpoint_every=3, profile_every=2), echo=None).train()
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5, 6]
    assert calls[0][2] is None and calls[1][2] == (4, 8)  # h0: the carried state before x
    assert json.loads((tmp_path / "run" / "profile.json").read_text())["steps"] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
