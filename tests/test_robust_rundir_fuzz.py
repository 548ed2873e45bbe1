"""Issue 20: a fuzz test over run directories. Random files, symbolic links, folders and JSON
documents of any shape are placed where bptt reads and writes in a run directory; then a
random command runs on it. Whatever happens: no file outside the run changes (links point
out of it, at files and at another run), the exit is 0 or 2, a failure is one line of message
(no traceback), and no NumPy warning escapes."""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bptt.cli import main

TRAIN = [
    "train",
    "--task",
    "sine",
    "--hidden",
    "3",
    "--seq-len",
    "4",
    "--batch",
    "2",
    "--eval-every",
    "1",
    "--eval-size",
    "4",
    "--checkpoint-every",
    "1",
    "--keep-best",
    "--no-progress",
    "--no-plot",
]
#: where bptt reads and writes in a run directory
PLACES = [
    "checkpoint.safetensors",
    "config.json",
    "metrics.jsonl",
    "loss.png",
    "profile.json",
    ".lock",
    ".bptt-run",
    "best",
    "best/checkpoint.safetensors",
    ".checkpoint.safetensors.abc.tmp",
    "junk.json",
]


def _json_shape(rng: random.Random) -> str:
    shapes = [
        "[1, 2]",
        "3",
        '"text"',
        "null",
        "[" * 50_000 + "]" * 50_000,
        '{"step": "x"}',
        '{"step": null, "loss": NaN}',
        '{"format": "bptt-checkpoint", "version": 2}',
        json.dumps({"task": "sine", "hidden": -3}),
        "{",
    ]
    return rng.choice(shapes) + rng.choice(["", "\n", '\n{"step": 1}\n'])


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
    return out


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def _mutate(run: Path, outside: Path, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 3)):
        place = run / rng.choice(PLACES)
        if place.parent != run and (place.parent.is_symlink() or place.parent.is_file()):
            continue  # best/ is a link or a file now: nothing to place inside it
        _remove(place)
        place.parent.mkdir(parents=True, exist_ok=True)
        kinds = ["bytes", "json", "link-file", "link-dir", "link-run", "dir", "gone"]
        kind = rng.choices(kinds, weights=[1, 2, 2, 1, 1, 1, 1])[0]
        if kind == "bytes":
            place.write_bytes(rng.randbytes(rng.choice([0, 7, 300])))
        elif kind == "json":
            place.write_text(_json_shape(rng))
        elif kind == "link-file":
            place.symlink_to(outside / "victim.txt")
        elif kind == "link-dir":
            place.symlink_to(outside / "folder")
        elif kind == "link-run":
            place.symlink_to(outside / "other-run")
        elif kind == "dir":
            place.mkdir()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main([*TRAIN, "--steps", "2", "--out", str(out)]) == 0
    return out


def _commands(run: Path, outside: Path, rng: random.Random) -> list[str]:
    x = outside / "x.npz"
    choices = [
        [*TRAIN, "--steps", "3", "--resume", "--out", str(run)],
        [*TRAIN, "--steps", "3", "--profile-every", "1", "--resume", "--out", str(run)],
        [*TRAIN, "--steps", "1", "--out", str(run)],
        [*TRAIN, "--steps", "1", "--overwrite", "--out", str(run)],
        ["eval", str(run)],
        ["eval", str(run / "best"), "--json"],
        ["predict", str(run), "--data", str(x), "--out", str(outside / "pred.npz")],
        ["predict", str(run), "--data", str(x), "--out", str(run / rng.choice(PLACES))],
        ["export", str(run), "--format", "torch", "--out", str(run / rng.choice(PLACES))],
        ["export", str(run), "--format", "torch", "--out", str(outside / "w.safetensors")],
        ["inspect", str(run), "--no-plots", "--out", str(outside / "insp")],
        ["sample", str(run)],
    ]
    return rng.choice(choices)


@pytest.mark.parametrize("seed", range(150))
def test_fuzzed_run_directory(base_run, tmp_path, capsys, seed):
    rng = random.Random(seed)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    (outside / "folder").mkdir()
    (outside / "folder" / "keep.txt").write_text("keep\n")
    shutil.copytree(base_run, outside / "other-run")
    np.savez(outside / "x.npz", X=np.zeros((5, 2, 1), np.float32))
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    _mutate(run, outside, rng)
    before = _snapshot(outside)
    argv = _commands(run, outside, rng)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(err.splitlines()) == 1, (argv, err)
        assert err.startswith(f"bptt {argv[0]}: error: ") and "Traceback" not in err
    after = _snapshot(outside)
    new = {k for k in after if k not in before}
    assert {k: after[k] for k in before} == before, argv  # nothing there changed
    assert all(k.split("/")[0] in ("pred.npz", "w.safetensors", "insp") for k in new), new
