"""Build, take apart and forge checkpoint files for the robustness tests (issue 12).

The digest is recomputed here from the format's description (docs/checkpoint-format.md), not
with bptt's own function, so a forged file is "correctly signed" by the documented rule.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bptt import ElmanRNN
from bptt.checkpoint import save_checkpoint
from bptt.data.text import CharVocab
from bptt.optim import Adam


def make_checkpoint(folder: Path, fmt: str) -> Path:
    """A small real checkpoint: Adam slots, RNG, vocabulary, carried state, metrics."""
    model = ElmanRNN(4, 5, 4, seed=1, dtype=np.float32)
    opt = Adam(0.01)
    opt.step(model.params, model.params.map(lambda a: np.full_like(a, 0.5)))
    rng = np.random.default_rng(3)
    rng.random(7)
    return save_checkpoint(
        folder,
        model=model,
        step=17,
        config={"task": "charlm", "hidden": 5, "lr": 0.01},
        optimizer_state=opt.state_dict(),
        vocab_json=CharVocab(("a", "b", "c", "é")).to_json(),
        rng=rng,
        data_state={"epoch": 1, "window": 4},
        arrays={"tbptt.h_start": np.arange(10, dtype=np.float32).reshape(2, 5)},
        metrics={"best": 1.5, "bad_steps": 0},
        task="charlm",
        fmt=fmt,
    )


def sign(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 as documented: len(canonical meta) '|' canonical meta, then per sorted array
    '<name>|<dtype.str>|<shape>|' and its C-order bytes."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    h = hashlib.sha256(b"%d|" % len(text) + text)
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def split(path: Path) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """(format, metadata dict, arrays) of a checkpoint file, read without bptt's loader."""
    data = path.read_bytes()
    if data[:2] == b"PK":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            tensors = {k: npz[k] for k in npz.files}
        meta = json.loads(tensors.pop("__bptt__").tobytes().decode())
        return "npz", meta, tensors
    from safetensors.numpy import load

    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["bptt"])
    return "safetensors", meta, dict(load(data))


def join(
    fmt: str, meta_text: str, tensors: dict[str, np.ndarray], *, compress: bool = False
) -> bytes:
    """A checkpoint file's bytes from a metadata text and arrays."""
    if fmt == "npz":
        buf = io.BytesIO()
        members = {**tensors, "__bptt__": np.frombuffer(meta_text.encode(), dtype=np.uint8)}
        (np.savez_compressed if compress else np.savez)(buf, **members)
        return buf.getvalue()
    from safetensors.numpy import save

    return save(tensors, metadata={"bptt": meta_text})


def forge(
    path: Path,
    meta: dict[str, Any] | str,
    tensors: dict[str, np.ndarray],
    fmt: str,
    *,
    resign: bool = True,
) -> None:
    """Write ``meta`` (a dict, or raw text written as is) and ``tensors`` to ``path``; with
    ``resign`` a dict's ``sha256`` is recomputed so only the schema can catch the forgery."""
    if isinstance(meta, dict):
        if resign:
            meta = {**meta, "sha256": sign(meta, tensors)}
        text = json.dumps(meta, sort_keys=True)
    else:
        text = meta
    path.write_bytes(join(fmt, text, tensors))


def npz_with_member(path: Path, base: Path, name: str, payload_chunks: Any, **zkw: Any) -> None:
    """Copy the npz ``base`` to ``path`` with member ``name`` replaced by streamed chunks."""
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", **zkw) as dst:
        for info in src.infolist():
            if info.filename == name:
                continue
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_STORED)
        with dst.open(name, "w", force_zip64=True) as fh:
            for chunk in payload_chunks:
                fh.write(chunk)
