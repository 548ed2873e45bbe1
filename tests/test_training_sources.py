"""bptt.training.sources: each DataSource, restored from its own checkpoint state, continues
with the same batches and gradients as the source it was saved from."""

from __future__ import annotations

import numpy as np
import pytest

from bptt.data.arrays import ArrayTask
from bptt.model import build_model
from bptt.training import CharStreamSource, DataSource, TaskSource, TrainConfig, make_source


def _attached(config: TrainConfig, **kw) -> DataSource:
    source = make_source(config, **kw)
    model = build_model(
        input_size=source.input_size,
        hidden_size=config.hidden,
        output_size=source.output_size,
        output=source.output,
        seed=config.seed,
        dtype=np.float64,
    )
    source.attach(model)
    return source


def _draw(source: DataSource, n: int) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """n steps of (x, loss, dL/dW); the source's carried state moves on."""
    out = []
    for _ in range(n):
        (x, y, mask), _ = source.next_batch()
        res = source.gradient(x, y, mask)
        out.append((x, res.loss, res.grads["W"]))
    return out


def _saved_and_restored(config: TrainConfig, steps: int) -> tuple[DataSource, DataSource]:
    a = _attached(config)
    _draw(a, steps)
    b = _attached(config, vocab=a.vocab)
    b.restore(a.data_state(), a.state_arrays(), a.rng.bit_generator.state)
    return a, b


@pytest.mark.parametrize("k2", [0, 9])  # chunked BPTT (k1 = k2), and k1 < k2 with a buffer
def test_char_stream_source_continues_from_its_state(tmp_path, k2) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    config = TrainConfig(text=str(text), hidden=6, seq_len=5, k2=k2, batch=3, out=str(tmp_path))
    a, b = _saved_and_restored(config, steps=4)
    assert isinstance(a, CharStreamSource) and a.window == 4
    assert a.state_arrays() and set(a.state_arrays()) == set(b.state_arrays())
    for (xa, la, ga), (xb, lb, gb) in zip(_draw(a, 3), _draw(b, 3), strict=True):
        np.testing.assert_array_equal(xa, xb)
        assert la == lb
        np.testing.assert_array_equal(ga, gb)


def test_char_stream_source_refuses_a_position_beyond_its_text(tmp_path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("abcdefghij" * 30)
    config = TrainConfig(text=str(text), hidden=4, seq_len=5, batch=2, out=str(tmp_path))
    source = _attached(config)
    with pytest.raises(ValueError, match=r"lies beyond the .* windows per epoch"):
        source.restore({"epoch": 0, "window": 10_000}, {}, None)


def test_task_source_continues_from_its_rng(tmp_path) -> None:
    config = TrainConfig(task="adding", hidden=5, seq_len=7, batch=4, out=str(tmp_path))
    a, b = _saved_and_restored(config, steps=3)
    assert isinstance(a, TaskSource) and a.state_arrays() == {}
    for (xa, la, ga), (xb, lb, gb) in zip(_draw(a, 2), _draw(b, 2), strict=True):
        np.testing.assert_array_equal(xa, xb)
        assert la == lb
        np.testing.assert_array_equal(ga, gb)


def test_a_streaming_task_carries_its_streams_across_chunks(tmp_path) -> None:
    config = TrainConfig(task="lagged", hidden=4, seq_len=12, batch=2, out=str(tmp_path))
    a = _attached(config)
    _, restart1 = a.next_chunk()
    assert not restart1 and "stream.carry" in a.state_arrays()
    b = _attached(config)
    b.restore(a.data_state(), a.state_arrays(), a.rng.bit_generator.state)
    (xa, ya, _), _ = a.next_chunk()
    (xb, yb, _), _ = b.next_chunk()
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)  # y_t depends on x up to lag2 steps back


def test_a_fixed_length_task_refuses_another_seq_len(tmp_path) -> None:
    rng = np.random.default_rng(0)
    task = ArrayTask(rng.standard_normal((9, 20, 2)), rng.standard_normal((9, 20, 1)))
    with pytest.raises(ValueError, match="T = 9 steps, fixed by the task"):
        make_source(TrainConfig(task="arrays", seq_len=12, out=str(tmp_path)), task=task)
    assert make_source(TrainConfig(task="arrays", seq_len=9, out=str(tmp_path)), task=task)


def test_sources_report_their_metric(tmp_path) -> None:
    adding = _attached(TrainConfig(task="adding", hidden=3, seq_len=5, out=str(tmp_path)))
    copy = make_source(TrainConfig(task="copy", copy_len=2, delay=3, out=str(tmp_path)))
    assert (adding.metric_key, adding.higher_is_better) == ("val_mse", False)
    assert (copy.metric_key, copy.higher_is_better) == ("val_accuracy", True)
    metrics = adding.evaluate()
    assert adding.score(metrics) == metrics["val_mse"]


class _Chunks:
    """A stand-in source: chunks of 4 steps numbered 0, 1, 2, …; every other one restarts."""

    def __init__(self) -> None:
        self.n = 0

    def next_chunk(self):  # type: ignore[no-untyped-def]
        from bptt.data import Batch

        x = np.arange(4 * self.n, 4 * self.n + 4).reshape(4, 1)
        self.n += 1
        return Batch(x, x + 100, None), self.n % 2 == 1


def test_step_stream_takes_runs_within_chunks_and_resumes_where_it_stopped() -> None:
    """take(n) gives the next n steps in order, cut at chunk ends, restart only at a
    restarting chunk's first step; a stream restored from state_arrays continues the same."""
    from bptt.training.sources import StepStream

    stream = StepStream(_Chunks())  # type: ignore[arg-type]
    runs = list(stream.take(6))
    assert [r[0].ravel().tolist() for r in runs] == [[0, 1, 2, 3], [4, 5]]
    assert [r[3] for r in runs] == [True, False]
    assert all(np.array_equal(r[1], r[0] + 100) for r in runs)
    saved = stream.state_arrays()
    runs = list(stream.take(5))
    assert [r[0].ravel().tolist() for r in runs] == [[6, 7], [8, 9, 10]]
    assert [r[3] for r in runs] == [False, True]  # chunk 2 (steps 8-11) restarts
    again = StepStream(_Chunks())  # type: ignore[arg-type]
    again.source.n = 2  # the source's own position is restored by the source
    again.load_state_arrays(saved)
    assert [r[0].ravel().tolist() for r in again.take(5)] == [[6, 7], [8, 9, 10]]
