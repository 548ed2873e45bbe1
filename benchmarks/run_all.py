"""Regenerate every benchmark table in docs/benchmarks.md (and the README summary) at once.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run_all.py
    python benchmarks/run_all.py --only step train      # some sections
    python benchmarks/run_all.py --quick                # fewer rounds, a smoke test

Each section of the documents between ``<!-- BEGIN generated: NAME -->`` and
``<!-- END generated: NAME -->`` is replaced by the output of one benchmark run; the rest of
the text is left alone. Files are written atomically, after every run has finished, so an
interrupted run changes nothing. Run it on a quiet machine: it measures ``uptime`` and
records the load average with every table, but cannot make a busy machine quiet. The
``*_busy`` sections run with two busy-loop processes on purpose (``--load 2``).

Sections: step (bench_step.py), step_busy (bench_step.py --load 2), train (bench_train.py),
train_busy (bench_train.py --load 2), threads (bench_threads.py: the thread settings, idle
and busy), profile (profile_step.py), checkpointing
(bench_checkpointing.py), quality (time_to_quality.py, about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from bptt.atomic import atomic_write_text  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
README = REPO / "README.md"
BUSY = ["--load", "2", "--no-memory", "--shapes", "minchar", "charlm", "dense", "long"]


def sections(quick: bool) -> dict[str, list[str]]:
    """Section name → the benchmark command (its ``--markdown`` file is appended)."""
    reps = ["--reps", "2", "--chunks", "2"] if quick else []
    return {
        "step": ["bench_step.py", *reps, "--json", "{json}"],
        "step_busy": ["bench_step.py", *BUSY, *(reps or ["--reps", "3", "--chunks", "3"])],
        "train": ["bench_train.py", *(["--reps", "2", "--seconds", "1"] if quick else [])],
        "train_busy": ["bench_train.py", "--load", "2", "--reps", "2" if quick else "3"],
        "threads": ["bench_threads.py", *(["--reps", "1", "--shapes", "sine"] if quick else [])],
        "profile": ["profile_step.py", *(["--reps", "3"] if quick else [])],
        "checkpointing": ["bench_checkpointing.py", *(["--reps", "1"] if quick else [])],
        "quality": ["time_to_quality.py", *(["--budget", "10"] if quick else [])],
    }


def run(name: str, cmd: list[str], tmp: Path) -> tuple[str, Path]:
    """Run one benchmark; its table (the ``--markdown`` file, or its stdout)."""
    md, js = tmp / f"{name}.md", tmp / f"{name}.json"
    args = [a.replace("{json}", str(js)) for a in cmd]
    script = str(HERE / args[0])
    takes_markdown = args[0] != "profile_step.py"
    full = [sys.executable, script, *args[1:], *(["--markdown", str(md)] if takes_markdown else [])]
    print(f"== {name}: {' '.join(full[1:])}", flush=True)
    done = subprocess.run(full, capture_output=not takes_markdown, text=True, check=True)
    text = md.read_text() if takes_markdown else done.stdout
    return text.strip(), js


def replace_section(doc: str, name: str, body: str) -> str:
    """The text between the BEGIN/END markers of ``name`` replaced by ``body``."""
    pattern = re.compile(
        rf"(<!-- BEGIN generated: {name} -->\n).*?(\n<!-- END generated: {name} -->)", re.S
    )
    if not pattern.search(doc):
        raise SystemExit(f"no '<!-- BEGIN generated: {name} -->' section in the document")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), doc, count=1)


def readme_summary(js: Path) -> str:
    """The README's short table from bench_step's JSON rows."""
    rows = json.loads(js.read_text())
    lines = [
        "| shape | bptt ms/step | PyTorch ms/step | speed-up [min–max] |",
        "|---|---|---|---|",
    ]
    for r in rows:
        bptt = f"{r['bptt_ms']:.2f}" if r["bptt_ms"] is not None else "n/a"
        torch = f"{r['torch_ms']:.2f}" if r["torch_ms"] is not None else "n/a"
        ratio = (
            f"**{r['ratio']:.2f}×** [{r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}]"
            if r["ratio"] is not None
            else "-"
        )
        lines.append(f"| {r['shape']} ({r['describe']}) | {bptt} | {torch} | {ratio} |")
    lines.append("")
    lines.append(f"({rows[0]['conditions']})" if rows else "")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    all_sections = sections(False)
    parser.add_argument("--only", nargs="+", choices=list(all_sections), default=None)
    parser.add_argument("--quick", action="store_true", help="few rounds: check it runs")
    parser.add_argument("--dry-run", action="store_true", help="run, but write no document")
    args = parser.parse_args(argv)
    chosen = sections(args.quick)
    names = args.only or list(chosen)
    doc, readme = DOC.read_text(), README.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            body, js = run(name, chosen[name], Path(tmp))
            doc = replace_section(doc, name, body)
            if name == "step":
                readme = replace_section(readme, "step_summary", readme_summary(js))
    if args.dry_run:
        print(doc)
        return 0
    atomic_write_text(DOC, doc)
    atomic_write_text(README, readme)
    print(f"updated {DOC.relative_to(REPO)} ({', '.join(names)}) and README.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
