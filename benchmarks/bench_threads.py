"""How many threads the time loops and products should use: bptt's step under each setting.

    python benchmarks/bench_threads.py               # idle machine, then --load 2 beside it
    python benchmarks/bench_threads.py --loads 0     # idle only

For each shape and each ``BPTT_LOOP_THREADS`` setting, ``model.loss_and_grads`` is timed in
fresh processes (``bench_step.py``'s timing child), the settings alternated, repeated; the
table quotes the median [min–max] ms per step. Settings:

- ``auto`` (the default): as many row shards as cores (capped by B/4 and BLAS's setting),
  large hoisted products split into row blocks, everything else single-threaded;
- ``1``: one shard, every product single-threaded (the whole step on one core);
- ``2``: two shards and two row blocks wherever the sizes allow;
- ``0``: the NumPy loops with BLAS's own threads everywhere (the behaviour before issue 11).

``sine`` (T50 B32 H32, 1 float in and out) is the small step of issue 11's busy-machine
report. The same runs with ``--load 2`` (two busy-loop processes) show how each setting
degrades when another program uses the cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _harness import CompetingLoad, load_average, run_child, spread  # noqa: E402
from _machine import report  # noqa: E402
from bench_step import SHAPES  # noqa: E402

SETTINGS = ("auto", "1", "2", "0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ["sine", "charlm", "dense", "long"]
    parser.add_argument("--shapes", nargs="+", default=names, choices=names)
    parser.add_argument("--loads", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    script = str(HERE / "bench_step.py")
    lines = [
        "| shape | load | " + " | ".join(f"BPTT_LOOP_THREADS={s}" for s in SETTINGS) + " |",
        "|---|---|" + "---|" * len(SETTINGS),
    ]
    notes = []
    for load in args.loads:
        before = load_average()
        with CompetingLoad(load):
            for name in args.shapes:
                times: dict[str, list[float]] = {s: [] for s in SETTINGS}
                for r in range(args.reps):
                    order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
                    for setting in order:
                        out = run_child(
                            [script, "--time-child", "bptt", name, "3", "0.2"],
                            env={"BPTT_LOOP_THREADS": setting},
                        )
                        times[setting].append(float(out["ms"]))  # type: ignore[arg-type]
                cells = " | ".join(spread(times[s]).fmt(2) for s in SETTINGS)
                lines.append(f"| {name} ({SHAPES[name].describe()}) | {load} | {cells} |")
                print(lines[-1], flush=True)
        notes.append(f"load {load}: load average before {before}, after {load_average()}")
    lines += [
        "",
        f"ms per step, median [min–max] over {args.reps} alternated rounds; " + "; ".join(notes),
    ]
    report("\n".join(lines), args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
