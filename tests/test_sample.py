"""Sampling: seed determinism, temperature and top-k semantics."""

from __future__ import annotations

import numpy as np
import pytest

from bptt import ElmanRNN
from bptt.data.text import CharVocab
from bptt.heads import output_forward
from bptt.sample import next_distribution, sample_ids, sample_text


def test_next_distribution_temperature_and_top_k() -> None:
    z = np.array([1.0, 3.0, 2.0, -1.0])
    p = next_distribution(z, 1.0)
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(), rtol=1e-14)
    p2 = next_distribution(z, 0.5)
    np.testing.assert_allclose(p2, np.exp(2 * z) / np.exp(2 * z).sum(), rtol=1e-14)
    assert next_distribution(z, 0.0).tolist() == [0, 1, 0, 0]
    pk = next_distribution(z, 1.0, top_k=2)
    assert pk[0] == 0 and pk[3] == 0
    np.testing.assert_allclose(pk[[1, 2]], np.exp([3, 2]) / np.exp([3, 2]).sum(), rtol=1e-14)


def test_greedy_sampling_follows_the_model() -> None:
    model = ElmanRNN(5, 8, 5, seed=2)
    ids = sample_ids(model, np.array([1, 2]), 6, temperature=0.0)
    seq = [1, 2]
    for c in ids:  # independently: rerun the whole prefix and take the argmax
        hs = model.hidden_states(np.array(seq)[:, None])
        assert c == int(output_forward(model.params, hs[1:])[-1, 0].argmax())
        seq.append(int(c))


def test_sampling_is_seed_deterministic() -> None:
    model = ElmanRNN(4, 8, 4, seed=1)
    vocab = CharVocab(("a", "b", "c", "d"))
    a = sample_text(model, vocab, 50, prime="ab", seed=7)
    assert a == sample_text(model, vocab, 50, prime="ab", seed=7)
    assert a != sample_text(model, vocab, 50, prime="ab", seed=8)
    assert a.startswith("ab") and len(a) == 52


def test_top_k_one_is_greedy() -> None:
    model = ElmanRNN(4, 8, 4, seed=1)
    a = sample_ids(model, np.array([0]), 20, top_k=1, seed=1)
    b = sample_ids(model, np.array([0]), 20, temperature=0.0)
    np.testing.assert_array_equal(a, b)


def test_bad_arguments() -> None:
    model = ElmanRNN(4, 8, 4)
    vocab = CharVocab(("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sample_text(model, vocab, 5, prime="az")
    with pytest.raises(ValueError, match="temperature"):
        sample_ids(model, np.array([0]), 5, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_ids(model, np.array([0]), 5, top_k=-2)
