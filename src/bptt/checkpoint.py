"""Checkpoints: one file, written atomically, no pickle (format: ``docs/checkpoint-format.md``).

A checkpoint is a safetensors file (``checkpoint.safetensors``) whose tensors are

    params.<name>                                                 the weights (U V W b_h b_y, …)
    optim.<slot>.<name>                                           optimizer slot arrays
    state.<key>                                                   trainer state (carried h, …)

and whose header metadata holds one JSON document under the key ``bptt``: format name,
version, step, task, model sizes, the configuration, the vocabulary, the optimizer's scalars,
the NumPy bit-generator state, the data position, metrics and a SHA-256 of every array.
Without safetensors installed the same content goes to ``checkpoint.npz`` (NumPy, loaded with
``allow_pickle=False``), the JSON document stored as the uint8 array ``__bptt__``.

Writes go to a temporary file in the same directory, then ``os.replace``: a crash never leaves
a half-written checkpoint, and an existing checkpoint is only ever replaced by a complete one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .model import RNN, build_model
from .params import Params

FORMAT_NAME = "bptt-checkpoint"
FORMAT_VERSION = 2  # 2: the model's structure (cell, layers, directions); 1 still loads
SAFETENSORS_NAME = "checkpoint.safetensors"
NPZ_NAME = "checkpoint.npz"
META_KEY = "bptt"
NPZ_META = "__bptt__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used: missing, truncated, corrupted, too new."""


