"""Issue 20: refuse what cannot be right, and every failure a message (one line, no traceback,
no NumPy warning): --init-from must match the model exactly, a forged non-finite optimizer
state is refused, predict scores only a Y of the forecasts' exact shape, overflow is named."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from bptt.cli import main
from bptt.interop import save_torch_state, state_dict
from bptt.model import build_model
from checkpoint_forge import forge, split

SINE = ["train", "--task", "sine", "--hidden", "3", "--seq-len", "4", "--batch", "2"]
QUIET = ["--steps", "2", "--eval-every", "1", "--eval-size", "4", "--no-progress", "--no-plot"]


def _err(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "Warning" not in err, err
    for w in words:
        assert w in err, err
    return err


def _model(**kw):
    args = dict(input_size=1, hidden_size=3, output_size=1, output="identity", seed=0)
    return build_model(**(args | kw))


def _save(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture(autouse=True)
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def test_init_from_matching_state_dict_is_accepted(tmp_path, capsys):
    p = save_torch_state(_model(), tmp_path / "w.safetensors")
    assert main([*SINE, *QUIET, "--out", str(tmp_path / "run"), "--init-from", str(p)]) == 0


@pytest.mark.parametrize(
    ("label", "tensors", "word"),
    [
        ("extra layer", lambda: state_dict(_model(num_layers=2)), "extra key"),
        ("extra direction", lambda: state_dict(_model(bidirectional=True)), "extra key"),
        ("garbage key", lambda: state_dict(_model()) | {"junk": np.zeros(2)}, "junk"),
        (
            "missing key",
            lambda: {k: v for k, v in state_dict(_model()).items() if "head" not in k},
            "missing",
        ),
        (
            "int64",
            lambda: {k: v.astype(np.int64) for k, v in state_dict(_model()).items()},
            "int64",
        ),
        ("bool", lambda: {k: v > 0 for k, v in state_dict(_model()).items()}, "bool"),
        (
            "uint8",
            lambda: {k: v.astype(np.uint8) for k, v in state_dict(_model()).items()},
            "uint8",
        ),
        ("nan", lambda: {k: v * np.nan for k, v in state_dict(_model()).items()}, "NaN"),
        (
            "overflow",
            lambda: {k: v.astype(np.float64) * 1e300 for k, v in state_dict(_model()).items()},
            "not finite",
        ),
    ],
)
def test_init_from_that_does_not_match_exactly_is_refused(tmp_path, capsys, label, tensors, word):
    p = _save(tmp_path / "w.safetensors", tensors())
    out = tmp_path / "run"
    assert main([*SINE, *QUIET, "--out", str(out), "--init-from", str(p)]) == 2
    _err(capsys, "--init-from", word)
    assert not out.exists()


def test_a_forged_nan_optimizer_slot_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SINE, *QUIET, "--out", str(out)]) == 0
    ckpt = out / "checkpoint.safetensors"
    fmt, meta, tensors = split(ckpt)
    slot = next(k for k in tensors if k.startswith("optim."))
    tensors[slot] = np.full_like(tensors[slot], np.nan)
    forge(ckpt, meta, tensors, fmt)
    capsys.readouterr()
    assert main([*SINE, *QUIET, "--out", str(out), "--steps", "4", "--resume"]) == 2
    _err(capsys, "non-finite optimizer state", slot)


@pytest.fixture
def sine_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert main([*SINE, *QUIET, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("label", "y"),
    [
        ("scalar", np.float64(1.0)),
        ("wrong T", np.zeros((4, 3, 1))),
        ("wrong N", np.zeros((5, 2, 1))),
        ("wrong O", np.zeros((5, 3, 2))),
    ],
)
def test_predict_scores_only_a_y_of_exact_shape(sine_run, tmp_path, capsys, label, y):
    x = np.zeros((5, 3, 1), np.float32)
    np.savez(tmp_path / "d.npz", X=x, Y=y)
    argv = ["predict", str(sine_run), "--data", str(tmp_path / "d.npz")]
    assert main([*argv, "--out", str(tmp_path / "p.npz")]) == 2
    _err(capsys, "Y must have shape")
    np.savez(tmp_path / "d.npz", X=x, Y=np.zeros((5, 3)))  # (T, N) is fine when O = 1
    assert main([*argv, "--out", str(tmp_path / "p.npz")]) == 0


def test_a_bare_npy_is_a_message(sine_run, tmp_path, capsys):
    np.save(tmp_path / "d.npz", np.zeros((5, 3, 1)))
    (tmp_path / "d.npz.npy").rename(tmp_path / "d.npz")
    argv = ["predict", str(sine_run), "--data", str(tmp_path / "d.npz")]
    assert main([*argv, "--out", str(tmp_path / "p.npz")]) == 2
    _err(capsys, "single .npy array")
    assert main(["train", "--task", "arrays", "--data", str(tmp_path / "d.npz"), *QUIET]) == 2
    _err(capsys, "single .npy array")


@pytest.mark.parametrize(
    "argv",
    [["--spectral-radius", "1e308"], ["--noise", "1e308"], ["--lr", "1e300"]],
    ids=lambda a: a[0],
)
def test_huge_scales_are_refused_without_warnings(tmp_path, capsys, argv):
    assert main([*SINE, *QUIET, "--out", str(tmp_path / "run"), *argv]) == 2
    _err(capsys, argv[0])


def test_npz_beyond_float32_names_the_overflow(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 10, 2)) * 1e300
    np.savez(tmp_path / "d.npz", X=X, Y=rng.standard_normal((6, 10, 1)))
    argv = ["train", "--task", "arrays", "--data", str(tmp_path / "d.npz"), *QUIET]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    _err(capsys, "beyond float32's range")
