"""A run directory is bptt's own, and owned by one process at a time.

    check(DIR) ; open(DIR/.lock, O_NOFOLLOW) ; flock(LOCK_EX | LOCK_NB) ; write our PID ;
    write DIR/.bptt-run ; remove DIR/.<file>.*.tmp

**Ownership.** bptt writes only into a folder it created or one it recognises as its own: a
run directory holds the marker file ``.bptt-run`` (a sweep directory ``.bptt-sweep``), written
when the folder is first locked. A folder that does not exist, or is empty, becomes a run
directory; a non-empty folder without the marker (your home directory, a project folder,
another program's output) is refused before anything is written, and so is an empty ``--out``
(it would name the current directory). A run written by a bptt older than the marker (a
``.lock`` or a checkpoint with its ``config.json``) is recognised too.

**No links followed.** The lock file is opened with ``O_NOFOLLOW``, and the names a run writes
(its checkpoint, ``config.json``, ``metrics.jsonl``, ``loss.png``, ``profile.json``, ``best/``,
the lock and the marker) are refused while any of them is a symbolic link: a link planted in a
run directory cannot make bptt write into the file or folder it points at.

**The lock** is an OS file lock (``fcntl.flock``): held for the life of the run, released by
the kernel on any exit (return, exception, ``kill -9``), so a crashed run leaves no stale lock.
A second process gets :class:`RunDirBusyError` naming the PID written by the holder. The lock
file itself is never removed (removing it would let two processes lock two different files).

Once the lock is held, the temporary files that an interrupted atomic write
(:mod:`bptt.atomic`) left behind are removed: ``.<name>.<random>.tmp`` for each file a run
writes, nothing else.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .atomic import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
RUN_MARKER = ".bptt-run"
SWEEP_MARKER = ".bptt-sweep"
#: the files a run writes through bptt.atomic; their stale temporaries are cleaned
RUN_FILES: tuple[str, ...] = (
    "checkpoint.safetensors",
    "checkpoint.npz",
    "config.json",
    "metrics.jsonl",
    "profile.json",
    "loss.png",
)
#: every name a run directory's own writes touch (files and the best/ folder)
RUN_NAMES: tuple[str, ...] = (*RUN_FILES, "best", LOCK_NAME, RUN_MARKER)
#: the files a sweep directory's driver writes at its top level
SWEEP_FILES: tuple[str, ...] = ("sweep.json", "sweep.csv", "summary.md", "sweep.png")
SWEEP_NAMES: tuple[str, ...] = (*SWEEP_FILES, "trials", "tune", LOCK_NAME, SWEEP_MARKER)
INSPECT_MARKER = ".bptt-inspect"
#: what each kind of folder bptt owns is called in messages
_KIND_WORDS = {"run": "run", "sweep": "sweep", "inspect": "output"}

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class RunDirBusyError(ValueError):
    """Another process holds the run directory."""


class NotOwnedError(ValueError):
    """A folder or file that bptt did not make, which it refuses to write into or over."""


def _lexists_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)
    except OSError:
        return False


def is_run_dir(folder: str | os.PathLike[str], kind: str = "run") -> bool:
    """Whether ``folder`` carries bptt's marker of a ``kind`` directory (``run``, ``sweep``
    or ``inspect``, ``bptt inspect``'s output); a run written before the marker existed is
    recognised by its ``.lock`` or checkpoint beside its ``config.json``, a sweep by its
    ``sweep.json`` beside ``trials/``."""
    p = Path(folder)
    if kind == "inspect":
        return _lexists_regular(p / INSPECT_MARKER)
    if kind == "sweep":
        return _lexists_regular(p / SWEEP_MARKER) or (
            _lexists_regular(p / "sweep.json") and (p / "trials").is_dir()
        )
    if _lexists_regular(p / RUN_MARKER):
        return True
    # before the marker: a checkpoint or the lock, beside the configuration bptt writes
    has_ckpt = any(_lexists_regular(p / n) for n in (*RUN_FILES[:2], LOCK_NAME))
    return has_ckpt and _lexists_regular(p / "config.json")


def check_dir_name(folder: str | os.PathLike[str], option: str = "--out") -> Path:
    """``folder`` as a Path; an empty name (which would mean the current directory) refused."""
    if isinstance(folder, str) and not folder.strip():
        raise NotOwnedError(
            f"{option} must name a directory for bptt to create or continue, got {folder!r} "
            "(an empty name would write into the current directory)"
        )
    return Path(folder)


def check_owned(
    folder: str | os.PathLike[str],
    kind: str = "run",
    option: str = "--out",
    names: tuple[str, ...] | None = None,
) -> bool:
    """Refuse a folder bptt may not write into; return whether it already is bptt's own.

    Allowed: a folder that does not exist yet, an empty one, or one carrying the ``kind``
    marker (:func:`is_run_dir`: ``run``, ``sweep`` or ``inspect``). Refused
    (:class:`NotOwnedError`): an empty name, a path that is not a folder, a folder of
    another kind, a non-empty folder without the marker, and a folder whose own names
    (``names``; by default ``RUN_NAMES`` / ``SWEEP_NAMES``) include a symbolic link.
    """
    p = check_dir_name(folder, option)
    what = _KIND_WORDS[kind]
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise NotOwnedError(f"{option} {str(p)!r} cannot be used: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotOwnedError(f"{option} {str(p)!r} exists and is not a directory")
    try:
        entries = sorted(e.name for e in os.scandir(p))
    except OSError as err:
        raise NotOwnedError(f"{option} {str(p)!r} cannot be listed: {err.strerror}") from None
    owned = is_run_dir(p, kind)
    for other in _KIND_WORDS:
        if other != kind and is_run_dir(p, other) and not owned:
            raise NotOwnedError(
                f"{option} {str(p)!r} is a bptt {_KIND_WORDS[other]} directory, not "
                f"{'an' if what[0] in 'aeiou' else 'a'} {what} directory; choose another {option}"
            )
    if entries and not owned:
        shown = ", ".join(repr(e) for e in entries[:3]) + (", …" if len(entries) > 3 else "")
        raise NotOwnedError(
            f"{option} {str(p)!r} is not empty and is not a bptt {what} directory (it holds "
            f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: {shown}); bptt writes "
            f"only into a new or empty directory or its own {what}: choose another {option}"
        )
    if names is None:
        names = RUN_NAMES if kind == "run" else SWEEP_NAMES
    check_no_links(p, names)
    return owned


def check_no_links(folder: Path, names: tuple[str, ...]) -> None:
    """Refuse when any of ``names`` in ``folder`` is a symbolic link (or, but for ``best``,
    ``trials`` and ``tune``, a folder where a file belongs)."""
    for name in names:
        target = folder / name
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            raise NotOwnedError(f"{str(target)!r} cannot be checked: {err.strerror}") from None
        if stat.S_ISLNK(mode):
            raise NotOwnedError(
                f"{str(target)!r} is a symbolic link; bptt does not write through links in "
                "its own directories: remove the link (or choose another --out)"
            )
        is_folder = name in ("best", "trials", "tune")
        if stat.S_ISDIR(mode) != is_folder or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            kind = "a directory" if is_folder else "a regular file"
            raise NotOwnedError(f"{str(target)!r} is not {kind}; move it away")


def claim_output_dir(
    folder: str | os.PathLike[str], names: tuple[str, ...], option: str = "--out"
) -> Path:
    """A folder a command writes ``names`` into (``bptt inspect``'s report and figures): made
    with the marker :data:`INSPECT_MARKER` when it does not exist, taken when empty or already
    marked (:func:`check_owned` with kind ``inspect``), refused otherwise: a link in its
    place, a non-empty folder of someone else's files, a bptt run or sweep directory, a run's
    ``best/``, or a link or non-file among ``names``. Returns the folder, created and marked.

    Raises:
        NotOwnedError: naming the option and the reason; nothing is written.
    """
    p = check_dir_name(folder, option)
    if p.is_symlink():
        raise NotOwnedError(
            f"{option} {str(p)!r} is a symbolic link; bptt does not write through links: "
            "give the folder itself"
        )
    if p.name == "best" and is_run_dir(p.parent, "run"):
        raise NotOwnedError(
            f"{option} {str(p)!r} is the best/ folder of the bptt run in {str(p.parent)!r}; "
            f"choose another {option}"
        )
    if not check_owned(p, "inspect", option, (*names, INSPECT_MARKER)):
        p.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p / INSPECT_MARKER, "written by bptt inspect\n")
    return p


def check_output_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """A file a command may write (``predict``, ``export`` outputs): not empty,
    not a folder or link, and not one of a bptt run's or sweep's own files (its checkpoint,
    configuration, logs, lock, marker, ``best/``), nor anything inside ``best/``.

    Raises:
        NotOwnedError: naming the option and the reason.
    """
    p = check_dir_name(path, option)
    if p.is_symlink():
        raise NotOwnedError(
            f"{option} {str(p)!r} is a symbolic link; give the path of a regular file"
        )
    if p.is_dir():
        raise NotOwnedError(f"{option} {str(p)!r} is a directory; give a file name")
    for parent in {p.absolute().parent, p.resolve().parent}:
        if is_run_dir(parent, "run") and p.name in RUN_NAMES:
            raise NotOwnedError(
                f"{option} {str(p)!r} is a file of the bptt run in {str(parent)!r}; write the "
                "output elsewhere"
            )
        if parent.name == "best" and is_run_dir(parent.parent, "run"):
            raise NotOwnedError(
                f"{option} {str(p)!r} lies in the best/ folder of the bptt run in "
                f"{str(parent.parent)!r}; write the output elsewhere"
            )
        if is_run_dir(parent, "sweep") and p.name in SWEEP_NAMES:
            raise NotOwnedError(
                f"{option} {str(p)!r} is a file of the bptt sweep in {str(parent)!r}; write "
                "the output elsewhere"
            )
    return p


def clear_run(folder: str | os.PathLike[str]) -> None:
    """Remove a run's own files (``--overwrite``): its checkpoint, configuration, logs, plot
    and ``best/`` checkpoint; anything else in the folder is left as it is."""
    p = Path(folder)
    check_no_links(p, RUN_NAMES)
    for name in RUN_FILES:
        (p / name).unlink(missing_ok=True)
    best = p / "best"
    if best.is_dir() and not best.is_symlink():
        for name in RUN_FILES:
            (best / name).unlink(missing_ok=True)
        (best / RUN_MARKER).unlink(missing_ok=True)
        try:
            best.rmdir()
        except OSError:
            pass  # something else lives in best/: left there


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` to ``path`` without following a symbolic link (``O_NOFOLLOW``)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotOwnedError(
                f"{str(p)!r} is a symbolic link; bptt does not write through links in its run "
                "directory"
            ) from None
        raise OSError(err.errno, f"cannot append to {str(p)!r}: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotOwnedError(f"{str(p)!r} is not a regular file")
        data = line.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    except OSError as err:
        raise OSError(err.errno, f"cannot append to {str(p)!r}: {err.strerror}") from None
    finally:
        os.close(fd)


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.*.tmp`` left by interrupted atomic writes of the run's files."""
    removed = []
    for name in (*RUN_FILES, *SWEEP_FILES, RUN_MARKER, SWEEP_MARKER):
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            if _lexists_regular(tmp) or tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


class RunDirLock:
    """The lock on one run directory: :meth:`acquire`, :meth:`release`, or ``with``.

    Args:
        folder: the run (or sweep) directory.
        kind: ``run`` or ``sweep``: the marker it carries (:func:`check_owned`).
    """

    def __init__(self, folder: str | os.PathLike[str], kind: str = "run") -> None:
        self._fd: int | None = None
        self.option = "--out"
        self.folder = check_dir_name(folder)
        self.kind = kind
        self.created_folder = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def marker(self) -> str:
        return RUN_MARKER if self.kind == "run" else SWEEP_MARKER

    def acquire(self) -> list[Path]:
        """Check the folder is bptt's (:func:`check_owned`), take the lock (creating the
        folder), write the marker and clean stale temporaries; return those removed.

        Raises:
            NotOwnedError: a folder bptt may not write into (see :func:`check_owned`).
            RunDirBusyError: another process holds it (its PID is named).
        """
        if self._fd is not None:
            return []
        check_owned(self.folder, self.kind, self.option)
        self.created_folder = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(
                err.errno, f"cannot create {self.option} {str(self.folder)!r}: {err.strerror}"
            ) from None
        lock = self.folder / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise NotOwnedError(
                    f"{str(lock)!r} is a symbolic link; bptt does not write through links in "
                    "its own directories: remove the link"
                ) from None
            raise OSError(err.errno, f"cannot open {str(lock)!r}: {err.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotOwnedError(f"{str(lock)!r} is not a regular file; move it away")
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunDirBusyError(
                    f"{self.kind} directory {str(self.folder)!r} is in use by another bptt "
                    f"process (PID {holder[:20]}); wait for it to end, or choose another --out"
                ) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            marker = self.folder / self.marker
            if not _lexists_regular(marker):
                from .atomic import atomic_write_text

                atomic_write_text(marker, f"bptt {self.kind} directory\n")
            return clean_stale_temporaries(self.folder)
        except BaseException:
            self.release(discard=True)
            raise

    def release(self, discard: bool = False) -> None:
        """Let go of the lock (idempotent). With ``discard``, a folder that :meth:`acquire`
        created is removed again if nothing but the lock and the marker was written into it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        if discard and self.created_folder:
            try:
                if {p.name for p in self.folder.iterdir()} <= {LOCK_NAME, self.marker}:
                    (self.folder / self.marker).unlink(missing_ok=True)
                    (self.folder / LOCK_NAME).unlink(missing_ok=True)  # still holding it
                    self.folder.rmdir()
            except OSError:
                pass  # someone wrote into it meanwhile: leave it
        os.close(fd)  # closing the descriptor releases the flock

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


def _finite_or_null(value: object) -> object:
    """JSON-safe: non-finite floats become null (JSON has no NaN), containers recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def metrics_line(record: Mapping[str, Any]) -> str:
    """One ``metrics.jsonl`` line: strict JSON (a NaN or inf loss is written as null)."""
    return json.dumps(_finite_or_null(dict(record)), allow_nan=False) + "\n"


def logged_step(line: str) -> int | None:
    """The ``step`` of one ``metrics.jsonl`` line, or None when the line is not a JSON object
    with an integer step (any other JSON shape, nesting beyond the parser, text)."""
    if len(line) > 1_000_000:
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    step = record.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    return step


def truncate_log(path: str | os.PathLike[str], step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` logged at or before ``step`` (a crash between
    checkpoints leaves later ones); lines of any other shape are dropped."""
    p = Path(path)
    try:
        mode = os.lstat(p).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotOwnedError(f"{str(p)!r} is not a regular file (a link?); move it away")
    kept = []
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            s = logged_step(line)
            if s is not None and s <= step:
                kept.append(line.rstrip("\n") + "\n")
    from .atomic import atomic_write_text

    atomic_write_text(p, "".join(kept))
