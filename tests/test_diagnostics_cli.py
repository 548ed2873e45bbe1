"""``bptt inspect`` and the diagnostic figures."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt import diagnostic_plots
from bptt.cli import main
from bptt.diagnostics import GradientProfileRecorder, lag_contributions, truncation_bias
from bptt.inspect_cli import FIGURES, adding_batch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _matplotlib_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep matplotlib's font cache out of the home folder (read once, at its first import)."""
    if "matplotlib" in sys.modules:
        yield
        return
    mp = pytest.MonkeyPatch()
    mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("mplconfig")))
    yield
    mp.undo()


def read_report(out: Path) -> dict:
    return json.loads((out / "inspect.json").read_text(encoding="utf-8"))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 5_000 < len(data) < 200_000


def test_adding_batch_targets_are_the_marked_sums():
    rng = np.random.default_rng(0)
    batch = adding_batch(9, 5, rng, np.float64)
    assert batch.x.shape == (9, 5, 2) and batch.y.shape == (9, 5, 1)
    markers = batch.x[:, :, 1]
    assert np.all(markers.sum(0) == 2)
    assert np.all(markers[:4].sum(0) == 1) and np.all(markers[4:].sum(0) == 1)
    np.testing.assert_allclose(batch.y[-1, :, 0], (batch.x[:, :, 0] * markers).sum(0))
    assert batch.mask is not None and batch.mask.sum() == 5 and np.all(batch.mask[-1] == 1)
    with pytest.raises(ValueError, match="seq_len"):
        adding_batch(1, 5, rng, np.float64)


