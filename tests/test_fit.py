"""bptt.fit and --task arrays: your own arrays on the trainer; layouts; --keep-best; predict."""

from __future__ import annotations

import numpy as np
import pytest

import bptt
from bptt.checkpoint import load_checkpoint
from bptt.cli import main
from bptt.data.arrays import ArrayTask, to_time_major

QUIET = {"progress": False, "plot": False}


def _regression(n: int = 40, T: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Time-major X (T, N, 2) and Y (T, N, 1): a running sum of the first input."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, n, 2))
    Y = 0.3 * np.cumsum(X[..., :1], axis=0)
    return X, Y


def _model(dtype=np.float64, **kw) -> bptt.ElmanRNN:
    return bptt.ElmanRNN(2, 8, 1, output="identity", seed=0, dtype=dtype, **kw)


def test_fit_learns_and_beats_the_baseline(tmp_path) -> None:
    X, Y = _regression(n=64)
    model = _model()
    before = model.loss(X, Y)
    res = bptt.fit(
        model,
        X,
        Y,
        out=str(tmp_path / "run"),
        steps=150,
        eval_every=50,
        batch=16,
        lr=1e-2,
        echo=None,
        **QUIET,
    )
    assert res.reason == "done" and res.step == 150
    assert model.loss(X, Y) < 0.5 * before  # trained in place
    m = res.metrics
    assert m["val_sequences"] == 7  # ceil(64 * 0.1), every one scored once
    assert m["val_mse"] < m["baseline_mse"]
    saved = load_checkpoint(tmp_path / "run")
    np.testing.assert_array_equal(saved.model.params.W, model.params.W)
    assert saved.config["task"] == "arrays" and saved.config["hidden"] == 8


def test_batch_first_gives_the_same_training(tmp_path) -> None:
    """The same data in (N, T, ·) with batch_first=True trains to the same weights."""
    X, Y = _regression()
    mask = np.ones(X.shape[:2])
    mask[:3] = 0  # a warm-up that does not count
    a, b = _model(), _model()
    opts = dict(steps=5, eval_every=5, batch=8, echo=None, **QUIET)
    bptt.fit(a, X, Y, mask, out=str(tmp_path / "tm"), **opts)
    bptt.fit(
        b,
        X.transpose(1, 0, 2),
        Y.transpose(1, 0, 2),
        mask.T,
        batch_first=True,
        out=str(tmp_path / "bf"),
        **opts,
    )
    for name, arr in a.params.items():
        np.testing.assert_array_equal(arr, getattr(b.params, name), err_msg=name)
    assert not np.array_equal(a.params.W, _model().params.W)  # it did train


def test_batch_first_gradients_match_time_major() -> None:
    X, Y = _regression(n=6)
    task_tm = ArrayTask(X, Y, val_fraction=0.5)
    task_bf = ArrayTask(
        X.transpose(1, 0, 2), Y.transpose(1, 0, 2), batch_first=True, val_fraction=0.5
    )
    model = _model()
    ga = model.loss_and_grads(*task_tm.sample(np.random.default_rng(3), 3, np.float64)[:2])[1]
    gb = model.loss_and_grads(*task_bf.sample(np.random.default_rng(3), 3, np.float64)[:2])[1]
    for name, arr in ga.items():
        np.testing.assert_array_equal(arr, getattr(gb, name))


def test_shapes_that_fit_neither_layout_name_both_readings() -> None:
    X = np.zeros((10, 4, 2))
    Y = np.zeros((4, 9, 1))
    with pytest.raises(ValueError) as err:
        to_time_major(X, Y)
    text = str(err.value)
    assert "time-major (batch_first=False) reads X: T=10, N=4; Y: T=4, N=9" in text
    assert "batch-first (batch_first=True) reads X: N=10, T=4; Y: N=4, T=9" in text
    with pytest.raises(ValueError, match="fit neither layout"):
        bptt.fit(_model(), X, np.zeros((10, 4, 1)), np.ones((4, 10)), echo=None)


def test_fit_refuses_a_model_that_does_not_fit(tmp_path) -> None:
    X, Y = _regression()
    with pytest.raises(
        ValueError, match="X has 2 features per step but the model's input_size is 3"
    ):
        bptt.fit(bptt.ElmanRNN(3, 8, 1, output="identity"), X, Y, out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="fit sets"):
        bptt.fit(_model(), X, Y, hidden=4)


def test_fit_classification_on_ids_with_validation_data(tmp_path) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, size=(8, 30))  # (T, N) ids
    Y = (X + 1) % 5  # the next symbol: learnable without memory
    model = bptt.ElmanRNN(5, 16, 5, output="softmax", seed=0)
    res = bptt.fit(
        model,
        X[:, :24],
        Y[:, :24],
        validation_data=(X[:, 24:], Y[:, 24:]),
        out=str(tmp_path / "run"),
        steps=60,
        eval_every=30,
        lr=2e-2,
        echo=None,
        **QUIET,
    )
    assert res.metrics["val_sequences"] == 6
    assert res.metrics["val_accuracy"] > 0.9 > res.metrics["baseline_accuracy"]


