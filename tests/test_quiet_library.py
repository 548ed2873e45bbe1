"""A quiet library and a talkative CLI: ``bptt.fit`` writes nothing and prints nothing unless
asked, speaks Python in its errors and logs through ``logging``; the CLI's progress bar is for
terminals only, a redirected log gets plain lines."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt.checkpoint import CheckpointError
from bptt.training import TrainConfig, Trainer

SRC = Path(__file__).resolve().parents[1] / "src"


def _data(n: int = 32, T: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((T, n, 2))
    return X, 0.3 * np.cumsum(X[..., :1], axis=0)


def _model() -> bptt.ElmanRNN:
    return bptt.ElmanRNN(2, 8, 1, output="identity", seed=0, dtype=np.float64)


def test_fit_without_out_writes_nothing_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    X, Y = _data()
    model = _model()
    before = model.loss(X, Y)
    res = bptt.fit(model, X, Y, steps=60, eval_every=20, batch=8, lr=1e-2)
    assert sorted(os.listdir(tmp_path)) == []  # no runs/, no loss.png, nothing
    assert res.checkpoint is None and res.best_checkpoint is None
    assert model.loss(X, Y) < before  # it did train, in place
    evals = [r for r in res.history if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40, 60]
    assert evals[-1]["val_mse"] == res.metrics["val_mse"]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_fit_logs_through_the_bptt_logger(caplog: pytest.LogCaptureFixture) -> None:
    X, Y = _data()
    with caplog.at_level(logging.INFO, logger="bptt"):
        bptt.fit(_model(), X, Y, steps=10, eval_every=10, batch=8)
    names = {r.name for r in caplog.records}
    assert names and all(n == "bptt" or n.startswith("bptt.") for n in names)
    text = caplog.text
    assert "val_mse" in text or "validation" in text
    assert "kept in memory" in text


def test_fit_verbose_prints(capsys: pytest.CaptureFixture[str]) -> None:
    X, Y = _data()
    bptt.fit(_model(), X, Y, steps=10, eval_every=10, batch=8, verbose=True)
    out = capsys.readouterr().out
    assert "done: 10 steps" in out


def test_fit_keeps_the_best_weights_in_memory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    X, Y = _data()
    res = bptt.fit(_model(), X, Y, steps=40, eval_every=10, batch=8, lr=1e-2, keep_best=True)
    assert os.listdir(tmp_path) == [] and res.best_checkpoint is None


def test_fit_errors_speak_python(tmp_path: Path) -> None:
    X, Y = _data()
    run = tmp_path / "run"
    opts = dict(steps=5, eval_every=5, batch=8, plot=False)
    bptt.fit(_model(), X, Y, out=run, **opts)  # a path object is fine
    assert (run / "checkpoint.safetensors").is_file()
    with pytest.raises(CheckpointError) as err:
        bptt.fit(_model(), X, Y, out=run, **opts)
    message = str(err.value)
    assert "resume=True" in message and "out=" in message and "--" not in message
    with pytest.raises(ValueError, match=r"resume=True .*out="):
        bptt.fit(_model(), X, Y, resume=True, **opts)
    with pytest.raises(CheckpointError, match=r"^resume=True: no checkpoint"):
        bptt.fit(_model(), X, Y, out=tmp_path / "empty", resume=True, **opts)
    with pytest.raises(ValueError, match=r"^steps must be >= 1, got 0"):  # a keyword, no --
        bptt.fit(_model(), X, Y, **(opts | {"steps": 0}))
    with pytest.raises(TypeError, match=r"^eval_every must be int"):
        bptt.fit(_model(), X, Y, **(opts | {"eval_every": "5"}))
    with pytest.raises(TypeError, match="out must be None or a directory path"):
        bptt.fit(_model(), X, Y, out=3, **opts)  # type: ignore[arg-type]


def test_trainer_in_memory_refuses_resume() -> None:
    cfg = TrainConfig(task="adding", hidden=8, seq_len=8, batch=4, steps=2, out=None)
    with pytest.raises(CheckpointError, match=r"resume=True continues a run directory"):
        Trainer(cfg, resume=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trainer_output(stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setattr(sys, "stderr", stderr)
    lines: list[str] = []
    cfg = TrainConfig(
        task="adding", hidden=8, seq_len=8, batch=4, steps=40, eval_every=20, eval_size=16,
        out=None, plot=False,
    )  # fmt: skip
    Trainer(cfg, echo=lines.append).train()
    return stderr.getvalue(), "\n".join(lines)


def test_the_bar_is_for_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    bar, said = _trainer_output(_Terminal(), monkeypatch)
    assert "\r" in bar and "step" in bar  # tqdm's frames on the terminal
    assert "train loss" not in said  # the bar shows the loss
    assert "step 40: val_mse" in said  # evaluations go to echo, never around it
    plain, said = _trainer_output(io.StringIO(), monkeypatch)
    assert plain == ""  # no bar in a file
    assert "step 10: train loss" in said and "step 30: train loss" in said  # instead


def test_cli_log_redirected_to_a_file_has_plain_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    argv = [sys.executable, "-m", "bptt", "train", "--task", "adding", "--hidden", "8",
            "--seq-len", "10", "--batch", "4", "--steps", "40", "--eval-every", "20",
            "--eval-size", "16", "--no-plot", "--out", str(tmp_path / "run")]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(SRC)}
    with open(log, "w", encoding="utf-8") as f:
        done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text(encoding="utf-8")
    assert done.returncode == 0, text
    assert "\r" not in text  # no progress-bar frames in a log file
    assert "step 10: train loss" in text and "step 30: train loss" in text
    assert "done: 40 steps" in text


def test_loss_png_leaves_matplotlib_alone_and_names_the_model(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    from bptt.training.plots import metrics_figure, plot_metrics

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # the caller's choice, which drawing loss.png must not change
    try:
        cfg = TrainConfig(
            task="adding", cell="gru", layers=2, bidirectional=True, hidden=8, seq_len=8,
            batch=4, steps=4, eval_every=2, eval_size=8, out=str(tmp_path / "run"), plot=False,
        )  # fmt: skip
        Trainer(cfg).train()
        plot_metrics(tmp_path / "run")
        assert matplotlib.get_backend() == "svg"
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []  # no figure left open in pyplot's registry
        title = metrics_figure(tmp_path / "run").get_suptitle()
        assert "2-layer bidirectional GRU" in title and "tanh" not in title
    finally:
        matplotlib.use(previous)


# -- bptt train --config FILE.toml ---------------------------------------------------------


def _trained_config(run: Path) -> dict:
    import json

    return json.loads((run / "config.json").read_text(encoding="utf-8"))


def test_train_config_file_sets_defaults_and_flags_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bptt.cli import main

    spec = tmp_path / "run.toml"
    spec.write_text(
        'task = "adding"\nseq_len = 6\nhidden = 8\nbatch = 4\nsteps = 3\neval_every = 3\n'
        "eval_size = 8\nlr = 0.01\nplot = false\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    # --steps 4000 is the default value, given explicitly: it still beats the file's 3
    argv = ["train", "--config", str(spec), "--hidden", "5", "--out", str(run), "--steps", "4"]
    assert main(argv) == 0
    cfg = _trained_config(run)
    assert (cfg["task"], cfg["seq_len"], cfg["lr"], cfg["plot"]) == ("adding", 6, 0.01, False)
    assert cfg["hidden"] == 5 and cfg["steps"] == 4  # the command line wins


def test_train_config_reads_a_sweep_specs_base(tmp_path: Path) -> None:
    from bptt.cli import main

    spec = Path(__file__).resolve().parents[1] / "docs" / "sweeps" / "adding_grid.toml"
    run = tmp_path / "base"
    argv = ["train", "--config", str(spec), "--steps", "2", "--eval-every", "2",
            "--eval-size", "8", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    cfg = _trained_config(run)
    assert (cfg["task"], cfg["seq_len"], cfg["hidden"], cfg["batch"]) == ("adding", 30, 32, 32)


def test_train_config_file_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bptt.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('task = "adding"\nlearning_rate = 0.1\n', encoding="utf-8")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown option(s) learning_rate" in capsys.readouterr().err
    both = tmp_path / "both.toml"
    both.write_text('steps = 3\n[base]\ntask = "adding"\n', encoding="utf-8")
    assert main(["train", "--config", str(both)]) == 2
    assert "both at the top level (steps) and in [base]" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
