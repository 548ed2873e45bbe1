"""bptt.algorithms: one interface, one registry.

Every registered algorithm runs through the same trainer test (train, checkpoint, resume bit
for bit), and through the same gradient test against full BPTT where it must equal it; the
configuration, the CLI and docs/algorithms.md list exactly the registry; the model imports no
algorithm, and nothing outside model.py calls the model's underscored methods.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt import algorithms, online
from bptt.algorithms import Estimate, GradientAlgorithm
from bptt.checkpoint import load_checkpoint
from bptt.data import Batch
from bptt.model import RNN, ElmanRNN, unallocated_model
from bptt.training import TrainConfig, Trainer
from bptt.training.config import OPTION_FIELDS

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bptt"
NAMES = algorithms.names()


# -- the registry ------------------------------------------------------------------------------


def test_the_registry_holds_every_way_to_compute_a_gradient() -> None:
    assert NAMES[:2] == ("bptt", "recompute")
    assert set(online.ALGORITHMS) <= set(NAMES)  # the online family, one entry each
    for name in NAMES:
        entry = algorithms.get(name)
        assert entry.name == name and issubclass(entry.cls, GradientAlgorithm)
        assert entry.summary and set(entry.options) <= set(OPTION_FIELDS)
    assert algorithms.get("snap-3").streaming  # snap-N for any N
    # checkpoints keep the array names they have always had (docs/checkpoint-format.md)
    assert algorithms.get("bptt").cls.checkpoint_prefix == "tbptt"
    assert {algorithms.get(n).cls.checkpoint_prefix for n in online.ALGORITHMS} == {"online"}
    with pytest.raises(ValueError, match=r"must be one of \['bptt', 'recompute'"):
        algorithms.get("magic")
    with pytest.raises(ValueError, match="already registered"):
        algorithms.register(algorithms.get("bptt"))


def test_the_config_the_cli_and_the_docs_read_the_registry(capsys) -> None:
    from bptt.cli import main

    field = TrainConfig.__dataclass_fields__["algorithm"]
    assert tuple(field.metadata["choices"]) == NAMES
    with pytest.raises(SystemExit):
        main(["train", "--algorithm", "magic"])
    error = capsys.readouterr().err
    choices = re.search(r"invalid choice: 'magic' \(choose from (.*)\)", error)
    assert choices, error
    assert tuple(c.strip(" '") for c in choices.group(1).split(",")) == NAMES
    doc = (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8")
    assert algorithms.markdown_table() in doc, "docs/algorithms.md's table is not the registry's"


def test_config_options_follow_the_entries() -> None:
    assert TrainConfig(algorithm="tbptt", truncation=4).algorithm_options() == {"k": 4}
    assert TrainConfig(algorithm="recompute", segment=3).algorithm_options() == {"segment": 3}
    assert TrainConfig(algorithm="bptt", seq_len=5, k2=9).algorithm_options() == {
        "k1": 5,
        "k2": 9,
        "memory_budget": None,
    }
    assert TrainConfig(algorithm="bptt", memory_budget="2MB").algorithm_options() == {
        "k1": None,
        "k2": None,
        "memory_budget": "2MB",
    }
    with pytest.raises(ValueError, match="--memory-budget"):
        TrainConfig(algorithm="rtrl", memory_budget="2MB")
    assert TrainConfig(algorithm="rtrl").algorithm_options() == {}
    with pytest.raises(ValueError, match="--segment applies to --algorithm recompute"):
        TrainConfig(algorithm="bptt", segment=4)
    with pytest.raises(ValueError, match="--truncation applies to --algorithm tbptt"):
        TrainConfig(algorithm="recompute", truncation=4)
    with pytest.raises(ValueError, match="--algorithm recompute runs in segments"):
        TrainConfig(algorithm="recompute", task="adding", bidirectional=True)


# -- every algorithm against full BPTT, through the one interface ------------------------------


def _batch(rng: np.random.Generator, T: int, B: int, masked: bool) -> Batch:
    x = rng.integers(0, 3, size=(T, B))
    y = rng.integers(0, 2, size=(T, B))
    mask = (rng.uniform(size=(T, B)) > 0.3).astype(np.float64) if masked else None
    return Batch(x, y, mask)


def _rel_err(got, want) -> float:
    num = sum(float(np.sum((got[k] - want[k]) ** 2)) for k in want)
    den = sum(float(np.sum(want[k] ** 2)) for k in want)
    return float(np.sqrt(num / den))


# the algorithms whose estimate over one batch from h_0 = 0 (weights fixed) is full BPTT's
EXACT = {"bptt": {}, "recompute": {"segment": 3}, "rtrl": {}, "tbptt": {"k": 8}}


@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_estimates_the_batch_gradient(name: str) -> None:
    """gradient(batch, restart=True): the loss is the model's, the counts are T·B and Σ mask,
    the gradient has the model's names and shapes; for the exact ones it equals loss_and_grads
    (to rounding: 1e-10 in float64)."""
    rng = np.random.default_rng(3)
    model = ElmanRNN(3, 5, 2, seed=1)
    batch = _batch(rng, 8, 2, masked=True)
    alg = algorithms.make(name, model, batch=2, seed=0, **EXACT.get(name, {}))
    assert alg.name == name
    est = alg.gradient(batch, restart=True)
    assert isinstance(est, Estimate)
    loss, ref = model.loss_and_grads(batch.x, batch.y, mask=batch.mask)
    assert est.loss == pytest.approx(loss, rel=1e-12)
    assert est.steps == 16 and est.counted == float(batch.mask.sum())
    assert list(est.grads) == list(ref)
    for k in ref:
        assert est.grads[k].shape == ref[k].shape and est.grads[k].dtype == ref[k].dtype
        assert np.isfinite(est.grads[k]).all()
    if name in EXACT:
        assert _rel_err(est.grads, ref) < 1e-10
    else:  # an approximation: the head's gradients are exact for every online method
        for k in ("U", "b_y"):
            np.testing.assert_allclose(est.grads[k], ref[k], rtol=1e-10, atol=1e-12)
    assert alg.state_is_finite()
    assert type(alg).carried_bytes is not None
    entry = algorithms.get(name)
    shell = unallocated_model(input_size=3, hidden_size=5, output_size=2)
    assert entry.carried_bytes(shell, 2, **EXACT.get(name, {})) > 0


def test_window_bptt_carries_the_state_between_batches() -> None:
    """Without a restart the next batch starts from the state the last one ended in (the
    gradient cut at the batch start); two batches of one stream = TBPTT(k1 = k2 = T)."""
    rng = np.random.default_rng(4)
    model = RNN(3, 4, 2, cell="gru", num_layers=2, seed=2)
    first, second = _batch(rng, 5, 2, False), _batch(rng, 5, 2, False)
    alg = algorithms.make("bptt", model, batch=2)
    a = alg.gradient(first, restart=True)
    b = alg.gradient(second)
    assert b.start is not None
    h1 = model.final_state(first.x)
    np.testing.assert_allclose(b.start, h1, rtol=1e-12)
    loss, ref = model.loss_and_grads(second.x, second.y, h0=h1)
    assert b.loss == pytest.approx(loss, rel=1e-12) and _rel_err(b.grads, ref) < 1e-12
    assert a.state is not None and b.state is not None
    again = algorithms.make("bptt", model, batch=2)
    again.load_state_dict(alg.state_dict())
    c, d = alg.gradient(first), again.gradient(first)
    assert c.loss == d.loss and all(np.array_equal(c.grads[k], d.grads[k]) for k in c.grads)


def test_window_bptt_with_k2_is_tbptt() -> None:
    from bptt.algorithms.truncated import tbptt_gradients

    rng = np.random.default_rng(5)
    model = ElmanRNN(3, 4, 2, seed=0)
    x, y = rng.integers(0, 3, size=(12, 2)), rng.integers(0, 2, size=(12, 2))
    alg = algorithms.make("bptt", model, batch=2, k1=4, k2=12)
    total = None
    for start in range(0, 12, 4):
        est = alg.gradient(Batch(x[start : start + 4], y[start : start + 4], None))
        total = est.grads if total is None else {k: total[k] + est.grads[k] for k in total}
    _, ref = tbptt_gradients(model, x, y, k1=4, k2=12)
    assert total is not None and _rel_err(total, ref) < 1e-12


def test_online_tbptt_fast_path_equals_the_one_tbptt() -> None:
    """The Elman closed form of online TBPTT(1, k) against the window rerun by the package's
    one TBPTT (fast=False), step by step and by run, k < T so the window is cut."""
    rng = np.random.default_rng(6)
    model = ElmanRNN(3, 5, 2, seed=3)
    x, y, mask = _batch(rng, 9, 2, masked=True)
    h0 = rng.normal(size=(2, 5))
    fast = online.make("tbptt", model, batch=2, k=3)
    slow = online.make("tbptt", model, batch=2, k=3, fast=False)
    assert fast.fast and not slow.fast
    for alg in (fast, slow):
        alg.reset(h0)
    for t in range(4):
        (la, ga), (lb, gb) = fast.step(x[t], y[t], mask[t]), slow.step(x[t], y[t], mask[t])
        assert la == pytest.approx(lb, rel=1e-12)
        assert _rel_err(ga, gb) < 1e-12
        np.testing.assert_allclose(ga.h0, gb.h0, rtol=1e-10, atol=1e-14)
    la, ga = fast.run(x[4:], y[4:], mask[4:])
    lb, gb = slow.run(x[4:], y[4:], mask[4:])
    np.testing.assert_allclose(la, lb, rtol=1e-12)
    assert _rel_err(ga, gb) < 1e-12


def test_a_bad_batch_is_refused_with_its_shape() -> None:
    alg = algorithms.make("bptt", ElmanRNN(3, 4, 2), batch=2)
    with pytest.raises(ValueError, match=r"B=2 streams .* got shape \(5, 3\)"):
        alg.gradient(Batch(np.zeros((5, 3), int), np.zeros((5, 3), int), None))


# -- every algorithm through the same trainer test ---------------------------------------------


def _config(tmp_path, out: str, name: str, task: str, **kw) -> TrainConfig:
    base = dict(
        out=str(tmp_path / out),
        task=task,
        algorithm=name,
        hidden=4,
        seq_len=8,
        batch=2,
        steps=10,
        eval_every=5,
        eval_size=8,
        eval_windows=2,
        checkpoint_every=4,
        log_every=1,
        sample_every=0,
        progress=False,
        plot=False,
        dtype="float64",
        update_every=3,  # streaming algorithms: batches cross window ends (8 = 3 + 3 + 2)
    )
    if task == "charlm":
        text = tmp_path / "corpus.txt"
        if not text.exists():
            rng = np.random.default_rng(0)
            words = ["the ", "cat ", "sat ", "on ", "a ", "mat. "]
            text.write_text("".join(words[i] for i in rng.integers(0, 6, 300)), encoding="utf-8")
        base["text"] = str(text)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("task", ["charlm", "adding"])
@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_trains_checkpoints_and_resumes_bit_exact(tmp_path, name, task) -> None:
    """10 steps in one run equal 6 steps, a checkpoint, and a resumed run to 10: the same
    weights and the same carried arrays (the algorithm's state under its prefix, the
    source's window and position)."""
    full = Trainer(_config(tmp_path, "full", name, task), echo=None)
    result = full.train()
    assert result.reason == "done" and full.model.params.is_finite()
    Trainer(_config(tmp_path, "half", name, task, steps=6), echo=None).train()
    Trainer(_config(tmp_path, "half", name, task), resume=True, echo=None).train()
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "half")
    for k in a.model.params:
        np.testing.assert_array_equal(a.model.params[k], b.model.params[k], err_msg=k)
    assert sorted(a.arrays) == sorted(b.arrays)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
    prefix = full.algorithm.checkpoint_prefix + "."
    carried = {k for k in a.arrays if k.startswith(prefix)}
    assert carried == {prefix + k for k in full.algorithm.state_dict()}
    if algorithms.get(name).streaming:
        assert carried and "stream.pos" in a.arrays