def test_early_stop_returns_the_best_weights(tmp_path) -> None:
    """A bad update after the best evaluation: patience stops the run, the model returned
    holds the best weights (also in OUT/best); OUT's checkpoint keeps the last ones."""
    X, Y = _regression(n=32)
    model = _model()
    seen: dict[int, np.ndarray] = {}

    def spoil(event) -> None:
        if event.kind == "step":
            if event.step == 4:
                event.trainer.model.params.b_y[...] += 100.0  # ruin the weights
            seen[event.step] = event.trainer.model.params.W.copy()

    res = bptt.fit(
        model,
        X,
        Y,
        out=str(tmp_path / "run"),
        steps=50,
        eval_every=1,
        patience=1,
        lr=1e-3,
        callbacks=[spoil],
        echo=None,
        **QUIET,
    )
    assert res.reason == "early_stop" and res.step == 4
    np.testing.assert_array_equal(model.params.W, seen[3])
    best = load_checkpoint(tmp_path / "run" / "best")
    assert best.step == 3 and res.best_checkpoint == tmp_path / "run" / "best" / best.path.name
    np.testing.assert_array_equal(best.model.params.W, seen[3])
    last = load_checkpoint(tmp_path / "run")
    np.testing.assert_array_equal(last.model.params.W, seen[4])


def _save_npz(path, X, Y, **extra) -> str:
    np.savez(path, X=X, Y=Y, **extra)
    return str(path)


