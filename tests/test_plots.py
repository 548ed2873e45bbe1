"""Loss-curve PNG, and the message when matplotlib is missing."""

from __future__ import annotations

import json
import sys

import pytest

from bptt.training.plots import plot_metrics


def _log(tmp_path) -> None:
    lines = [{"step": s, "kind": "train", "loss": 3.0 / s} for s in range(1, 11)]
    lines += [{"step": 10, "kind": "eval", "val_loss": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_writes_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    _log(tmp_path)
    path = plot_metrics(tmp_path)
    assert path == tmp_path / "loss.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "metrics.jsonl"]


def test_missing_matplotlib_message(tmp_path, monkeypatch) -> None:
    _log(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'bptt\[plot\]'"):
        plot_metrics(tmp_path)