@pytest.mark.parametrize("name", ["bptt", "recompute", "tbptt"])
def test_algorithms_that_run_any_cell_train_a_deep_gated_model(tmp_path, name) -> None:
    cfg = _config(tmp_path, "lstm", name, "charlm", cell="lstm", layers=2, steps=4)
    Trainer(cfg, echo=None).train()
    Trainer(
        _config(tmp_path, "lstm", name, "charlm", cell="lstm", layers=2, steps=6),
        resume=True,
        echo=None,
    ).train()
    assert load_checkpoint(tmp_path / "lstm").step == 6


# Which algorithm refuses which gated model, and why (the online class says it when built).
GATED_REFUSALS = {
    ("rflo", "gru"): "one leaky Elman layer",
    ("rflo", "lstm"): "one leaky Elman layer",
    ("kf-rtrl", "gru"): "kf-rtrl",
}


@pytest.mark.parametrize(("cell", "layers"), [("gru", 2), ("lstm", 1)])
@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_trains_a_gated_model_and_resumes_bit_exact(
    tmp_path, name, cell, layers
) -> None:
    """`bptt train --cell gru|lstm --layers L --algorithm NAME`: 8 steps equal 5 steps, a
    checkpoint and a resume to 8, bit for bit; an algorithm whose definition does not reach
    the model refuses it with its reason before training."""
    kw = dict(cell=cell, layers=layers, hidden=3, seq_len=6)
    refusal = GATED_REFUSALS.get((name, cell))
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            Trainer(_config(tmp_path, "full", name, "charlm", steps=2, **kw), echo=None)
        return
    Trainer(_config(tmp_path, "full", name, "charlm", steps=8, **kw), echo=None).train()
    Trainer(_config(tmp_path, "half", name, "charlm", steps=5, **kw), echo=None).train()
    Trainer(
        _config(tmp_path, "half", name, "charlm", steps=8, **kw), resume=True, echo=None
    ).train()
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "half")
    assert a.step == b.step == 8
    for k in a.model.params:
        np.testing.assert_array_equal(a.model.params[k], b.model.params[k], err_msg=k)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


