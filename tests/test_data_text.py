"""Character vocabulary, corpus files (good and bad), the built-in corpus and parallel streams."""

from __future__ import annotations

import hashlib
import itertools
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt.data import (
    CharCorpus,
    CharVocab,
    CorpusNotFoundError,
    DataError,
    make_streams,
    require_length,
    stream_batches,
    windows_per_epoch,
)
from bptt.data import text as text_module

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


# --- vocabulary -------------------------------------------------------------------------------


def test_vocab_is_sorted_distinct_characters_and_roundtrips() -> None:
    text = "hello, wörld!\n\tπ≈3.14 😀"
    vocab = CharVocab.from_text(text)
    assert vocab.chars == tuple(sorted(set(text)))
    assert vocab.size == len(set(text)) == len(vocab)
    ids = vocab.encode(text)
    assert ids.shape == (len(text),)
    assert ids.dtype.kind == "i"
    # Independent reference: position in the sorted list.
    assert ids.tolist() == [vocab.chars.index(c) for c in text]
    assert vocab.decode(ids) == text
    assert vocab.decode(ids.tolist()) == text
    assert vocab.decode([]) == ""


def test_vocab_json_roundtrip_and_format() -> None:
    vocab = CharVocab.from_text('ab"\\\n\u00e9\U0001f600')
    blob = vocab.to_json()
    parsed = json.loads(blob)
    assert parsed["format"] == "bptt-char-vocab"
    assert parsed["version"] == 1
    assert CharVocab.from_json(blob) == vocab
    assert CharVocab.from_json(parsed) == vocab
    assert CharVocab.from_json(blob.encode()) == vocab


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"format": "other", "version": 1, "chars": ["a"]}', "format 'other'"),
        ('{"format": "bptt-char-vocab", "version": 99, "chars": ["a"]}', "version 99"),
        ('{"format": "bptt-char-vocab", "version": 1, "chars": "ab"}', "must be a list"),
        ('{"format": "bptt-char-vocab", "version": 1, "chars": ["b", "a"]}', "sorted"),
        ('{"format": "bptt-char-vocab", "version": 1, "chars": ["ab"]}', "single characters"),
        ('{"format": "bptt-char-vocab", "version": 1, "chars": []}', "at least one"),
    ],
)
def test_vocab_from_bad_json(blob: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CharVocab.from_json(blob)


def test_encode_names_characters_outside_vocabulary() -> None:
    vocab = CharVocab.from_text("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) outside.*'x', 'z'.*position 1"):
        vocab.encode("axbz")
    # A code point above every vocabulary entry (searchsorted past the end) is caught too.
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("\U0001f600")


def test_decode_rejects_bad_ids() -> None:
    vocab = CharVocab.from_text("abc")
    with pytest.raises(ValueError, match=r"\[0, 3\], expected 0 <= id < 3"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        vocab.decode([-1, 0])
    with pytest.raises(TypeError, match="integers"):
        vocab.decode([0.5])
    with pytest.raises(ValueError, match="1-D"):
        vocab.decode([[0, 1]])


# --- corpus files -----------------------------------------------------------------------------


def test_from_file_reads_utf8_and_drops_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffÀ la claire fontaine\n".encode())
    corpus = CharCorpus.from_file(path)
    assert corpus.text == "À la claire fontaine\n"
    assert corpus.vocab.decode(corpus.ids) == corpus.text
    assert corpus.source == str(path)
    assert corpus.sources == (str(path),)


def test_from_file_with_a_given_vocabulary(tmp_path: Path) -> None:
    vocab = CharVocab.from_text("abc ")
    path = tmp_path / "t.txt"
    path.write_text("a cab", encoding="utf-8")
    assert CharCorpus.from_file(path, vocab).ids.tolist() == [1, 0, 3, 1, 2]
    path.write_text("a cat", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path.name}.*outside the vocabulary.*'t'"):
        CharCorpus.from_file(path, vocab)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(CorpusNotFoundError, match=r"nope\.txt.*does not exist"):
        CharCorpus.from_file(path)
    assert issubclass(CorpusNotFoundError, FileNotFoundError)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        CharCorpus.from_file(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt.*is empty"):
        CharCorpus.from_file(path)
    path.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(DataError, match="only a byte-order mark"):
        CharCorpus.from_file(path)
    assert issubclass(DataError, ValueError)


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04abc\x00\x00def")
    with pytest.raises(DataError, match=r"model\.bin.*binary.*NUL byte at offset 7"):
        CharCorpus.from_file(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"latin1\.txt.*not valid UTF-8.*0xe9 at offset 14 \(line 2\)"
    ):
        CharCorpus.from_file(path)


def test_empty_text_in_constructor() -> None:
    with pytest.raises(DataError, match="empty"):
        CharCorpus("")


# --- the built-in corpus ----------------------------------------------------------------------


# The digest of src/bptt/data/corpus/shakespeare_comedies.txt as tools/make_builtin_corpus.py
# made it (894,058 bytes): the built-in corpus is these bytes on every Python version.
COMEDIES_SHA256 = "2693082117e729b0ddfffb001af6a91216fc32f547dbc860fedd6ebd52edff1a"


def test_builtin_corpus_is_the_shipped_public_domain_text(monkeypatch) -> None:
    # nothing is read from the running interpreter: a bogus stdlib path changes nothing
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"stdlib": "/nonexistent"})
    a = CharCorpus.builtin()
    shipped = Path(text_module.__file__).with_name("corpus") / "shakespeare_comedies.txt"
    data = shipped.read_bytes()
    assert hashlib.sha256(data).hexdigest() == COMEDIES_SHA256
    assert a.text.encode("utf-8") == data and len(a.text) == 894_058
    assert a.text.startswith("A MIDSUMMER NIGHT'S DREAM\n")
    for title in ("AS YOU LIKE IT", "TWELFTH NIGHT", "THE MERRY WIVES OF WINDSOR"):
        assert f"\n{title}\n" in a.text
    assert "\r" not in a.text and a.text.isascii()
    assert a.vocab == CharCorpus.builtin().vocab and 50 <= a.vocab.size <= 100
    assert a.missing == () and a.sources == ("bptt/data/corpus/shakespeare_comedies.txt",)
    assert "Shakespeare" in a.source


def test_builtin_corpus_altered_or_missing_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(text_module, "BUILTIN_SHA256", "0" * 64)
    with pytest.raises(DataError, match="not the pinned 000000000000"):
        CharCorpus.builtin()
    monkeypatch.undo()
    monkeypatch.setattr(text_module, "BUILTIN_CORPUS", "absent.txt")
    with pytest.raises(DataError, match=r"cannot be read.*--text FILE"):
        CharCorpus.builtin()


# --- split ------------------------------------------------------------------------------------


def test_split_by_position() -> None:
    corpus = CharCorpus("abcdefghij" * 10)
    train, val = corpus.split(0.1)
    assert len(train) == 90 and len(val) == 10
    assert np.array_equal(np.concatenate([train, val]), corpus.ids)
    train, val = corpus.split(0.0)
    assert len(train) == 100 and len(val) == 0
    # nanoGPT's convention for the reference run: n_train = int(0.9 N).
    corpus = CharCorpus("x" * 1_115_394)
    assert len(corpus.split(0.1)[0]) == int(0.9 * 1_115_394)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction must lie in"):
        CharCorpus("abc").split(fraction)


def test_split_too_short_for_a_window() -> None:
    corpus = CharCorpus("a" * 1000)
    corpus.split(0.1, seq_len=10, batch=8)  # train 900 ≥ 81, val 100 ≥ 81
    with pytest.raises(ValueError, match=r"validation split.*100 characters.*8 × seq_len 25"):
        corpus.split(0.1, seq_len=25, batch=8)
    with pytest.raises(ValueError, match=r"training split.*900 characters"):
        corpus.split(0.1, seq_len=100, batch=10)


def test_require_length() -> None:
    require_length(np.zeros(41, dtype=np.int64), seq_len=10, batch=4)
    with pytest.raises(ValueError, match=r"my text has 40 characters.*41 are needed"):
        require_length(np.zeros(40, dtype=np.int64), 10, 4, "my text")
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        require_length(100, 0, 4)
    with pytest.raises(TypeError, match="batch must be a positive int"):
        require_length(100, 5, 2.0)  # type: ignore[arg-type]


# --- streams ----------------------------------------------------------------------------------


def test_streams_are_contiguous_chunks() -> None:
    ids = np.arange(103)
    xs, ys = make_streams(ids, batch=4)
    L = 102 // 4
    assert xs.shape == ys.shape == (L, 4)
    for b in range(4):
        assert np.array_equal(xs[:, b], np.arange(b * L, (b + 1) * L))
        assert np.array_equal(ys[:, b], np.arange(b * L, (b + 1) * L) + 1)
    assert not xs.flags.writeable


def test_stream_batches_alignment_and_count() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=1001)
    B, T = 4, 7
    windows = list(stream_batches(ids, B, T))
    L = (1001 - 1) // B
    assert len(windows) == L // T == windows_per_epoch(ids, B, T) == windows_per_epoch(1001, B, T)
    for k, (x, y) in enumerate(windows):
        assert x.shape == y.shape == (T, B)
        assert x.dtype == np.int64
        for b in range(B):
            pos = b * L + k * T  # where this window of stream b starts in the corpus
            assert np.array_equal(x[:, b], ids[pos : pos + T])
            assert np.array_equal(y[:, b], ids[pos + 1 : pos + T + 1])  # next character
    # Streams are contiguous across windows: window k+1 of stream b continues window k.
    for (_, y0), (x1, _) in itertools.pairwise(windows):
        assert np.array_equal(x1[0], y0[-1])


