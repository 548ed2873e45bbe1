"""Regenerate every benchmark table in docs/benchmarks.md (and the README summary) at once.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run_all.py
    python benchmarks/run_all.py --only step train      # some sections
    python benchmarks/run_all.py --quick                # fewer rounds, a smoke test

Tables are kept per machine: each section of docs/benchmarks.md between
``<!-- BEGIN generated: NAME@MACHINE -->`` and ``<!-- END generated: NAME@MACHINE -->`` holds
one benchmark's output on one machine (MACHINE: :func:`_machine.machine_slug`, from the CPU
model, core count and BLAS kernel). A run replaces this machine's block of each section, or,
on a machine not yet in the document, adds a new block after the section's last one, under a
heading that names the machine; the other machines' tables stay. Every block starts with the
machine's name and the load average. The README's summary (``step_summary``) is this run's.
The rest of the text is left alone. Files are written atomically, after every run has
finished, so an interrupted run changes nothing. Run it on a quiet machine: it measures
``uptime`` and records the load average with every table, but cannot make a busy machine
quiet. The ``*_busy`` sections run with two busy-loop processes on purpose (``--load 2``).

Sections: tune (``bptt tune --force``: the loops' choices measured again, first, so that every
benchmark uses them), step (bench_step.py: bptt, PyTorch and, where installed, JAX),
step_busy (bench_step.py --load 2), train (bench_train.py), train_busy (bench_train.py
--load 2), threads (bench_threads.py: the thread settings, idle and busy), profile
(profile_step.py), checkpointing (bench_checkpointing.py), quality (time_to_quality.py,
about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

sys.path.insert(0, str(HERE))

from _harness import load_average  # noqa: E402
from _machine import machine_label, machine_slug  # noqa: E402

from bptt.atomic import atomic_write_text  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
README = REPO / "README.md"
BUSY = ["--load", "2", "--no-memory", "--shapes", "minchar", "charlm", "dense", "long"]


def sections(quick: bool) -> dict[str, list[str]]:
    """Section name → the benchmark command (its ``--markdown`` file is appended)."""
    reps = ["--reps", "2", "--chunks", "2"] if quick else []
    return {
        "tune": ["-m", "bptt", "tune", "--force"],  # measured now, on the quiet machine
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
    takes_markdown = args[0] not in ("profile_step.py", "-m")
    head = args[:2] if args[0] == "-m" else [str(HERE / args[0])]
    rest = args[2:] if args[0] == "-m" else args[1:]
    full = [sys.executable, *head, *rest, *(["--markdown", str(md)] if takes_markdown else [])]
    print(f"== {name}: {' '.join(full[1:])}", flush=True)
    before = load_average()
    paths = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # `-m bptt`: this checkout
    done = subprocess.run(full, capture_output=not takes_markdown, text=True, check=True, env=env)
    text = md.read_text() if takes_markdown else done.stdout
    if args[0] == "-m":  # a command's plain output: keep its columns
        text = f"```text\n{text.strip()}\n```"
    header = f"**Machine: {machine_label()}**; load average before {before}, after {load_average()}"
    return f"{header}\n\n{text.strip()}", js


def replace_section(doc: str, name: str, body: str) -> str:
    """The text between the BEGIN/END markers of ``name`` replaced by ``body``."""
    pattern = re.compile(
        rf"(<!-- BEGIN generated: {re.escape(name)} -->\n).*?"
        rf"(\n<!-- END generated: {re.escape(name)} -->)",
        re.S,
    )
    if not pattern.search(doc):
        raise SystemExit(f"no '<!-- BEGIN generated: {name} -->' section in the document")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), doc, count=1)


def replace_machine_section(doc: str, name: str, slug: str, label: str, body: str) -> str:
    """This machine's block of section ``name`` replaced by ``body``; on a machine the
    document does not have yet, a new block (under a heading naming ``label``) after the
    section's last block, the other machines' blocks left as they are."""
    key = f"{name}@{slug}"
    if f"<!-- BEGIN generated: {key} -->" in doc:
        return replace_section(doc, key, body)
    ends = list(re.finditer(rf"<!-- END generated: {re.escape(name)}(@[a-z0-9-]+)? -->", doc))
    if not ends:
        raise SystemExit(f"no '<!-- BEGIN generated: {name}@… -->' section in the document")
    at = ends[-1].end()
    block = (
        f"\n\n#### {name}: {label}\n\n<!-- BEGIN generated: {key} -->\n{body}\n"
        f"<!-- END generated: {key} -->"
    )
    return doc[:at] + block + doc[at:]


def readme_summary(js: Path) -> str:
    """The README's short table from bench_step's JSON rows."""
    rows = json.loads(js.read_text())
    jax = any(r.get("jax_ms") is not None for r in rows)
    lines = [
        "| shape | bptt ms/step | PyTorch ms/step | speed-up [min–max] |"
        + (" JAX ms/step | vs JAX |" if jax else ""),
        "|---|---|---|---|" + ("---|---|" if jax else ""),
    ]
    for r in rows:
        bptt = f"{r['bptt_ms']:.2f}" if r["bptt_ms"] is not None else "n/a"
        torch = f"{r['torch_ms']:.2f}" if r["torch_ms"] is not None else "n/a"
        ratio = (
            f"**{r['ratio']:.2f}×** [{r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}]"
            if r["ratio"] is not None
            else "-"
        )
        line = f"| {r['shape']} ({r['describe']}) | {bptt} | {torch} | {ratio} |"
        if jax:
            jms = f"{r['jax_ms']:.2f}" if r.get("jax_ms") is not None else "n/a"
            jr = f"**{r['ratio_jax']:.2f}×**" if r.get("ratio_jax") is not None else "-"
            line += f" {jms} | {jr} |"
        lines.append(line)
    lines.append("")
    lines.append(f"({machine_label()}; {rows[0]['conditions']})" if rows else "")
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
    slug, label = machine_slug(), machine_label()
    print(f"machine: {label} (tables under '@{slug}')", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            body, js = run(name, chosen[name], Path(tmp))
            doc = replace_machine_section(doc, name, slug, label, body)
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