def test_inspect_fresh_model_writes_summary_json_and_figures(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["inspect", "--out", str(out), "--seq-len", "12", "--batch", "3", "--hidden", "6"]
    assert main([*args, "--max-lag", "4", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "Pascanu" in text and "truncation" in text and "inspect.json" in text
    report = read_report(out)
    assert {k: report["batch"][k] for k in ("task", "seq_len", "batch")} == {
        "task": "random",
        "seq_len": 12,
        "batch": 3,
    }
    assert report["lag_contributions"]["labels"] == ["0", "1", "2", "3", "4", "≥5"]
    # the JSON holds the library's numbers for the same model and batch
    model = bptt.ElmanRNN(8, 6, 4, hidden_activation="tanh", output="softmax", seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 3, 8))
    y = rng.integers(0, 4, size=(12, 3))
    ref = lag_contributions(model, x, y, max_lag=4).norms()
    assert report["batch"]["loss"] == pytest.approx(model.loss(x, y), rel=1e-12)
    np.testing.assert_allclose(report["lag_contributions"]["norms"]["W"], ref["W"], rtol=1e-12)
    tb = truncation_bias(model, x, y)
    np.testing.assert_allclose(report["truncation_bias"]["cosine"]["all"], tb.cosine["all"])
    jac = report["jacobian"]
    assert jac["lags"] == list(range(13)) and len(jac["singular_values"]) == 6
    assert jac["pascanu_vanishing_condition_holds"] == (jac["singular_values"][0] < 1.0)
    for key in ("lags", "hidden", "jacobian", "truncation"):
        assert_png(out / FIGURES[key])
    assert not (out / FIGURES["profile"]).exists()


def test_inspect_irnn_on_adding_with_profile_heatmap(tmp_path, rng):
    model = bptt.ElmanRNN(2, 5, 1, hidden_activation="relu", output="identity", seed=0)
    batch = adding_batch(8, 4, rng, np.float64)
    rec = GradientProfileRecorder(every=1, max_lag=3)
    for step in range(4):
        rec.maybe_record(step, model, batch.x, batch.y, mask=batch.mask)
        _, grads = model.loss_and_grads(batch.x, batch.y, mask=batch.mask)
        model.params.W -= 0.1 * grads.W
    profile = rec.save(tmp_path / "profile.json")
    out = tmp_path / "out"
    argv = ["inspect", "--out", str(out), "--task", "adding", "--activation", "relu"]
    argv += ["--recurrent-init", "identity", "--seq-len", "10", "--batch", "2", "--hidden", "5"]
    assert main([*argv, "--profile", str(profile)]) == 0
    report = read_report(out)
    assert report["model"]["output"] == "identity" and report["batch"]["task"] == "adding"
    # IRNN: W = I, so every singular value is 1 and the condition does not hold
    np.testing.assert_allclose(report["jacobian"]["singular_values"], np.ones(5))
    assert report["jacobian"]["pascanu_vanishing_condition_holds"] is False
    assert report["profile"]["steps"] == [0, 1, 2, 3]
    assert_png(out / FIGURES["profile"])


def test_inspect_checkpoint_through_load_checkpoint(tmp_path, monkeypatch, capsys):
    """The wiring to bptt.checkpoint (a stand-in module here) and DIR/profile.json."""
    run = tmp_path / "run"
    run.mkdir()
    model = bptt.ElmanRNN(3, 4, 2, hidden_activation="tanh", output="sigmoid", seed=2)
    seen = []

    def load_checkpoint(path):
        seen.append(Path(path))
        return types.SimpleNamespace(model=model, config={})

    fake = types.ModuleType("bptt.checkpoint")
    fake.load_checkpoint = load_checkpoint  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bptt.checkpoint", fake)
    rec = GradientProfileRecorder(every=5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    y = (rng.random((6, 2, 2)) < 0.5).astype(np.float64)
    rec.maybe_record(0, model, x, y)
    rec.maybe_record(5, model, x, y)
    rec.save(run / "profile.json")
    out = tmp_path / "out"
    assert main(["inspect", str(run), "--out", str(out), "--seq-len", "6", "--batch", "2"]) == 0
    assert seen == [run]
    report = read_report(out)
    assert report["model"]["hidden_size"] == 4 and report["model"]["output"] == "sigmoid"
    assert report["profile"]["path"] == str(run / "profile.json")
    assert_png(out / FIGURES["profile"])
    assert "checkpoint" in capsys.readouterr().out


def test_inspect_path_without_checkpoint_support_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bptt.checkpoint", None)  # import fails
    assert main(["inspect", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bptt.checkpoint" in err and "load_checkpoint" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "adding", "--input-size", "3"], "--input-size 2"),
        (["--task", "adding", "--seq-len", "1"], "seq_len"),
        (["--max-lag", "-1"], "--max-lag"),
        (["--batch", "0"], "--batch"),
        (["--spectral-radius", "0"], "--spectral-radius"),
    ],
)
def test_inspect_bad_options(tmp_path, capsys, extra, message):
    assert main(["inspect", "--out", str(tmp_path), "--no-plots", *extra]) == 2
    assert message in capsys.readouterr().err


def test_spectral_radius_and_orthogonal_init(tmp_path):
    out = tmp_path / "o"
    argv = ["inspect", "--out", str(out), "--no-plots", "--seq-len", "5", "--batch", "2"]
    assert main([*argv, "--recurrent-init", "orthogonal", "--spectral-radius", "0.5"]) == 0
    jac = read_report(out)["jacobian"]
    assert jac["spectral_radius"] == pytest.approx(0.5)
    np.testing.assert_allclose(jac["singular_values"], 0.5)  # orthogonal: all equal
    assert jac["pascanu_vanishing_condition_holds"] is True
    assert sorted(p.name for p in out.iterdir()) == ["inspect.json"]


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    model = bptt.ElmanRNN(2, 3, 2, seed=0)
    contrib = lag_contributions(model, np.zeros((3, 1, 2)), np.zeros((3, 1), dtype=int))
    with pytest.raises(ImportError, match=r"pip install 'bptt\[plot\]'"):
        diagnostic_plots.plot_lag_contributions(contrib)


def test_inspect_without_matplotlib_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["inspect", "--out", str(tmp_path / "o"), "--seq-len", "3"]) == 2
    assert "pip install 'bptt[plot]'" in capsys.readouterr().err
    assert main(["inspect", "--out", str(tmp_path / "o"), "--seq-len", "3", "--no-plots"]) == 0


def test_figures_have_titles_labels_legends_and_log_axes(rng):
    model = bptt.ElmanRNN(3, 6, 3, hidden_activation="tanh", seed=0)
    x = rng.standard_normal((20, 2, 3))
    y = rng.integers(0, 3, size=(20, 2))
    contrib = lag_contributions(model, x, y, max_lag=6)
    fig = diagnostic_plots.plot_lag_contributions(contrib)
    (ax,) = fig.axes
    assert ax.get_title() and "lag" in ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_yscale() == "log"  # the norms span many decades at this size
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("lags ≥ 7" in s for s in labels) and any("dL/dW" in s for s in labels)
    fig = diagnostic_plots.plot_truncation_bias(truncation_bias(model, x, y))
    assert len(fig.axes) == 2 and fig.axes[1].get_yscale() == "log"
    assert all(a.get_title() and a.get_legend() is not None for a in fig.axes)
    with pytest.raises(ValueError, match="no records"):
        diagnostic_plots.plot_profile_heatmap(GradientProfileRecorder(every=1))
