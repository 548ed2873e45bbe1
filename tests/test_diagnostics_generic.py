"""One set of diagnostics for every model: any cell, depth and direction.

References, each computed apart from the code under test: ``model.loss_and_grads`` (the
model's own backward: the lags of every layer must sum to each of its parameter gradients,
and the state gradients must end in ``grads.h0``), the cell protocol's generic path against
the Elman closed forms (``fast_path=False``), the dense step Jacobians of the protocol's
default :meth:`bptt.cells.Cell.state_jacobian` (a jvp) against the vjp-grown products, and the
same model built as ``bptt.RNN(cell="elman")`` and as ``bptt.ElmanRNN``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import bptt
from batches import max_relative_error, random_targets
from bptt.cells import CELLS, Cell
from bptt.cli import main
from bptt.diagnostics import (
    hidden_state_gradients,
    jacobian_report,
    lag_contributions,
    layer_lag_contributions,
    truncation_bias,
)
from bptt.diagnostics.report import FIGURES, inspect_model, random_batch, report_dict
from bptt.diagnostics.trace import trace

CELL_NAMES = sorted(CELLS)
I, H, O = 3, 4, 3
REL = 1e-10  # float64: the sums over T lags of products of T factors, far above rounding


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


def problem(
    rng: np.random.Generator,
    cell: str,
    layers: int = 1,
    bidirectional: bool = False,
    ids: bool = False,
    head: str = "identity",
    T: int = 6,
    B: int = 2,
    elman_class: bool = False,
):
    """A float64 model with doubled weights (long lags carry signal), random x, targets (a
    random upstream dL/dz for the identity head), h0 and mask."""
    kind = bptt.ElmanRNN if elman_class else bptt.RNN
    extra = {} if elman_class else {"cell": cell}
    model = kind(
        I, H, O, output=head, num_layers=layers, bidirectional=bidirectional, seed=3, **extra
    )
    for array in model.params.values():
        array *= 2.0
    x = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))
    y = random_targets(rng, head, T, B, O, np.dtype(np.float64))
    n = layers * model.num_directions
    shape = (B, H) if model.simple else (n, B, H)
    parts = [0.5 * rng.standard_normal(shape) for _ in range(model.state_parts)]
    h0 = tuple(parts) if len(parts) > 1 else parts[0]
    mask = rng.random((T, B)) < 0.75
    mask[-1] = True
    return model, x, y, h0, mask


STRUCTURES = [(1, False), (2, False), (1, True), (3, True)]


@pytest.mark.parametrize(("layers", "bidirectional"), STRUCTURES)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_every_layers_lags_sum_to_its_gradient(cell, layers, bidirectional, rng):
    model, x, y, h0, mask = problem(rng, cell, layers, bidirectional)
    loss, grads = model.loss_and_grads(x, y, h0, mask)
    for max_lag in (None, 1):
        contribs = layer_lag_contributions(model, x, y, h0, mask, max_lag=max_lag)
        assert len(contribs) == len(model.layers)
        covered = set()
        for layer, contrib in contribs.items():
            assert contrib.layer == layer and contrib.cell == cell
            assert contrib.loss == pytest.approx(loss, rel=1e-12)
            assert len(contrib.labels) == (6 if max_lag is None else max_lag + 2)
            for name, parts in contrib.parts.items():
                assert parts.dtype == np.float64 and parts.shape[1:] == grads[name].shape
                err = max_relative_error(parts.sum(axis=0), grads[name])
                assert err < REL, (layer, name, max_lag, err)
            covered |= set(contrib.parts)
            # the cell's local names read the same arrays
            np.testing.assert_array_equal(contrib.W, contrib.parts[contrib.local["W"]])
        assert covered == set(model.params) - {"U", "b_y"}
        # some lag beyond 0 carries signal: the comparison above is not between zeros alone
        assert any(np.any(c.norms()["total"][1:] > 0) for c in contribs.values())


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_one_layer_of_a_deep_model_by_index_and_by_name(cell, rng):
    model, x, y, h0, mask = problem(rng, cell, 2, True, ids=True, head="softmax")
    by_index = lag_contributions(model, x, y, h0, mask, max_lag=2, layer=3)
    by_name = lag_contributions(model, x, y, h0, mask, max_lag=2, layer="l1_reverse")
    every = layer_lag_contributions(model, x, y, h0, mask, max_lag=2)["l1_reverse"]
    assert by_index.layer == "l1_reverse" and set(by_index.parts) == set(by_name.parts)
    for name in by_index.parts:
        assert name.endswith("_l1_reverse")
        np.testing.assert_array_equal(by_index.parts[name], by_name.parts[name])
        np.testing.assert_array_equal(by_index.parts[name], every.parts[name])
    with pytest.raises(ValueError, match="pass layer=k"):
        lag_contributions(model, x, y, h0, mask)
    with pytest.raises(ValueError, match="layer must be"):
        lag_contributions(model, x, y, h0, mask, layer="l2")


@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True)])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_state_gradients_reach_the_models_grads_h0(cell, layers, bidirectional, rng):
    """dL/ds_0 of every layer from the per-step recursion equals the model's backward."""
    model, x, y, h0, mask = problem(rng, cell, layers, bidirectional)
    _, grads = model.loss_and_grads(x, y, h0, mask)
    ds0 = model.split_state(grads.h0, x.shape[1], "grads.h0")  # per layer-direction (B, S)
    for k in range(len(model.layers)):
        hidden = hidden_state_gradients(model, x, y, h0, mask, layer=None if layers == 1 else k)
        S = CELLS[cell].state_factor * H
        assert hidden.ds.shape == (7, 2, S) and hidden.dh.shape == (7, 2, H)
        assert max_relative_error(hidden.ds[0], ds0[k]) < REL, k
        assert (hidden.delta is not None) == (cell == "elman")