def test_a_bidirectional_model_trains_by_window_bptt_on_fresh_batches(tmp_path) -> None:
    cfg = _config(tmp_path, "bi", "bptt", "adding", bidirectional=True, steps=3)
    trainer = Trainer(cfg, echo=None)
    assert trainer.train().reason == "done" and trainer.model.params.is_finite()


# -- the rooms' doors -------------------------------------------------------------------------


def _modules() -> list[Path]:
    """Every module of the package but model.py, and the benchmarks."""
    package = [p for p in SRC.rglob("*.py") if p.name != "model.py" or p.parent != SRC]
    return sorted(package + list((ROOT / "benchmarks").rglob("*.py")))


def test_the_model_imports_nothing_from_the_algorithms() -> None:
    tree = ast.parse((SRC / "model.py").read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.append(("." * node.level) + (node.module or ""))
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
    assert imported, "model.py imports something"
    assert not [m for m in imported if "algorithms" in m], imported


def _model_private_names() -> set[str]:
    """The underscored methods and attributes of bptt.model's classes."""
    tree = ast.parse((SRC / "model.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
                names.add(node.name)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


def test_nothing_outside_the_model_calls_its_underscored_names() -> None:
    """No `<something other than self>._name` in any other module of the package, for the
    underscored names of model.py's classes (``model._forward``, ``self.model._sweep``, …)."""
    private = _model_private_names()
    assert {"_setup", "_check_xy", "_state_shape"} <= private  # the scan sees them
    offences = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr in private):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue  # the module's own class's attribute of that name
            offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not offences, "\n".join(offences)


def test_the_scan_would_catch_a_call_of_an_underscored_method() -> None:
    """The check above can fail: a module calling ``model._sweep`` is caught."""
    private = _model_private_names()
    tree = ast.parse("def f(model):\n    return model._check_xy(1, 2)\n")
    hits = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in private]
    assert hits == ["_check_xy"]


def test_docs_link_the_algorithms_page() -> None:
    for doc in ("README.md", "docs/online.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert re.search(r"\]\((docs/)?algorithms\.md", text), doc
    assert bptt.algorithms.make is algorithms.registry.make
