"""The tuner (bptt.tuning): the mechanism with a fake timer (no test depends on real timing),
and which of its choices change the arithmetic, with the real loops.

The suite runs with BPTT_TUNE=0 (conftest); the tests here switch tuning on in a temporary
cache folder, pretend one candidate is the fastest, and check that the loops then run it, that
it is kept on disk under the right key, that a corrupt, stale or linked cache is ignored, and
that BPTT_TUNE=0 measures nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bptt import _kernels, tuning
from bptt.cells import _elman_kernels, _gated_kernels
from bptt.cells.elman import recurrent_backward, recurrent_forward
from bptt.tuning import Choice

pytestmark = pytest.mark.skipif(
    _kernels.sharding_gemms() is None, reason="sharded loops unavailable (Numba, CBLAS)"
)


def tolerance(dtype: Any, hidden: int) -> float:
    """Rounding of a T-step recurrence whose products sum H terms: a few hundred ulp·√H."""
    return 200 * float(np.finfo(dtype).eps) * float(np.sqrt(hidden))


class FakeClock:
    """Says ``fastest`` takes 1 s and every other candidate 2 s; records what it was asked."""

    def __init__(self, fastest: Choice) -> None:
        self.fastest = fastest
        self.asked: list[Choice] = []

    def __call__(self, candidate: Choice, run: Callable[[], None]) -> float:
        self.asked.append(candidate)
        return 1.0 if candidate == self.fastest else 2.0


def refuse(candidate: Choice, run: Callable[[], None]) -> float:
    raise AssertionError(f"nothing should be measured, asked for {candidate}")


@pytest.fixture
def tune(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Tuning on, a fresh cache folder, two cores, and measurement runs that do nothing."""
    monkeypatch.setenv("BPTT_TUNE", "1")
    monkeypatch.setenv("BPTT_TUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(_kernels, "available_cores", lambda: 2)
    monkeypatch.setattr(tuning, "_runner", lambda *shape: lambda choice: lambda: None)
    tuning.forget()  # reads BPTT_TUNE=1
    yield tmp_path
    monkeypatch.undo()  # BPTT_TUNE back to the suite's 0 before it is read again
    tuning.forget()
    assert not tuning.enabled()


def spy_shards(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, int]]:
    """Record (kernel, shards) of every run_shards call; the loops still run."""
    calls: list[tuple[Any, int]] = []
    real = _kernels.run_shards

    def spy(kernel: Any, batch: int, shards: int, *args: Any) -> None:
        calls.append((kernel, shards))
        real(kernel, batch, shards, *args)

    monkeypatch.setattr(_kernels, "run_shards", spy)
    return calls


def elman_step(B: int, H: int, dtype: Any) -> tuple[np.ndarray, ...]:
    """One Elman forward and backward (T 5, dense inputs, tanh) on fixed random data."""
    from bptt.activations import ACTIVATIONS

    rng = np.random.default_rng(7)
    I = 3
    params = {
        "V": (rng.standard_normal((H, I)) / np.sqrt(I)).astype(dtype),
        "W": (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype),
        "b_h": (0.1 * rng.standard_normal(H)).astype(dtype),
    }
    x = rng.standard_normal((5, B, I)).astype(dtype)  # (T, B, I)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    dh = rng.standard_normal((5, B, H)).astype(dtype)  # (T, B, H): a random upstream signal
    act = ACTIVATIONS["tanh"]
    hs, cache = recurrent_forward(params, x, h0, act)
    hs = hs.copy()
    grads = recurrent_backward(dh, cache, params, act)
    return (hs, *(np.array(g) for g in grads))


