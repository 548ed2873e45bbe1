"""Issue 12: options and inputs that used to be ignored, silently wrong, or a traceback.

Each test reproduces one item of the issue (it failed before the fix).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from bptt.cli import main
from bptt.data.errors import DataError
from bptt.data.tasks import CsvTask
from bptt.model import ElmanRNN
from bptt.optim import SGD, Schedule, guarded_step
from bptt.params import Params
from bptt.sample import next_distribution
from bptt.training import TrainConfig, make_task


def _csv(tmp_path, columns: dict[str, np.ndarray]):
    path = tmp_path / "series.csv"
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    lines = [",".join(names)] + [",".join(repr(float(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- item 3: --task csv --last-only --------------------------------------------------------


def test_csv_last_only_reaches_the_task(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = _csv(tmp_path, {"a": rng.standard_normal(60)})
    cfg = TrainConfig(task="csv", csv=str(path), seq_len=5, last_only=True, hidden=4, batch=2)
    task = make_task(cfg)
    assert task.last_only is True
    batch = task.sample(np.random.default_rng(1), 2)
    assert batch.mask is not None and batch.mask[:-1].sum() == 0 and batch.mask[-1].all()


# -- item 6: a CSV column that cannot be standardised naively ------------------------------


def test_csv_huge_values_are_standardised_not_zeroed(tmp_path) -> None:
    rng = np.random.default_rng(0)
    big = 1e300 * rng.uniform(1.0, 1.7, size=80)
    path = _csv(tmp_path, {"big": big, "small": rng.standard_normal(80)})
    task = CsvTask(path, window=5)
    train = task.series[: task.n_train]
    assert np.isfinite(task.series).all()
    np.testing.assert_allclose(train.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-12)
    # the standardised values are the affine image of the raw ones (checked in float64 ratios)
    expected = (big / 1e300 - (big[: task.n_train] / 1e300).mean()) / (
        big[: task.n_train] / 1e300
    ).std()
    np.testing.assert_allclose(task.series[:, 0], expected, rtol=1e-10, atol=1e-12)


def test_csv_constant_column_is_a_clear_error(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = _csv(tmp_path, {"a": rng.standard_normal(60), "flat": np.full(60, 3.5)})
    with pytest.raises(DataError, match=r"column 'flat'.*constant"):
        CsvTask(path, window=5)


def test_csv_spread_near_the_float64_limit_is_standardised(tmp_path) -> None:
    col = np.where(np.arange(60) % 2 == 0, 1.7e308, -1.7e308)
    task = CsvTask(_csv(tmp_path, {"wild": col}), window=5)
    np.testing.assert_allclose(np.abs(task.series), 1.0, rtol=1e-6)


def test_csv_validation_rows_beyond_float64_are_a_clear_error(tmp_path) -> None:
    col = np.concatenate([np.linspace(-1e-300, 1e-300, 60), np.full(20, 1e300)])
    with pytest.raises(DataError, match=r"column 'x'.*validation rows"):
        CsvTask(_csv(tmp_path, {"x": col}), window=5, val_fraction=0.25)


# -- item 7: schedule options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("lr_gamma", -1.0), ("lr_gamma", 0.0), ("lr_gamma", 1.5), ("min_lr_ratio", 5.0)],
)
def test_schedule_options_are_range_checked(option: str, value: float) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**{option: value})


@pytest.mark.parametrize(("kw", "value"), [("gamma", -1.0), ("min_lr_ratio", 5.0)])
def test_schedule_refuses_rising_or_negative_rates(kw: str, value: float) -> None:
    with pytest.raises(ValueError, match=kw):
        Schedule("cosine" if kw == "min_lr_ratio" else "step", 1e-3, **{kw: value})


def test_schedule_never_negative_or_rising_at_the_limits() -> None:
    s = Schedule("cosine", 1.0, total_steps=10, min_lr_ratio=1.0)
    assert [s(i) for i in range(12)] == [1.0] * 12
    s = Schedule("step", 1.0, step_size=1, gamma=1.0)
    assert s(5) == 1.0


# -- item 8: Params.global_norm accumulates in float64 ---------------------------------------


def test_global_norm_of_large_float32_entries_is_finite() -> None:
    p = ElmanRNN(3, 4, 2, dtype=np.float32, seed=0).params.map(
        lambda a: np.full_like(a, 1e20, dtype=np.float32)
    )
    n = sum(a.size for a in p.arrays())
    assert p.global_norm() == pytest.approx(1e20 * np.sqrt(n), rel=1e-6)


def test_a_finite_huge_float32_gradient_is_clipped_not_skipped() -> None:
    model = ElmanRNN(3, 4, 2, dtype=np.float32, seed=0)
    before = model.params.copy()
    grads = model.params.map(lambda a: np.full_like(a, 1e20, dtype=np.float32))
    info = guarded_step(SGD(0.1), model.params, grads, clip_norm=1.0)
    assert info.applied and np.isfinite(info.grad_norm)
    step = np.sqrt(
        sum(
            float(np.sum((a - b) ** 2))
            for a, b in zip(model.params.arrays(), before.arrays(), strict=True)
        )
    )
    assert step == pytest.approx(0.1, rel=1e-4)  # lr x the clipped norm 1


# -- item 13: messages that name the option ---------------------------------------------------


def test_negative_seed_names_the_option() -> None:
    with pytest.raises(ValueError, match="--seed"):
        TrainConfig(seed=-1)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["gradcheck", "--tolerance", "nan"], "--tolerance"),
        (["gradcheck", "--tolerance", "-1"], "--tolerance"),
        (["gradcheck", "--seq-len", "-3"], "--seq-len"),
        (["gradcheck", "--batch", "0"], "--batch"),
        (["gradcheck", "--hidden", "0"], "--hidden"),
        (["gradcheck", "--seed", "-1"], "--seed"),
        (["inspect", "--no-plots", "--input-size", "0"], "--input-size"),
        (["inspect", "--no-plots", "--output-size", "0"], "--output-size"),
        (["inspect", "--no-plots", "--seed", "-1"], "--seed"),
    ],
)
def test_cli_rejects_bad_numbers_naming_the_option(argv, flag, capsys, tmp_path) -> None:
    if argv[0] == "inspect":
        argv = [*argv, "--out", str(tmp_path / "ins")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bptt {argv[0]}: error:") and flag in err


def test_transposed_U_reports_the_right_expected_shape() -> None:
    model = ElmanRNN(3, 4, 2, seed=0)
    p = model.params
    model.params = Params(U=p.U.T.copy(), V=p.V, W=p.W, b_h=p.b_h, b_y=p.b_y)
    with pytest.raises(ValueError, match=r"params\.U must have shape \(2, 4\)"):
        model.validated_params()


def test_a_list_as_a_weight_is_a_type_error() -> None:
    p = ElmanRNN(3, 4, 2, seed=0).params
    with pytest.raises(TypeError, match=r"params\.W must be a NumPy array"):
        p.W = p.W.tolist()


def test_model_params_none_is_a_type_error() -> None:
    model = ElmanRNN(3, 4, 2, seed=0)
    with pytest.raises(TypeError, match=r"model\.params must be"):
        model.params = None  # type: ignore[assignment]


# -- item 15: --resume --steps below the checkpoint keeps config.json ------------------------


def test_resume_with_fewer_steps_keeps_config(tmp_path) -> None:
    out = tmp_path / "run"
    base = ["train", "--task", "adding", "--hidden", "3", "--seq-len", "4", "--batch", "2"]
    base += ["--out", str(out), "--no-progress", "--no-plot", "--eval-size", "8"]
    assert main([*base, "--steps", "4"]) == 0
    assert main([*base, "--steps", "2", "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["steps"] == 4


# -- item 16: a tiny temperature does not leak a NumPy warning -------------------------------


def test_tiny_temperature_is_greedy_without_warnings() -> None:
    z = np.array([0.5, 2.0, -1.0, 1.9])
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        p = next_distribution(z, 1e-320)
    assert p.tolist() == [0.0, 1.0, 0.0, 0.0]
