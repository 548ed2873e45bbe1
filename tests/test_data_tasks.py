"""Sequence tasks: shapes, dtypes, masks, targets from inputs, honest baselines, bad CSVs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt.data import (
    TASKS,
    AddingTask,
    Batch,
    CopyTask,
    CorpusNotFoundError,
    CsvTask,
    DataError,
    LaggedDependenciesTask,
    SequenceTask,
    SineTask,
    TemporalOrderTask,
    get_task,
)

DTYPES = [np.float32, np.float64]


def _csv(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _good_csv(tmp_path: Path, rows: int = 60) -> tuple[Path, np.ndarray]:
    """date, temp, load columns; returns the path and the (rows, 2) numbers written."""
    rng = np.random.default_rng(7)
    values = np.column_stack(
        [20 + 5 * np.sin(np.arange(rows) / 3), 100 + rng.normal(0, 10, rows)]
    ).round(3)
    lines = ["date,temp,load"] + [
        f"2024-01-{i + 1:03d},{a},{b}" for i, (a, b) in enumerate(values.tolist())
    ]
    return _csv(tmp_path, "\n".join(lines) + "\n"), values


def _all_tasks(tmp_path: Path) -> list[SequenceTask]:
    path, _ = _good_csv(tmp_path)
    return [
        AddingTask(seq_len=12),
        CopyTask(n_symbols=4, copy_len=3, delay=5),
        SineTask(seq_len=15),
        SineTask(seq_len=15, last_only=True),
        TemporalOrderTask(seq_len=20),
        CsvTask(path, window=8),
        CsvTask(path, window=8, last_only=True),
        LaggedDependenciesTask(seq_len=12, lag1=2, lag2=4),
    ]


# --- shared contract --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_task_feeds_an_elman_rnn(tmp_path: Path, dtype: type) -> None:
    for task in _all_tasks(tmp_path):
        batch = task.sample(np.random.default_rng(0), 5, dtype)
        assert isinstance(batch, Batch)
        T = task.seq_len
        if task.output == "softmax":
            assert batch.x.shape == batch.y.shape == (T, 5)
            assert batch.x.dtype.kind == batch.y.dtype.kind == "i"
        else:
            assert batch.x.shape == (T, 5, task.input_size)
            assert batch.y.shape == (T, 5, task.output_size)
            assert batch.x.dtype == batch.y.dtype == np.dtype(dtype)
        if batch.mask is not None:
            assert batch.mask.shape == (T, 5) and batch.mask.dtype == np.dtype(dtype)
        model = bptt.ElmanRNN(
            task.input_size, 6, task.output_size, output=task.output, seed=1, dtype=dtype
        )
        loss, grads = model.loss_and_grads(batch.x, batch.y, mask=batch.mask)
        assert math.isfinite(loss)
        assert grads.W.dtype == np.dtype(dtype) and grads.is_finite()
        y_hat, _ = model.predict(batch.x)
        scores = task.evaluate(y_hat, batch)
        base = task.baseline(batch)
        assert task.metric in scores and task.metric in base
        assert set(scores) == set(base)
        assert all(math.isfinite(v) for v in (*scores.values(), *base.values()))


def test_sampling_is_deterministic_given_the_generator(tmp_path: Path) -> None:
    for task in _all_tasks(tmp_path):
        a = task.sample(np.random.default_rng(3), 4)
        b = task.sample(np.random.default_rng(3), 4)
        c = task.sample(np.random.default_rng(4), 4)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        assert not np.array_equal(a.x, c.x)


def test_sample_rejects_bad_arguments() -> None:
    task = AddingTask(10)
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        task.sample(np.random.RandomState(0), 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch must be a positive int"):
        task.sample(np.random.default_rng(0), 0)
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        task.sample(np.random.default_rng(0), 4, split="test")
    with pytest.raises(TypeError, match="float32 or float64"):
        task.sample(np.random.default_rng(0), 4, np.int32)


def test_evaluate_rejects_wrong_prediction_shape() -> None:
    task = SineTask(seq_len=10)
    batch = task.sample(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match=r"y_hat must have shape \(T, B, O\) = \(10, 3, 1\)"):
        task.evaluate(np.zeros((10, 3)), batch)


# --- registry ---------------------------------------------------------------------------------


def test_registry_builds_each_task_and_roundtrips_its_config(tmp_path: Path) -> None:
    assert set(TASKS) == {"adding", "copy", "sine", "order", "csv", "lagged"}
    for task in _all_tasks(tmp_path):
        rebuilt = get_task(**task.config())
        assert type(rebuilt) is type(task)
        assert rebuilt.config() == task.config()
        a = task.sample(np.random.default_rng(0), 2)
        b = rebuilt.sample(np.random.default_rng(0), 2)
        assert np.array_equal(a.x, b.x)
    assert isinstance(get_task("adding", seq_len=7), AddingTask)


def test_registry_rejects_unknown_names_and_arguments() -> None:
    with pytest.raises(
        ValueError, match=r"\['adding', 'copy', 'csv', 'lagged', 'order', 'sine'\], got 'add'"
    ):
        get_task("add")
    with pytest.raises(TypeError, match=r"takes arguments \['seq_len'\], got unexpected \['T'\]"):
        get_task("adding", T=5)


# --- adding -----------------------------------------------------------------------------------


def test_adding_inputs_targets_and_mask() -> None:
    T, B = 20, 300
    batch = AddingTask(T).sample(np.random.default_rng(1), B, np.float64)
    values, markers = batch.x[..., 0], batch.x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert (markers[: T // 2].sum(axis=0) == 1).all()  # one marker in the first half
    assert (markers[T // 2 :].sum(axis=0) == 1).all()  # one in the second half
    expected = (values * markers).sum(axis=0)  # (B,) sum of the two marked values
    assert np.allclose(batch.y[-1, :, 0], expected, rtol=0, atol=1e-15)
    assert batch.mask is not None
    assert (batch.mask[-1] == 1).all() and (batch.mask[:-1] == 0).all()


def test_adding_baseline_is_one_sixth() -> None:
    B = 20_000
    task = AddingTask(30)
    batch = task.sample(np.random.default_rng(2), B, np.float64)
    # Independent: the marked values from the inputs, squared error of predicting 1.
    target = (batch.x[..., 0] * batch.x[..., 1]).sum(axis=0)  # (B,)
    mse_const = float(np.mean((target - 1.0) ** 2))
    assert task.baseline(batch)["mse"] == pytest.approx(mse_const, rel=1e-12)
    # E[(u+v−1)²] = 1/6, Var[(u+v−1)²] = 1/15 − 1/36 = 7/180: 5 standard errors.
    assert abs(mse_const - 1 / 6) < 5 * math.sqrt(7 / 180 / B)


def test_adding_evaluate_uses_only_the_last_step() -> None:
    task = AddingTask(10)
    batch = task.sample(np.random.default_rng(3), 50, np.float64)
    y_hat = np.full(batch.y.shape, 123.0)  # garbage on the masked steps
    y_hat[-1] = batch.y[-1] + 0.1
    assert task.evaluate(y_hat, batch)["mse"] == pytest.approx(0.01, rel=1e-9)


def test_adding_rejects_bad_seq_len() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        AddingTask(1)
    with pytest.raises(TypeError, match="seq_len must be a positive int"):
        AddingTask(2.5)  # type: ignore[arg-type]


# --- copy -------------------------------------------------------------------------------------


def test_copy_layout() -> None:
    K, n, D = 5, 4, 7
    task = CopyTask(K, n, D)
    assert task.seq_len == D + 2 * n
    assert (task.input_size, task.output_size) == (K + 2, K + 1)
    batch = task.sample(np.random.default_rng(0), 30)
    x, y = batch.x, batch.y
    symbols = x[:n]
    assert ((symbols >= 1) & (symbols <= K)).all()
    assert (x[n : n + D - 1] == 0).all()
    assert (x[n + D - 1] == K + 1).all()  # the recall marker
    assert (x[n + D :] == 0).all()
    assert (y[: D + n] == 0).all()
    assert np.array_equal(y[D + n :], symbols)
    assert batch.mask is None


def test_copy_memoryless_baseline() -> None:
    K, n, D = 8, 10, 20
    task = CopyTask(K, n, D)
    batch = task.sample(np.random.default_rng(5), 4000)
    base = task.baseline(batch)
    T = D + 2 * n
    assert base["cross_entropy"] == pytest.approx(n * math.log(K) / T, rel=1e-12)
    # Its argmax: blank before the recall, symbol 1 during it; counted independently.
    hits = (batch.y[: T - n] == 0).sum() + (batch.y[T - n :] == 1).sum()
    assert base["step_accuracy"] == pytest.approx(hits / batch.y.size, rel=1e-12)
    assert base["accuracy"] == pytest.approx((batch.y[T - n :] == 1).mean(), rel=1e-12)
    se = math.sqrt((1 / K) * (1 - 1 / K) / (n * 4000))
    assert abs(base["accuracy"] - 1 / K) < 5 * se


def test_copy_evaluate_perfect_and_wrong() -> None:
    task = CopyTask(4, 3, 5)
    batch = task.sample(np.random.default_rng(0), 10)
    onehot = np.eye(task.output_size)[batch.y]  # (T, B, K+1)
    perfect = task.evaluate(onehot, batch)
    assert perfect == {"cross_entropy": 0.0, "accuracy": 1.0, "step_accuracy": 1.0}
    # Smooth towards uniform: p(true) = 0.9 + 0.1/C everywhere.
    C = task.output_size
    smooth = 0.9 * onehot + 0.1 / C
    assert task.evaluate(smooth, batch)["cross_entropy"] == pytest.approx(-math.log(0.9 + 0.1 / C))
    # Shift every recalled symbol to a wrong one: recall accuracy 0.
    wrong = onehot.copy()
    wrong[-3:] = np.roll(onehot[-3:], 1, axis=-1)
    scores = task.evaluate(wrong, batch)
    assert scores["accuracy"] == 0.0
    assert scores["step_accuracy"] == pytest.approx(1 - 3 / task.seq_len)


def test_copy_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_symbols must be at least 2"):
        CopyTask(n_symbols=1)
    with pytest.raises(ValueError, match="delay must be a positive int"):
        CopyTask(delay=0)


# --- sine -------------------------------------------------------------------------------------


def test_sine_targets_are_the_series_shifted_by_the_horizon() -> None:
    for h in (1, 3):
        batch = SineTask(seq_len=20, horizon=h).sample(np.random.default_rng(0), 4)
        assert np.array_equal(batch.x[h:], batch.y[:-h])


def test_sine_without_noise_is_a_sinusoid() -> None:
    # A single sinusoid obeys s_{t+1} = 2 cos(2π/P) s_t − s_{t−1}.
    P = 9.0
    batch = SineTask(seq_len=40, periods=(P,), noise=0.0).sample(
        np.random.default_rng(1), 6, np.float64
    )
    s = batch.x[..., 0]  # (T, B)
    predicted = 2 * math.cos(2 * math.pi / P) * s[1:-1] - s[:-2]
    assert np.allclose(s[2:], predicted, atol=1e-12)
    assert (np.abs(s).max(axis=0) <= 1.0 + 1e-12).all()  # a ~ U[0.5, 1]
    assert (np.abs(s).max(axis=0) >= 0.4).all()


def test_sine_naive_baseline() -> None:
    task = SineTask(seq_len=30, noise=0.2)
    batch = task.sample(np.random.default_rng(2), 64, np.float64)
    expected = float(np.mean((batch.y - batch.x) ** 2))
    assert task.baseline(batch)["mse"] == pytest.approx(expected, rel=1e-12)
    # The forecast error of the naive predictor includes two independent noise draws.
    assert expected > 2 * 0.2**2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"periods": ()}, "periods must be positive"),
        ({"periods": (5.0, -1.0)}, "periods must be positive"),
        ({"noise": -0.1}, "noise must be"),
        ({"horizon": 0}, "horizon must be a positive int"),
    ],
)
def test_sine_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SineTask(**kwargs)  # type: ignore[arg-type]


def test_sine_last_only_scores_the_last_step() -> None:
    task = SineTask(seq_len=12, last_only=True)
    batch = task.sample(np.random.default_rng(0), 7, np.float64)
    assert batch.mask is not None
    assert (batch.mask[-1] == 1).all() and (batch.mask[:-1] == 0).all()
    y_hat = np.full(batch.y.shape, 50.0)  # garbage on the masked steps
    y_hat[-1] = batch.y[-1] - 0.3
    assert task.evaluate(y_hat, batch)["mse"] == pytest.approx(0.09, rel=1e-9)
    naive = float(np.mean((batch.x[-1] - batch.y[-1]) ** 2))
    assert task.baseline(batch)["mse"] == pytest.approx(naive, rel=1e-12)


# --- temporal order ---------------------------------------------------------------------------


def test_order_layout_and_label() -> None:
    T, B = 50, 400
    task = TemporalOrderTask(T)
    batch = task.sample(np.random.default_rng(0), B, np.float64)
    x, y = batch.x, batch.y
    assert (x[0] == 4).all() and (x[-1] == 5).all()
    relevant = x >= 6  # X = 6, Y = 7
    assert (relevant.sum(axis=0) == 2).all()
    assert ((x[1:-1] <= 3) | relevant[1:-1]).all()
    for b in range(B):
        t1, t2 = np.flatnonzero(relevant[:, b])
        assert 5 <= t1 <= 10 and 25 <= t2 <= 30
        assert y[-1, b] == 2 * (x[t1, b] == 7) + (x[t2, b] == 7)
    assert batch.mask is not None
    assert (batch.mask[-1] == 1).all() and (batch.mask[:-1] == 0).all()
    assert set(np.unique(y[-1])) == {0, 1, 2, 3}


def test_order_baseline_and_evaluate() -> None:
    task = TemporalOrderTask(20)
    batch = task.sample(np.random.default_rng(1), 8000)
    base = task.baseline(batch)
    assert base["cross_entropy"] == pytest.approx(math.log(4), rel=1e-12)
    assert base["accuracy"] == pytest.approx(float(np.mean(batch.y[-1] == 0)), rel=1e-12)
    assert abs(base["accuracy"] - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 8000)
    # Right on the last step, wrong (and ignored) everywhere else.
    probs = np.zeros((20, 8000, 4))
    probs[..., 3] = 1.0
    probs[-1] = np.eye(4)[batch.y[-1]]
    assert task.evaluate(probs, batch) == {"cross_entropy": 0.0, "accuracy": 1.0}
    with pytest.raises(ValueError, match="at least 10"):
        TemporalOrderTask(9)


# --- csv --------------------------------------------------------------------------------------


def test_csv_default_columns_standardisation_and_windows(tmp_path: Path) -> None:
    path, values = _good_csv(tmp_path, rows=60)
    task = CsvTask(path, window=8, horizon=2, val_fraction=0.25)
    assert task.columns == ("temp", "load")  # the date column is skipped
    assert task.input_size == task.output_size == 2
    n_train = 45
    assert task.n_train == n_train
    mean = values[:n_train].mean(axis=0)
    std = values[:n_train].std(axis=0)
    z = (values - mean) / std  # independent standardisation with training statistics
    assert task.n_windows("train") == n_train - 8 - 2 + 1
    assert task.n_windows("val") == 15 - 8 - 2 + 1
    batch = task.windows(np.array([0, 5, 35]), np.float64, split="train")
    for b, s in enumerate([0, 5, 35]):
        assert np.allclose(batch.x[:, b], z[s : s + 8], atol=1e-12)
        assert np.allclose(batch.y[:, b], z[s + 2 : s + 10], atol=1e-12)
    val = task.windows(np.array([0, 5]), np.float64, split="val")
    assert np.allclose(val.x[:, 0], z[n_train : n_train + 8], atol=1e-12)
    assert np.allclose(val.y[:, 1], z[n_train + 7 : n_train + 15], atol=1e-12)
    # Random validation windows never reach into the training rows.
    sample = task.sample(np.random.default_rng(0), 200, np.float64, split="val")
    assert sample.x.min() >= z[n_train:].min() - 1e-12
    rows_seen = {tuple(r) for r in sample.x.reshape(-1, 2).round(9).tolist()}
    assert rows_seen <= {tuple(r) for r in z[n_train:].round(9).tolist()}
    base = task.baseline(batch)["mse"]
    assert base == pytest.approx(float(np.mean((batch.y - batch.x) ** 2)), rel=1e-12)


def test_csv_last_only(tmp_path: Path) -> None:
    path, _ = _good_csv(tmp_path)
    full = CsvTask(path, window=6)
    last = CsvTask(path, window=6, last_only=True)
    starts = np.array([0, 3, 9])
    a, b = full.windows(starts, np.float64, "train"), last.windows(starts, np.float64, "train")
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.mask is None and b.mask is not None
    assert (b.mask[-1] == 1).all() and (b.mask[:-1] == 0).all()
    naive_last = float(np.mean((b.x[-1] - b.y[-1]) ** 2))
    assert last.baseline(b)["mse"] == pytest.approx(naive_last, rel=1e-12)


def test_csv_selected_columns(tmp_path: Path) -> None:
    path, values = _good_csv(tmp_path)
    task = CsvTask(path, columns="load", window=5)
    assert task.columns == ("load",) and task.input_size == 1
    assert CsvTask(path, columns=["load", "temp"], window=5).columns == ("load", "temp")
    assert task.mean[0] == pytest.approx(values[: task.n_train, 1].mean())


def test_csv_semicolon_delimiter_and_blank_lines(tmp_path: Path) -> None:
    rows = "\n".join(f"{i};{i * i}" for i in range(30))
    path = _csv(tmp_path, f"a;b\n{rows}\n\n")
    task = CsvTask(path, window=4, delimiter=";")
    assert task.columns == ("a", "b") and task.series.shape == (30, 2)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("x,y\n1,2\n3,\n5,6\n", r"line 3, column 'y': missing value ''"),
        ("x,y\n1,2\n3,NA\n5,6\n", r"line 3, column 'y': missing value 'NA'"),
        ("x,y\n1,2\n3,nan\n5,6\n", r"line 3, column 'y': missing value 'nan'"),
        ("x,y\n1,2\n3,4\n5,abc\n", r"line 4, column 'y': non-numeric cell 'abc'"),
        ("x,y\n1,2\n3,inf\n", r"line 3, column 'y': infinite value 'inf'"),
        ("x,y\n1,2\n3,4,5\n", r"line 3: 3 fields, but the header has 2"),
        ("x,x\n1,2\n", r"repeats column name\(s\) \['x'\]"),
        ("x,y\n", "has a header but no data rows"),
        ("when,what\nmon,tue\n", "no column holds a number"),
    ],
)
def test_csv_bad_content(tmp_path: Path, body: str, match: str) -> None:
    path = _csv(tmp_path, body, "bad.csv")
    with pytest.raises(DataError, match=rf"bad\.csv.*{match}"):
        CsvTask(path, window=1)


def test_csv_unknown_column(tmp_path: Path) -> None:
    path, _ = _good_csv(tmp_path)
    with pytest.raises(DataError, match=r"series\.csv' has no column\(s\) \['price'\]; its "):
        CsvTask(path, columns=["temp", "price"])


def test_csv_too_few_rows(tmp_path: Path) -> None:
    path, _ = _good_csv(tmp_path, rows=40)
    with pytest.raises(DataError, match=r"40 data rows.*validation part.*8 rows.*window 10"):
        CsvTask(path, window=10)
    with pytest.raises(DataError, match=r"training part.*32 rows.*window 40"):
        CsvTask(path, window=40)


def test_csv_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CorpusNotFoundError, match=r"missing\.csv.*does not exist"):
        CsvTask(tmp_path / "missing.csv")
    empty = _csv(tmp_path, "", "empty.csv")
    with pytest.raises(DataError, match=r"empty\.csv.*is empty"):
        CsvTask(empty)
    binary = tmp_path / "data.xlsx"
    binary.write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(DataError, match=r"data\.xlsx.*binary"):
        CsvTask(binary)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\u00e9,b\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv.*not valid UTF-8"):
        CsvTask(latin)


def test_csv_rejects_bad_arguments(tmp_path: Path) -> None:
    path, _ = _good_csv(tmp_path)
    with pytest.raises(ValueError, match=r"val_fraction must lie in \(0, 1\)"):
        CsvTask(path, val_fraction=0.0)
    with pytest.raises(ValueError, match="delimiter must be one character"):
        CsvTask(path, delimiter=";;")
    with pytest.raises(ValueError, match=r"starts must lie in \[0, "):
        CsvTask(path, window=5).windows(np.array([10_000]))
