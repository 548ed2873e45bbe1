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
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .activations import ACTIVATIONS
from .atomic import atomic_write_bytes
from .cells import CELLS
from .data.text import CharVocab
from .heads import HEADS
from .model import RNN, build_model, param_shapes_for
from .params import Params
from .schema import Bool, Const, Float, Int, Nullable, Obj, Scalar, SchemaError, Str
from .schema import List as ListOf
from .schema import check as check_schema

FORMAT_NAME = "bptt-checkpoint"
FORMAT_VERSION = 2  # 2: the model's structure, and the SHA-256 covers the metadata too
MIN_FORMAT_VERSION = 1  # version 1 (the first release): one Elman layer, arrays-only digest
SAFETENSORS_NAME = "checkpoint.safetensors"
NPZ_NAME = "checkpoint.npz"
META_KEY = "bptt"
NPZ_META = "__bptt__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used: missing, truncated, corrupted, too new."""


Declared = tuple[np.dtype, tuple[int, ...]]  # an array's dtype and shape as its header says

_SIZE = Int(1, 2**31 - 1)
_COUNT = Int(0, 2**62)
_SHA256 = Str(pattern="[0-9a-f]{64}", max_len=64)

#: The metadata document (``docs/checkpoint-format.md``); ``load_checkpoint`` checks it after
#: the digest and before using any field.
META_SCHEMA = Obj(
    {
        "format": Const(FORMAT_NAME),
        "version": Int(1, 2**31),
        "step": _COUNT,
        "task": Str(max_len=64),
        "model": Obj(
            {
                "input_size": _SIZE,
                "hidden_size": _SIZE,
                "output_size": _SIZE,
                "hidden_activation": Str(tuple(sorted(ACTIVATIONS))),
                "output": Str(tuple(sorted(HEADS))),
                "dtype": Str(("float32", "float64")),
                # version 2; a version-1 model is one Elman layer in one direction
                "cell": Str(tuple(sorted(CELLS))),
                "num_layers": Int(1, 1024),
                "bidirectional": Bool(),
            },
            frozenset({"cell", "num_layers", "bidirectional"}),
        ),
        "config": Obj(extra=Scalar()),
        "vocab": Nullable(
            Obj(
                {"format": Str(), "version": Int(), "chars": ListOf(Str(max_len=1))},
                max_keys=8,
            )
        ),
        "optimizer": Obj(
            {"name": Str(max_len=64), "t": _COUNT}, frozenset({"name", "t"}), Scalar()
        ),
        "rng": Nullable(
            Obj(
                {
                    "bit_generator": Const("PCG64"),
                    "state": Obj({"state": Int(0, 2**128 - 1), "inc": Int(0, 2**128 - 1)}),
                    "has_uint32": Int(0, 1),
                    "uinteger": Int(0, 2**32 - 1),
                }
            )
        ),
        "data": Obj(
            {
                "epoch": _COUNT,
                "window": _COUNT,
                "source": Obj({"sha256": _SHA256, "bytes": _COUNT}),
                # csv runs: what bptt predict needs to standardise new rows as training did
                "columns": ListOf(Str(max_len=1024), max_len=4096),
                "mean": ListOf(Float(), max_len=4096),
                "std": ListOf(Float(), max_len=4096),
            },
            frozenset({"epoch", "window", "source", "columns", "mean", "std"}),
            Scalar(),
        ),
        "metrics": Obj(
            {
                "bad_steps": _COUNT,
                "consecutive_bad": _COUNT,
                "best": Nullable(Float(finite=False)),
                "evals_since_best": _COUNT,
            },
            frozenset({"bad_steps", "consecutive_bad", "best", "evals_since_best"}),
            Scalar(),
        ),
        "sha256": _SHA256,
    }
)


def _have_safetensors() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _canonical(meta: Mapping[str, Any]) -> bytes:
    """The metadata (without its ``sha256``) as canonical JSON: sorted keys, no spaces, ASCII."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _digest(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the canonical metadata JSON, then (name, dtype, shape, bytes) of each
    array in sorted name order: everything a load reads back.

    A version-1 checkpoint's digest covered the arrays only; it is checked as written.
    """
    h = hashlib.sha256()
    if meta.get("version", FORMAT_VERSION) >= 2:
        meta_bytes = _canonical(meta)
        h.update(b"%d|" % len(meta_bytes))
        h.update(meta_bytes)
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
    }
    # read back as the loader will (JSON round trip: tuples become lists) before signing
    meta = json.loads(json.dumps(meta))
    meta["sha256"] = _digest(meta, tensors)
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


