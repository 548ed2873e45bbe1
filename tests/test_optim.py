"""Optimizers, clipping and schedules against torch.optim in float64, with the same gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bptt.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    RMSprop,
    Schedule,
    clip_grad_norm,
    clip_grad_value,
    guarded_step,
    make_optimizer,
)
from bptt.params import PARAM_NAMES, Params

torch = pytest.importorskip("torch")


def _random_params(rng: np.random.Generator, scale: float = 1.0) -> Params:
    I, H, O = 3, 4, 2
    return Params(
        U=scale * rng.standard_normal((O, H)),
        V=scale * rng.standard_normal((H, I)),
        W=scale * rng.standard_normal((H, H)),
        b_h=scale * rng.standard_normal(H),
        b_y=scale * rng.standard_normal(O),
    )


CASES = [
    ("sgd", lambda: SGD(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    (
        "sgd-momentum-wd",
        lambda: SGD(0.05, momentum=0.9, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
    ),
    (
        "sgd-nesterov",
        lambda: SGD(0.05, momentum=0.8, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    ),
    (
        "adagrad",
        lambda: Adagrad(0.1, weight_decay=0.02),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, weight_decay=0.02),
    ),
    ("rmsprop", lambda: RMSprop(0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01)),
    (
        "rmsprop-momentum-centered",
        lambda: RMSprop(0.01, momentum=0.9, centered=True, weight_decay=0.01),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True, weight_decay=0.01),
    ),
    (
        "adam",
        lambda: Adam(0.01, betas=(0.8, 0.95), weight_decay=0.01),
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), weight_decay=0.01),
    ),
    (
        "adamw",
        lambda: AdamW(0.01, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    ),
]


@pytest.mark.parametrize(("label", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_torch(label, ours, theirs, rng) -> None:
    params = _random_params(rng)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in params.arrays()]
    opt, topt = ours(), theirs(tparams)
    for _ in range(5):
        grads = _random_params(rng)
        opt.step(params, grads)
        for tp, g in zip(tparams, grads.arrays(), strict=True):
            tp.grad = torch.tensor(g.copy())
        topt.step()
    for name, tp in zip(PARAM_NAMES, tparams, strict=True):
        ours_arr = getattr(params, name)
        assert ours_arr.dtype == np.float64
        np.testing.assert_allclose(ours_arr, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_state_dict_round_trip_continues_identically(label, rng) -> None:
    make = next(c[1] for c in CASES if c[0] == label)
    params = _random_params(rng)
    grads = [_random_params(rng) for _ in range(4)]
    a, b = make(), make()
    pa, pb = params.copy(), params.copy()
    for g in grads[:2]:
        a.step(pa, g)
        b.step(pb, g)
    b2 = make()
    state = b.state_dict()
    assert all(isinstance(v, (np.ndarray, int, float, str, bool)) for v in state.values())
    b2.load_state_dict(
        {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    )
    for g in grads[2:]:
        a.step(pa, g)
        b2.step(pb, g)
    for x, y in zip(pa.arrays(), pb.arrays(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_rejects_other_optimizer() -> None:
    with pytest.raises(ValueError, match="adam"):
        SGD(0.1).load_state_dict(Adam().state_dict())


def test_float32_params_stay_float32(rng) -> None:
    params = _random_params(rng).map(lambda a: a.astype(np.float32))
    grads = _random_params(rng)  # float64 gradients are cast to the weights' dtype
    make_optimizer("adam", 1e-3).step(params, grads)
    assert all(a.dtype == np.float32 for a in params.arrays())


def test_clip_grad_norm_matches_torch(rng) -> None:
    for scale in (0.1, 10.0):
        grads = _random_params(rng, scale)
        tgrads = [torch.tensor(a.copy(), requires_grad=True) for a in grads.arrays()]
        for t in tgrads:
            t.grad = t.detach().clone()
        total = clip_grad_norm(grads, 5.0)
        ttotal = torch.nn.utils.clip_grad_norm_(tgrads, 5.0)
        assert total == pytest.approx(float(ttotal), rel=1e-12)
        for a, t in zip(grads.arrays(), tgrads, strict=True):
            np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-12, atol=0)


def test_clip_grad_value_matches_torch(rng) -> None:
    grads = _random_params(rng, 3.0)
    tgrads = [torch.tensor(a.copy(), requires_grad=True) for a in grads.arrays()]
    for t in tgrads:
        t.grad = t.detach().clone()
    clip_grad_value(grads, 1.5)
    torch.nn.utils.clip_grad_value_(tgrads, 1.5)
    for a, t in zip(grads.arrays(), tgrads, strict=True):
        np.testing.assert_array_equal(a, t.grad.numpy())


def test_step_schedule_matches_torch_steplr() -> None:
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.3)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=7, gamma=0.3)
    ours = Schedule("step", base_lr=0.3, total_steps=50, step_size=7, gamma=0.3)
    for s in range(50):
        assert ours(s) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        topt.step()
        tsched.step()


def test_cosine_schedule_matches_torch_after_warmup() -> None:
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.1)
    warmup, total = 5, 40
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=total - warmup, eta_min=0.01)
    ours = Schedule("cosine", base_lr=0.1, total_steps=total, warmup=warmup, min_lr_ratio=0.1)
    assert [ours(s) for s in range(warmup)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    for s in range(warmup, total):
        assert ours(s) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-10)
        topt.step()
        tsched.step()


def test_schedule_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="schedule must be one of"):
        Schedule("linear")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_guarded_step_skips_non_finite_gradient(bad, rng) -> None:
    params = _random_params(rng)
    before = params.copy()
    opt = Adam(0.1)
    grads = _random_params(rng)
    grads.W[1, 2] = bad
    info = guarded_step(opt, params, grads, clip_norm=5.0)
    assert not info.applied
    assert "non-finite" in info.reason
    assert opt.t == 0 and opt.slots == {"exp_avg": {}, "exp_avg_sq": {}}
    for a, b in zip(params.arrays(), before.arrays(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_guarded_step_skips_update_that_would_overflow(rng) -> None:
    params = _random_params(rng).map(lambda a: a.astype(np.float32))
    params.U[0, 0] = np.float32(3e38)
    before = params.copy()
    grads = params.zeros_like()
    grads.U[0, 0] = -1.0
    info = guarded_step(SGD(1e38), params, grads)  # 3e38 + 1e38 overflows float32
    assert not info.applied and "non-finite" in info.reason
    np.testing.assert_array_equal(params.U, before.U)


def test_guarded_step_applies_clipped_update(rng) -> None:
    params = _random_params(rng)
    expected = params.copy()
    grads = _random_params(rng, 10.0)
    clipped = grads.copy()
    clip_grad_norm(clipped, 1.0)
    SGD(0.1).step(expected, clipped)
    info = guarded_step(SGD(0.1), params, grads, clip_norm=1.0)
    assert info.applied and info.grad_norm > 1.0
    for a, b in zip(params.arrays(), expected.arrays(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["adagrad", "adam", "sgd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_update_is_bitwise_the_numpy_update(name: str, dtype: type, rng) -> None:
    """guarded_step's one-pass kernels give exactly optimizer.compute's numbers, step by step."""
    from bptt._fused_optim import fused_compute

    pytest.importorskip("numba")
    params = _random_params(rng).map(lambda a: a.astype(dtype))
    opt_fused, opt_plain = make_optimizer(name, 0.05), make_optimizer(name, 0.05)
    for step in range(4):
        grads = _random_params(rng, 3.0).map(lambda a: a.astype(dtype))
        fused = fused_compute(opt_fused, params, grads, 0.05 / (step + 1))
        assert fused is not None
        new_f, slots_f, finite = fused
        new_p, slots_p = opt_plain.compute(params, grads, 0.05 / (step + 1))
        assert finite
        for n in PARAM_NAMES:
            np.testing.assert_array_equal(getattr(new_f, n), getattr(new_p, n))
            assert getattr(new_f, n).dtype == dtype
        assert slots_f.keys() == slots_p.keys()
        for s in slots_p:
            assert slots_f[s].keys() == slots_p[s].keys()
            for n in slots_p[s]:
                np.testing.assert_array_equal(slots_f[s][n], slots_p[s][n])
        opt_fused.commit(params.copy(), new_f, slots_f)
        opt_plain.commit(params, new_p, slots_p)


def test_fused_update_declines_what_it_does_not_fuse(rng) -> None:
    from bptt._fused_optim import fused_compute

    params, grads = _random_params(rng), _random_params(rng)
    for opt in (AdamW(0.1), Adam(0.1, weight_decay=0.1), SGD(0.1, momentum=0.9), RMSprop(0.1)):
        assert fused_compute(opt, params, grads, None) is None


@pytest.mark.parametrize("name", ["adagrad", "adam", "sgd"])
def test_guarded_step_with_value_clip_equals_clip_then_update(name: str, rng) -> None:
    """The value clip fused into the update pass: the same weights, slots and clipped grads."""
    pytest.importorskip("numba")
    params = _random_params(rng).map(lambda a: a.astype(np.float32))
    expected = params.copy()
    grads = _random_params(rng, 10.0).map(lambda a: a.astype(np.float32))
    clipped = grads.copy()
    clip_grad_value(clipped, 5.0)
    plain = make_optimizer(name, 0.1)
    new_p, new_s = plain.compute(expected, clipped, None)
    opt = make_optimizer(name, 0.1)
    info = guarded_step(opt, params, grads, clip_value=5.0)
    assert info.applied
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(getattr(params, n), getattr(new_p, n))
        np.testing.assert_array_equal(getattr(grads, n), getattr(clipped, n))
    for s in new_s:
        for n in new_s[s]:
            np.testing.assert_array_equal(opt.slots[s][n], new_s[s][n])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_sum_squares_is_the_global_norm_squared(dtype: type, rng) -> None:
    """The compiled Σ g² the guard reports equals global_norm()² to rounding, and a NaN or an
    infinity anywhere makes it non-finite (no finite-math shortcut in the compiled sum)."""
    from bptt._fused_optim import grad_sum_squares

    grads = _random_params(rng, 3.0).map(lambda a: a.astype(dtype))
    assert grad_sum_squares(grads) == pytest.approx(grads.global_norm() ** 2, rel=1e-12)
    for bad in (np.nan, np.inf, -np.inf):
        broken = grads.copy()
        broken.W[1, 2] = bad
        assert not np.isfinite(grad_sum_squares(broken))
    if dtype == np.float32:  # float32 entries near 1e20 square beyond float32, not float64
        huge = grads.map(lambda a: np.full_like(a, 1e20))
        n = sum(a.size for a in huge.arrays())
        assert grad_sum_squares(huge) == pytest.approx(1e40 * n, rel=1e-6)
