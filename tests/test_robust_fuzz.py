"""Issue 12: fuzzing a real checkpoint.

Mutated bytes, or mutated metadata (signed as the format documents, or not): loading either
succeeds with the original content (a change that does not alter what is read back, such as
JSON whitespace or a zip timestamp) or with a forged but well-formed content (only when the
forger re-signed), or fails with :class:`CheckpointError`. Never another exception, and never
more memory than a small multiple of the file's size.
"""

from __future__ import annotations

import copy
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bptt.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from checkpoint_forge import forge, make_checkpoint, split

FORMATS = ("safetensors", "npz")
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[bytes, Checkpoint, Path]]:
    out = {}
    for fmt in FORMATS:
        folder = tmp_path_factory.mktemp(fmt)
        path = make_checkpoint(folder, fmt)
        out[fmt] = (path.read_bytes(), load_checkpoint(path), folder / f"mutant.{fmt}")
    return out


def _content(c: Checkpoint) -> dict[str, Any]:
    """Everything a load gives back, arrays as (dtype, shape, bytes)."""

    def arr(a: Any) -> Any:
        return (a.dtype.str, a.shape, a.tobytes()) if isinstance(a, np.ndarray) else a

    return {
        "params": {k: arr(v) for k, v in c.model.params.items()},
        "model": repr(c.model),
        "config": c.config,
        "step": c.step,
        "optimizer": {k: arr(v) for k, v in c.optimizer_state.items()},
        "vocab": c.vocab_json,
        "rng": c.rng_state,
        "data": c.data_state,
        "arrays": {k: arr(v) for k, v in c.arrays.items()},
        "metrics": c.metrics,
        "task": c.task,
    }


def _load_bounded(path: Path) -> Checkpoint | None:
    """load_checkpoint under tracemalloc: None on CheckpointError; asserts the peak."""
    size = path.stat().st_size
    tracemalloc.start()
    try:
        try:
            return load_checkpoint(path)
        except CheckpointError:
            return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 64 * size + (4 << 20), f"{peak} bytes to load a {size}-byte file"


def _well_formed(c: Checkpoint) -> None:
    """What a successful load promises even for a forged (re-signed) file."""
    assert isinstance(c.step, int) and c.step >= 0
    assert c.model.params.is_finite()
    c.model.validated_params()
    assert isinstance(c.config, dict) and isinstance(c.metrics, dict)
    assert isinstance(c.data_state, dict) and isinstance(c.optimizer_state, dict)
    if c.vocab_json is not None:
        assert c.vocab.size == c.model.input_size
    if c.rng_state is not None:
        np.random.default_rng(0).bit_generator.state = c.rng_state


# -- byte mutations ---------------------------------------------------------------------------


@st.composite
def byte_edits(draw: Any, size: int) -> list[tuple[str, int, int]]:
    kinds = st.sampled_from(["xor", "set", "cut", "insert"])
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        edits.append((draw(kinds), draw(st.integers(0, size - 1)), draw(st.integers(1, 255))))
    return edits


def _apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, at, value in edits:
        at = min(at, len(b) - 1)
        if kind == "xor":
            b[at] ^= value
        elif kind == "set":
            b[at] = value
        elif kind == "cut":
            del b[at:]
            if not b:
                break
        else:
            b[at:at] = bytes([value]) * (value % 7 + 1)
    return bytes(b)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_bytes_load_the_original_or_fail_cleanly(originals, fmt) -> None:
    data, ref, mutant = originals[fmt]
    want = _content(ref)

    @SETTINGS
    @given(edits=byte_edits(len(data)))
    def check(edits: list[tuple[str, int, int]]) -> None:
        mutant.write_bytes(_apply(data, edits))
        got = _load_bounded(mutant)
        if got is not None:
            assert _content(got) == want

    check()


# -- metadata mutations -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 10**400 // 10**395, 2**128, 2**31])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_metadata_loads_well_formed_or_fails_cleanly(originals, fmt) -> None:
    data, ref, mutant = originals[fmt]
    source = mutant.with_name(f"source.{fmt}")
    source.write_bytes(data)
    _, meta, tensors = split(source)
    want = _content(ref)
    paths = _paths(meta)

    @SETTINGS
    @given(
        edits=st.lists(
            st.tuples(st.sampled_from(paths), st.sampled_from(["set", "delete"]), json_values),
            min_size=1,
            max_size=3,
        ),
        resign=st.booleans(),
        nest=st.sampled_from([0, 0, 0, 2000, 200_000]),
    )
    def check(edits: list, resign: bool, nest: int) -> None:
        m = copy.deepcopy(meta)
        for path, op, value in edits:
            node = m
            try:
                for key in path[:-1]:
                    node = node[key]
                if isinstance(node, dict) != isinstance(path[-1], str):
                    continue  # an earlier edit replaced a list by a dict or back
                if op == "delete":
                    del node[path[-1]]
                else:
                    node[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit removed or replaced this path
        if nest:
            m["deep"] = json.loads("[" * min(nest, 900) + "]" * min(nest, 900))
        forge(mutant, m, tensors, fmt, resign=resign)
        if nest > 900:  # beyond what json.dumps writes: splice raw nesting into the text
            text = json.dumps(m, sort_keys=True).replace(
                "[" * 900 + "]" * 900, "[" * nest + "]" * nest
            )
            forge(mutant, text, tensors, fmt)
        got = _load_bounded(mutant)
        if got is None:
            return
        if _content(got) != want:
            assert resign, "an unsigned change to the metadata was accepted"
            _well_formed(got)

    check()
