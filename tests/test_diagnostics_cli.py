"""``bptt inspect`` and the diagnostic figures."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt.checkpoint import load_checkpoint, save_checkpoint
from bptt.cli import main
from bptt.data.tasks import AddingTask
from bptt.data.text import CharCorpus, stream_batches
from bptt.diagnostics import GradientProfileRecorder, lag_contributions, truncation_bias
from bptt.diagnostics import plots as diagnostic_plots
from bptt.diagnostics.report import FIGURES

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


def test_inspect_adding_uses_the_adding_tasks_validation_batch(tmp_path):
    """``--task adding`` on a fresh model: bptt.data.tasks.AddingTask, seeded with --seed + 1."""
    out = tmp_path / "out"
    argv = ["inspect", "--out", str(out), "--no-plots", "--task", "adding", "--seq-len", "9"]
    assert main([*argv, "--batch", "5", "--hidden", "4", "--seed", "3"]) == 0
    report = read_report(out)
    assert report["batch"] == {**report["batch"], "task": "adding", "seq_len": 9, "batch": 5}
    model = bptt.ElmanRNN(2, 4, 1, hidden_activation="tanh", output="identity", seed=3)
    data = AddingTask(9).sample(np.random.default_rng(4), 5, np.float64, split="val")
    assert report["batch"]["loss"] == pytest.approx(model.loss(data.x, data.y, None, data.mask))


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
    batch = AddingTask(8).sample(rng, 4, np.float64)
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


def test_inspect_checkpoint_through_load_checkpoint(tmp_path, capsys):
    """The wiring to bptt.checkpoint (a bare checkpoint, no training config) and
    DIR/profile.json."""
    run = tmp_path / "run"
    model = bptt.ElmanRNN(3, 4, 2, hidden_activation="tanh", output="sigmoid", seed=2)
    save_checkpoint(run, model=model, step=0, config={})
    rec = GradientProfileRecorder(every=5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    y = (rng.random((6, 2, 2)) < 0.5).astype(np.float64)
    rec.maybe_record(0, model, x, y)
    rec.maybe_record(5, model, x, y)
    rec.save(run / "profile.json")
    out = tmp_path / "out"
    assert main(["inspect", str(run), "--out", str(out), "--seq-len", "6", "--batch", "2"]) == 0
    report = read_report(out)
    assert report["model"]["hidden_size"] == 4 and report["model"]["output"] == "sigmoid"
    assert report["model"]["source"] == f"checkpoint {run}"
    assert report["profile"]["path"] == str(run / "profile.json")
    assert_png(out / FIGURES["profile"])
    assert "checkpoint" in capsys.readouterr().out


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
    assert sorted(p.name for p in out.iterdir()) == [".bptt-inspect", "inspect.json"]


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


def _assert_lag_sum_is_the_gradient(report: dict, model: bptt.ElmanRNN, x, y, mask) -> None:
    """Σ_d C[d] in the JSON against loss_and_grads recomputed here, to the model dtype's
    tolerance (the contributions are summed in float64 from model-dtype arrays)."""
    loss, grads = model.loss_and_grads(x, y, mask=mask)
    eps = float(np.finfo(model.dtype).eps)
    assert report["batch"]["loss"] == pytest.approx(float(loss), rel=100 * eps)
    sums = report["lag_contributions"]["sum_over_lags"]
    for name in ("W", "V", "b_h"):
        g = np.asarray(getattr(grads, name), dtype=np.float64)
        got = np.asarray(sums[name])
        assert got.shape == g.shape
        scale = float(np.max(np.abs(g)))
        assert scale > 0
        np.testing.assert_allclose(got, g, rtol=0, atol=1000 * eps * scale, err_msg=name)


def test_inspect_trained_adding_run_uses_the_runs_task(tmp_path, capsys):
    run = tmp_path / "run"
    train = ["train", "--task", "adding", "--seq-len", "10", "--hidden", "8", "--steps", "20"]
    train += ["--profile-every", "10", "--batch", "4", "--out", str(run), "--no-progress"]
    assert main([*train, "--no-plot", "--eval-every", "10", "--eval-size", "8"]) == 0
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["inspect", str(run), "--out", str(out), "--no-plots", "--batch", "3"]) == 0
    text = capsys.readouterr().out
    assert "batch: task=adding T=10 B=3" in text
    report = read_report(out)
    assert {k: report["batch"][k] for k in ("task", "seq_len", "batch")} == {
        "task": "adding",
        "seq_len": 10,
        "batch": 3,
    }
    assert len(report["profile"]["steps"]) >= 2
    model = load_checkpoint(run).model
    assert model.dtype == np.float32
    data = AddingTask(10).sample(np.random.default_rng(1), 3, np.float32, split="val")
    _assert_lag_sum_is_the_gradient(report, model, data.x, data.y, data.mask)


def test_inspect_trained_charlm_run_uses_its_validation_text(tmp_path, capsys):
    rng = np.random.default_rng(2)
    words = ["to ", "be ", "or ", "not ", "that ", "is\n"]
    text = tmp_path / "c.txt"
    text.write_text("".join(words[i] for i in rng.integers(0, 6, size=600)), encoding="utf-8")
    run = tmp_path / "run"
    train = ["train", "--text", str(text), "--hidden", "8", "--seq-len", "6", "--batch", "3"]
    train += ["--steps", "20", "--profile-every", "10", "--out", str(run), "--no-progress"]
    assert main([*train, "--no-plot", "--eval-every", "10", "--sample-every", "0"]) == 0
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["inspect", str(run), "--out", str(out), "--no-plots", "--batch", "2"]) == 0
    assert "batch: task=charlm T=6 B=2" in capsys.readouterr().out
    report = read_report(out)
    assert report["batch"]["task"] == "charlm" and len(report["profile"]["steps"]) >= 2
    ckpt = load_checkpoint(run)
    ids = CharCorpus.from_file(text, ckpt.vocab).ids
    val = ids[
        int(len(ids) * 0.9) :
    ]  # the trainer's default --val-fraction 0.1, held out at the end
    x, y = next(stream_batches(val, 2, 6))
    np.testing.assert_array_equal(x[1:], y[:-1])  # next-character targets
    _assert_lag_sum_is_the_gradient(report, ckpt.model, x, y, None)


def test_inspect_writes_only_into_its_own_folder(tmp_path, capsys):
    """--out: a new or empty folder (marked), or one inspect wrote before; a folder of someone
    else's files, a run directory, its best/ and a link are refused before anything is
    written, and a user's inspect.json is left as it was."""
    argv = ["inspect", "--no-plots", "--seq-len", "4", "--batch", "2", "--hidden", "3"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "inspect.json").write_text("my notes")
    assert main([*argv, "--out", str(theirs)]) == 2
    assert "is not empty and is not a bptt output directory" in capsys.readouterr().err
    assert (theirs / "inspect.json").read_text() == "my notes"
    assert sorted(p.name for p in theirs.iterdir()) == ["inspect.json"]
    mine = tmp_path / "mine"
    assert main([*argv, "--out", str(mine)]) == 0
    assert main([*argv, "--out", str(mine)]) == 0  # its own folder again
    run = tmp_path / "run"
    train = "train --task adding --seq-len 6 --steps 2 --hidden 3 --batch 2 --no-progress"
    assert main([*train.split(), "--no-plot", "--out", str(run)]) == 0
    capsys.readouterr()
    for refused, says in [(run, "bptt run directory"), (run / "best", "best/ folder")]:
        refused.mkdir(exist_ok=True)
        before = sorted(p.name for p in refused.iterdir())
        assert main([*argv, "--out", str(refused)]) == 2
        assert says in capsys.readouterr().err
        assert sorted(p.name for p in refused.iterdir()) == before
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert main([*argv, "--out", str(link)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    (mine / "inspect.json").unlink()
    (mine / "inspect.json").symlink_to(theirs / "inspect.json")
    assert main([*argv, "--out", str(mine)]) == 2
    assert (theirs / "inspect.json").read_text() == "my notes"