def _have_safetensors() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of each array in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model: the :class:`~bptt.model.RNN` (``ElmanRNN`` for Elman cells) with the weights.
        config: the run's configuration as a plain dict (``TrainConfig.from_dict`` types it).
        vocab_json: the character vocabulary's JSON, or None for non-text tasks.
        step: optimizer steps taken.
        optimizer_state: flat dict of scalars and ``slot.name`` arrays (``load_state_dict``).
        rng_state: the NumPy bit generator's ``.state`` dict, or None.
        data_state: the data position (JSON-able dict).
        arrays: trainer state arrays (``state.<key>`` without the prefix).
        metrics: JSON-able dict (best validation loss, bad-step count, …).
        path: the file it was read from.
    """

    model: RNN
    config: dict[str, Any]
    step: int
    optimizer_state: dict[str, Any]
    vocab_json: str | None = None
    rng_state: dict[str, Any] | None = None
    data_state: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    task: str = ""
    path: Path | None = None

    @property
    def vocab(self) -> Any:
        """The :class:`~bptt.data.text.CharVocab`, or None when the task has no vocabulary."""
        if self.vocab_json is None:
            return None
        from .data.text import CharVocab

        return CharVocab.from_json(self.vocab_json)


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file for a file path or a run directory (safetensors preferred)."""
    p = Path(path)
    if p.is_dir():
        for name in (SAFETENSORS_NAME, NPZ_NAME):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(
            f"no checkpoint in {str(p)!r}: expected {SAFETENSORS_NAME} or {NPZ_NAME}"
        )
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    return p


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: RNN,
    step: int,
    config: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None = None,
    vocab_json: str | None = None,
    rng: np.random.Generator | None = None,
    data_state: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    metrics: Mapping[str, Any] | None = None,
    task: str = "",
    fmt: str = "auto",
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: a run directory (the file name is chosen by format) or a file path.
        model: its params and architecture are saved.
        step: optimizer steps taken.
        config: the run configuration (JSON-able).
        optimizer_state: ``Optimizer.state_dict()``.
        vocab_json: ``CharVocab.to_json()`` for text tasks.
        rng: the generator whose ``bit_generator.state`` is saved.
        data_state: the data position (JSON-able).
        arrays: extra trainer arrays (carried hidden state, …).
        metrics: JSON-able values to keep.
        task: the task name (checked on resume).
        fmt: ``safetensors``, ``npz`` or ``auto`` (safetensors when installed).

    Raises:
        CheckpointError: non-finite weights (never saved), or safetensors requested but missing.
    """
    if fmt == "auto":
        fmt = "safetensors" if _have_safetensors() else "npz"
    if fmt not in ("safetensors", "npz"):
        raise ValueError(f"fmt must be 'safetensors', 'npz' or 'auto', got {fmt!r}")
    if fmt == "safetensors" and not _have_safetensors():
        raise CheckpointError(
            "safetensors is not installed: pip install 'bptt[io]' (or save with fmt='npz')"
        )
    if not model.params.is_finite():
        raise CheckpointError("refusing to save a checkpoint whose weights hold NaN or inf")
    tensors: dict[str, np.ndarray] = {
        f"params.{name}": np.ascontiguousarray(arr) for name, arr in model.params.items()
    }
    optim_scalars: dict[str, Any] = {}
    for key, value in (optimizer_state or {}).items():
        if isinstance(value, np.ndarray):
            tensors[f"optim.{key}"] = np.ascontiguousarray(value)
        else:
            optim_scalars[key] = value
    for key, value in (arrays or {}).items():
        tensors[f"state.{key}"] = np.ascontiguousarray(value)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "step": int(step),
        "task": task,
        "model": model.structure(),
        "config": dict(config),
        "vocab": None if vocab_json is None else json.loads(vocab_json),
        "optimizer": optim_scalars,
        "rng": None if rng is None else rng.bit_generator.state,
        "data": dict(data_state or {}),
        "metrics": dict(metrics or {}),
        "sha256": _digest(tensors),
    }
    meta_text = json.dumps(meta, sort_keys=True)
    p = Path(path)
    if p.is_dir() or not p.suffix:
        p = p / (SAFETENSORS_NAME if fmt == "safetensors" else NPZ_NAME)
    if fmt == "safetensors":
        from safetensors.numpy import save

        data = save(tensors, metadata={META_KEY: meta_text})
    else:
        buf = io.BytesIO()
        meta_bytes = np.frombuffer(meta_text.encode("utf-8"), dtype=np.uint8)
        members: dict[str, Any] = {**tensors, NPZ_META: meta_bytes}
        np.savez(buf, allow_pickle=False, **members)
        data = buf.getvalue()
    atomic_write_bytes(p, data)
    return p


def _read_safetensors(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {where} is truncated ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise CheckpointError(f"checkpoint {where} is truncated: header says {n} bytes")
    try:
        header = json.loads(data[8 : 8 + n])
        meta_text = header["__metadata__"][META_KEY]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {where} has no readable bptt header: {err}") from None
    if not _have_safetensors():
        raise CheckpointError(
            f"checkpoint {where} is a safetensors file, but safetensors is not installed: "
            "pip install 'bptt[io]'"
        )
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {where} is truncated or corrupted: {err}") from None
    return _parse_meta(meta_text, where), tensors


def _read_npz(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            tensors = {k: npz[k] for k in npz.files}
    except Exception as err:  # zipfile / numpy format errors
        raise CheckpointError(f"checkpoint {where} is truncated or corrupted: {err}") from None
    if NPZ_META not in tensors:
        raise CheckpointError(f"checkpoint {where} has no {NPZ_META} metadata")
    meta_text = tensors.pop(NPZ_META).tobytes().decode("utf-8", errors="replace")
    return _parse_meta(meta_text, where), tensors


def _parse_meta(meta_text: str, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(meta_text)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {where} has corrupted metadata: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where} is not a bptt checkpoint (format {FORMAT_NAME!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint {where} has an invalid version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format version {version}, newer than this bptt reads "
            f"(1..{FORMAT_VERSION}); upgrade bptt"
        )
    return meta


STRUCTURE_KEYS = (
    "input_size",
    "hidden_size",
    "output_size",
    "cell",
    "num_layers",
    "bidirectional",
    "hidden_activation",
    "output",
    "dtype",
)
"""The model fields of a version-2 checkpoint; version 1 had no cell, layers or directions."""


def model_from_structure(structure: Mapping[str, Any]) -> RNN:
    """The model (initial weights) that :meth:`RNN.structure` describes.

    A version-1 structure (no ``cell``, ``num_layers``, ``bidirectional``) is one Elman layer.

    Raises:
        KeyError: a field is missing; TypeError/ValueError: a field is invalid.
    """
    fields = {"cell": "elman", "num_layers": 1, "bidirectional": False, **structure}
    unknown = sorted(set(fields) - set(STRUCTURE_KEYS))
    if unknown:
        raise ValueError(f"unknown model field(s) {unknown}")
    missing = [k for k in STRUCTURE_KEYS if k not in fields]
    if missing:
        raise KeyError(f"model field(s) {missing} missing")
    return build_model(**{**fields, "dtype": np.dtype(fields["dtype"]), "seed": 0})


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint file, or the checkpoint in a run directory.

    Raises:
        CheckpointError: missing, truncated, corrupted (digest mismatch), not a bptt
            checkpoint, or a newer format version.
    """
    p = checkpoint_path(path)
    where = repr(str(p))
    try:
        data = p.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {where}: {err}") from None
    if data[:4] == b"PK\x03\x04":  # a zip archive: the npz fallback
        meta, tensors = _read_npz(data, where)
    else:
        meta, tensors = _read_safetensors(data, where)
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {where} is corrupted: array checksum mismatch")
    try:
        model = model_from_structure(meta["model"])
        model.params = Params({n: tensors[f"params.{n}"] for n in model.param_shapes()})
        model.validated_params()
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {where} has an inconsistent model: {err}") from None
    optimizer_state: dict[str, Any] = dict(meta.get("optimizer", {}))
    arrays: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            optimizer_state[key.removeprefix("optim.")] = value
        elif key.startswith("state."):
            arrays[key.removeprefix("state.")] = value
    vocab = meta.get("vocab")
    return Checkpoint(
        model=model,
        config=dict(meta.get("config", {})),
        step=int(meta["step"]),
        optimizer_state=optimizer_state,
        vocab_json=None if vocab is None else json.dumps(vocab),
        rng_state=meta.get("rng"),
        data_state=dict(meta.get("data", {})),
        arrays=arrays,
        metrics=dict(meta.get("metrics", {})),
        task=str(meta.get("task", "")),
        path=p,
    )
