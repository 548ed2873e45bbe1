"""bptt sweep: a bad spec or a missing extra is refused before anything starts (exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bptt.cli import main
from bptt.sweep import SpecError, load_spec

GOOD = """
[base]
task = "adding"
seq_len = 20
steps = 200
[space]
lr = [1e-3, 3e-3]
hidden = [16, 32]
[sweep]
seeds = [0, 1]
metric = "val_mse"
parallel = 2
scheduler = "fifo"
"""


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_issue_spec_loads_as_written(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, GOOD))
    assert spec.base == {"task": "adding", "seq_len": 20, "steps": 200}
    assert spec.space == {"lr": [1e-3, 3e-3], "hidden": [16, 32]}
    assert (spec.seeds, spec.metric, spec.mode) == ([0, 1], "val_mse", "min")
    assert (spec.parallel, spec.scheduler) == (2, "fifo")
    assert load_spec(spec.to_dict()) == spec  # what sweep.json stores reads back the same
    assert spec.max_failures == 0  # a failed trial is not retried unless the spec says so


def test_max_failures_is_read_and_round_trips(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, GOOD.replace("parallel = 2", "max_failures = 3")))
    assert spec.max_failures == 3
    assert spec.to_dict()["sweep"]["max_failures"] == 3
    assert load_spec(spec.to_dict()) == spec


BAD = [
    # unknown field, in [base] and in [space]
    (GOOD.replace('task = "adding"', 'task = "adding"\nlearning_rate = 0.1'), "learning_rate"),
    (GOOD.replace("lr = [1e-3, 3e-3]", "lrate = [1e-3, 3e-3]"), "lrate"),
    (GOOD.replace("[sweep]", "[sweep]\nworkers = 3"), "workers"),
    (GOOD + "\n[extra]\nx = 1\n", "extra"),
    # the sweep's own fields
    (GOOD.replace("hidden = [16, 32]", "seed = [1, 2]"), "seed"),
    # empty space
    (GOOD.replace("lr = [1e-3, 3e-3]", "lr = []"), r"\[space\]\.lr is an empty list"),
    (
        GOOD.replace("lr = [1e-3, 3e-3]\nhidden = [16, 32]", ""),
        r"\[space\] is empty",
    ),
    (
        GOOD.replace("lr = [1e-3, 3e-3]", 'lr = { dist = "loguniform", low = 0.1, high = 0.1 }'),
        "range is empty",
    ),
    (GOOD.replace("lr = [1e-3, 3e-3]", 'lr = { dist = "choice", values = [] }'), "non-empty"),
    (GOOD.replace("seeds = [0, 1]", "seeds = []"), "seeds"),
    # a metric the task does not report
    (GOOD.replace('metric = "val_mse"', 'metric = "val_accuracy"'), "not reported by task"),
    (
        # the copy task's length is its own (--delay + 2 --copy-len), not seq_len
        GOOD.replace('task = "adding"', 'task = "copy"').replace("seq_len = 20\n", ""),
        "'val_mse' is not reported by task 'copy'.*val_accuracy",
    ),
    # scheduler options out of range
    (GOOD.replace('"fifo"', '"asha"') + "[sweep.asha]\nreduction_factor = 1\n", "> 1"),
    (GOOD.replace('"fifo"', '"asha"') + "[sweep.asha]\ngrace_period = 500\n", "<= the trials'"),
    (GOOD.replace('"fifo"', '"asha"') + "[sweep.asha]\ngrace_period = 0\n", ">= 1"),
    (
        GOOD.replace('"fifo"', '"pbt"')
        + "[sweep.pbt]\ninterval = 20\nquantile_fraction = 0.7\nmutations = { lr = [1e-3] }\n",
        r"quantile_fraction must lie in \(0, 0.5\]",
    ),
    (
        GOOD.replace('"fifo"', '"pbt"')
        + "[sweep.pbt]\ninterval = 20\nresample_probability = 2\nmutations = { lr = [1e-3] }\n",
        "resample_probability",
    ),
    (GOOD.replace('"fifo"', '"pbt"') + "[sweep.pbt]\nmutations = { lr = [1e-3] }\n", "interval"),
    (
        GOOD.replace('"fifo"', '"pbt"')
        + "[sweep.pbt]\ninterval = 20\nmutations = { hidden = [8] }\n",
        "cannot perturb 'hidden'",
    ),
    (GOOD.replace('"fifo"', '"hyperband"'), "fifo, asha, pbt"),
    (GOOD.replace("parallel = 2", "parallel = 0"), "parallel"),
    # retries of a failed trial: an integer in [0, 100]
    (GOOD.replace("parallel = 2", "max_failures = -1"), r"max_failures must lie in \[0, 100\]"),
    (GOOD.replace("parallel = 2", "max_failures = 101"), r"max_failures must lie in \[0, 100\]"),
    (GOOD.replace("parallel = 2", "max_failures = 1.5"), "max_failures must be an integer"),
    (GOOD.replace("parallel = 2", "max_failures = true"), "max_failures must be an integer"),
    # no configuration can run at all
    (GOOD.replace("hidden = [16, 32]", "hidden = [-1, 0]"), "no configuration"),
    ("[base\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "match"), BAD)
def test_bad_spec_raises_spec_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        load_spec(_spec(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [BAD[0], BAD[5], BAD[10], BAD[12], BAD[15]],
    ids=["unknown-field", "empty-space", "metric", "asha-option", "pbt-option"],
)
def test_bad_spec_exits_2_and_starts_nothing(tmp_path: Path, capsys, text, match) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", str(_spec(tmp_path, text)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bptt sweep: error: ")
    assert re.search(match, err), err
    assert not out.exists()


def test_missing_spec_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_extra_names_it_and_starts_nothing(tmp_path: Path) -> None:
    """Without Ray installed (import blocked), the good spec is refused with the extra's name."""
    spec = _spec(tmp_path, GOOD)
    code = (
        "import sys; sys.modules['ray'] = None; from bptt.cli import main; "
        f"sys.exit(main(['sweep', {str(spec)!r}, '--out', {str(tmp_path / 'o')!r}]))"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("bptt sweep: error: ")
    assert "pip install 'bptt[sweep]'" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_report_of_a_directory_without_a_sweep_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "--report", str(tmp_path)]) == 2
    assert "no sweep" in capsys.readouterr().err


DOCS = Path(__file__).parents[1] / "docs"


def _toml_blocks(markdown: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in markdown.splitlines():
        if line.strip() == "```toml":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current) + "\n")
        elif inside:
            current.append(line)
    return blocks


def test_the_specs_in_docs_are_the_files_and_load() -> None:
    """docs/sweeps.md shows its example specs as they are in docs/sweeps/*.toml, and each
    (and the format example at the top) passes every check a sweep makes before it starts."""
    blocks = _toml_blocks((DOCS / "sweeps.md").read_text(encoding="utf-8"))
    assert len(blocks) == 3
    tomllib = pytest.importorskip("tomllib")
    assert tomllib.loads(blocks[0]) == tomllib.loads(GOOD)
    for block, name in zip(blocks[1:], ("adding_grid.toml", "charlm_pbt.toml"), strict=True):
        text = (DOCS / "sweeps" / name).read_text(encoding="utf-8")
        assert tomllib.loads(block) == tomllib.loads(text), name
        load_spec(DOCS / "sweeps" / name)


def test_quiet_and_verbose_together_exit_2(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path, GOOD)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "s"), "--quiet", "--verbose"]) == 2
    assert "--quiet and --verbose" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
