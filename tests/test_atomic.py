"""bptt.atomic: all-or-nothing writes, no temporary file left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bptt.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_and_text_create_parents_and_return_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.bin"
    assert atomic_write_bytes(target, b"\x00\x01\xff") == target
    assert target.read_bytes() == b"\x00\x01\xff"
    t = tmp_path / "y.txt"
    assert atomic_write_text(t, "h\u00e9llo\n") == t
    assert t.read_bytes() == "h\u00e9llo\n".encode()
    assert _listing(tmp_path) == ["a", "y.txt"]
    assert _listing(target.parent) == ["x.bin"]


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    t = tmp_path / "f.txt"
    atomic_write_text(t, "old, longer content")
    atomic_write_text(t, "new")
    assert t.read_text() == "new"
    assert _listing(tmp_path) == ["f.txt"]


def test_failing_writer_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    t = tmp_path / "f.png"
    t.write_bytes(b"old")
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(t) as tmp:
            seen.append(tmp)
            assert tmp.parent == tmp_path and tmp != t
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("disk on fire")
    assert t.read_bytes() == b"old"
    assert not seen[0].exists()
    assert _listing(tmp_path) == ["f.png"]


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    t = tmp_path / "f"
    t.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(t) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert t.read_text() == "old"
    assert _listing(tmp_path) == ["f"]


def test_failing_bytes_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside atomic_write_bytes itself (here: os.replace) leaves the old file whole."""
    t = tmp_path / "ckpt"
    t.write_bytes(b"complete old checkpoint")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("replace failed")

    monkeypatch.setattr("bptt.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="replace failed"):
        atomic_write_bytes(t, b"new")
    assert t.read_bytes() == b"complete old checkpoint"
    assert _listing(tmp_path) == ["ckpt"]


def test_path_writer_that_removes_its_file_is_an_error(tmp_path: Path) -> None:
    t = tmp_path / "g"
    t.write_text("old")
    with pytest.raises(FileNotFoundError, match="temporary file"):
        with atomic_path(t) as tmp:
            tmp.unlink()
    assert t.read_text() == "old"
    assert _listing(tmp_path) == ["g"]


def test_path_writer_success(tmp_path: Path) -> None:
    t = tmp_path / "h.dat"
    with atomic_path(t) as tmp:
        assert tmp.exists()  # created empty, so no other process can take the name
        tmp.write_bytes(b"payload")
    assert t.read_bytes() == b"payload"
    assert _listing(tmp_path) == ["h.dat"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_as_a_plain_open_would_give_and_kept_on_replace(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; the result must have the usual 0666 & ~umask instead."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    new = atomic_write_bytes(tmp_path / "new", b"x")
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    new.chmod(0o640)
    atomic_write_bytes(new, b"y")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("func", "value", "argname"),
    [
        (atomic_write_bytes, "text", "data must be bytes"),
        (atomic_write_text, b"x", "text must be str"),
    ],
)
def test_wrong_payload_type(tmp_path: Path, func: object, value: object, argname: str) -> None:
    with pytest.raises(TypeError, match=argname):
        func(tmp_path / "z", value)  # type: ignore[operator]
    assert _listing(tmp_path) == []
