"""GradientProfileRecorder: when it records, what it keeps, and its JSON file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bptt
from bptt.diagnostics import GradientProfileRecorder, lag_contributions

T, B = 7, 3


def setup(rng: np.random.Generator) -> tuple[bptt.ElmanRNN, np.ndarray, np.ndarray]:
    model = bptt.ElmanRNN(4, 5, 3, hidden_activation="tanh", output="softmax", seed=1)
    x = rng.integers(0, 4, size=(T, B))
    y = rng.integers(0, 3, size=(T, B))
    return model, x, y


def sgd_step(model: bptt.ElmanRNN, x: np.ndarray, y: np.ndarray, lr: float = 0.5) -> None:
    _, grads = model.loss_and_grads(x, y)
    for name, param in model.params.items():
        param -= lr * getattr(grads, name)


@pytest.mark.parametrize("max_lag", [None, 2])
def test_records_every_n_steps_the_per_lag_norms(rng, max_lag):
    model, x, y = setup(rng)
    rec = GradientProfileRecorder(every=3, max_lag=max_lag)
    expected: dict[int, dict[str, np.ndarray]] = {}
    losses = {}
    for step in range(8):
        if step % 3 == 0:  # the reference, computed before the recorder sees the step
            expected[step] = lag_contributions(model, x, y, max_lag=max_lag).norms()
            losses[step] = model.loss(x, y)
        assert rec.maybe_record(step, model, x, y) == (step % 3 == 0)
        sgd_step(model, x, y)
    assert rec.steps == [0, 3, 6] and len(rec) == 3
    width = T if max_lag is None else max_lag + 2
    for i, step in enumerate(rec.steps):
        assert rec.losses[i] == pytest.approx(losses[step], rel=1e-12)
        for name in ("W", "V", "b_h", "total"):
            np.testing.assert_array_equal(rec.history[name][i], expected[step][name])
    assert rec.matrix("W").shape == (3, width)
    assert rec.labels[0][-1] == (str(T - 1) if max_lag is None else "≥3")
    # training changes the profile: the records are not copies of one another
    assert not np.allclose(rec.matrix()[0], rec.matrix()[2])


def test_matrix_pads_records_of_different_length(rng):
    model, x, y = setup(rng)
    rec = GradientProfileRecorder(every=1)
    rec.maybe_record(0, model, x, y)
    rec.maybe_record(1, model, x[:4], y[:4])
    m = rec.matrix("total")
    assert m.shape == (2, T)
    assert np.all(np.isfinite(m[0])) and np.all(np.isnan(m[1, 4:]))
    with pytest.raises(ValueError, match="name"):
        rec.matrix("U")


def test_json_round_trip_and_atomic_save(rng, tmp_path):
    model, x, y = setup(rng)
    rec = GradientProfileRecorder(every=2, max_lag=3)
    for step in range(5):
        rec.maybe_record(step, model, x, y)
        sgd_step(model, x, y)
    rec.history["V"][0][1] = np.nan  # non-finite values survive as null in strict JSON
    text = rec.to_json()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert data["norms"]["V"][0][1] is None and data["steps"] == [0, 2, 4]
    back = GradientProfileRecorder.from_json(text)
    assert back.every == 2 and back.max_lag == 3 and back.steps == rec.steps
    assert back.labels == rec.labels and back.losses == rec.losses
    for name in rec.history:
        for a, b in zip(rec.history[name], back.history[name], strict=True):
            np.testing.assert_array_equal(a, b)
    path = tmp_path / "run" / "profile.json"
    assert rec.save(path) == path
    assert sorted(os.listdir(path.parent)) == ["profile.json"]  # no temporary file left
    loaded = GradientProfileRecorder.load(path)
    np.testing.assert_array_equal(loaded.matrix("W"), rec.matrix("W"))


def test_failed_save_leaves_the_old_file_and_no_temporary(rng, tmp_path, monkeypatch):
    model, x, y = setup(rng)
    rec = GradientProfileRecorder(every=1)
    path = tmp_path / "profile.json"
    rec.save(path)
    before = path.read_text()
    rec.maybe_record(0, model, x, y)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        rec.save(path)
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["profile.json"]


def test_bad_arguments_and_bad_files(tmp_path):
    for every in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            GradientProfileRecorder(every=every)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_lag"):
        GradientProfileRecorder(every=1, max_lag=-1)
    with pytest.raises(ValueError, match="format"):
        GradientProfileRecorder.from_json(json.dumps({"steps": []}))
    good = GradientProfileRecorder(every=1).to_dict()
    with pytest.raises(ValueError, match="version"):
        GradientProfileRecorder.from_dict({**good, "version": 99})
    good["steps"] = [0]
    with pytest.raises(ValueError, match="steps"):
        GradientProfileRecorder.from_dict(good)
