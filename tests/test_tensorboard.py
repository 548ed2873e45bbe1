"""bptt train --log tensorboard: the event file in RUN/tb holds, at each step, exactly the
numbers metrics.jsonl holds (read back with an independent TFRecord reader)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboardX", reason="needs tensorboardX (the 'sweep' extra)")

from tensorboardX.proto import event_pb2

from bptt.cli import main


def _events(folder: Path) -> dict[tuple[str, int], float]:
    """Every scalar of the event files in ``folder``: TFRecords of (length u64, crc u32,
    data, crc u32), each data an Event protobuf."""
    scalars: dict[tuple[str, int], float] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw, at = path.read_bytes(), 0
        while at < len(raw):
            (length,) = struct.unpack("<Q", raw[at : at + 8])
            data = raw[at + 12 : at + 12 + length]
            at += 12 + length + 4
            event = event_pb2.Event.FromString(data)
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_log_tensorboard_writes_the_runs_scalars(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--task", "adding", "--seq-len", "10", "--hidden", "8", "--batch", "8"]
    args += ["--steps", "20", "--log-every", "5", "--eval-every", "10", "--eval-size", "32"]
    args += ["--out", str(out), "--no-progress", "--no-plot", "--log", "tensorboard"]
    assert main(args) == 0
    expected: dict[tuple[str, int], float] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        group = "val" if record["kind"] == "eval" else "train"
        for name, value in record.items():
            if name not in ("step", "kind") and isinstance(value, (int, float)):
                expected[(f"{group}/{name}", record["step"])] = float(np.float32(value))
    assert any(tag == "val/val_mse" for tag, _ in expected)
    assert {step for _, step in expected} == {5, 10, 15, 20}
    assert _events(out / "tb") == expected  # TensorBoard keeps float32


def test_without_log_there_is_no_tb_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--task", "adding", "--seq-len", "10", "--hidden", "8", "--steps", "5"]
    assert main([*args, "--out", str(out), "--no-progress", "--no-plot"]) == 0
    assert not (out / "tb").exists()


def test_a_refused_out_gets_no_tb_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "not-a-run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a non-empty folder that is not a bptt run
    args = ["train", "--task", "adding", "--seq-len", "10", "--hidden", "8", "--steps", "5"]
    assert main([*args, "--out", str(out), "--no-progress", "--log", "tensorboard"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
