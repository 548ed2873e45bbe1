"""One Elman step at two or more git revisions of bptt, in the same run: before/after claims.

    python benchmarks/bench_revisions.py 0745a07^ 0745a07 HEAD --shapes minchar charlm

Each revision is checked out (``git worktree add --detach``) into a temporary directory;
every timing child imports ``bptt`` from one of those trees only (its ``src`` first on
``sys.path``), builds ``bptt.ElmanRNN(I, H, O, "tanh", "softmax", seed=0, dtype=float32)``
(an API every revision has) and times ``model.loss_and_grads(x, y)`` on the same batch as
``bench_step.py`` (median of timed chunks after warm-up). The children run alternated
(A B C, C B A, …), each in a fresh process, ``--reps`` rounds. Before timing, one child per
revision returns its loss and gradients, and the revisions must agree (float32, 2e-4
norm-wise): a revision that computes something else is not a speed comparison.

The table gives the median ms per step over rounds [min–max] and each revision's ratio to
the first (per-round ratios, median).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import alternate, emit, load_average, run_child, spread  # noqa: E402

REPO = HERE.parent


def _problem(shape_name: str):  # type: ignore[no-untyped-def]
    from bench_step import SHAPES, make_data

    import bptt

    s = SHAPES[shape_name]
    model = bptt.ElmanRNN(s.I, s.H, s.O, "tanh", "softmax", seed=0, dtype=np.float32)
    x, y = make_data(s, np.float32)
    return model, x, y


def child(tree: str, shape_name: str, mode: str, chunks: int, chunk_s: float) -> None:
    """In a fresh process: bptt from ``tree``; emit grads ("check") or per-step ms ("time")."""
    sys.path.insert(0, str(Path(tree) / "src"))
    import bptt

    assert Path(bptt.__file__).resolve().is_relative_to(Path(tree).resolve()), bptt.__file__
    model, x, y = _problem(shape_name)
    if mode == "check":
        loss, grads = model.loss_and_grads(x, y)
        emit({"loss": loss, "grads": {k: np.asarray(getattr(grads, k)).tolist() for k in "UVW"}})
        return
    for _ in range(3):
        model.loss_and_grads(x, y)
    start = time.perf_counter()
    model.loss_and_grads(x, y)
    n = max(1, int(chunk_s / max(time.perf_counter() - start, 1e-7)))
    per_step = []
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(n):
            model.loss_and_grads(x, y)
        per_step.append((time.perf_counter() - start) / n)
    emit({"ms": 1e3 * float(np.median(per_step))})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="*", help="git revisions; the first is the baseline")
    parser.add_argument("--shapes", nargs="+", default=["minchar", "charlm"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--chunk-seconds", type=float, default=0.3)
    parser.add_argument("--child", nargs=5, metavar=("TREE", "SHAPE", "MODE", "N", "S"))
    args = parser.parse_args(argv)
    if args.child:
        tree, shape, mode, chunks, chunk_s = args.child
        child(tree, shape, mode, int(chunks), float(chunk_s))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_revisions_"))
    trees: dict[str, Path] = {}
    try:
        for rev in args.revisions:
            sha = subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", rev],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            trees[f"{rev} ({sha})"] = path = tmp / sha
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), sha],
                check=True, capture_output=True,
            )  # fmt: skip
        script = str(Path(__file__).resolve())
        print(f"load average before: {load_average()}")
        rows = []
        for shape in args.shapes:
            checks = {
                name: run_child([script, "--child", str(t), shape, "check", "0", "0"])
                for name, t in trees.items()
            }
            base = next(iter(checks.values()))
            for name, got in checks.items():
                for k in "UVW":
                    a = np.asarray(got["grads"][k])  # type: ignore[index]
                    b = np.asarray(base["grads"][k])  # type: ignore[index]
                    err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
                    if err > 2e-4:
                        raise SystemExit(f"{name} disagrees with the baseline on d{k}: {err:.1e}")
            cmds = {
                name: [
                    script, "--child", str(t), shape, "time", str(args.chunks),
                    str(args.chunk_seconds),
                ]
                for name, t in trees.items()
            }  # fmt: skip
            out = alternate(cmds, args.reps)
            first = next(iter(out.values()))
            for name, runs in out.items():
                ms = [float(r["ms"]) for r in runs]  # type: ignore[arg-type]
                ratio = [m / float(f["ms"]) for m, f in zip(ms, first, strict=True)]  # type: ignore[arg-type]
                rows.append((shape, name, spread(ms).fmt(3), spread(ratio).fmt(2)))
        print(f"\nload average after: {load_average()}\n")
        print("| shape | revision | ms/step median [min–max] | / first revision |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        for path in trees.values():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                check=False, capture_output=True,
            )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
