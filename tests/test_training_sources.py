"""bptt.training.sources: each DataSource, restored from its own checkpoint state (and the
algorithm from its state_dict), continues with the same batches and gradients as the source it
was saved from; sources only serve data (a batch, and whether it starts new streams)."""

from __future__ import annotations

import numpy as np
import pytest

from bptt import algorithms
from bptt.algorithms import GradientAlgorithm
from bptt.data import Batch
from bptt.data.arrays import ArrayTask
from bptt.model import build_model
from bptt.training import CharStreamSource, DataSource, TaskSource, TrainConfig, make_source

Pair = tuple[DataSource, GradientAlgorithm]


def _attached(config: TrainConfig, **kw) -> DataSource:
    return _pair(config, **kw)[0]


def _pair(config: TrainConfig, **kw) -> Pair:
    """A source and the configuration's algorithm on one fresh model."""
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
    alg = algorithms.make(
        config.algorithm, model, batch=config.batch, seed=config.seed, **config.algorithm_options()
    )
    return source, alg


def _draw(pair: Pair, n: int) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """n steps of (x, loss, dL/dW); the source and the algorithm's carried state move on."""
    source, alg = pair
    out = []
    for _ in range(n):
        batch, restart = source.next_batch()
        res = alg.gradient(batch, restart)
        out.append((batch.x, res.loss, res.grads["W"]))
    return out


def _saved_and_restored(config: TrainConfig, steps: int) -> tuple[Pair, Pair]:
    a = _pair(config)
    _draw(a, steps)
    b = _pair(config, vocab=a[0].vocab)
    b[0].restore(a[0].data_state(), a[0].state_arrays(), a[0].rng.bit_generator.state)
    b[1].load_state_dict(a[1].state_dict())
    return a, b


@pytest.mark.parametrize("k2", [0, 9])  # chunked BPTT (k1 = k2), and k1 < k2 with a buffer
def test_char_stream_source_continues_from_its_state(tmp_path, k2) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    config = TrainConfig(text=str(text), hidden=6, seq_len=5, k2=k2, batch=3, out=str(tmp_path))
    a, b = _saved_and_restored(config, steps=4)
    assert isinstance(a[0], CharStreamSource) and a[0].window == 4
    assert a[1].state_dict() and set(a[1].state_dict()) == set(b[1].state_dict())
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
    assert isinstance(a[0], TaskSource) and a[0].state_arrays() == {}
    for (xa, la, ga), (xb, lb, gb) in zip(_draw(a, 2), _draw(b, 2), strict=True):
        np.testing.assert_array_equal(xa, xb)
        assert la == lb
        np.testing.assert_array_equal(ga, gb)


def test_a_streaming_task_carries_its_streams_across_chunks(tmp_path) -> None:
    config = TrainConfig(task="lagged", hidden=4, seq_len=12, batch=2, out=str(tmp_path))
    a = _attached(config, steps=12)  # a streaming algorithm's source: the stream continues
    _, restart1 = a.next_batch()
    assert not restart1 and "stream.carry" in a.state_arrays()
    b = _attached(config, steps=12)
    b.restore(a.data_state(), a.state_arrays(), a.rng.bit_generator.state)
    (xa, ya, _), _ = a.next_batch()
    (xb, yb, _), _ = b.next_batch()
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


class _Chunks(DataSource):
    """A stand-in source: windows of 4 steps numbered 0, 1, 2, …; every other one restarts."""

    def __init__(self, steps: int) -> None:
        super().__init__(TrainConfig(), steps)
        self.n = 0

    def describe(self) -> str:
        return "chunks"

    def evaluate(self):  # type: ignore[no-untyped-def]
        return {}

    def next_window(self) -> tuple[Batch, bool]:
        x = np.arange(4 * self.n, 4 * self.n + 4).reshape(4, 1)
        self.n += 1
        return Batch(x, x + 100, None), self.n % 2 == 1


def test_a_streaming_source_serves_n_steps_cut_at_restarts_and_resumes() -> None:
    """With steps=N a source serves the next N steps in order, across windows that continue
    the streams; a restarting window ends the batch before it and starts the next one with
    restart=True. A source restored from its state_arrays continues the same."""
    source = _Chunks(steps=6)
    batches = [source.next_batch() for _ in range(2)]
    assert [b.x.ravel().tolist() for b, _ in batches] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert [r for _, r in batches] == [True, False]
    assert all(np.array_equal(b.y, b.x + 100) and b.mask is None for b, _ in batches)
    saved, position = source.state_arrays(), source.n  # window 2 already drawn, held
    after = [source.next_batch() for _ in range(2)]
    assert [b.x.ravel().tolist() for b, _ in after] == [[8, 9, 10, 11, 12, 13], [14, 15]]
    assert [r for _, r in after] == [True, False]  # window 2 (steps 8-11) restarts
    again = _Chunks(steps=6)
    again.n = position  # the source's own position is restored by the source
    again.restore({}, saved, None)
    assert [again.next_batch()[0].x.ravel().tolist() for _ in range(2)] == [
        [8, 9, 10, 11, 12, 13],
        [14, 15],
    ]


def test_a_streaming_batch_across_windows_fills_a_missing_mask_with_ones() -> None:
    class Masked(_Chunks):
        def next_window(self) -> tuple[Batch, bool]:
            batch, _ = super().next_window()
            mask = np.zeros((4, 1)) if self.n == 1 else None  # the first window masked out
            return Batch(batch.x, batch.y, mask), False

    batch, _ = Masked(steps=6).next_batch()
    assert batch.mask is not None and batch.mask.ravel().tolist() == [0, 0, 0, 0, 1, 1]


def test_a_window_source_serves_whole_windows_and_restarts_each_task_batch(tmp_path) -> None:
    config = TrainConfig(task="adding", hidden=3, seq_len=7, batch=2, out=str(tmp_path))
    source = _attached(config)
    for _ in range(2):
        batch, restart = source.next_batch()
        assert batch.x.shape[:2] == (7, 2) and restart
