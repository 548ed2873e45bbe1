"""bptt train / sample / eval end to end through main(), with small shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bptt.checkpoint import load_checkpoint
from bptt.cli import build_parser, main
from bptt.training import TrainConfig, config_fields


def _corpus(tmp_path) -> str:
    rng = np.random.default_rng(1)
    words = ["to ", "be ", "or ", "not ", "that ", "is\n"]
    path = tmp_path / "c.txt"
    path.write_text("".join(words[i] for i in rng.integers(0, 6, size=1200)), encoding="utf-8")
    return str(path)


def _train(tmp_path, *extra: str) -> int:
    return main(
        [
            "train",
            "--text",
            _corpus(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--hidden",
            "8",
            "--seq-len",
            "5",
            "--batch",
            "3",
            "--steps",
            "12",
            "--eval-every",
            "6",
            "--sample-every",
            "6",
            "--sample-length",
            "20",
            "--no-progress",
            "--no-plot",
            *extra,
        ]
    )


def test_train_sample_eval(tmp_path, capsys) -> None:
    assert _train(tmp_path) == 0
    out = capsys.readouterr().out
    assert "--- sample at step 6 ---" in out and "val_loss" in out
    run = tmp_path / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hidden"] == 8 and cfg["steps"] == 12
    assert load_checkpoint(run).step == 12

    assert main(["sample", str(run), "--length", "40", "--seed", "5", "--prime", "to "]) == 0
    a = capsys.readouterr().out
    assert (
        main(
            [
                "sample",
                str(run / "checkpoint.safetensors"),
                "--length",
                "40",
                "--seed",
                "5",
                "--prime",
                "to ",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == a and a.startswith("to ") and len(a) == 3 + 40 + 1
    assert main(["sample", str(run), "--length", "40", "--seed", "6", "--prime", "to "]) == 0
    assert capsys.readouterr().out != a

    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    last_eval = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert m["val_loss"] == pytest.approx(last_eval["val_loss"], rel=1e-12)
    assert main(["eval", str(run), "--text", _corpus(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_chars"] > m["val_chars"]


def test_resume_continues_to_total_steps(tmp_path, capsys) -> None:
    assert _train(tmp_path) == 0
    assert _train(tmp_path, "--steps", "20", "--resume") == 0
    assert load_checkpoint(tmp_path / "run").step == 20


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["train", "--text", "/nonexistent/x.txt"], "does not exist"),
        (["sample", "/nonexistent/run"], "does not exist"),
        (["eval", "/nonexistent/run"], "does not exist"),
    ],
)
def test_bad_input_exits_nonzero_with_message(tmp_path, capsys, args, match) -> None:
    if args[0] == "train":
        args = [*args, "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bptt {args[0]}: error:") and match in err


def test_resume_with_changed_config_exits_nonzero(tmp_path, capsys) -> None:
    assert _train(tmp_path) == 0
    before = (tmp_path / "run" / "checkpoint.safetensors").read_bytes()
    assert _train(tmp_path, "--lr", "0.1", "--resume") == 2
    assert "--lr: 0.002 (checkpoint) -> 0.1 (now)" in capsys.readouterr().err
    assert _train(tmp_path) == 2  # a fresh run into a used directory
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoint.safetensors").read_bytes() == before


def test_prime_outside_vocabulary(tmp_path, capsys) -> None:
    assert _train(tmp_path) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--prime", "xyzQ"]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err


def test_cli_options_mirror_train_config() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    train = sub.choices["train"]
    dests = {a.dest for a in train._actions} - {"help", "resume", "config", "overwrite", "log"}
    assert dests == {name for name, *_ in config_fields()}
    defaults = train.parse_args([])
    assert TrainConfig(**{n: getattr(defaults, n) for n in dests}) == TrainConfig()
    help_text = train.format_help()
    for name, *_, meta in config_fields():
        assert "--" + name.replace("_", "-") in help_text
        assert meta["help"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"ab\x00cd", "looks binary"),
        (b"\xff\xfeabc", "not valid UTF-8"),
        (b"hello world", "shorter than one window"),
    ],
    ids=["empty", "binary", "latin1", "short"],
)
def test_bad_text_files_exit_2_and_write_nothing(tmp_path, capsys, content, match) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    assert (
        main(["train", "--text", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    )
    assert match in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
