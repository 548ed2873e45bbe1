"""Data for training: character corpora (:mod:`.text`) and synthetic/CSV sequence tasks."""

from .errors import CorpusNotFoundError, DataError
from .text import (
    CharCorpus,
    CharVocab,
    make_streams,
    require_length,
    stream_batches,
    windows_per_epoch,
)

__all__ = [
    "CharCorpus",
    "CharVocab",
    "CorpusNotFoundError",
    "DataError",
    "make_streams",
    "require_length",
    "stream_batches",
    "windows_per_epoch",
]