@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True)])
def test_elman_fast_paths_equal_the_generic_paths(layers, bidirectional, ids, rng):
    model, x, y, h0, mask = problem(rng, "elman", layers, bidirectional, ids=ids)
    for k in range(len(model.layers)):
        layer = None if model.simple else k
        for max_lag in (None, 2):
            fast = lag_contributions(model, x, y, h0, mask, max_lag, layer)
            slow = lag_contributions(model, x, y, h0, mask, max_lag, layer, fast_path=False)
            for name in fast.parts:
                assert max_relative_error(fast.parts[name], slow.parts[name]) < 1e-12, name
        fast_h = hidden_state_gradients(model, x, y, h0, mask, layer)
        slow_h = hidden_state_gradients(model, x, y, h0, mask, layer, fast_path=False)
        assert max_relative_error(fast_h.ds, slow_h.ds) < 1e-12
        assert max_relative_error(fast_h.delta, slow_h.delta) < 1e-12
        fast_j = jacobian_report(model, x, h0, layer=layer)
        slow_j = jacobian_report(model, x, h0, layer=layer, fast_path=False)
        np.testing.assert_allclose(fast_j.log10_norms, slow_j.log10_norms, rtol=1e-11, atol=1e-12)
        fast_t = truncation_bias(model, x, y, h0, mask, layer)
        slow_t = truncation_bias(model, x, y, h0, mask, layer, fast_path=False)
        for name in fast_t.cosine:
            np.testing.assert_allclose(fast_t.cosine[name], slow_t.cosine[name], rtol=1e-11)
            np.testing.assert_allclose(
                fast_t.rel_error[name], slow_t.rel_error[name], rtol=1e-8, atol=1e-14
            )


