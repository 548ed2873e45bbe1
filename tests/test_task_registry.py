"""The task registry (bptt.data.registry): one object per --task, asked by make_task, the
configuration, predict, eval and the plots; a new task is one class and one register call."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import numpy as np
import pytest

from bptt.cli import main
from bptt.data import Batch, SequenceTask, registry
from bptt.data.tasks import TASKS
from bptt.training import TrainConfig, Trainer, make_source, make_task
from bptt.training.config import config_fields

QUIET = {"progress": False, "plot": False, "out": None}


def _build(name: str, tmp_path) -> SequenceTask:
    """A small instance of each task (csv and arrays from small files)."""
    extra: dict[str, Any] = {"seq_len": 12}
    if name == "csv":
        path = tmp_path / "s.csv"
        t = np.arange(80)
        path.write_text("a,b\n" + "".join(f"{np.sin(v / 3):.4f},{v % 7}\n" for v in t))
        extra["csv"] = str(path)
    if name == "copy":
        extra = {"delay": 3, "copy_len": 2}
    if name == "arrays":
        path = tmp_path / "d.npz"
        rng = np.random.default_rng(0)
        np.savez(path, X=rng.integers(0, 3, (5, 20)), Y=rng.integers(0, 3, (5, 20)))
        extra = {"data": str(path)}
    return make_task(TrainConfig(task=name, **extra))


def test_the_registry_is_the_list_of_tasks() -> None:
    names = registry.names()
    assert names == ("charlm", "adding", "copy", "sine", "order", "csv", "lagged", "arrays")
    assert tuple(registry.TASK_NAMES) == names
    task_field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "task")
    assert tuple(task_field.metadata["choices"]) == names
    assert set(TASKS) <= set(names)  # every generated task has its entry
    with pytest.raises(ValueError, match="--task must be one of charlm, adding"):
        registry.get("nope")


def test_every_task_field_of_the_config_belongs_to_a_task() -> None:
    """The options between --task and the model's fields are exactly what the tasks read."""
    names = [name for name, *_ in config_fields()]
    task_fields = set(names[names.index("task") + 1 : names.index("hidden")])
    read = {option for spec in registry.REGISTRY.values() for option in spec.options}
    owned = {option for spec in registry.REGISTRY.values() for option in spec.own}
    assert read == task_fields
    assert owned <= read | {"k2"}


@pytest.mark.parametrize(
    ("option", "bad", "message"),
    [
        ("horizon", 0, "--horizon must be >= 1, got 0"),
        ("delay", 0, "--delay must be >= 1, got 0"),
        ("copy_len", -1, "--copy-len must be >= 1, got -1"),
        ("n_symbols", 0, "--n-symbols must be >= 1, got 0"),
        ("lag1", 0, "--lag1 must be >= 1, got 0"),
        ("noise", -0.5, "--noise must be >= 0, got -0.5"),
        ("val_fraction", 1.0, r"--val-fraction must lie in \(0, 1\), got 1.0"),
    ],
)
def test_task_option_bounds_come_from_the_tasks(option, bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{option: bad})
    owners = [s.name for s in registry.REGISTRY.values() if option in s.options]
    assert owners, option  # the bound is declared by the task(s) that read it


@pytest.mark.parametrize("name", [n for n in registry.names() if n != "charlm"])
def test_what_a_task_declares_matches_its_data(name, tmp_path) -> None:
    spec = registry.get(name)
    task = _build(name, tmp_path)
    batch = task.sample(np.random.default_rng(0), 3, np.float64)
    # token ids in: integer (T, B) inputs (predict --csv refuses them, export marks them)
    if spec.token_inputs is not None:  # None: the data decides (arrays)
        assert spec.token_inputs == (batch.x.ndim == 2 and batch.x.dtype.kind in "iu")
    if spec.output_size_known is not None:
        assert task.output_size == spec.output_size_known
    if spec.fixed_length and spec.fixed_seq_len(TrainConfig(task=name)) is not None:
        cfg = TrainConfig(task=name, delay=3, copy_len=2)
        assert spec.fixed_seq_len(cfg) == make_task(cfg).seq_len


def test_foreign_options_are_refused_by_their_owner() -> None:
    with pytest.raises(ValueError, match="--data applies to --task arrays only"):
        TrainConfig(task="adding", data="x.npz")
    with pytest.raises(ValueError, match="--output applies to --task arrays only"):
        TrainConfig(task="sine", output="identity")
    with pytest.raises(ValueError, match="--k2 applies to --task charlm, not --task copy"):
        TrainConfig(task="copy", k2=60)
    with pytest.raises(ValueError, match="--task csv needs --csv FILE"):
        TrainConfig(task="csv")
    with pytest.raises(ValueError, match="copy task's length is fixed, T = --delay"):
        TrainConfig(task="copy", seq_len=7)


