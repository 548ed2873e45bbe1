"""Issue 20, sweeps as safe as runs (no Ray cluster is started here: every case is refused
before one would be): a foreign --out, a locked sweep, a spec that cannot run, an --address
where nothing listens, --report over records of any JSON shape."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from bptt.cli import main
from bptt.rundir import SWEEP_MARKER, RunDirLock
from bptt.sweep import SpecError, load_spec

pytest.importorskip("ray")

GOOD = """
[base]
task = "adding"
seq_len = 20
steps = 200
[space]
lr = [1e-3, 3e-3]
[sweep]
seeds = [0, 1]
metric = "val_mse"
"""


def _spec(folder: Path, text: str = GOOD) -> Path:
    path = folder / "spec.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _err(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


BAD = [
    ("[sweep.asha]\nreduction_factor = nan\n", "asha", "finite"),
    ("[sweep.asha]\nreduction_factor = 1.0000001\n", "asha", "rungs"),
    ("[sweep.asha]\nbrackets = 1000000000\n", "asha", "brackets"),
    ("", "fifo", "cpus_per_trial", "cpus_per_trial = nan"),
    ("", "fifo", "cpus_per_trial", "cpus_per_trial = 1e308"),
    ("", "fifo", "cpus_per_trial", "cpus_per_trial = 1e-9"),
    ("", "fifo", "search_seed", "search_seed = -1"),
    (
        "[sweep.pbt]\ninterval = 10\nfactors = [nan, 0.8]\nmutations = { lr = [1e-3, 1e-2] }\n",
        "pbt",
        "finite",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[-1] for c in BAD])
def test_a_spec_that_cannot_run_is_refused_and_leaves_nothing(tmp_path, capsys, case):
    table, scheduler, word, *extra = case
    text = GOOD.replace("[sweep]", "[sweep]\n" + "\n".join(extra))
    text += f'scheduler = "{scheduler}"\n' if scheduler != "fifo" else ""
    path = _spec(tmp_path, text + table)
    with pytest.raises(SpecError, match=word):
        load_spec(path)
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    _err(capsys, word)
    assert not out.exists()


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    axes = "\n".join(f"{k} = {list(range(1, 1001))}" for k in ("hidden", "batch", "seq_len"))
    text = GOOD.replace(
        "lr = [1e-3, 3e-3]", axes + "\nlr = " + str([1e-3 * k for k in range(1, 1001)])
    )
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="trials"):
        load_spec(_spec(tmp_path, text))
    assert time.perf_counter() - t0 < 10


def test_relative_paths_are_made_absolute_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = GOOD.replace('task = "adding"\nseq_len = 20', 'task = "csv"\ncsv = "series.csv"')
    with pytest.raises(SpecError, match=r"series\.csv"):
        load_spec(_spec(tmp_path, text))
    (tmp_path / "series.csv").write_text("x\n" + "\n".join(str(i % 7) for i in range(600)))
    spec = load_spec(_spec(tmp_path, text))
    assert spec.base["csv"] == str(tmp_path / "series.csv")


def test_a_spec_without_space_round_trips(tmp_path):
    text = GOOD.replace("[space]\nlr = [1e-3, 3e-3]\n", "")
    spec = load_spec(_spec(tmp_path, text))
    assert spec.space == {} and "space" not in spec.to_dict()
    assert load_spec(spec.to_dict()) == spec
    assert load_spec(json.loads(json.dumps(spec.to_dict())) | {"space": {}}) == spec


def test_a_foreign_out_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.md").write_text("my notes")
    (out / "sweep.csv").write_text("a,b\n1,2\n")
    before = _snapshot(out)
    assert main(["sweep", str(_spec(tmp_path)), "--out", str(out)]) == 2
    _err(capsys, "not a bptt sweep directory")
    assert main(["sweep", "--report", str(out)]) == 2
    _err(capsys, "no sweep")
    assert _snapshot(out) == before


def test_a_run_directory_is_not_a_sweep(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--task", "adding", "--hidden", "3", "--seq-len", "4", "--batch", "2"]
    assert main([*argv, "--steps", "1", "--no-progress", "--no-plot", "--out", str(run)]) == 0
    before = _snapshot(run)
    assert main(["sweep", str(_spec(tmp_path)), "--out", str(run)]) == 2
    _err(capsys, "run directory")
    assert _snapshot(run) == before


def test_a_locked_sweep_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    with RunDirLock(out, kind="sweep"):
        assert (out / SWEEP_MARKER).is_file()
        assert main(["sweep", str(_spec(tmp_path)), "--out", str(out), "--resume"]) == 2
        _err(capsys, "in use by another bptt process")


def test_address_with_nothing_listening_gives_up(tmp_path, capsys):
    out = tmp_path / "sweep"
    t0 = time.perf_counter()
    assert main(["sweep", str(_spec(tmp_path)), "--out", str(out), "--address", "127.0.0.1:1"])
    assert time.perf_counter() - t0 < 30
    _err(capsys, "--address", "127.0.0.1:1")
    assert not (out / "sweep.json").exists()


def _sweep_dir(folder: Path, sweep_json: object, records: list[object]) -> Path:
    out = folder / "sweep"
    (out / "trials").mkdir(parents=True)
    spec = load_spec(_spec(folder)).to_dict()
    (out / "sweep.json").write_text(
        sweep_json if isinstance(sweep_json, str) else json.dumps({"version": 1, "spec": spec})
    )
    for i, r in enumerate(records):
        (out / "trials" / f"t{i}").mkdir()
        (out / "trials" / f"t{i}" / "trial.json").write_text(
            r if isinstance(r, str) else json.dumps(r)
        )
    return out


GOOD_RECORD = {
    "trial": "t0",
    "config": {"lr": 0.001},
    "seed": 0,
    "status": "done",
    "error": None,
    "steps": 200,
    "time_s": 1.0,
    "history": [{"step": 200, "time_s": 1.0, "val_mse": 0.5}],
    "exploits": [],
    "trainings": 1,
}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "sweep_json", ['{"version": 1}', '{"version": 1, "spec": null}', DEEP, "[1]", "nonsense"]
)
def test_report_on_a_broken_sweep_json_is_a_message(tmp_path, capsys, sweep_json):
    out = _sweep_dir(tmp_path, sweep_json, [GOOD_RECORD])
    assert main(["sweep", "--report", str(out)]) == 2
    _err(capsys, "sweep")


def test_report_reads_trial_records_of_any_shape(tmp_path, capsys):
    broken = [
        GOOD_RECORD,
        {k: v for k, v in GOOD_RECORD.items() if k != "config"},
        GOOD_RECORD | {"config": None},
        GOOD_RECORD
        | {"history": [None, 3, {"step": "x"}, {"step": 1, "time_s": 1, "val_mse": "a"}]},
        GOOD_RECORD | {"seed": [[[]]], "steps": None, "time_s": "x", "status": 5},
        GOOD_RECORD | {"config": {"lr": [[1]]}},
        [1, 2],
        3,
        "null",
        DEEP,
    ]
    out = _sweep_dir(tmp_path, None, broken)
    assert main(["sweep", "--report", str(out)]) == 0
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # the header, the good record and the two that keep their shape


def test_report_of_a_sweep_without_space(tmp_path, capsys):
    out = _sweep_dir(tmp_path, None, [GOOD_RECORD | {"config": {}}])
    spec = load_spec(_spec(tmp_path, GOOD.replace("[space]\nlr = [1e-3, 3e-3]\n", "")))
    (out / "sweep.json").write_text(json.dumps({"version": 1, "spec": spec.to_dict()}))
    assert main(["sweep", "--report", str(out)]) == 0
    assert len((out / "sweep.csv").read_text().splitlines()) == 2
    # a sweep.json an older bptt wrote, with an empty space table, reads the same
    (out / "sweep.json").write_text(
        json.dumps({"version": 1, "spec": spec.to_dict() | {"space": {}}})
    )
    assert main(["sweep", "--report", str(out)]) == 0


def test_more_cpus_per_trial_than_cores_is_refused_before_ray_starts(tmp_path, capsys):
    path = _spec(tmp_path, GOOD.replace("[sweep]", "[sweep]\ncpus_per_trial = 3"))
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out), "--num-cpus", "2"]) == 2
    _err(capsys, "cpus_per_trial")
    assert not out.exists()
