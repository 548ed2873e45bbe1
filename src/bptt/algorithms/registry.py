"""The one registry of gradient algorithms: name → entry, read by the trainer's configuration,
the CLI's ``--algorithm`` choices, the docs (docs/algorithms.md) and the parametrised tests.

    bptt.algorithms.names()                           # ('bptt', 'recompute', 'rtrl', …)
    alg = bptt.algorithms.make(name, model, batch=B, seed=0, **options)
    bptt.algorithms.get(name).carried_bytes(model, B, **options)   # before building it

An entry names its class (a :class:`~bptt.algorithms.base.GradientAlgorithm`), fixed keyword
arguments (the online adapter's ``method``), the options a training run fills in from its
configuration (:meth:`bptt.training.TrainConfig.algorithm_options`: ``k1``, ``k2`` from
``--seq-len``/``--k2``, ``k`` from ``--truncation``, ``segment`` from ``--segment``) and a
one-line summary. Adding an algorithm: docs/algorithms.md, "Adding an algorithm".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import online
from ..model import RNN
from .base import GradientAlgorithm
from .online import OnlineGradient
from .recompute import Recompute
from .truncated import WindowBPTT


@dataclass(frozen=True)
class Entry:
    """One registered algorithm.

    Attributes:
        name: the registry name (``bptt train --algorithm NAME``).
        cls: the class implementing :class:`GradientAlgorithm`.
        summary: one line for the docs' table and ``--help``.
        options: the options a training run passes from its configuration.
        fixed: keyword arguments always passed (the online adapter's ``method``).
    """

    name: str
    cls: type[GradientAlgorithm]
    summary: str
    options: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def streaming(self) -> bool:
        """Advances step by step on unbroken streams (see :class:`GradientAlgorithm`)."""
        return self.cls.streaming

    @property
    def bidirectional(self) -> bool:
        """Runs bidirectional models."""
        return self.cls.bidirectional

    def make(self, model: RNN, batch: int = 1, seed: int = 0, **options: Any) -> GradientAlgorithm:
        """The algorithm for ``model`` over ``batch`` streams, reset."""
        alg = self.cls(model, batch, seed, **self.fixed, **options)
        alg.reset()
        return alg

    def carried_bytes(self, model: RNN, batch: int, **options: Any) -> int:
        """Bytes the algorithm will carry (``model`` may be unallocated: no weights needed)."""
        return self.cls.carried_bytes(model, batch, **self.fixed, **options)


REGISTRY: dict[str, Entry] = {}
"""Every registered algorithm by name, in the order the docs and ``--help`` list them."""


def register(entry: Entry) -> Entry:
    """Add ``entry`` to :data:`REGISTRY` (its name must be new).

    Raises:
        ValueError: the name is taken.
    """
    if entry.name in REGISTRY:
        raise ValueError(f"gradient algorithm {entry.name!r} is already registered")
    REGISTRY[entry.name] = entry
    return entry


_ONLINE_SUMMARIES = {
    "rtrl": "online: real-time recurrent learning, the exact influence M_t = J_t M_{t-1} + Ī_t",
    "uoro": "online: unbiased rank-one estimate ã b̃ᵀ of the influence (random signs)",
    "kf-rtrl": "online: unbiased Kronecker-factored estimate u ⊗ A of the influence",
    "snap-1": "online: SnAp-1, the influence kept on its diagonal (k = r)",
    "snap-2": "online: SnAp-2, the influence kept on W's 2-step reach (snap-N: any N)",
    "rflo": "online: random-feedback local online learning (leaky diagonal trace)",
    "tbptt": "online: each step's loss backpropagated through the last k steps (--truncation)",
}

register(
    Entry(
        "bptt",
        WindowBPTT,
        "BPTT through each batch from the carried state (full BPTT on fresh sequences; "
        "TBPTT(k1 = --seq-len, k2) with --k2; each sweep within --memory-budget)",
        options=("k1", "k2", "memory_budget"),
    )
)
register(
    Entry(
        "recompute",
        Recompute,
        "the same gradient as bptt in O(√T) memory: segment boundaries stored, segments "
        "recomputed (--segment K, default √T)",
        options=("segment",),
    )
)
for _name in online.ALGORITHMS:
    register(
        Entry(
            _name,
            OnlineGradient,
            _ONLINE_SUMMARIES.get(_name, f"online: {_name}"),
            options=("k",) if _name == "tbptt" else (),
            fixed={"method": _name},
        )
    )


def names() -> tuple[str, ...]:
    """The registered names, in order (the CLI's ``--algorithm`` choices)."""
    return tuple(REGISTRY)


def get(name: str) -> Entry:
    """The entry for ``name``; ``snap-N`` for any N ≥ 1 is the online SnAp-N.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
    """
    if isinstance(name, str) and name in REGISTRY:
        return REGISTRY[name]
    if isinstance(name, str) and name.startswith("snap-") and name[5:].isdigit():
        summary = f"online: SnAp-{name[5:]}, the influence kept on W's {name[5:]}-step reach"
        return Entry(name, OnlineGradient, summary, fixed={"method": name})
    raise ValueError(f"gradient algorithm must be one of {list(REGISTRY)}, got {name!r}")


def make(name: str, model: RNN, batch: int = 1, seed: int = 0, **options: Any) -> GradientAlgorithm:
    """Build the registered algorithm ``name`` for ``model`` over ``batch`` streams, reset.

    Options: ``bptt``: ``k1``, ``k2``, ``checkpoint``; ``recompute``: ``segment``; the online
    methods: those of :func:`bptt.online.make` (``tbptt``: ``k``; …).

    Raises:
        ValueError: an unknown name, or a model/option the algorithm refuses.
        TypeError: an option the algorithm does not take.
    """
    return get(name).make(model, batch, seed, **options)


def markdown_table() -> str:
    """The registry as a Markdown table (docs/algorithms.md holds it; a test keeps them equal)."""
    rows = ["| name | kind | options from `bptt train` | what it computes |", "|---|---|---|---|"]
    flags = {
        "k1": "--seq-len",
        "k2": "--k2",
        "k": "--truncation",
        "segment": "--segment",
        "memory_budget": "--memory-budget",
    }
    for entry in REGISTRY.values():
        kind = "streaming" if entry.streaming else "window"
        opts = ", ".join(f"`{flags.get(o, o)}`" for o in entry.options) or "–"
        rows.append(f"| `{entry.name}` | {kind} | {opts} | {entry.summary} |")
    return "\n".join(rows)