# -- reading, bounded: every declared size is checked against the file before allocating ---

# dtypes a checkpoint may hold (safetensors names → NumPy); nothing else is read
_ST_DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "|u1", "BOOL": "|b1"}
_NPY_DTYPES = frozenset(np.dtype(d) for d in _ST_DTYPES.values())
ARRAY_PREFIXES = ("params.", "optim.", "state.")


def _fail(where: str, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {where} {what}")


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name.startswith(ARRAY_PREFIXES) or len(name) > 256:
        raise _fail(where, f"holds an unexpected array {str(name)[:80]!r}")
    return name


def _check_shape(shape: object, name: str, where: str) -> tuple[int, ...]:
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) <= 8
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _fail(where, f"declares an invalid shape {str(shape)[:80]} for {name!r}")
    return tuple(int(d) for d in shape)


def _json_loads(text: str | bytes, where: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        raise _fail(where, f"has unreadable {what}: {str(err)[:200]}") from None


def _safetensors_header(data: bytes, where: str) -> tuple[str, dict[str, Declared]]:
    """The bptt metadata text and each tensor's declared (dtype, shape), checked against the
    file: known names and dtypes, offsets inside the data section, sizes matching the shapes."""
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or data[8:9] != b"{":
        if len(data) > 8 and data[8:9] == b"{":
            raise _fail(where, f"is truncated: its header says {n} bytes, the file has {len(data)}")
        raise CheckpointError(
            f"{where} is not a bptt checkpoint: neither a safetensors file nor an npz archive"
        )
    header = _json_loads(data[8 : 8 + n], where, "safetensors header")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), str):
        raise _fail(where, "has no readable bptt header (no __metadata__.bptt entry)")
    body = len(data) - 8 - n
    declared: dict[str, Declared] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        _check_name(name, where)
        if not isinstance(entry, dict) or entry.get("dtype") not in _ST_DTYPES:
            raise _fail(where, f"declares an unsupported dtype for {name!r}")
        dtype = np.dtype(_ST_DTYPES[entry["dtype"]])
        shape = _check_shape(entry.get("shape"), name, where)
        offsets = entry.get("data_offsets")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body
            and offsets[1] - offsets[0] == math.prod(shape) * dtype.itemsize
        ):
            raise _fail(
                where,
                f"is truncated or corrupted: {name!r} declares shape {shape} of {dtype} at "
                f"{str(offsets)[:60]}, which does not fit the file's {body} data bytes",
            )
        declared[name] = (dtype, shape)
    return meta[META_KEY], declared


def _read_safetensors(data: bytes, where: str) -> dict[str, np.ndarray]:
    if not _have_safetensors():
        raise CheckpointError(
            f"checkpoint {where} is a safetensors file, but safetensors is not installed: "
            "pip install 'bptt[io]'"
        )
    from safetensors.numpy import load

    try:
        return dict(load(data))
    except Exception as err:  # safetensors raises its own error types
        raise _fail(where, f"is truncated or corrupted: {err}") from None


def _npz_members(data: bytes, where: str) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The archive and its members by array name: stored (uncompressed, as np.savez writes),
    known names only, each no larger than the file."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as err:  # zipfile raises many kinds on a corrupt archive (BadZipFile,
        # NotImplementedError for a flipped "version needed to extract", struct errors, …)
        raise _fail(where, f"is truncated or corrupted: {err}") from None
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos[:4097]:
        total += info.file_size
        name = info.filename.removesuffix(".npy")
        if name != NPZ_META:
            _check_name(name, where)
        if name in members or not info.filename.endswith(".npy") or len(infos) > 4096:
            raise _fail(where, f"is corrupted: unexpected archive member {info.filename[:80]!r}")
        if info.compress_type != zipfile.ZIP_STORED or total > len(data):
            raise _fail(
                where,
                f"is corrupted: member {info.filename[:80]!r} is compressed or larger than the "
                "file (bptt writes plain stored members)",
            )
        members[name] = info
    if NPZ_META not in members:
        raise _fail(where, f"has no {NPZ_META} metadata")
    return zf, members