def test_rnn_elman_and_elmanrnn_give_the_same(rng):
    """Built either way, the same model gives the same diagnostics (the first used to raise)."""
    a, x, y, h0, mask = problem(rng, "elman", 2, False)
    b, *_ = problem(np.random.default_rng(0), "elman", 2, False, elman_class=True)
    assert type(a) is bptt.RNN and type(b) is bptt.ElmanRNN
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    for layer in (0, 1):
        ca = lag_contributions(a, x, y, h0, mask, max_lag=3, layer=layer)
        cb = lag_contributions(b, x, y, h0, mask, max_lag=3, layer=layer)
        for name in ca.parts:
            np.testing.assert_array_equal(ca.parts[name], cb.parts[name])
        ja, jb = jacobian_report(a, x, h0, layer=layer), jacobian_report(b, x, h0, layer=layer)
        np.testing.assert_array_equal(ja.log10_norms, jb.log10_norms)
        np.testing.assert_array_equal(ja.singular_values, jb.singular_values)
        assert ja.statement() == jb.statement()
    batch = random_batch(a, 6, 2, np.random.default_rng(1), ids=False)
    ra = report_dict(inspect_model(a, batch, "random", "test"))
    rb = report_dict(inspect_model(b, batch, "random", "test"))
    ra["model"].pop("repr"), rb["model"].pop("repr")
    assert ra == rb


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_jacobian_products_equal_dense_jvp_jacobians(cell, rng):
    """‖J_t ⋯ J_{t−d+1}‖₂ grown by vjp_state (B·S rows) against the explicit product of the
    protocol's default dense Jacobians (jvp_state on the unit vectors), per layer."""
    model, x, _, h0, _ = problem(rng, cell, 2, True, T=5)
    tr = trace(model, x, None, h0)
    for k, steps in enumerate(tr.layers):
        report = jacobian_report(model, x, h0, layer=k)
        assert report.cell == cell and report.layer == steps.name
        assert report.singular_values is None and not report.vanishing_guaranteed
        product = np.broadcast_to(np.eye(steps.S), (steps.B, steps.S, steps.S))
        for d in range(1, steps.T + 1):
            dense = Cell.state_jacobian(steps.cell, steps.p, steps.rows(steps.T - d + 1, 1))
            product = product @ dense  # (B, S, S)
            expected = np.log10(np.linalg.norm(product, ord=2, axis=(1, 2)))
            np.testing.assert_allclose(report.log10_norms[d], expected, rtol=0, atol=1e-10)
        short = jacobian_report(model, x, h0, layer=k, origin=3, max_lag=1)
        assert short.origin == 3 and short.log10_norms.shape == (2, 2)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_truncation_bias_of_a_deep_layer(cell, rng):
    model, x, y, h0, mask = problem(rng, cell, 2, True)
    for layer in ("l0_reverse", "l1"):
        tb = truncation_bias(model, x, y, h0, mask, layer)
        contrib = lag_contributions(model, x, y, h0, mask, layer=layer)
        assert tb.layer == layer and set(tb.cosine) == {*contrib.parts, "all"}
        _, grads = model.loss_and_grads(x, y, h0, mask)
        for k2 in (1, 3):
            kept = {n: p[:k2].sum(0) for n, p in contrib.parts.items()}
            flat = np.concatenate([kept[n].ravel() for n in contrib.parts])
            full = np.concatenate([grads[n].ravel() for n in contrib.parts])
            rel = np.linalg.norm(flat - full) / np.linalg.norm(full)
            assert tb.rel_error["all"][k2 - 1] == pytest.approx(rel, rel=1e-8, abs=1e-13)
        assert tb.rel_error["all"][-1] < 100 * np.finfo(np.float64).eps


def test_not_a_model_is_named():
    with pytest.raises(TypeError, match=r"bptt\.RNN"):
        lag_contributions("model", np.zeros((2, 1, 3)), np.zeros((2, 1), dtype=int))  # type: ignore[arg-type]


# -- bptt inspect on deep and bidirectional gated models ------------------------------------