# -- a new task: one SequenceTask, one TaskSpec, one register call -----------------------------


class RunningSignTask(SequenceTask):
    """y_t = [Σ_{s<=t} x_s > 0]: the sign of a running sum of N(0, 1) inputs (softmax, 2
    classes); baseline: the class frequencies, ½ each."""

    name = "running_sign"
    output = "softmax"
    metric = "accuracy"

    def __init__(self, seq_len: int) -> None:
        self.seq_len, self.input_size, self.output_size = seq_len, 1, 2

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "seq_len": self.seq_len}

    def sample(self, rng, batch, dtype, split="train") -> Batch:
        x = rng.standard_normal((self.seq_len, batch, 1))  # (T, B, 1)
        y = (np.cumsum(x[..., 0], axis=0) > 0).astype(np.int64)  # (T, B)
        return Batch(x.astype(dtype), y, None)

    def evaluate(self, y_hat, batch) -> dict[str, float]:
        return registry.score_predictions(y_hat, batch.y, batch.mask, "softmax")

    def baseline(self, batch) -> dict[str, float]:
        T, B = batch.y.shape
        return self.evaluate(np.full((T, B, 2), 0.5), batch)


class RunningSign(registry.TaskSpec):
    name = "running_sign"
    summary = "the sign of a running sum"
    options: ClassVar[dict[str, registry.Bound]] = {}

    def build(self, config: Any) -> SequenceTask:
        return RunningSignTask(config.seq_len)


@pytest.fixture
def running_sign(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "running_sign", RunningSign())
    return "running_sign"


def test_a_registered_task_trains_from_python_and_the_command_line(
    running_sign, tmp_path, capsys
) -> None:
    config = TrainConfig(task=running_sign, hidden=6, seq_len=8, batch=4, steps=4, eval_every=4)
    config = dataclasses.replace(config, eval_size=8, **QUIET)
    source = make_source(config)
    assert (source.input_size, source.output_size, source.metric_key) == (1, 2, "val_accuracy")
    result = Trainer(config).train()
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0
    run = tmp_path / "run"
    args = ["train", "--task", running_sign, "--hidden", "5", "--seq-len", "6", "--steps", "3"]
    args += ["--eval-every", "3", "--eval-size", "8", "--out", str(run), "--no-progress"]
    assert main([*args, "--no-plot"]) == 0
    assert json.loads((run / "config.json").read_text())["task"] == running_sign
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "8 validation sequences of running_sign" in capsys.readouterr().out


def test_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("adding"))


def test_export_marks_token_inputs_of_every_id_task(tmp_path, capsys) -> None:
    """A copy run reads token ids: its ONNX graph takes (T, B) int64 ids (before the registry
    only charlm runs did, so a copy run's graph wanted one-hot floats)."""
    onnx = pytest.importorskip("onnx")
    from onnx import reference

    run = tmp_path / "copy"
    args = ["train", "--task", "copy", "--delay", "3", "--copy-len", "2", "--n-symbols", "3"]
    args += ["--hidden", "4", "--steps", "2", "--eval-every", "2", "--eval-size", "4"]
    args += ["--dtype", "float64", "--out", str(run), "--no-progress", "--no-plot"]
    assert main(args) == 0
    path = tmp_path / "copy.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(path)]) == 0
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    from bptt.checkpoint import load_checkpoint

    model = load_checkpoint(run).model
    x = np.random.default_rng(0).integers(0, 5, (7, 2))  # (T, B) ids
    (y_onnx, *_) = reference.ReferenceEvaluator(str(path)).run(None, {"x": x})
    np.testing.assert_allclose(y_onnx, model.predict(x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("option", ["delay", "horizon", "noise", "lag2", "data"])
def test_pbt_may_not_perturb_a_task_option(option, tmp_path) -> None:
    """Every option a task reads defines the data, so PBT may not change it mid-run (the
    list of fixed fields comes from the registry; main fixed only n_symbols among them)."""
    pytest.importorskip("tomllib")
    from bptt.sweep import SpecError, load_spec

    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[base]\ntask = "adding"\nseq_len = 20\nsteps = 200\n[space]\nlr = [1e-3, 3e-3]\n'
        '[sweep]\nseeds = [0]\nmetric = "val_mse"\nparallel = 1\nscheduler = "pbt"\n'
        f"[sweep.pbt]\ninterval = 20\nmutations = {{ {option} = [2] }}\n"
    )
    with pytest.raises(SpecError, match=f"cannot perturb '{option}'"):
        load_spec(spec)
