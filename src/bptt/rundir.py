"""A run directory is owned by one process at a time.

    open(DIR/.lock) ; flock(LOCK_EX | LOCK_NB) ; write our PID ; remove DIR/.<file>.*.tmp

The lock is an OS file lock (``fcntl.flock``): held for the life of the run, released by the
kernel on any exit (return, exception, ``kill -9``), so a crashed run leaves no stale lock. A
second process gets :class:`RunDirBusyError` naming the PID written by the holder. The lock
file itself is never removed (removing it would let two processes lock two different files).

Once the lock is held, the temporary files that an interrupted atomic write
(:mod:`bptt.atomic`) left behind are removed: ``.<name>.<random>.tmp`` for each file a run
writes, nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
#: the files a run writes through bptt.atomic; their stale temporaries are cleaned
RUN_FILES: tuple[str, ...] = (
    "checkpoint.safetensors",
    "checkpoint.npz",
    "config.json",
    "metrics.jsonl",
    "profile.json",
    "loss.png",
)


class RunDirBusyError(ValueError):
    """Another process holds the run directory."""


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.*.tmp`` left by interrupted atomic writes of the run's files."""
    removed = []
    for name in RUN_FILES:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


class RunDirLock:
    """The lock on one run directory: :meth:`acquire`, :meth:`release`, or ``with``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._fh: IO[str] | None = None
        self.created_folder = False

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> list[Path]:
        """Take the lock (creating the folder) and clean stale temporaries; return those.

        Raises:
            RunDirBusyError: another process holds it (its PID is named).
        """
        if self._fh is not None:
            return []
        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.folder / LOCK_NAME, "a+", encoding="ascii")
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read(64).strip() or "unknown"
                fh.close()
                raise RunDirBusyError(
                    f"run directory {str(self.folder)!r} is in use by another bptt process "
                    f"(PID {holder}); wait for it to end, or choose another --out"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return clean_stale_temporaries(self.folder)

    def release(self, discard: bool = False) -> None:
        """Let go of the lock (idempotent). With ``discard``, a folder that :meth:`acquire`
        created is removed again if nothing but the lock file was written into it."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        fh.truncate(0)
        if discard and self.created_folder:
            lock = self.folder / LOCK_NAME
            try:
                if [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                    lock.unlink(missing_ok=True)  # still holding it: nobody else can have it
                    self.folder.rmdir()
            except OSError:
                pass  # someone wrote into it meanwhile: leave it
        fh.close()  # closing the descriptor releases the flock

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