def _json(path) -> dict:
    return json.loads((path / "inspect.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("cell", "extra", "layers", "top"),
    [
        ("gru", ["--layers", "2"], {"l0", "l1"}, "l1"),
        ("lstm", ["--bidirectional"], {"l0", "l0_reverse"}, "l0"),
    ],
)
def test_inspect_deep_and_bidirectional_gated_models(tmp_path, capsys, cell, extra, layers, top):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    argv = ["inspect", "--cell", cell, *extra, "--seq-len", "9", "--batch", "3", "--hidden", "5"]
    assert main([*argv, "--seed", "2", "--max-lag", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gradient flow by layer" in text and f"cell='{cell}'" in text
    report = _json(out)
    assert report["layer"] == top and set(report["layers"]) == layers
    assert report["lag_contributions"]["labels"] == ["0", "1", "2", "3", "4", "≥5"]
    assert report["jacobian"]["singular_values"] is None
    assert report["jacobian"]["pascanu_vanishing_condition_holds"] is None
    # the same model and batch rebuilt here: the JSON's sums are the model's gradient
    model = bptt.RNN(
        8,
        5,
        4,
        cell=cell,
        num_layers=2 if "--layers" in extra else 1,
        bidirectional="--bidirectional" in extra,
        seed=2,
    )
    data = np.random.default_rng(3)
    x = data.standard_normal((9, 3, 8))
    y = data.integers(0, 4, size=(9, 3))
    loss, grads = model.loss_and_grads(x, y)
    assert report["batch"]["loss"] == pytest.approx(loss, rel=1e-12)
    sums = report["lag_contributions"]["sum_over_lags"]
    assert set(sums) == {n for n in model.params if n.endswith(f"_{top}")}
    for name, values in sums.items():
        assert max_relative_error(np.asarray(values), grads[name]) < REL, name
    every = layer_lag_contributions(model, x, y, max_lag=4)
    for name, entry in report["layers"].items():
        np.testing.assert_allclose(entry["norm_total"], every[name].norms()["total"], rtol=1e-12)
    for key in ("lags", "hidden", "jacobian", "truncation", "layers"):
        data_png = (out / FIGURES[key]).read_bytes()
        assert data_png[:8] == b"\x89PNG\r\n\x1a\n" and len(data_png) > 5_000, key


def test_inspect_progress_bar_only_on_a_terminal(rng, capsys):
    model, *_ = problem(rng, "gru", 1, False)
    batch = random_batch(model, 6, 2, rng, ids=False)
    inspect_model(model, batch, "random", "test", progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_float32_models_and_a_recurrent_mask(cell, rng):
    """The model's dtype flows through; with a fixed sparsity of W (Elman) the lags sum to the
    masked gradient loss_and_grads returns, masked entries exactly zero at every lag."""
    model = bptt.RNN(I, H, O, cell=cell, output="identity", num_layers=2, dtype=np.float32)
    if cell == "elman":
        model.set_recurrent_mask(rng.random((H, H)) < 0.6)
    x = rng.standard_normal((6, 2, I)).astype(np.float32)
    y = rng.standard_normal((6, 2, O)).astype(np.float32)
    _, grads = model.loss_and_grads(x, y)
    for contrib in layer_lag_contributions(model, x, y).values():
        for name, parts in contrib.parts.items():
            assert parts.dtype == np.float32
            assert max_relative_error(parts.sum(0), grads[name]) < 1e-5, name
            if model.w_mask is not None and contrib.roles[name] == "recurrent":
                assert np.all(parts[:, ~model.w_mask] == 0)
                assert np.any(parts[:, model.w_mask] != 0)


def test_inspect_refuses_what_would_not_fit_in_memory(tmp_path, capsys):
    """Every layer's lags are kept: a deep bidirectional LSTM at T = 4000 (petabytes) is
    refused up front, naming the sizes and the options that shrink it."""
    argv = ["inspect", "--cell", "lstm", "--layers", "3", "--bidirectional", "--hidden", "2048"]
    assert main([*argv, "--seq-len", "4000", "--no-plots", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "6 layer-direction(s)" in err and "--max-lag" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_products_without_a_closed_form_jacobian_go_through_vjp_state(cell, rng):
    """A cell that keeps the protocol's default state_jacobian: the product grows by one
    vjp_state over its B·S rows, equal to the product with the cell's closed form."""
    model, x, _, h0, _ = problem(rng, cell, 1, False, T=4)
    steps = trace(model, x, None, h0).layers[0]
    closed_type = type(steps.cell)
    plain_type = type("Plain", (closed_type,), {"state_jacobian": Cell.state_jacobian})
    plain = dataclasses.replace(steps, cell=plain_type(I, H))
    P = rng.standard_normal((steps.B, steps.S, steps.S))
    for step in range(1, steps.T + 1):
        expected = P @ steps.cell.state_jacobian(steps.p, steps.rows(step, 1))
        np.testing.assert_allclose(plain.product_step(step, P), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_figures_of_a_reverse_layer_keep_their_titles_inside(cell, rng):
    pytest.importorskip("matplotlib")
    from bptt.diagnostics import plots as dp
    from test_figures import _inside

    model, x, y, h0, mask = problem(rng, cell, 2, True)
    layer = "l1_reverse"
    _inside(dp.plot_lag_contributions(lag_contributions(model, x, y, h0, mask, 3, layer)))
    _inside(dp.plot_jacobian_products(jacobian_report(model, x, h0, layer=layer)))
    _inside(dp.plot_truncation_bias(truncation_bias(model, x, y, h0, mask, layer)))
    _inside(dp.plot_layer_lag_profile(layer_lag_contributions(model, x, y, h0, mask)))