def _npz_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One .npy member: its header's dtype and shape checked against its size, then read."""
    try:
        raw = zf.read(info)  # at most info.file_size <= the file's size (stored member)
        buf = io.BytesIO(raw)
        major, _minor = np.lib.format.read_magic(buf)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except Exception as err:  # zipfile CRC errors, numpy format errors
        raise _fail(where, f"is truncated or corrupted ({info.filename[:80]!r}): {err}") from None
    if dtype not in _NPY_DTYPES:
        raise _fail(where, f"member {info.filename[:80]!r} has unsupported dtype {dtype}")
    shape = _check_shape(shape, info.filename, where)
    offset = buf.tell()
    if len(raw) - offset != math.prod(shape) * dtype.itemsize:
        raise _fail(
            where,
            f"is truncated or corrupted: {info.filename[:80]!r} declares shape {shape} of "
            f"{dtype}, but holds {len(raw) - offset} bytes",
        )
    flat = np.frombuffer(raw, dtype=dtype, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _parse_meta(meta_text: str, where: str) -> dict[str, Any]:
    meta = _json_loads(meta_text, where, "metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where} is not a bptt checkpoint (format {FORMAT_NAME!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(where, f"has an invalid version {str(version)[:40]!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format version {version}, newer than this bptt reads "
            f"({MIN_FORMAT_VERSION}..{FORMAT_VERSION}); upgrade bptt"
        )
    if version < MIN_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format version {version}, whose checksum does not cover "
            f"its metadata; this bptt reads versions {MIN_FORMAT_VERSION}..{FORMAT_VERSION}: "
            "retrain, or load it with the bptt that wrote it"
        )
    return meta


def _has_version_2_fields(meta: Mapping[str, Any]) -> bool:
    """Whether metadata holds a field only version 2 writes (the structure, the data source)."""
    model = meta.get("model")
    data = meta.get("data")
    in_model = isinstance(model, dict) and bool(
        {"cell", "num_layers", "bidirectional"} & set(model)
    )
    in_data = isinstance(data, dict) and bool({"source", "columns", "mean", "std"} & set(data))
    return in_model or in_data


def _structure(model_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the metadata's model (version 1: one Elman layer)."""
    return {"cell": "elman", "num_layers": 1, "bidirectional": False, **model_meta}


def expected_shapes(model_meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The ``params.<name>`` shapes the metadata's model section implies, computed from the
    structure alone (no weights are allocated)."""
    shapes = param_shapes_for(**_structure(model_meta))
    return {f"params.{name}": shape for name, shape in shapes.items()}


def check_declared(meta: Mapping[str, Any], declared: Mapping[str, Declared], where: str) -> None:
    """Declared array shapes and dtypes against the metadata, before any array is allocated:
    exactly the parameters the model section implies, in its dtype; each optimizer slot
    ``optim.<slot>.<name>`` shaped as ``params.<name>``."""
    want = expected_shapes(meta["model"])
    dtype = np.dtype(meta["model"]["dtype"])
    have = {k for k in declared if k.startswith("params.")}
    if have != set(want):
        raise _fail(
            where,
            f"has an inconsistent model: arrays {sorted(have)}, the model needs {sorted(want)}",
        )
    for name, shape in want.items():
        if declared[name] != (dtype, shape):
            got_dtype, got_shape = declared[name]
            raise _fail(
                where,
                f"has an inconsistent model: {name} is {got_shape} {got_dtype}, the metadata's "
                f"model needs {shape} {dtype}",
            )
    for name, (got_dtype, got_shape) in declared.items():
        if name.startswith("optim."):
            pname = "params." + name.split(".", 2)[-1]
            if pname not in want or (got_dtype, got_shape) != (dtype, want[pname]):
                raise _fail(
                    where,
                    f"has an optimizer slot {name!r} of {got_shape} {got_dtype} that matches "
                    "no parameter",
                )


def _read_file(p: Path, where: str) -> bytes:
    if not p.is_file():
        raise CheckpointError(f"checkpoint {where} is not a regular file")
    try:
        with open(p, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {where}: {err}") from None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint file, or the checkpoint in a run directory.

    In order, nothing allocated beyond the file's size before each check passes: the container
    (declared array names, dtypes and sizes against the file), the format version, the
    SHA-256 over the metadata and every array, the metadata against :data:`META_SCHEMA`, the
    declared parameter shapes against the metadata's model, then the model itself (finite
    weights), the vocabulary and the RNG state.

    Raises:
        CheckpointError: missing, truncated, corrupted (digest mismatch), not a bptt
            checkpoint, an older or newer format version, or metadata outside the schema.
    """
    p = checkpoint_path(path)
    where = repr(str(p))
    data = _read_file(p, where)
    if data[:4] == b"PK\x03\x04":  # a zip archive: the npz fallback
        zf, members = _npz_members(data, where)
        raw_meta = _npz_array(zf, members.pop(NPZ_META), where)
        if raw_meta.dtype != np.uint8 or raw_meta.ndim != 1:
            raise _fail(where, f"has a malformed {NPZ_META} member")
        meta = _parse_meta(raw_meta.tobytes().decode("utf-8", errors="replace"), where)
        tensors = {name: _npz_array(zf, info, where) for name, info in members.items()}
        declared = {name: (a.dtype, a.shape) for name, a in tensors.items()}
    else:
        if len(data) < 8:
            raise _fail(where, f"is truncated ({len(data)} bytes)")
        meta_text, declared = _safetensors_header(data, where)
        meta = _parse_meta(meta_text, where)
        tensors = _read_safetensors(data, where)
    if set(tensors) != set(declared):
        raise _fail(where, "is corrupted: its arrays differ from its header")
    if meta.get("version") == 1 and _has_version_2_fields(meta):
        # a version-1 digest covers the arrays only: a version flipped to 1 must not switch
        # off the metadata check of a version-2 file, whose fields a real v1 file never has
        raise _fail(where, "is corrupted: version 1 with version-2 fields")
    if _digest(meta, tensors) != meta.get("sha256"):
        raise _fail(where, "is corrupted: checksum mismatch (metadata or arrays changed)")
    try:
        check_schema(META_SCHEMA, meta, "metadata")
    except SchemaError as err:
        raise _fail(where, f"has invalid {err}") from None
    check_declared(meta, declared, where)
    m = meta["model"]
    try:
        model = build_model(**{**_structure(m), "dtype": np.dtype(m["dtype"]), "seed": 0})
        model.params = Params({n: tensors[f"params.{n}"] for n in model.param_shapes()})
        model.validated_params()
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(where, f"has an inconsistent model: {err}") from None
    for name, arr in model.params.items():
        if not np.isfinite(arr).all():
            raise _fail(where, f"holds non-finite weights (NaN or inf) in params.{name}")
    for name, arr in tensors.items():  # a step never saves a NaN slot: it is skipped instead
        if name.startswith("optim.") and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise _fail(where, f"holds non-finite optimizer state (NaN or inf) in {name}")
    for key, value in meta["optimizer"].items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(where, f"holds a non-finite optimizer value {key!r}")
    vocab = meta["vocab"]
    if vocab is not None:
        try:
            size = CharVocab.from_json(vocab).size
        except (TypeError, ValueError) as err:
            raise _fail(where, f"has an invalid vocabulary: {err}") from None
        if size != model.input_size:
            raise _fail(
                where, f"has a vocabulary of {size} characters for input_size {model.input_size}"
            )
    if meta["rng"] is not None:
        try:
            np.random.Generator(np.random.PCG64()).bit_generator.state = meta["rng"]
        except (TypeError, ValueError, KeyError) as err:
            raise _fail(where, f"has an invalid RNG state: {err}") from None
    optimizer_state: dict[str, Any] = dict(meta["optimizer"])
    arrays: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            optimizer_state[key.removeprefix("optim.")] = value
        elif key.startswith("state."):
            arrays[key.removeprefix("state.")] = value
    return Checkpoint(
        model=model,
        config=dict(meta["config"]),
        step=meta["step"],
        optimizer_state=optimizer_state,
        vocab_json=None if vocab is None else json.dumps(vocab),
        rng_state=meta["rng"],
        data_state=dict(meta["data"]),
        arrays=arrays,
        metrics=dict(meta["metrics"]),
        task=meta["task"],
        path=p,
    )
