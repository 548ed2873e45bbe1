"""Machine facts recorded beside every benchmark table: CPU, cores, library versions, BLAS."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU model string from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_info() -> list[str]:
    """One line per thread pool (BLAS, OpenMP) as threadpoolctl reports it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed"]
    return [
        f"{p.get('internal_api')} {p.get('version')} kernel={p.get('architecture', '-')} "
        f"threads={p.get('num_threads')} ({os.path.basename(p.get('filepath', ''))})"
        for p in threadpool_info()
    ]


def blas_kernel() -> str:
    """The BLAS NumPy uses, short: ``OpenBLAS 0.3.31 SkylakeX`` (threadpoolctl), or ``?``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    for p in threadpool_info():
        if p.get("user_api") == "blas":
            api = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(
                str(p.get("internal_api")), str(p.get("internal_api"))
            )
            version = ".".join(str(p.get("version") or "").split(".")[:3])
            return f"{api} {version} {p.get('architecture') or ''}".strip()
    return "?"


def machine_label() -> str:
    """The machine's name for a table: ``AMD EPYC, 2 cores, OpenBLAS 0.3.31 SkylakeX``."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {blas_kernel()}"


def machine_slug() -> str:
    """:func:`machine_label` as a marker-safe key: ``amd-epyc-2c-openblas-skylakex``."""
    import re

    kernel = blas_kernel().split()
    parts = [cpu_model(), f"{os.cpu_count()}c", kernel[0], kernel[-1] if len(kernel) > 1 else ""]
    text = "-".join(p for p in parts if p).lower()
    text = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*?ghz", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_lines() -> list[str]:
    """Markdown bullet lines describing this machine and software."""
    lines = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"- Python {platform.python_version()}, NumPy {np.__version__}",
    ]
    try:
        import torch

        lines.append(f"- PyTorch {torch.__version__}, torch threads {torch.get_num_threads()}")
    except ImportError:
        lines.append("- PyTorch not installed")
    try:
        import numba

        lines.append(f"- Numba {numba.__version__}")
    except ImportError:
        lines.append("- Numba not installed")
    lines += [f"- thread pool: {line}" for line in blas_info()]
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        lines.append(f"- load average at the end of the run (1/5/15 min): {load}")
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    lines.append(f"- OpenBLAS environment: {env or 'OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset'}")
    return lines


def matmul_peak_gflops(n: int = 2048, reps: int = 5, dtype: type = np.float32) -> float:
    """The measured large-matmul peak: best GFLOP/s of an n×n @ n×n product (2n³ flops)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=out)  # warm up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def report(text: str, markdown: Path | None) -> None:
    """Print the machine facts and a result table; also write both to ``markdown`` if given.

    The file is written atomically, so an interrupted benchmark never leaves half a table.
    """
    from bptt.atomic import atomic_write_text

    machine = "\n".join(machine_lines())
    print()
    print(machine)
    print()
    print(text)
    if markdown is not None:
        atomic_write_text(markdown, machine + "\n\n" + text + "\n")


if __name__ == "__main__":  # ``--peak-json``: the sgemm peak of a fresh process, as JSON
    import json
    import sys

    if sys.argv[1:] == ["--peak-json"]:
        print(json.dumps({"sgemm_gflops": matmul_peak_gflops()}))
