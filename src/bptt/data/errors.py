"""Exceptions for bad data: each message names the file (or argument), the place and the fix."""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be used: empty, binary, not UTF-8, too short, malformed CSV."""


class CorpusNotFoundError(FileNotFoundError):
    """A text or CSV file that does not exist (or is not a regular file)."""
