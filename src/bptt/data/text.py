"""Character corpora for language modelling: vocabulary, corpus files, B parallel streams.

    vocabulary   V = sorted(set(text)),  id(c) = index of c in V,  decode(encode(s)) = s
    streams      L = ⌊(N − 1) / B⌋,  X[l, b] = ids[b L + l],  Y[l, b] = ids[b L + l + 1]
    windows      x_k = X[kT : (k+1)T],  y_k = Y[kT : (k+1)T],  k = 0 … ⌊L / T⌋ − 1

Column b of X is one contiguous chunk of the corpus (char-rnn's layout), so the hidden state
of stream b at the end of window k is the right initial state for window k + 1.

The built-in default corpus (:meth:`CharCorpus.builtin`) is a public-domain text shipped
inside the package, Shakespeare's eight comedies (894,058 characters): the same bytes on every
machine and Python version, no download.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..resources import available_memory, format_bytes
from ..validation import check_positive_int
from .errors import CorpusNotFoundError, DataError

VOCAB_FORMAT = "bptt-char-vocab"
VOCAB_VERSION = 1

# The built-in corpus: Shakespeare's comedies as plain text (UTF-8, "\n" line ends), shipped in
# the package (src/bptt/data/corpus/: the text, where it comes from, how it was made). Pinned by
# its SHA-256 so that every install, on every Python, trains on the same bytes.
BUILTIN_CORPUS = "shakespeare_comedies.txt"
BUILTIN_SHA256 = "2693082117e729b0ddfffb001af6a91216fc32f547dbc860fedd6ebd52edff1a"
BUILTIN_NAME = "built-in: Shakespeare's comedies"


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharVocab:
    """V = (c_0 < c_1 < … < c_{K−1}), the distinct characters sorted by code point.

    encode(s)[i] = j such that c_j = s[i];  decode(ids) = c_{ids[0]} c_{ids[1]} …

    Args:
        chars: the distinct characters, sorted by code point.

    Raises:
        ValueError: empty, not single characters, repeated or unsorted.
    """

    chars: tuple[str, ...]
    _codes: np.ndarray = field(init=False, repr=False, compare=False)  # (K,) uint32 code points

    def __post_init__(self) -> None:
        chars = self.chars
        if isinstance(chars, str) or not isinstance(chars, (tuple, list)):
            raise TypeError(f"chars must be a tuple of 1-character strings, got {type(chars)}")
        chars = tuple(chars)
        if not chars:
            raise ValueError("a vocabulary needs at least one character, got none")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters, got {bad[:5]!r}")
        if list(chars) != sorted(set(chars)):
            raise ValueError("vocabulary characters must be distinct and sorted by code point")
        object.__setattr__(self, "chars", chars)
        codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        codes.flags.writeable = False
        object.__setattr__(self, "_codes", codes)

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """V = sorted(set(text))."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise DataError("cannot build a vocabulary from an empty text")
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        """K, the number of distinct characters (the model's input and output size)."""
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """ids[i] = index of text[i] in V, as a (len(text),) int64 array.

        Raises:
            ValueError: ``text`` holds characters outside the vocabulary (they are listed).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")  # (N,)
        ids = np.searchsorted(self._codes, codes)  # (N,)
        ids_clipped = np.minimum(ids, self.size - 1)
        unknown = self._codes[ids_clipped] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown].tolist()})
            shown = ", ".join(repr(c) for c in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            first = int(np.argmax(unknown))
            raise ValueError(
                f"text holds {len(missing)} character(s) outside the vocabulary of "
                f"{self.size}: {shown}{more} (first at position {first})"
            )
        return ids.astype(np.int64)

    def decode(self, ids: object) -> str:
        """The string c_{ids[0]} c_{ids[1]} … for a 1-D sequence of ids in [0, K).

        Raises:
            TypeError: ids are not integers.
            ValueError: ids are not 1-D or fall outside [0, K).
        """
        array = np.asarray(ids)
        if array.size == 0:
            return ""
        if array.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {array.shape}")
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi >= self.size:
            raise ValueError(f"ids lie in [{lo}, {hi}], expected 0 <= id < {self.size}")
        return self._codes[array].astype("<u4").tobytes().decode("utf-32-le")

    def to_dict(self) -> dict[str, object]:
        """{"format": "bptt-char-vocab", "version": 1, "chars": [c_0, …, c_{K−1}]}."""
        return {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "chars": list(self.chars)}

    def to_json(self) -> str:
        """The vocabulary as a JSON string (see :meth:`to_dict`); ASCII-escaped."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, object]) -> CharVocab:
        """Inverse of :meth:`to_json`; also accepts the parsed dict of :meth:`to_dict`.

        Raises:
            ValueError: not JSON, wrong format name, a newer version, bad ``chars``.
        """
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as err:
                raise ValueError(f"vocabulary is not valid JSON: {err}") from err
        if not isinstance(data, Mapping):
            raise ValueError(f"vocabulary JSON must be an object, got {type(data).__name__}")
        if data.get("format") != VOCAB_FORMAT:
            raise ValueError(
                f"vocabulary JSON has format {data.get('format')!r}, expected {VOCAB_FORMAT!r}"
            )
        version = data.get("version")
        if not isinstance(version, int) or version < 1 or version > VOCAB_VERSION:
            raise ValueError(
                f"vocabulary JSON has version {version!r}; this bptt reads versions "
                f"1..{VOCAB_VERSION} (a newer bptt wrote it?)"
            )
        chars = data.get("chars")
        if not isinstance(chars, list):
            raise ValueError(f"vocabulary JSON 'chars' must be a list, got {type(chars).__name__}")
        return cls(tuple(chars))


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def _read_bounded(p: Path, chunk: int = 1 << 20) -> bytes:
    """The bytes of ``p`` read a chunk at a time: a NUL byte (binary data, ``/dev/zero``)
    stops the read at once, and so does a size beyond what memory can hold as text and ids
    (about 16 bytes per character: the bytes, the str, the int64 ids)."""
    avail = available_memory()
    limit = None if avail is None else avail // 16
    parts: list[bytes] = []
    size = 0
    with open(p, "rb") as fh:
        while block := fh.read(chunk):
            nul = block.find(b"\x00")
            if nul >= 0:
                raise DataError(
                    f"text file {str(p)!r} looks binary (NUL byte at offset {size + nul}); "
                    "expected a UTF-8 text file"
                )
            size += len(block)
            if limit is not None and size > limit:
                raise DataError(
                    f"text file {str(p)!r} is larger than {format_bytes(limit)}, more than this "
                    f"machine's {format_bytes(avail or 0)} of available memory can hold as a "
                    "corpus (about 16 bytes per character)"
                )
            parts.append(block)
    return b"".join(parts)


