"""What users met (issue 22): predict scores on the file's mask, eval counts the sequences it
scored, the CLI names every cell, and bptt.fit trains any bptt.RNN."""

from __future__ import annotations

import types

import numpy as np
import pytest

import bptt
from bptt.cli import main
from bptt.cli.commands import build_parser
from bptt.predict import predict_npz

QUIET = {"progress": False, "plot": False}


def _classification(n: int = 30, T: int = 10, seed: int = 0):
    """Time-major ids X (T, N), classes Y (T, N) and a mask (T, N) whose masked-out steps
    hold labels a model cannot predict (a constant class the model is scored wrong on)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(T, n))
    Y = X.copy()  # learnable: echo the input
    lengths = rng.integers(2, T + 1, size=n)
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(np.float64)  # (T, N)
    Y[mask == 0] = 3  # padding label
    return X, Y, mask


def test_predict_scores_only_the_masked_steps(tmp_path) -> None:
    X, Y, mask = _classification()
    model = bptt.ElmanRNN(4, 8, 4, output="softmax", seed=1, dtype=np.float64)
    path = tmp_path / "new.npz"
    np.savez(path, X=X, Y=Y, mask=mask)
    ckpt = types.SimpleNamespace(model=model, task="arrays", config={"task": "arrays"})
    _, scores = predict_npz(ckpt, path, batch_first=False)
    # independent: the argmax of the model's outputs over the steps the mask counts
    y_hat, _ = model.predict(X)
    hits = (y_hat.argmax(axis=-1) == Y)[mask == 1]
    assert scores["accuracy"] == pytest.approx(float(hits.mean()), abs=1e-12)
    # the unmasked mean is a different number here (the padding labels are mostly missed)
    assert abs(float((y_hat.argmax(axis=-1) == Y).mean()) - hits.mean()) > 1e-3


def test_predict_mse_only_on_masked_steps_batch_first(tmp_path) -> None:
    rng = np.random.default_rng(2)
    T, n = 7, 12
    X = rng.standard_normal((n, T, 2))
    Y = rng.standard_normal((n, T, 1))
    mask = (rng.uniform(size=(n, T)) < 0.5).astype(np.float64)
    mask[:, 0] = 1
    Y[mask == 0] = 1e3  # what the mask leaves out must not count
    model = bptt.ElmanRNN(2, 5, 1, output="identity", seed=0, dtype=np.float64)
    path = tmp_path / "new.npz"
    np.savez(path, X=X, Y=Y, mask=mask)
    ckpt = types.SimpleNamespace(model=model, task="arrays", config={"task": "arrays"})
    y_hat, scores = predict_npz(ckpt, path, batch_first=True)  # (N, T, 1)
    err = ((y_hat - Y) ** 2)[..., 0][mask == 1]
    assert scores["mse"] == pytest.approx(float(err.mean()), rel=1e-12)


def test_eval_prints_the_number_of_validation_sequences_it_scored(tmp_path, capsys) -> None:
    X, Y, mask = _classification(n=50)
    data = tmp_path / "d.npz"
    np.savez(data, X=X, Y=Y, mask=mask)
    run = tmp_path / "run"
    args = ["train", "--task", "arrays", "--data", str(data), "--hidden", "6", "--steps", "3"]
    args += ["--batch", "8", "--eval-every", "3", "--out", str(run), "--no-progress", "--no-plot"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "5 validation sequences" in out  # 10% of 50 held out; not --eval-size's 1024
    assert "1024" not in out


def test_cli_description_names_every_cell() -> None:
    text = build_parser().description or ""
    assert "Elman RNNs" not in text
    for word in ("Elman", "GRU", "LSTM"):
        assert word in text


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fit_trains_gated_cells(cell) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 24, 2))
    Y = 0.5 * np.cumsum(X[..., :1], axis=0)
    model = bptt.RNN(2, 6, 1, cell=cell, output="identity", seed=0, dtype=np.float64)
    before = model.loss(X, Y)
    res = bptt.fit(model, X, Y, steps=40, batch=8, lr=1e-2, eval_every=20, **QUIET)
    assert model.cell == cell
    assert model.loss(X, Y) < before
    assert "val_mse" in res.metrics


def test_fit_trains_a_deep_bidirectional_lstm() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 16, 2))
    Y = np.cumsum(X[..., :1], axis=0)
    model = bptt.RNN(
        2,
        4,
        1,
        cell="lstm",
        num_layers=2,
        bidirectional=True,
        output="identity",
        seed=0,
        dtype=np.float64,
    )
    before = model.loss(X, Y)
    bptt.fit(model, X, Y, steps=20, batch=8, lr=1e-2, eval_every=20, **QUIET)
    assert model.loss(X, Y) < before


def test_fit_refuses_what_is_not_a_model() -> None:
    with pytest.raises(TypeError, match=r"bptt\.RNN"):
        bptt.fit(object(), np.zeros((3, 2, 1)), np.zeros((3, 2, 1)))
