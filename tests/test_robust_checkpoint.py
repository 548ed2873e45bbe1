"""Issue 12 items 4, 9, 10, 13: checkpoint metadata is authenticated, schema-checked and read
with bounded memory; foreign files and NaN weights get clear errors."""

from __future__ import annotations

import copy
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from bptt.checkpoint import CheckpointError, load_checkpoint
from bptt.cli import main
from checkpoint_forge import forge, make_checkpoint, npz_with_member, sign, split

FORMATS = ["safetensors", "npz"]


def _set(meta: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(meta)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


# -- item 4: the digest covers everything read back -------------------------------------------

EDITS = [
    (("step",), 16),
    (("optimizer", "t"), 3),
    (("data", "window"), 5),
    (("rng", "state", "state"), 12345),
    (("vocab", "chars"), ["a", "b", "c", "f"]),
    (("model", "hidden_activation"), "relu"),
    (("config", "lr"), 0.02),
    (("metrics", "best"), 0.5),
    (("task",), "adding"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("where", "value"), EDITS, ids=[".".join(e[0]) for e in EDITS])
def test_an_edited_metadata_field_is_corruption(tmp_path, fmt, where, value) -> None:
    path = make_checkpoint(tmp_path, fmt)
    _, meta, tensors = split(path)
    forge(path, _set(meta, where, value), tensors, fmt, resign=False)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_documented_digest_is_the_one_written(tmp_path, fmt) -> None:
    path = make_checkpoint(tmp_path, fmt)
    _, meta, tensors = split(path)
    assert meta["sha256"] == sign(meta, tensors)


# -- item 9: malformed metadata, correctly signed, is a CheckpointError ------------------------


def _deep(n: int) -> str:
    return "[" * n + "]" * n


FORGED = {
    "missing step": lambda m: {k: v for k, v in m.items() if k != "step"},
    "step float": lambda m: _set(m, ("step",), 1.5),
    "step bool": lambda m: _set(m, ("step",), True),
    "step negative": lambda m: _set(m, ("step",), -4),
    "step huge": lambda m: _set(m, ("step",), 10**30),
    "optimizer list": lambda m: _set(m, ("optimizer",), [1, 2]),
    "optimizer t str": lambda m: _set(m, ("optimizer", "t"), "3"),
    "data str": lambda m: _set(m, ("data",), "x"),
    "data window nested": lambda m: _set(m, ("data", "window"), {"a": 1}),
    "metrics list": lambda m: _set(m, ("metrics",), [["best", 1]]),
    "config nested": lambda m: _set(m, ("config", "hidden"), [5]),
    "rng wrong generator": lambda m: _set(m, ("rng", "bit_generator"), "MT19937"),
    "rng state too big": lambda m: _set(m, ("rng", "state", "state"), 2**130),
    "vocab unsorted": lambda m: _set(m, ("vocab", "chars"), ["b", "a", "c", "é"]),
    "vocab size": lambda m: _set(m, ("vocab", "chars"), ["a", "b"]),
    "model relu unknown": lambda m: _set(m, ("model", "hidden_activation"), "gelu"),
    "model sizes": lambda m: _set(m, ("model", "hidden_size"), 6),
    "model dtype": lambda m: _set(m, ("model", "dtype"), "float64"),
    "extra key": lambda m: {**m, "surprise": 1},
    "task number": lambda m: _set(m, ("task",), 3),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_metadata_is_a_checkpoint_error(tmp_path, fmt, name) -> None:
    path = make_checkpoint(tmp_path, fmt)
    _, meta, tensors = split(path)
    forge(path, FORGED[name](meta), tensors, fmt)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "text",
    ['{"format": "bptt-checkpoint", "version": 2, "step": 1e400}', _deep(100_000), "[" * 50_000],
    ids=["step 1e400", "deeply nested", "unclosed nesting"],
)
def test_unparseable_metadata_is_a_checkpoint_error(tmp_path, fmt, text) -> None:
    path = make_checkpoint(tmp_path, fmt)
    _, _, tensors = split(path)
    forge(path, text, tensors, fmt)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_cli_reports_forged_metadata_as_an_error(tmp_path, capsys) -> None:
    path = make_checkpoint(tmp_path, "safetensors")
    _, meta, tensors = split(path)
    forge(path, FORGED["missing step"](meta), tensors, "safetensors")
    assert main(["sample", str(path), "--length", "3"]) == 2
    assert "bptt sample: error: checkpoint" in capsys.readouterr().err


# -- item 10: declared sizes checked before allocating -----------------------------------------


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _expect_error_within(path, limit: int) -> None:
    def load() -> None:
        with pytest.raises(CheckpointError):
            load_checkpoint(path)

    peak = _peak_bytes(load)
    assert peak < limit, f"loading a forged {path.stat().st_size}-byte file peaked at {peak} B"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_claimed_huge_model_is_refused_before_it_is_built(tmp_path, fmt) -> None:
    path = make_checkpoint(tmp_path, fmt)
    _, meta, tensors = split(path)
    forge(path, _set(meta, ("model", "hidden_size"), 3000), tensors, fmt)
    _expect_error_within(path, 8 << 20)  # the 3000² float32 W alone would be 36 MB


def _npy_header(descr: str, n: int) -> bytes:
    """A version-1.0 .npy header (128 bytes) declaring a 1-D array of n items."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}".encode()
    return b"\x93NUMPY\x01\x00v\x00" + text.ljust(117, b" ") + b"\n"


def test_a_compressed_npz_member_is_not_inflated(tmp_path) -> None:
    base = make_checkpoint(tmp_path / "a", "npz")
    bomb = tmp_path / "bomb.npz"
    header = (
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (16777216,), }"
    )
    header = header.ljust(127, b" ") + b"\n"
    chunks = [header] + [bytes(1 << 20)] * 64  # 64 MiB of zeros, a few hundred KiB deflated
    npz_with_member(bomb, base, "params.U.npy", chunks, compression=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    _expect_error_within(bomb, 4 << 20)


def test_an_npy_header_claiming_a_huge_shape_is_refused(tmp_path) -> None:
    base = make_checkpoint(tmp_path / "a", "npz")
    liar = tmp_path / "liar.npz"
    header = (
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000,), }"
    )
    header = header.ljust(127, b" ") + b"\n"
    npz_with_member(liar, base, "params.U.npy", [header, bytes(64)])
    _expect_error_within(liar, 4 << 20)


def test_unknown_npz_members_are_refused_unread(tmp_path) -> None:
    base = make_checkpoint(tmp_path / "a", "npz")
    other = tmp_path / "other.npz"
    npz_with_member(other, base, "evil.npy", [bytes(1 << 20)])
    with pytest.raises(CheckpointError, match="unexpected"):
        load_checkpoint(other)


def test_safetensors_header_offsets_beyond_the_file_are_refused(tmp_path) -> None:
    path = make_checkpoint(tmp_path, "safetensors")
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["params.W"]["shape"] = [100000, 100000]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])
    _expect_error_within(path, 4 << 20)


# -- item 13: foreign files and NaN weights --------------------------------------------------


def test_a_foreign_file_is_not_called_truncated(tmp_path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_bytes(b"hello, this is a plain text file and no checkpoint at all\n" * 3)
    with pytest.raises(CheckpointError, match="is not a bptt checkpoint") as info:
        load_checkpoint(path)
    assert "header says" not in str(info.value)


def test_a_device_is_not_read(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint("/dev/zero")


@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_weights_are_refused_at_load(tmp_path, fmt) -> None:
    path = make_checkpoint(tmp_path, fmt)
    _, meta, tensors = split(path)
    tensors["params.W"] = tensors["params.W"].copy()
    tensors["params.W"][1, 2] = np.nan
    forge(path, meta, tensors, fmt)
    with pytest.raises(CheckpointError, match=r"non-finite weights.*params\.W"):
        load_checkpoint(path)
