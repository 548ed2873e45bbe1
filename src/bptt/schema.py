"""A small declarative schema for plain JSON documents (checkpoint metadata).

    check(spec, value, path)  →  None, or SchemaError("<path>: expected <what>, got <value>")

A spec is a value of one of the classes below; :class:`Obj` nests them. The checks are exact
about types (``True`` is not an int, ``1.0`` is not an int, a float is finite unless allowed)
and bound every integer, so a document that passes can be used without further guarding:
no ``KeyError``, no ``OverflowError``, no int too large for an array shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class SchemaError(ValueError):
    """A document that does not match its schema; the message names the path."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(path: str, what: str, value: Any) -> SchemaError:
    return SchemaError(f"{path}: expected {what}, got {type(value).__name__} {_show(value)}")


@dataclass(frozen=True)
class Int:
    """An int (not a bool) in [lo, hi]."""

    lo: int = 0
    hi: int = 2**53

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise _fail(path, f"an int in [{self.lo}, {self.hi}]", value)


@dataclass(frozen=True)
class Float:
    """A number (int or float, not bool); finite unless ``finite`` is False."""

    finite: bool = True

    def check(self, value: Any, path: str) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and self.finite and not math.isfinite(value):
            ok = False
        if not ok:
            raise _fail(path, "a finite number" if self.finite else "a number", value)


@dataclass(frozen=True)
class Str:
    """A str of at most ``max_len`` characters, one of ``choices`` or matching ``pattern``."""

    choices: tuple[str, ...] | None = None
    max_len: int = 4096
    pattern: str | None = None

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise _fail(path, f"a str of at most {self.max_len} characters", value)
        if self.choices is not None and value not in self.choices:
            raise _fail(path, f"one of {list(self.choices)}", value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _fail(path, f"a str matching {self.pattern!r}", value)


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)


@dataclass(frozen=True)
class Const:
    value: Any

    def check(self, value: Any, path: str) -> None:
        if type(value) is not type(self.value) or value != self.value:
            raise _fail(path, repr(self.value), value)


@dataclass(frozen=True)
class Scalar:
    """null, a bool, a str (at most ``max_len``), an int or a float (NaN and ±inf allowed)."""

    max_len: int = 4096

    def check(self, value: Any, path: str) -> None:
        if value is None or isinstance(value, (bool, int, float)):
            return
        if isinstance(value, str) and len(value) <= self.max_len:
            return
        raise _fail(path, "null, a bool, a number or a short str", value)


@dataclass(frozen=True)
class Nullable:
    spec: Any

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.spec.check(value, path)


@dataclass(frozen=True)
class List:
    """A list of at most ``max_len`` items, each matching ``item``."""

    item: Any
    max_len: int = 1 << 20

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) > self.max_len:
            raise _fail(path, f"a list of at most {self.max_len} items", value)
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")


@dataclass(frozen=True)
class Obj:
    """A JSON object: ``fields`` (all required unless named in ``optional``); other keys are
    refused, or each checked against ``extra`` when given (at most ``max_keys`` keys)."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()
    extra: Any = None
    max_keys: int = 4096

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict) or len(value) > self.max_keys:
            raise _fail(path, f"an object of at most {self.max_keys} keys", value)
        missing = sorted(k for k in self.fields if k not in value and k not in self.optional)
        if missing:
            raise SchemaError(f"{path}: missing key(s) {missing}")
        for key, v in value.items():
            where = f"{path}.{key}"
            if key in self.fields:
                self.fields[key].check(v, where)
            elif self.extra is not None:
                Str(max_len=256).check(key, f"{path} key")
                self.extra.check(v, where)
            else:
                raise SchemaError(f"{path}: unexpected key {_show(key)}")


def check(spec: Any, value: Any, path: str = "$") -> None:
    """Raise :class:`SchemaError` naming the first place where ``value`` leaves ``spec``."""
    spec.check(value, path)
