"""Checkpoints: round trip in both formats, atomicity, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bptt.checkpoint as ck
from bptt import ElmanRNN
from bptt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bptt.data.text import CharVocab
from bptt.optim import Adam


def _save(tmp_path, fmt="auto", **kw):
    model = ElmanRNN(4, 5, 4, seed=1, dtype=np.float32)
    opt = Adam(0.01)
    grads = model.params.map(lambda a: np.full_like(a, 0.5))
    opt.step(model.params, grads)
    rng = np.random.default_rng(3)
    rng.random(7)
    vocab = CharVocab(("a", "b", "c", "é"))
    path = save_checkpoint(
        tmp_path,
        model=model,
        step=17,
        config={"task": "charlm", "hidden": 5},
        optimizer_state=opt.state_dict(),
        vocab_json=vocab.to_json(),
        rng=rng,
        data_state={"epoch": 1, "window": 4},
        arrays={"tbptt.h_start": np.arange(10, dtype=np.float32).reshape(2, 5)},
        metrics={"best": 1.5},
        task="charlm",
        fmt=fmt,
        **kw,
    )
    return path, model, opt, rng, vocab


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_round_trip(tmp_path, fmt) -> None:
    path, model, opt, rng, vocab = _save(tmp_path, fmt)
    assert path.name == ("checkpoint.safetensors" if fmt == "safetensors" else "checkpoint.npz")
    c = load_checkpoint(tmp_path)
    assert c.step == 17 and c.task == "charlm"
    assert c.config == {"task": "charlm", "hidden": 5}
    assert c.vocab == vocab
    assert c.data_state == {"epoch": 1, "window": 4}
    assert c.metrics == {"best": 1.5}
    assert c.model.dtype == np.float32 and c.model.hidden_size == 5
    for name, arr in model.params.items():
        got = getattr(c.model.params, name)
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    np.testing.assert_array_equal(c.arrays["tbptt.h_start"], np.arange(10).reshape(2, 5))
    opt2 = Adam(0.01)
    opt2.load_state_dict(c.optimizer_state)
    assert opt2.t == 1
    np.testing.assert_array_equal(opt2.slots["exp_avg"]["W"], opt.slots["exp_avg"]["W"])
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = c.rng_state
    assert rng2.random() == rng.random()


def test_safetensors_file_is_readable_by_plain_safetensors(tmp_path) -> None:
    from safetensors.numpy import load_file

    path, model, *_ = _save(tmp_path, "safetensors")
    tensors = load_file(str(path))
    np.testing.assert_array_equal(tensors["params.W"], model.params.W)


def test_npz_fallback_when_safetensors_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ck, "_have_safetensors", lambda: False)
    path, model, *_ = _save(tmp_path, "auto")
    assert path.suffix == ".npz"
    c = load_checkpoint(path)
    np.testing.assert_array_equal(c.model.params.U, model.params.U)
    with pytest.raises(CheckpointError, match="pip install 'bptt\\[io\\]'"):
        _save(tmp_path / "other", "safetensors")


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_truncated_file_is_rejected(tmp_path, fmt) -> None:
    path, *_ = _save(tmp_path, fmt)
    data = path.read_bytes()
    for cut in (3, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated|corrupted|header"):
            load_checkpoint(path)


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_flipped_byte_in_weights_is_detected(tmp_path, fmt) -> None:
    path, model, *_ = _save(tmp_path, fmt)
    data = bytearray(path.read_bytes())
    needle = model.params.W.tobytes()[:16]
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_newer_version_is_rejected(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ck, "FORMAT_VERSION", 99)
    path, *_ = _save(tmp_path, "safetensors")
    monkeypatch.setattr(ck, "FORMAT_VERSION", 1)
    with pytest.raises(CheckpointError, match="version 99, newer"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="bptt header"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_failed_write_leaves_existing_checkpoint_intact(tmp_path, monkeypatch) -> None:
    path, *_ = _save(tmp_path, "safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, "safetensors")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_non_finite_weights_are_never_saved(tmp_path) -> None:
    model = ElmanRNN(3, 4, 3)
    model.params.W[0, 0] = np.nan
    with pytest.raises(CheckpointError, match="NaN or inf"):
        save_checkpoint(tmp_path, model=model, step=0, config={})
    assert not list(tmp_path.iterdir())


def test_metadata_is_json_in_the_header(tmp_path) -> None:
    path, *_ = _save(tmp_path, "safetensors")
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["bptt"])
    assert meta["format"] == "bptt-checkpoint" and meta["version"] == ck.FORMAT_VERSION == 2
    assert meta["model"]["dtype"] == "float32"


V1_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_v1_adding.safetensors"


def test_version_1_checkpoint_still_loads() -> None:
    """A checkpoint written by the first version (format 1, five fixed arrays) loads as an
    Elman model and its weights compute the same function as when it was written."""
    c = load_checkpoint(V1_CHECKPOINT)
    assert c.step == 3 and c.task == "adding"
    model = c.model
    assert (model.cell, model.num_layers, model.bidirectional) == ("elman", 1, False)
    assert list(model.params) == ["U", "V", "W", "b_h", "b_y"]
    assert model.params.W.shape == (6, 6) and model.dtype == np.float32
    # the trainer's Adam moments come back under the same names
    assert any(k.endswith(".W") for k in c.optimizer_state)
    x = np.random.default_rng(0).standard_normal((8, 3, 2)).astype(np.float32)
    y_hat, _ = model.predict(x)
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    h = np.zeros((3, 6))
    for t in range(8):  # the seed's equations, written out: the names map to the right arrays
        h = np.tanh(x[t] @ p["V"].T + h @ p["W"].T + p["b_h"])
        np.testing.assert_allclose(y_hat[t], h @ p["U"].T + p["b_y"], rtol=1e-4, atol=1e-5)


def test_a_version_flipped_to_1_does_not_switch_off_the_metadata_digest(tmp_path) -> None:
    """Version 1's digest covers the arrays only; a version-2 file whose version field flips
    to 1 (one bit) and whose step is then changed must still be refused."""
    path, *_ = _save(tmp_path, "safetensors")
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["bptt"])
    meta["version"] = 1
    meta["step"] += 1
    header["__metadata__"]["bptt"] = json.dumps(meta, sort_keys=True)
    text = json.dumps(header).encode()
    text += b" " * (n - len(text)) if len(text) <= n else b""
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(len(text).to_bytes(8, "little") + text + bytes(data[8 + n :]))
    with pytest.raises(CheckpointError, match="version 1 with version-2 fields"):
        load_checkpoint(forged)


def test_an_npz_whose_zip_version_field_is_corrupted_is_a_checkpoint_error(tmp_path) -> None:
    """Found by the fuzz test: a flipped "version needed to extract" made zipfile raise
    NotImplementedError("zip file version 10.9"), a traceback instead of CheckpointError."""
    path, *_ = _save(tmp_path, "npz")
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")  # the first central-directory header
    assert central > 0
    data[central + 6 : central + 8] = (109).to_bytes(2, "little")  # version needed: 10.9
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)
