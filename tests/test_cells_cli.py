"""Every registered cell through the rest of the library: checkpoints (format v2), the
optimizers, sampling, and ``bptt train/sample/eval/inspect`` end to end with small shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bptt import RNN
from bptt.algorithms.truncated import TruncatedBPTT
from bptt.cells import CELLS
from bptt.checkpoint import load_checkpoint, save_checkpoint
from bptt.cli import main
from bptt.optim import Adam
from bptt.sample import sample_text
from test_cli_train import _corpus

CELL_NAMES = sorted(CELLS)


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
@pytest.mark.parametrize(
    ("cell", "layers", "bi"),
    [(c, 1, False) for c in CELL_NAMES] + [("lstm", 2, True), ("gru", 2, False)],
)
def test_checkpoint_round_trip_keeps_structure_weights_and_state(tmp_path, cell, layers, bi, fmt):
    model = RNN(4, 5, 3, cell=cell, num_layers=layers, bidirectional=bi, seed=2, dtype=np.float32)
    opt = Adam(0.01)
    _, grads = model.loss_and_grads(
        np.random.default_rng(0).integers(0, 4, (6, 2)), np.zeros((6, 2), dtype=int)
    )
    opt.step(model.params, grads)
    runner_arrays: dict[str, np.ndarray] = {}
    if not bi:
        runner = TruncatedBPTT(model, 3, 5)
        runner.step(np.zeros((3, 2), dtype=int), np.zeros((3, 2), dtype=int))
        runner_arrays = runner.state_arrays()
    save_checkpoint(
        tmp_path,
        model=model,
        step=3,
        config={"cell": cell},
        optimizer_state=opt.state_dict(),
        arrays=runner_arrays,
        fmt=fmt,
    )
    c = load_checkpoint(tmp_path)
    assert isinstance(c.model, RNN) and c.model.cell == cell
    assert c.model.structure() == model.structure()
    assert list(c.model.params) == list(model.params)
    for name, array in model.params.items():
        np.testing.assert_array_equal(c.model.params[name], array)
    opt2 = Adam(0.01)
    opt2.load_state_dict(c.optimizer_state, names=c.model.params)
    for slot, arrays in opt.slots.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(opt2.slots[slot][name], array)
    if not bi:
        other = TruncatedBPTT(c.model, 3, 5)
        other.load_state_arrays(c.arrays)
        h = other.h_start
        ref = runner.h_start
        for a, b in zip(
            h if isinstance(h, tuple) else (h,),
            ref if isinstance(ref, tuple) else (ref,),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_sampling_runs_and_is_seed_deterministic(cell):
    from bptt.data.text import CharVocab

    vocab = CharVocab(tuple("abcd"))
    model = RNN(4, 6, 4, cell=cell, seed=1)
    a = sample_text(model, vocab, 30, prime="ab", seed=5)
    b = sample_text(model, vocab, 30, prime="ab", seed=5)
    assert a == b and len(a) == 32 and set(a) <= set("abcd")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_train_resume_sample_eval_inspect(tmp_path, capsys, cell) -> None:
    run = tmp_path / "run"
    args = [
        "train", "--cell", cell, "--text", _corpus(tmp_path), "--out", str(run),
        "--hidden", "8", "--seq-len", "5", "--k2", "7", "--batch", "3", "--eval-every", "6",
        "--sample-every", "0", "--no-progress", "--no-plot",
    ]  # fmt: skip
    assert main([*args, "--steps", "6"]) == 0
    assert main([*args, "--steps", "12", "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"cell='{cell}'" in out and "step 12: val_loss" in out
    ckpt = load_checkpoint(run)
    assert ckpt.step == 12 and ckpt.model.cell == cell
    assert json.loads((run / "config.json").read_text())["cell"] == cell
    # the carried (h, c) of the LSTM's streams is in the checkpoint
    assert any(k.startswith("tbptt.h_start") for k in ckpt.arrays)

    assert main(["sample", str(run), "--length", "15", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.strip()) >= 1
    assert main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["step"] == 12 and np.isfinite(metrics["val_loss"])
    assert main(["inspect", str(run), "--out", str(tmp_path / "ins"), "--no-plots"]) == 0
    report = json.loads((tmp_path / "ins" / "inspect.json").read_text())
    assert report["model"]["cell"] == cell
    sums = report["lag_contributions"]["sum_over_lags"]
    assert set(sums) == set(ckpt.model.layers[0].cell.param_shapes())


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_task_training_with_layers_and_directions(tmp_path, capsys, cell) -> None:
    run = tmp_path / "add"
    assert main([
        "train", "--task", "adding", "--cell", cell, "--layers", "2", "--bidirectional",
        "--hidden", "6", "--seq-len", "8", "--batch", "4", "--steps", "4", "--eval-every", "4",
        "--eval-size", "16", "--out", str(run), "--no-progress", "--no-plot",
    ]) == 0  # fmt: skip
    assert "val_mse" in capsys.readouterr().out
    assert main(["eval", str(run)]) == 0
    assert main(["inspect", str(run), "--out", str(tmp_path / "i"), "--no-plots"]) == 0
    report = json.loads((tmp_path / "i" / "inspect.json").read_text())
    assert set(report["layers"]) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    assert report["layer"] == "l1" and "W_l1" in report["lag_contributions"]["sum_over_lags"]


def test_inspect_fresh_gated_model_writes_figures(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "ins"
    assert main(["inspect", "--cell", "gru", "--task", "adding", "--seq-len", "12",
                 "--batch", "4", "--hidden", "6", "--out", str(out)]) == 0  # fmt: skip
    assert (out / "lag_contributions.png").stat().st_size > 0
    assert (out / "jacobian_products.png").stat().st_size > 0
    assert "cell='gru'" in capsys.readouterr().out


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_profile_during_training_and_inspect(tmp_path, capsys, cell) -> None:
    run = tmp_path / "p"
    base = ["train", "--task", "adding", "--cell", cell, "--hidden", "5", "--seq-len", "6",
            "--batch", "3", "--steps", "4", "--eval-every", "4", "--eval-size", "8",
            "--profile-every", "2", "--no-progress", "--no-plot"]  # fmt: skip
    assert main([*base, "--out", str(run)]) == 0
    profile = json.loads((run / "profile.json").read_text())
    assert profile["steps"][-1] == 4
    assert all(len(row) == 6 for row in profile["norms"]["total"])
    assert main(["inspect", str(run), "--out", str(tmp_path / "i"), "--no-plots"]) == 0
    assert json.loads((tmp_path / "i" / "inspect.json").read_text())["profile"] is not None
    capsys.readouterr()
    # a deep, bidirectional run profiles its top layer's forward direction, as inspect does
    deep = tmp_path / "deep"
    assert main([*base, "--layers", "2", "--bidirectional", "--out", str(deep)]) == 0
    profile = json.loads((deep / "profile.json").read_text())
    assert profile["layer"] == "l1" and profile["steps"] == [2, 4]
    assert all(len(row) == 6 for row in profile["norms"]["total"])
    assert all(v is not None and v >= 0 for row in profile["norms"]["total"] for v in row)
    assert main(["inspect", str(deep), "--out", str(tmp_path / "j"), "--no-plots"]) == 0
    assert json.loads((tmp_path / "j" / "inspect.json").read_text())["profile"]["layer"] == "l1"


def test_profile_recorder_takes_one_layer_of_a_deep_model() -> None:
    """The recorder's norms at layer "l1" are lag_contributions' at that layer, and survive
    a save and load."""
    import numpy as np

    from bptt import RNN
    from bptt.diagnostics.lags import lag_contributions
    from bptt.diagnostics.recorder import GradientProfileRecorder

    rng = np.random.default_rng(0)
    model = RNN(3, 4, 2, cell="lstm", num_layers=2, seed=1)
    x, y = rng.standard_normal((7, 2, 3)), rng.integers(0, 2, (7, 2))
    rec = GradientProfileRecorder(every=1, layer="l1")
    assert rec.maybe_record(0, model, x, y)
    want = lag_contributions(model, x, y, layer="l1").role_norms()
    for name, values in want.items():
        np.testing.assert_allclose(rec.history[name][0], values, rtol=1e-12)
    again = GradientProfileRecorder.from_json(rec.to_json())
    assert again.layer == "l1"
    np.testing.assert_allclose(again.history["total"][0], want["total"], rtol=1e-12)