def test_cli_arrays_keep_best_eval_and_predict(tmp_path, capsys) -> None:
    X, Y = _regression(n=48)
    data = _save_npz(tmp_path / "d.npz", X.transpose(1, 0, 2), Y.transpose(1, 0, 2))
    run = str(tmp_path / "run")
    common = ["--hidden", "8", "--steps", "20", "--eval-every", "10", "--no-progress", "--no-plot"]
    rc = main(
        [
            "train",
            "--task",
            "arrays",
            "--data",
            data,
            "--batch-first",
            "--keep-best",
            "--out",
            run,
            "--dtype",
            "float64",
            *common,
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "97 parameters" in out  # V 8·2 + W 8·8 + b_h 8 + U 1·8 + b_y 1
    assert "best validation mse" in out and "run directory" in out
    for path in (run, run + "/best"):
        assert main(["eval", path, "--json"]) == 0
        assert '"val_mse"' in capsys.readouterr().out
    # predict: the file's X, in its batch-first layout, through the saved model
    assert main(["predict", run, "--data", data, "--out", str(tmp_path / "p.npz")]) == 0
    assert '"mse"' in capsys.readouterr().out
    y_hat = np.load(tmp_path / "p.npz")["Y_hat"]
    model = load_checkpoint(run).model
    np.testing.assert_allclose(y_hat, model.predict(X)[0].transpose(1, 0, 2), rtol=1e-12)
    # a layout the file does not have
    bad = _save_npz(tmp_path / "bad.npz", X, Y[:-1])
    assert (
        main(["train", "--task", "arrays", "--data", bad, "--out", str(tmp_path / "r2"), *common])
        == 2
    )
    assert "fit neither layout" in capsys.readouterr().err


def test_cli_predict_csv_uses_the_training_standardisation(tmp_path, capsys) -> None:
    t = np.arange(200)
    rows = ["hour,load"] + [f"{i},{10 + 3 * np.sin(i / 4):.5f}" for i in t]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    run = str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "--task",
                "csv",
                "--csv",
                str(tmp_path / "s.csv"),
                "--columns",
                "load",
                "--seq-len",
                "12",
                "--hidden",
                "8",
                "--steps",
                "5",
                "--eval-every",
                "5",
                "--out",
                run,
                "--no-progress",
                "--no-plot",
                "--dtype",
                "float64",
            ]
        )
        == 0
    )
    capsys.readouterr()
    new = ["hour,load"] + [f"{i},{10 + 3 * np.sin(i / 4):.5f}" for i in range(300, 340)]
    (tmp_path / "new.csv").write_text("\n".join(new) + "\n")
    assert main(["predict", run, "--csv", str(tmp_path / "new.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "load,load_pred+1" and len(lines) == 41
    got = np.array([float(line.split(",")[1]) for line in lines[1:]])
    # independently: the training rows' (first 80 %) mean and std, the model, and back
    train = np.array([10 + 3 * np.sin(i / 4) for i in t[:160]]).round(5)
    mu, sd = train.mean(), train.std()
    z = ((np.array([float(r.split(",")[1]) for r in new[1:]]) - mu) / sd)[:, None, None]
    want = load_checkpoint(run).model.predict(z)[0][:, 0, 0] * sd + mu
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert main(["predict", run, "--csv", str(tmp_path / "missing.csv")]) == 2


def test_version_and_help_defaults(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"bptt {bptt.__version__}"
    import argparse

    from bptt.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name, p in sub.choices.items():
        fmt = p.formatter_class(prog=name)
        for action in p._actions:
            if action.help in (None, argparse.SUPPRESS) or not action.option_strings:
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            text = fmt._get_help_string(action) % {"default": action.default}
            count = text.lower().count("default")
            is_switch = isinstance(action, argparse.BooleanOptionalAction)
            has_default = is_switch or (
                action.nargs != 0 and action.default not in (None, False, "")
            )
            where = f"bptt {name} {action.option_strings[0]}: {text!r}"
            assert count <= 1, where
            if has_default:
                assert count == 1, where
            checked += 1
    assert checked > 80


def test_copy_refuses_a_seq_len_it_cannot_honour(tmp_path, capsys) -> None:
    rc = main(["train", "--task", "copy", "--seq-len", "30", "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "the copy task's length is fixed, T = --delay + 2 * --copy-len = 40" in (
        capsys.readouterr().err
    )


def test_import_bptt_exposes_the_documented_submodules() -> None:
    """In a fresh interpreter: ``import bptt`` alone reaches the submodules the docs use."""
    import subprocess
    import sys

    code = (
        "import bptt; "
        "print(bptt.algorithms.seed_formula.seed_terms.__name__, bptt.optim.Adam.__name__, "
        "bptt.training.TrainConfig.__name__, bptt.data.get_task.__name__, bptt.fit.__name__, "
        "bptt.checkpoint.load_checkpoint.__name__, bptt.algorithms.truncated.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "seed_terms",
        "Adam",
        "TrainConfig",
        "get_task",
        "fit",
        "load_checkpoint",
        "bptt.algorithms.truncated",
    ]
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        bptt.nonexistent  # noqa: B018


def test_without_a_bar_training_loss_lines_come_between_evaluations(tmp_path) -> None:
    from bptt.training import TrainConfig, Trainer

    lines: list[str] = []
    cfg = TrainConfig(
        task="adding",
        seq_len=8,
        hidden=4,
        steps=20,
        eval_every=10,
        log_every=1,
        eval_size=16,
        out=str(tmp_path / "run"),
        progress=False,
        plot=False,
    )
    Trainer(cfg, echo=lines.append).train()
    loss_lines = [s.split(":")[0] for s in lines if "train loss" in s]
    assert loss_lines == [f"step {s}" for s in (2, 4, 6, 8, 12, 14, 16, 18)]
    assert (
        sum(s.startswith("step 10: val_mse") or s.startswith("step 20: val_mse") for s in lines)
        == 2
    )
    summary = lines[-1]
    assert summary.startswith("done: 20 steps in ") and "final validation mse" in summary
    assert "memoryless baseline" in summary and "checkpoint: " in summary