def read_text_file(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped).

    Raises:
        CorpusNotFoundError: the file does not exist.
        DataError: a directory, empty, binary (holds NUL bytes) or not valid UTF-8.
    """
    p = Path(path)
    if not p.exists():
        raise CorpusNotFoundError(f"text file {str(p)!r} does not exist")
    if p.is_dir():
        raise DataError(f"text file {str(p)!r} is a directory, expected a UTF-8 text file")
    data = _read_bounded(p)
    if not data:
        raise DataError(f"text file {str(p)!r} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"text file {str(p)!r} is not valid UTF-8: byte 0x{data[err.start]:02x} at offset "
            f"{err.start} (line {line}) {err.reason}; convert it, e.g. "
            f"iconv -f LATIN1 -t UTF-8"
        ) from err
    text = text.removeprefix("\ufeff")
    if not text:
        raise DataError(f"text file {str(p)!r} holds only a byte-order mark, no text")
    return text


class CharCorpus:
    """A text with its vocabulary and ids: ids[i] = vocab.encode(text)[i].

    Args:
        text: the corpus, non-empty.
        vocab: the vocabulary to encode with (default: built from ``text``); pass a trained
            model's vocabulary to evaluate it on a new text.
        source: where the text came from, for messages and logs.
        sources: the files it was read from.
        missing: files or modules that were wanted but absent (the built-in corpus).

    Raises:
        DataError: empty text.
        ValueError: ``text`` holds characters outside a given ``vocab``.
    """

    def __init__(
        self,
        text: str,
        vocab: CharVocab | None = None,
        *,
        source: str = "<text>",
        sources: tuple[str, ...] = (),
        missing: tuple[str, ...] = (),
    ) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise DataError(f"corpus {source} is empty")
        self.text = text
        self.vocab = CharVocab.from_text(text) if vocab is None else vocab
        try:
            ids = self.vocab.encode(text)  # (N,)
        except ValueError as err:
            raise ValueError(f"corpus {source}: {err}") from None
        ids.flags.writeable = False
        self.ids = ids
        self.source = source
        self.sources = sources
        self.missing = missing

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"CharCorpus({self.source}, {len(self.text):,} chars, vocab {self.vocab.size})"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], vocab: CharVocab | None = None) -> CharCorpus:
        """The corpus of a UTF-8 text file.

        Raises:
            CorpusNotFoundError: the file does not exist.
            DataError: a directory, empty, binary or not UTF-8 (see :func:`read_text_file`).
            ValueError: characters outside a given ``vocab``.
        """
        text = read_text_file(path)
        return cls(text, vocab, source=str(path), sources=(str(path),))

    @classmethod
    def builtin(cls, vocab: CharVocab | None = None) -> CharCorpus:
        """The default corpus: Shakespeare's eight comedies, shipped inside the package.

        The same 894,058 characters on every machine and Python version (checked against
        :data:`BUILTIN_SHA256` as it is read): a run on the built-in corpus means one text.

        Args:
            vocab: encode with this vocabulary instead of the corpus's own.

        Raises:
            DataError: the packaged file is missing or altered (a broken installation).
        """
        data = builtin_corpus_bytes()
        return cls(
            data.decode("utf-8"),
            vocab,
            source=BUILTIN_NAME,
            sources=(f"bptt/data/corpus/{BUILTIN_CORPUS}",),
        )

    def split(
        self, val_fraction: float = 0.1, *, seq_len: int | None = None, batch: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Split by position: train = ids[:n], val = ids[n:], n = ⌊N (1 − val_fraction)⌋.

        Args:
            val_fraction: in [0, 1); 0 gives an empty validation split.
            seq_len, batch: when given, both non-empty splits must hold one window of
                ``batch`` streams of ``seq_len`` steps (:func:`require_length`).

        Raises:
            ValueError: ``val_fraction`` out of range, or a split too short.
        """
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
            raise TypeError(f"val_fraction must be a float, got {type(val_fraction).__name__}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        n_total = len(self.ids)
        n_train = int(n_total * (1.0 - val_fraction))
        train, val = self.ids[:n_train], self.ids[n_train:]
        if seq_len is not None:
            require_length(train, seq_len, batch, f"the training split of {self.source}")
            if val_fraction > 0:
                require_length(val, seq_len, batch, f"the validation split of {self.source}")
        return train, val


def builtin_corpus_bytes() -> bytes:
    """The packaged corpus file's bytes, checked against :data:`BUILTIN_SHA256`."""
    path = Path(__file__).with_name("corpus") / BUILTIN_CORPUS
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(
            f"the built-in corpus {str(path)!r} cannot be read ({err.strerror}): reinstall "
            "bptt, or pass a text file with --text FILE"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != BUILTIN_SHA256:
        raise DataError(
            f"the built-in corpus {str(path)!r} has sha256 {digest[:12]}…, not the pinned "
            f"{BUILTIN_SHA256[:12]}… (an altered installation): reinstall bptt"
        )
    return data


# ---------------------------------------------------------------------------------------------
# Parallel streams
# ---------------------------------------------------------------------------------------------


def _check_ids(ids: object) -> np.ndarray:
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        raise TypeError(f"ids must be an integer array, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {array.shape}")
    return array


def require_length(ids: object, seq_len: int, batch: int, what: str = "the corpus") -> None:
    """Check N ≥ B·T + 1: one window of B streams × T steps, plus the last target.

    Args:
        ids: a 1-D id array or its length N.

    Raises:
        ValueError: too short; the message names ``what``, N and the needed length.
    """
    seq_len = check_positive_int("seq_len", seq_len)
    batch = check_positive_int("batch", batch)
    n = int(ids) if isinstance(ids, (int, np.integer)) else len(_check_ids(ids))
    need = batch * seq_len + 1
    if n < need:
        raise DataError(
            f"{what} has {n:,} characters, shorter than one window: batch {batch} × seq_len "
            f"{seq_len} + 1 = {need:,} are needed; use a longer text or lower --batch/--seq-len"
        )


def windows_per_epoch(ids: object, batch: int, seq_len: int) -> int:
    """⌊L / T⌋ with L = ⌊(N − 1) / B⌋: the windows :func:`stream_batches` yields per epoch.

    Args:
        ids: a 1-D id array or its length N.
    """
    seq_len = check_positive_int("seq_len", seq_len)
    batch = check_positive_int("batch", batch)
    n = int(ids) if isinstance(ids, (int, np.integer)) else len(_check_ids(ids))
    return max(n - 1, 0) // batch // seq_len


def make_streams(ids: object, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """X[l, b] = ids[b L + l], Y[l, b] = ids[b L + l + 1], L = ⌊(N − 1) / B⌋.

    Returns:
        (X, Y), each (L, B) C-contiguous and read-only; column b is one contiguous chunk.
    """
    array = _check_ids(ids)
    batch = check_positive_int("batch", batch)
    length = (len(array) - 1) // batch
    if length < 1:
        raise DataError(
            f"ids of length {len(array)} cannot fill {batch} streams of at least one step "
            f"(need {batch + 1})"
        )
    xs = np.ascontiguousarray(array[: batch * length].reshape(batch, length).T)  # (L, B)
    ys = np.ascontiguousarray(array[1 : batch * length + 1].reshape(batch, length).T)  # (L, B)
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def stream_batches(
    ids: object, batch: int, seq_len: int, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x_k, y_k) = (X[kT:(k+1)T], Y[kT:(k+1)T]) for k = start … ⌊L/T⌋ − 1.

    X and Y are the (L, B) streams of :func:`make_streams`, so y_k[t, b] is the character after
    x_k[t, b], and x_{k+1}[0, b] follows x_k[T−1, b] in the corpus: carry the hidden state.

    Args:
        ids: (N,) integer ids.
        batch: B parallel streams.
        seq_len: T steps per window.
        start: the window index to resume from, 0 ≤ start ≤ :func:`windows_per_epoch`.

    Yields:
        (x, y), each (T, B) int64, read-only views.

    Raises:
        ValueError: fewer than B·T + 1 ids (:func:`require_length`), ``start`` out of range.
    """
    array = _check_ids(ids)
    require_length(array, seq_len, batch, f"ids of length {len(array)}")
    n_windows = windows_per_epoch(array, batch, seq_len)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
        raise TypeError(f"start must be an int window index, got {type(start).__name__}")
    if not 0 <= start <= n_windows:
        raise ValueError(f"start must lie in [0, {n_windows}] (windows per epoch), got {start}")
    xs, ys = make_streams(array.astype(np.int64, copy=False), batch)
    return _windows(xs, ys, seq_len, int(start), n_windows)


def _windows(
    xs: np.ndarray, ys: np.ndarray, seq_len: int, start: int, n_windows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    # A separate generator so that argument errors raise at the call, not at the first next().
    for k in range(start, n_windows):
        yield xs[k * seq_len : (k + 1) * seq_len], ys[k * seq_len : (k + 1) * seq_len]