def test_stream_batches_resume_from_start() -> None:
    ids = np.arange(500)
    full = list(stream_batches(ids, 3, 5))
    resumed = list(stream_batches(ids, 3, 5, start=7))
    assert len(resumed) == len(full) - 7
    for (xa, ya), (xb, yb) in zip(full[7:], resumed, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert list(stream_batches(ids, 3, 5, start=len(full))) == []


def test_stream_batches_bad_input() -> None:
    ids = np.arange(100)
    with pytest.raises(ValueError, match=r"start must lie in \[0, 9\]"):
        stream_batches(ids, 2, 5, start=10)
    with pytest.raises(ValueError, match="start must lie"):
        stream_batches(ids, 2, 5, start=-1)
    with pytest.raises(ValueError, match=r"100 characters.*batch 10 × seq_len 10 \+ 1 = 101"):
        stream_batches(ids, 10, 10)
    with pytest.raises(TypeError, match="integer array"):
        stream_batches(np.zeros(100), 2, 5)
    with pytest.raises(ValueError, match="1-D"):
        stream_batches(np.zeros((10, 10), dtype=np.int64), 2, 2)


def test_windows_feed_an_elman_rnn_with_carried_state() -> None:
    corpus = CharCorpus("the quick brown fox jumps over the lazy dog. " * 20)
    train, _ = corpus.split(0.1)
    K = corpus.vocab.size
    model = bptt.ElmanRNN(K, 8, K, output="softmax", seed=0)
    h = None
    for x, y in stream_batches(train, 4, 10):
        result = model.forward_backward(x, y, h)
        assert np.isfinite(result.loss)
        h = result.h_last
    assert h is not None and h.shape == (4, 8)


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} not present")
def test_tiny_shakespeare_reference_split() -> None:
    corpus = CharCorpus.from_file(SHAKESPEARE)
    assert len(corpus.text) == 1_115_394
    assert corpus.vocab.size == 65
    train, val = corpus.split(0.1, seq_len=100, batch=32)
    assert len(train) == 1_003_854 and len(val) == 111_540