def test_the_measured_choice_runs_in_the_elman_loops(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    B, H, dtype = 16, 128, np.float64  # default: 2 shards in rows (float64 keeps rows)
    default = tuning.default_choice("elman", B, H, dtype)
    assert default == Choice("sharded", 2, "rows", "numpy")
    monkeypatch.setenv("BPTT_TUNE", "0")
    tuning.forget()  # reads BPTT_TUNE again
    ref = elman_step(B, H, dtype)  # the defaults
    monkeypatch.setenv("BPTT_TUNE", "1")
    tuning.forget()
    wanted = Choice("sharded", 1, "transposed", "numpy")
    clock = FakeClock(wanted)
    monkeypatch.setattr(tuning, "timer", clock)
    calls = spy_shards(monkeypatch)
    got = elman_step(B, H, dtype)
    assert set(clock.asked) == set(tuning.candidates("elman", B, H, dtype))
    kernels = _elman_kernels._load_sharded()
    assert kernels is not None
    assert calls == [(kernels["forwardT"], 1), (kernels["backwardT"], 1)]
    tol = tolerance(dtype, H)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_the_per_row_choice_takes_the_per_row_loops(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    B, H, dtype = 4, 128, np.float32  # B·H = 512: sharded by default, per-row a candidate
    assert tuning.default_choice("elman", B, H, dtype).path == "sharded"
    monkeypatch.setattr(tuning, "timer", FakeClock(Choice("per_row")))
    assert _elman_kernels.use_time_loop_kernel(B, H, dtype)
    assert _kernels.shard_count(B, H, dtype) == 0


def test_gated_cells_run_the_measured_shard_count(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    B, H, T, dtype = 16, 128, 2, np.float64  # B·H = SHARD_MIN_STEP: 2 shards by default
    wanted = Choice("sharded", 1, "transposed", "numpy")
    monkeypatch.setattr(tuning, "timer", FakeClock(wanted))
    assert tuning.default_choice("lstm", B, H, dtype).shards == 2
    calls = spy_shards(monkeypatch)
    rng = np.random.default_rng(1)
    gates = rng.standard_normal((T, B, 4 * H))
    hs, cs = np.zeros((T + 1, B, H)), np.zeros((T + 1, B, H))
    W = rng.standard_normal((4 * H, H)) / np.sqrt(H)
    _gated_kernels.lstm_forward(gates, hs, cs, W, 2)  # the cell passes the default count
    assert [shards for _, shards in calls] == [1]


def test_a_choice_is_kept_on_disk_and_read_back_without_measuring(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = Choice("sharded", 1, "transposed", "numpy")
    monkeypatch.setattr(tuning, "timer", FakeClock(wanted))
    assert tuning.choice("elman", 32, 256, np.float32) == wanted
    data = json.loads(tuning.cache_path().read_text())
    key = tuning.shape_key("elman", 32, 256, np.float32)
    assert data["choices"][key]["choice"]["layout"] == "transposed"
    assert data["machine"] == tuning.machine_key()
    tuning.forget()  # a new process: memory empty, the file stays
    monkeypatch.setattr(tuning, "timer", refuse)
    assert tuning.choice("elman", 32, 256, np.float32) == wanted
    assert tuning.choice("elman", 20, 256, np.float32) == wanted  # B 20 shares bucket 32


def test_keys_separate_shape_classes_and_machines(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tuning.shape_key
    assert key("elman", 20, 64, np.float32) == key("elman", 32, 64, np.float32)
    assert key("elman", 8, 64, np.float32) != key("elman", 9, 64, np.float32)
    assert key("elman", 8, 64, np.float32) != key("elman", 8, 64, np.float64)
    assert key("elman", 8, 64, np.float32) != key("elman", 8, 65, np.float32)
    assert key("elman", 8, 64, np.float32) != key("gru", 8, 64, np.float32)
    here = tuning.cache_path()
    other = {**tuning.machine_key(), "cpu": "another CPU"}
    monkeypatch.setattr(tuning, "_find_machine_key", lambda: other)
    tuning.forget()
    assert tuning.cache_path() != here
    assert tuning.cache_path().parent == here.parent


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": 1, "machine": {"cpu": "another"}, "choices": {}}',
        None,  # a valid file whose entry is not a candidate here: 99 shards, provider blis
    ],
)
def test_a_corrupt_or_stale_cache_is_ignored_and_rewritten(
    tune: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None
) -> None:
    key = tuning.shape_key("elman", 32, 256, np.float32)
    path = tuning.cache_path()
    if content is None:
        bad = {"choice": {"path": "sharded", "shards": 99, "layout": "rows", "provider": "blis"}}
        bad["default"] = bad["choice"]
        content = json.dumps(
            {"format": 1, "machine": tuning.machine_key(), "choices": {key: bad}}
        ).encode()
    path.write_bytes(content)
    wanted = Choice("sharded", 2, "rows", "numpy")
    clock = FakeClock(wanted)
    monkeypatch.setattr(tuning, "timer", clock)
    assert tuning.choice("elman", 32, 256, np.float32) == wanted
    assert clock.asked  # measured, not read
    data = json.loads(path.read_text())
    assert data["choices"][key]["choice"]["shards"] == 2


def test_the_cache_is_never_written_through_a_symlink(
    tune: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "victim.txt"
    outside.write_text("keep me")
    path = tuning.cache_path()
    path.symlink_to(outside)
    monkeypatch.setattr(tuning, "timer", FakeClock(Choice("sharded", 1, "rows", "numpy")))
    with pytest.warns(RuntimeWarning, match="cannot write the tuning cache"):
        assert tuning.choice("elman", 16, 128, np.float32).shards == 1
    assert outside.read_text() == "keep me"
    assert path.is_symlink()


def test_tune_off_measures_nothing_and_uses_the_defaults(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BPTT_TUNE", "0")
    tuning.forget()  # reads BPTT_TUNE again
    monkeypatch.setattr(tuning, "timer", refuse)
    for cell, B, H in [("elman", 1, 100), ("elman", 32, 256), ("lstm", 32, 64)]:
        assert tuning.choice(cell, B, H, np.float32) == tuning.default_choice(cell, B, H, "f4")
    assert _elman_kernels.use_time_loop_kernel(1, 100, np.float32)  # B·H ≤ SMALL_STEP
    assert _kernels.shard_count(64, 512, np.float32) == _kernels.default_shard_count(64, 512)
    assert list(tune.iterdir()) == []


def test_explicit_threads_or_backends_bypass_the_tuner(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning, "timer", refuse)
    saved = _kernels.LOOP_BLAS_THREADS
    try:
        _kernels.set_loop_threads(2)
        assert not tuning.active()
        assert _kernels.shard_count(64, 512, np.float32) == 2
    finally:
        _kernels.set_loop_threads(saved)
    with _kernels.backend("numba"):
        assert not tuning.active()


def test_candidates_hold_the_default_and_only_valid_choices() -> None:
    for cell, B, H in [("elman", 1, 100), ("elman", 64, 512), ("gru", 32, 256)]:
        options = tuning.candidates(cell, B, H, np.float32)
        assert tuning.default_choice(cell, B, H, np.float32) in options
        assert len(set(options)) == len(options)
        assert all(c.shards <= max(1, _kernels.available_cores()) for c in options)
    assert any(c.path == "per_row" for c in tuning.candidates("elman", 1, 100, np.float32))
    assert not any(c.path == "per_row" for c in tuning.candidates("elman", 64, 512, "f4"))
    with pytest.raises(ValueError, match="cell must be one of"):
        tuning.candidates("rnn", 1, 1, np.float32)


# -- the arithmetic of each choice (the real loops) -----------------------------------------


def run_choice(cell: str, choice: Choice, B: int, H: int, dtype: Any) -> list[np.ndarray]:
    """The loops' outputs (hs, δ or dA, db, carry) for one choice, on fixed data."""
    T = 4
    rng = np.random.default_rng(3)
    if cell == "elman":
        hs = rng.standard_normal((T + 1, B, H)).astype(dtype)
        W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
        delta = rng.standard_normal((T, B, H)).astype(dtype)
        carry = np.zeros((B, H), dtype)
        if choice.path == "per_row":
            _elman_kernels.forward_loop(hs, np.ascontiguousarray(W.T), "tanh")
            fprime = 1 - hs[1:] * hs[1:]
            delta *= fprime
            _elman_kernels.backward_loop(delta, fprime, W, carry)
        else:
            c = choice
            W_T = np.ascontiguousarray(W.T)
            _elman_kernels.sharded_forward(hs, W, W_T, "tanh", c.shards, c.layout, c.provider)
            _elman_kernels.sharded_backward(
                delta, hs, W, carry, "tanh", c.shards, c.layout, c.provider
            )
        return [hs, delta, carry]
    G = rng.standard_normal((T, B, 4 * H)).astype(dtype)
    W = (rng.standard_normal((4 * H, H)) / np.sqrt(H)).astype(dtype)
    dh = rng.standard_normal((T, B, H)).astype(dtype)
    hs, cs = np.zeros((T + 1, B, H), dtype), np.zeros((T + 1, B, H), dtype)
    carry, dc = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
    _gated_kernels.lstm_forward(G, hs, cs, W, choice.shards, choice.provider)
    dA, db = _gated_kernels.lstm_backward(dh, G, cs, W, carry, dc, choice.shards, choice.provider)
    return [hs, np.array(dA), np.array(db), carry]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_which_choices_change_the_arithmetic(dtype: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every choice agrees to rounding. Bitwise (OpenBLAS, docs/benchmarks.md): the Elman
    loops' shard count changes no bit (each row's product is the same GEMM kernel's dot
    product whatever the rows); layout, provider and the per-row path do change bits, and so
    does the gated cells' shard count (their transposed product's kernel depends on the
    number of columns, i.e. rows per shard)."""
    monkeypatch.setattr(_kernels, "available_cores", lambda: 2)
    B, H = 8, 64
    tol = tolerance(dtype, H)
    for cell in ("elman", "lstm"):
        options = tuning.candidates(cell, B, H, dtype)
        results = {c: run_choice(cell, c, B, H, dtype) for c in options}
        first = results[options[0]]
        for c, got in results.items():
            for a, b in zip(got, first, strict=True):
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=c.describe())
    one = run_choice("elman", Choice("sharded", 1, "rows", "numpy"), B, H, dtype)
    two = run_choice("elman", Choice("sharded", 2, "rows", "numpy"), B, H, dtype)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


needs_mkl = pytest.mark.skipif(
    _kernels.find_mkl_gemms() is None,
    reason=f"MKL provider unavailable: {_kernels.mkl_error()}",
)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_mkl_products_match_numpys_blas_to_rounding(cell: str, dtype: Any) -> None:
    B, H = 8, 64
    tol = tolerance(dtype, H)
    for layout in ("rows", "transposed") if cell == "elman" else ("transposed",):
        ref = run_choice(cell, Choice("sharded", 2, layout, "numpy"), B, H, dtype)
        got = run_choice(cell, Choice("sharded", 2, layout, "mkl"), B, H, dtype)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_products_match_in_the_gru_loops(dtype: Any) -> None:
    B, H, T = 8, 32, 4
    rng = np.random.default_rng(5)
    G = rng.standard_normal((T, B, 3 * H)).astype(dtype)
    W = (rng.standard_normal((3 * H, H)) / np.sqrt(H)).astype(dtype)
    b_hn = (0.1 * rng.standard_normal(H)).astype(dtype)
    dh = rng.standard_normal((T, B, H)).astype(dtype)
    out = {}
    for provider in ("numpy", "mkl"):
        hs, carry = np.zeros((T + 1, B, H), dtype), np.zeros((B, H), dtype)
        gates = _gated_kernels.gru_forward(G, hs, W, b_hn, 2, provider).copy()
        dA, db = _gated_kernels.gru_backward(dh, gates, hs, W, carry, 2, provider)
        out[provider] = [hs, gates, np.array(dA), np.array(db), carry]
    tol = tolerance(dtype, H)
    for a, b in zip(out["mkl"], out["numpy"], strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def whole_step_problem(cell: str, dtype: Any) -> tuple[Any, tuple[Any, ...]]:
    from bptt.model import build_model

    I, H, O, T, B = 5, 64, 4, 6, 8
    model = build_model(input_size=I, hidden_size=H, output_size=O, cell=cell, seed=3, dtype=dtype)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    y = rng.integers(0, O, (T, B))
    mask = (rng.uniform(size=(T, B)) < 0.8).astype(dtype)
    return model, (x, y, None, mask)


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_every_candidate_gives_the_numpy_loops_step(
    cell: str, tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole forward_backward under each measured choice (the fake clock picks it) against
    the NumPy loops: loss and every gradient to rounding."""
    dtype = np.float64
    model, args = whole_step_problem(cell, dtype)
    with _kernels.backend("numpy"):
        ref = model.forward_backward(*args)
    for candidate in tuning.candidates(cell, 8, 64, dtype):
        tuning.forget()
        for path in tune.iterdir():
            path.unlink()
        monkeypatch.setattr(tuning, "timer", FakeClock(candidate))
        assert tuning.choice(cell, 8, 64, dtype) == candidate
        got = model.forward_backward(*args)
        tol = tolerance(dtype, 64)
        assert abs(got.loss - ref.loss) <= tol * abs(ref.loss), candidate
        for name in model.params:
            np.testing.assert_allclose(
                got.grads[name], ref.grads[name], rtol=tol, atol=tol, err_msg=str(candidate)
            )


def test_bptt_tune_measures_prints_and_shows(
    tune: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bptt.cli import main

    wanted = Choice("sharded", 2, "transposed", "numpy")
    monkeypatch.setattr(tuning, "timer", FakeClock(wanted))
    assert main(["tune", "--shape", "elman,16,128,float32", "--shape", "gru,16,128"]) == 0
    out = capsys.readouterr().out
    assert str(tuning.cache_path()) in out
    assert "elman|float32|B16|H128|c2" in out and "2 shard(s), transposed, numpy GEMM" in out
    assert "gru|float32|B16|H128|c2" in out
    monkeypatch.setattr(tuning, "timer", refuse)
    assert main(["tune", "--show"]) == 0
    assert "elman|float32|B16|H128|c2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["tune", "--shape", "rnn,1,2"])
    assert "cell must be one of" in capsys.readouterr().err


def test_modes_of_bptt_tune(monkeypatch: pytest.MonkeyPatch) -> None:
    """BPTT_TUNE: 0/false/no/off the defaults; unset/cached/auto the cache's choices; 1/true/
    yes/on also measure during runs; anything else a clear error."""
    try:
        monkeypatch.delenv("BPTT_TUNE", raising=False)
        tuning.forget()
        assert tuning.enabled() and tuning.mode() == "cached"
        for word, mode in [("0", "off"), ("false", "off"), ("No", "off"), (" off ", "off")]:
            monkeypatch.setenv("BPTT_TUNE", word)
            tuning.forget()
            assert tuning.mode() == mode and not tuning.enabled(), word
        for word in ("cached", "AUTO", ""):
            monkeypatch.setenv("BPTT_TUNE", word)
            tuning.forget()
            assert tuning.mode() == "cached" and tuning.enabled(), word
        for word in ("1", "true", " Yes ", "on"):
            monkeypatch.setenv("BPTT_TUNE", word)
            tuning.forget()
            assert tuning.mode() == "measure" and tuning.enabled(), word
        monkeypatch.setenv("BPTT_TUNE", "maybe")
        tuning.forget()  # read again; refused where the loops ask
        for ask in (tuning.mode, tuning.enabled, tuning.active):
            with pytest.raises(ValueError, match=r"BPTT_TUNE must be 0 .* got 'maybe'"):
                ask()
    finally:
        monkeypatch.undo()
        tuning.forget()  # the suite's setting again


def test_candidates_are_timed_over_a_training_length() -> None:
    """A timed run has as many steps as a sequence has (32-256), not a couple: over 2 steps
    the shards' hand-off outweighed the loop, and the choice it made (one shard) ran whole
    steps 30-35% slower (docs/benchmarks.md, "Measured choices")."""
    for cell, batch, hidden, _ in tuning.COMMON_SHAPES:
        steps = tuning._steps(cell, batch, hidden)
        assert tuning.MIN_STEPS <= steps <= tuning.MAX_STEPS, (cell, batch, hidden, steps)
    assert tuning._steps("elman", 32, 256) >= 32  # charlm's class: 2 steps before


def test_by_default_the_cache_is_followed_and_nothing_measured(
    tune: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset BPTT_TUNE: a shape class that `bptt tune` measured takes its choice; one it did
    not takes the default; nothing is timed during the run."""
    wanted = Choice("sharded", 1, "transposed", "numpy")
    monkeypatch.setattr(tuning, "timer", FakeClock(wanted))
    tuning.tuned("elman", 32, 256, np.float32)  # what `bptt tune` does: measure, write the file
    monkeypatch.delenv("BPTT_TUNE", raising=False)
    tuning.forget()  # a new process: reads BPTT_TUNE (unset) and, when asked, the file
    monkeypatch.setattr(tuning, "timer", refuse)
    assert tuning.mode() == "cached"
    assert tuning.choice("elman", 32, 256, np.float32) == wanted
    assert tuning.choice("lstm", 32, 64, np.float32) == tuning.default_choice(
        "lstm", 32, 64, np.float32
    )
    assert _kernels.shard_count(32, 256, np.float32) == 1  # the loops follow the cache


def test_a_bad_bptt_tune_is_refused_before_a_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bptt.cli import main

    run = tmp_path / "run"
    try:
        monkeypatch.setenv("BPTT_TUNE", "maybe")
        tuning.forget()
        argv = ["train", "--task", "adding", "--seq-len", "5", "--steps", "1", "--hidden", "3"]
        assert main([*argv, "--out", str(run), "--no-progress", "--no-plot"]) == 2
        assert "BPTT_TUNE must be 0" in capsys.readouterr().err
        assert not run.exists()
    finally:
        monkeypatch.undo()
        tuning.forget()
