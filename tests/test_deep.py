"""Deep and bidirectional models without torch: finite differences, schedules, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from batches import max_relative_error, random_targets
from bptt import ElmanRNN
from bptt.algorithms.truncated import tbptt_gradients
from bptt.gradcheck import gradcheck
from bptt.sample import sample_ids


def deep_problem(rng, layers=2, bidirectional=False, head="identity", ids=False, T=7, B=3):
    model = ElmanRNN(
        4,
        5,
        3,
        output=head,
        num_layers=layers,
        bidirectional=bidirectional,
        seed=int(rng.integers(1000)),
    )
    D = model.num_directions
    x = rng.integers(0, 4, size=(T, B)) if ids else rng.standard_normal((T, B, 4))
    y = random_targets(rng, head, T, B, 3, np.dtype(np.float64))
    h0 = 0.5 * rng.standard_normal((layers * D, B, 5))
    mask = rng.random((T, B)) < 0.7
    return model, x, y, h0, mask


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity"])
def test_finite_differences_every_parameter(bidirectional, head, rng):
    model, x, y, h0, mask = deep_problem(rng, layers=2, bidirectional=bidirectional, head=head)
    report = gradcheck(model, x, y, h0, mask, n_directions=3, tolerance=1e-6)
    assert set(report.finite_differences) == set(model.params)
    assert report.passed, report.format()
    assert not report.seed_formula  # the literal formula is the one-layer reference


@pytest.mark.parametrize("segment", [True, 1, 2, 3])
@pytest.mark.parametrize("layers", [2, 3])
def test_checkpointed_equals_full_for_deep_models(segment, layers, rng):
    model, x, y, h0, mask = deep_problem(rng, layers=layers, head="softmax", ids=True, T=10)
    dh_last = rng.standard_normal(h0.shape)
    full = model.forward_backward(x, y, h0, mask, dh_last=dh_last)
    ckpt = model.forward_backward(x, y, h0, mask, dh_last=dh_last, checkpoint=segment)
    assert abs(full.loss - ckpt.loss) <= 1e-12 * abs(full.loss)
    for name in model.params:
        assert max_relative_error(ckpt.grads[name], full.grads[name]) < 1e-10, name
    assert max_relative_error(ckpt.grads.h0, full.grads.h0) < 1e-10
    np.testing.assert_allclose(ckpt.h_last, full.h_last, rtol=0, atol=1e-14)


def test_tbptt_on_a_deep_model_with_k2_covering_the_sequence_is_full_bptt(rng):
    model, x, y, _, mask = deep_problem(rng, layers=2, head="softmax", ids=True, T=12)
    loss, grads = model.loss_and_grads(x, y, None, mask)
    t_loss, t_grads = tbptt_gradients(model, x, y, k1=4, k2=12, mask=mask)
    assert abs(loss - t_loss) <= 1e-12 * abs(loss)
    for name in model.params:
        assert max_relative_error(t_grads[name], grads[name]) < 1e-10, name


def test_deep_step_equals_the_sequence(rng):
    model, x, _, h0, _ = deep_problem(rng, layers=3, T=6)
    z_seq, final = model.logits(x, h0)
    state = h0
    for t in range(6):
        z_t, state = model.step(x[t], state)
        np.testing.assert_allclose(z_t, z_seq[t], rtol=0, atol=1e-13)
    np.testing.assert_allclose(state, final, rtol=0, atol=1e-13)
    drawn = sample_ids(ElmanRNN(5, 4, 5, num_layers=2), np.array([1, 2]), 10, seed=0)
    assert drawn.shape == (10,) and drawn.min() >= 0 and drawn.max() < 5


def test_a_bidirectional_model_refuses_what_needs_the_future(rng):
    model, x, y, h0, _ = deep_problem(rng, layers=1, bidirectional=True, head="softmax", ids=True)
    with pytest.raises(ValueError, match="bidirectional layer reads the whole sequence"):
        model.step(x[0], h0)
    with pytest.raises(ValueError, match="sampling needs a unidirectional model"):
        sample_ids(model, np.array([1]), 3)
    with pytest.raises(ValueError, match="carried streams needs a unidirectional model"):
        tbptt_gradients(model, x, y, k1=2)
    with pytest.raises(ValueError, match="use checkpoint=False for bidirectional"):
        model.loss_and_grads(x, y, h0, checkpoint=2)


def test_state_layout_errors_name_the_layout(rng):
    model, x, y, _, _ = deep_problem(rng, layers=2)
    with pytest.raises(ValueError, match=r"h0 must have shape \(L·D, B, H\) = \(2, 3, 5\)"):
        model.loss_and_grads(x, y, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"dh_last must have shape \(L·D, B, H\)"):
        model.loss_and_grads(x, y, dh_last=np.zeros((1, 3, 5)))


def test_parameter_names_follow_layers_and_directions():
    model = ElmanRNN(3, 4, 2, num_layers=2, bidirectional=True)
    assert list(model.params) == [
        "U",
        "V_l0",
        "W_l0",
        "b_h_l0",
        "V_l0_reverse",
        "W_l0_reverse",
        "b_h_l0_reverse",
        "V_l1",
        "W_l1",
        "b_h_l1",
        "V_l1_reverse",
        "W_l1_reverse",
        "b_h_l1_reverse",
        "b_y",
    ]
    assert model.params.V_l1.shape == (4, 8)  # layer 1 reads both directions of layer 0
    assert model.params.U.shape == (2, 8)
    with pytest.raises(KeyError, match="missing"):
        model.params = {k: v for k, v in model.params.items() if k != "W_l1"}
        model.loss_and_grads(np.zeros((2, 1, 3)), np.zeros((2, 1), dtype=int))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_each_layers_lag_parts_sum_to_its_gradient(bidirectional, rng):
    from bptt.diagnostics import lag_contributions, layer_lag_contributions

    model, x, y, h0, mask = deep_problem(
        rng, layers=2, bidirectional=bidirectional, head="softmax", ids=True, T=9
    )
    _, grads = model.loss_and_grads(x, y, h0, mask)
    for max_lag in (None, 2):
        parts = layer_lag_contributions(model, x, y, h0, mask, max_lag=max_lag)
        assert list(parts) == [
            layer_name
            for layer_name in (
                ["l0", "l0_reverse", "l1", "l1_reverse"] if bidirectional else ["l0", "l1"]
            )
        ]
        for name, contrib in parts.items():
            for local in ("V", "W", "b_h"):
                total = getattr(contrib, local).sum(axis=0)
                assert max_relative_error(total, grads[f"{local}_{name}"]) < 1e-12, (name, local)
    one = lag_contributions(model, x, y, h0, mask, layer=1)
    np.testing.assert_array_equal(
        one.W,
        layer_lag_contributions(model, x, y, h0, mask)["l0_reverse" if bidirectional else "l1"].W,
    )
    with pytest.raises(ValueError, match="pass layer=k"):
        lag_contributions(model, x, y, h0, mask)


def test_inspect_a_deep_run_shows_flow_by_layer(tmp_path, capsys):
    from bptt.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--task",
                "adding",
                "--seq-len",
                "8",
                "--hidden",
                "6",
                "--layers",
                "2",
                "--steps",
                "4",
                "--batch",
                "4",
                "--eval-every",
                "4",
                "--eval-size",
                "8",
                "--out",
                str(run),
                "--no-plot",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "inspect"
    assert main(["inspect", str(run), "--out", str(out), "--no-plots", "--batch", "3"]) == 0
    text = capsys.readouterr().out
    assert "gradient flow by layer" in text and "  l0 " in text and "  l1 " in text
    import json

    report = json.loads((out / "inspect.json").read_text())
    assert report["layer"] == "l1" and set(report["layers"]) == {"l0", "l1"}
