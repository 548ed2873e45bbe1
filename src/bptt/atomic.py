"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

    write(tmp) ; fsync(tmp) ; os.replace(tmp, target)

A reader never sees a half-written file: ``target`` holds either its old content or the new
one in full. A failed write (exception, Ctrl-C) leaves the old file untouched and removes the
temporary file. Every writer in bptt goes through this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _mode_for(target: Path) -> int:
    """The permission bits ``target`` keeps (if it exists) or a new file gets (0666 & ~umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit move it onto ``path``.

    For writers that want a file name rather than bytes (``matplotlib`` ``savefig``,
    ``safetensors.numpy.save_file``)::

        with atomic_path(out / "loss.png") as tmp:
            fig.savefig(tmp, format="png")

    The temporary file exists (empty) when the block starts, is created in the same folder as
    ``path`` (so ``os.replace`` is a rename on one file system) and is named
    ``.<name>.<random>.tmp``. If the block raises, or the writer left nothing behind, the
    temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, target) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"the writer removed its temporary file {str(tmp)!r}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(target))  # mkstemp makes 0600; keep the usual permissions
        os.replace(tmp, target)
    except OSError as err:  # "No space left on device" says which file it was writing
        raise _naming(err, target) from None
    finally:
        tmp.unlink(missing_ok=True)


def _naming(err: OSError, target: Path) -> OSError:
    """``err`` (same type) with ``target`` in its message; unchanged when it names a file."""
    if err.filename is not None or str(target.parent) in str(err):
        return err
    text = f"cannot write {str(target)!r}: {err.strerror or err}"
    return type(err)(err.errno, text) if err.errno is not None else type(err)(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); return the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_path`)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode("utf-8"))
