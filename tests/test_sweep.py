"""bptt sweep on a real local Ray (2 CPUs, tiny runs): grid × seeds, ASHA, PBT, a failing trial.

One Ray session is shared by the module. The trials are compared with `bptt train` runs of
the same configurations launched by hand, and PBT's exploit with the donor's checkpoint file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the 'sweep' extra (ray[tune])")

from bptt.checkpoint import load_checkpoint  # noqa: E402
from bptt.cli import main  # noqa: E402
from bptt.sweep import run, start_ray  # noqa: E402

pytestmark = pytest.mark.slow

BASE = {
    "task": "adding",
    "seq_len": 10,
    "batch": 8,
    "steps": 30,
    "eval_every": 10,
    "eval_size": 32,
    "log_every": 5,
    "plot": False,
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # Other programs on a shared machine must not make Ray's memory monitor kill our trials.
    old = os.environ.get("RAY_memory_monitor_refresh_ms")
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    start_ray(num_cpus=2)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("RAY_memory_monitor_refresh_ms", None)
    else:
        os.environ["RAY_memory_monitor_refresh_ms"] = old


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "sweep.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock throughput (the one number that may differ)."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in lines]


def _trial(out: Path, row: dict[str, str]) -> Path:
    return out / "trials" / row["trial"]


def _train_by_hand(out: Path, config: dict[str, Any]) -> Path:
    args = ["train", "--out", str(out), "--no-progress"]
    for name, value in config.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    assert main(args) == 0
    return out


def test_grid_times_seeds_equals_runs_launched_by_hand(local_ray, tmp_path, capsys) -> None:
    spec = {
        "base": BASE,
        "space": {"lr": [1e-2, 3e-2], "hidden": [4, 8]},
        "sweep": {"seeds": [0, 1], "metric": "val_mse", "parallel": 2},
    }
    out = tmp_path / "sweep"
    sigint = signal.getsignal(signal.SIGINT)
    result = run(spec, out=out, verbose=False)
    assert signal.getsignal(signal.SIGINT) is sigint  # Tune's handler does not stay behind
    rows = _rows(out)
    assert len(rows) == 8 == len(list((out / "trials").iterdir()))
    assert list(rows[0])[:3] == ["lr", "hidden", "seed"]
    seen = {(float(r["lr"]), int(r["hidden"]), int(r["seed"])) for r in rows}
    assert seen == {(lr, h, s) for lr in (1e-2, 3e-2) for h in (4, 8) for s in (0, 1)}
    finals: dict[tuple[float, int], list[float]] = {}
    for row in rows:
        assert row["status"] == "done" and int(row["steps"]) == 30, row
        lr, hidden, seed = float(row["lr"]), int(row["hidden"]), int(row["seed"])
        trial = _trial(out, row)
        config = BASE | {"lr": lr, "hidden": hidden, "seed": seed}
        by_hand = _train_by_hand(tmp_path / "hand" / row["trial"], config)
        assert _records(trial) == _records(by_hand), row["trial"]
        ours = json.loads((trial / "config.json").read_text())
        theirs = json.loads((by_hand / "config.json").read_text())
        assert {k: v for k, v in ours.items() if k != "out"} == {
            k: v for k, v in theirs.items() if k != "out"
        }
        final = [r for r in _records(by_hand) if r["kind"] == "eval"][-1]["val_mse"]
        assert float(row["final_val_mse"]) == final
        finals.setdefault((lr, hidden), []).append(final)
    # the summary: mean/std/min/max over the two seeds of the hand-launched finals
    assert len(result.summary) == 4
    for entry in result.summary:
        values = np.array(finals[(entry["lr"], entry["hidden"])])
        assert entry["runs"] == 2 and entry["failed"] == 0
        assert entry["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert entry["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert (entry["min"], entry["max"]) == (values.min(), values.max())
    best = min(finals, key=lambda k: np.mean(finals[k]))
    assert result.best is not None and (result.best["lr"], result.best["hidden"]) == best
    assert (out / "summary.md").read_text().count("\n| ") == 5  # header + 4 configurations
    assert (out / "sweep.png").stat().st_size > 10_000


def test_asha_stops_the_hopeless_trials_early(local_ray, tmp_path) -> None:
    spec = {
        "base": BASE | {"hidden": 8, "steps": 60, "eval_every": 5},
        # lr 0 and 1e-5 do not learn; with 2 in parallel the two that do reach step 10 first
        "space": {"lr": [3e-2, 2e-2, 1e-5, 0.0]},
        "sweep": {
            "seeds": [0],
            "metric": "val_mse",
            "parallel": 2,
            "scheduler": "asha",
            "asha": {"grace_period": 10, "reduction_factor": 2},
        },
    }
    out = tmp_path / "asha"
    run(spec, out=out, verbose=False)
    rows = {float(r["lr"]): r for r in _rows(out)}
    for lr in (1e-5, 0.0):
        assert rows[lr]["status"] == "stopped" and int(rows[lr]["steps"]) == 10, rows[lr]
        assert _records(_trial(out, rows[lr]))[-1]["step"] == 10  # the run stopped there
    assert any(r["status"] == "done" and int(r["steps"]) == 60 for r in rows.values())


def _params_sha256(params: Any) -> str:
    h = hashlib.sha256()
    for name, arr in sorted(params.items()):
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_pbt_exploit_loads_the_donor_checkpoint_bit_exactly(local_ray, tmp_path) -> None:
    spec = {
        # long enough (10 perturbation points) that the two trials overlap however their
        # processes' start times differ; lr 1e-4 barely learns, so it is the one to exploit
        "base": BASE | {"hidden": 8, "steps": 200, "eval_every": 10},
        "space": {"lr": [1e-4, 3e-2]},
        "sweep": {
            "seeds": [0],
            "metric": "val_mse",
            "parallel": 2,
            "scheduler": "pbt",
            "pbt": {
                "interval": 20,
                "mutations": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-1}},
            },
        },
    }
    out = tmp_path / "pbt"
    run(spec, out=out, verbose=False)
    exploits = []
    rows = _rows(out)
    for row in rows:
        record = json.loads((_trial(out, row) / "trial.json").read_text())
        assert row["status"] == "done", rows
        exploits += [(row["trial"], e) for e in record["exploits"]]
        if record["exploits"]:  # the run continues under the perturbed configuration
            config = json.loads((_trial(out, row) / "config.json").read_text())
            assert config["lr"] == record["exploits"][-1]["config"]["lr"]
    assert exploits, f"PBT recorded no exploit step: {rows}"
    for name, e in exploits:
        assert e["donor"] != name
        donor = load_checkpoint(e["donor_checkpoint"])
        assert donor.step == e["step"]
        assert _params_sha256(donor.model.params) == e["params_sha256"]


def test_a_bad_configuration_fails_alone(local_ray, tmp_path) -> None:
    spec = {
        "base": BASE,
        "space": {"hidden": [4, -1]},
        "sweep": {"seeds": [0, 1], "metric": "val_mse", "parallel": 2},
    }
    out = tmp_path / "bad"
    result = run(spec, out=out, verbose=False)
    rows = _rows(out)
    assert len(rows) == 4
    for row in rows:
        if row["hidden"] == "-1":
            assert row["status"] == "error"
            assert "--hidden must be >= 1, got -1" in row["error"]
        else:
            assert row["status"] == "done" and int(row["steps"]) == 30
    bad = next(e for e in result.summary if e["hidden"] == -1)
    assert (bad["runs"], bad["failed"]) == (0, 2)
    assert result.best is not None and result.best["hidden"] == 4
