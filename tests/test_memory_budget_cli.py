"""``bptt plan`` and ``bptt train --memory-budget``: the schedule shown, training unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bptt.algorithms import budget
from bptt.cli import main
from bptt.training import TrainConfig, Trainer


def test_plan_prints_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--seq-len", "2000", "--batch", "4", "--hidden", "32"]
    assert main([*args, "--memory-budget", "3MB"]) == 0
    out = capsys.readouterr().out
    assert "T=2000 B=4 inputs=ids" in out
    assert re.search(r"\d+ blocks of \d+ steps", out) and "checkpoint slots" in out
    assert re.search(r"predicted peak [\d.]+ [kM]B of budget 3 MB", out)
    assert re.search(r"predicted time [\d.]+x full storage's", out)
    assert main([*args, "--memory-budget", "10GB"]) == 0
    assert "full storage: every step kept" in capsys.readouterr().out


def test_plan_refuses_naming_the_smallest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--seq-len", "500", "--batch", "2", "--memory-budget", "1kB"]) == 2
    err = capsys.readouterr().err
    assert "bptt plan: error:" in err and "smallest budget that works" in err
    assert main(["plan", "--memory-budget", "lots"]) == 2
    assert "must be bytes with an optional unit" in capsys.readouterr().err


def test_config_checks_the_budget() -> None:
    with pytest.raises(ValueError, match="--memory-budget must be bytes"):
        TrainConfig(memory_budget="12 parsecs")
    with pytest.raises(ValueError, match=r"--memory-budget .* --algorithm bptt"):
        TrainConfig(memory_budget="1MB", algorithm="rtrl")


@pytest.mark.parametrize(("task", "memory_budget"), [("adding", "30kB"), ("charlm", "42kB")])
def test_training_under_a_budget_equals_full_storage(
    task: str, memory_budget: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run with and without --memory-budget ends with the same weights (exact
    gradients); the budgeted one really recomputed."""
    blocks: list[int] = []
    run = budget.run_schedule

    def spy(model, schedule, *rest):  # type: ignore[no-untyped-def]
        blocks.append(schedule.blocks)
        return run(model, schedule, *rest)

    monkeypatch.setattr(budget, "run_schedule", spy)
    text = tmp_path / "c.txt"
    text.write_text("to be or not to be, that is the question\n" * 80, encoding="utf-8")
    common = dict(
        task=task,
        hidden=8,
        seq_len=60,
        batch=2,
        steps=3,
        eval_every=3,
        eval_size=8,
        eval_windows=1,
        sample_every=0,
        progress=False,
        plot=False,
        dtype="float64",
    )
    if task == "charlm":
        common["text"] = str(text)
    weights = []
    for name, limit in (("full", None), ("budget", memory_budget)):
        config = TrainConfig(out=str(tmp_path / name), memory_budget=limit, **common)
        trainer = Trainer(config, echo=None)
        trainer.train()
        weights.append(trainer.model.params)
    assert blocks and all(b > 1 for b in blocks)  # every update recomputed
    for key, full in weights[0].items():
        np.testing.assert_allclose(weights[1][key], full, rtol=1e-9, atol=1e-12)
