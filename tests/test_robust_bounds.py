"""Issue 20, bounded inputs: every option that sets a length, a count or a layer number goes
through the memory estimate before anything is allocated, for every command. Each command
runs in a child process under an address-space limit, so a missed check fails the test
(MemoryError or a kill) instead of swapping the machine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LIMIT = 3 << 30  # bytes of address space for the child (NumPy and the imports fit easily)


def _bptt(*argv: str, cwd: Path, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    def _limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = os.environ | {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bptt", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,
    )


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    for w in words:
        assert w in err, err


TRAIN = ["train", "--no-progress", "--no-plot", "--steps", "1", "--out", "run"]

CASES = [
    ([*TRAIN, "--task", "copy", "--delay", "100000000"], "--delay"),
    ([*TRAIN, "--task", "copy", "--copy-len", "100000000"], "--copy-len"),
    ([*TRAIN, "--task", "sine", "--horizon", "1000000000"], "--horizon"),
    ([*TRAIN, "--task", "lagged", "--lag2", "1000000000"], "--lag2"),
    ([*TRAIN, "--task", "adding", "--eval-size", "1000000000000"], "--eval-size"),
    (["gradcheck", "--layers", "1000000000000"], "--layers"),
    (["gradcheck", "--seq-len", "100000000"], "--seq-len"),
    (["inspect", "--layers", "1000000000000", "--no-plots", "--out", "insp"], "--layers"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "word"), CASES, ids=[" ".join(c[0][-2:]) for c in CASES])
def test_sizes_beyond_memory_are_refused_up_front(tmp_path: Path, argv, word) -> None:
    proc = _bptt(*argv, cwd=tmp_path)
    _refused(proc, word)
    assert not (tmp_path / "run").exists()


def _bomb(path: Path, n: int) -> Path:
    """An .npz whose X declares n float64 zeros, deflated to a few MB (or less)."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (n // 4, 2, 2)}
    buf = np.lib.format
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as fh:
            buf.write_array_header_2_0(fh, header)
            block = bytes(1 << 20)
            left = n * 8
            while left > 0:
                fh.write(block[: min(left, len(block))])
                left -= len(block)
        zf.writestr("Y.npy", _npy(np.zeros((n // 4, 2), np.int64)))
    return path


def _npy(a: np.ndarray) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


@pytest.mark.slow
def test_a_compressed_npz_is_sized_before_it_is_decompressed(tmp_path: Path) -> None:
    # 1 GiB of X deflated to a few MB; the child may hold 1.5 GiB in all
    data = _bomb(tmp_path / "bomb.npz", 1 << 27)
    assert data.stat().st_size < 16 << 20
    argv = [*TRAIN, "--task", "arrays", "--data", str(data)]
    proc = _bptt(*argv, cwd=tmp_path, limit=3 << 29)
    _refused(proc, "bomb.npz", "memory")
