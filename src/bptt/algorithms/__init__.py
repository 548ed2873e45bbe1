"""Every way this package computes a gradient, behind one interface and one registry.

    alg = bptt.algorithms.make(name, model, batch=B, seed=0, **options)
    est = alg.gradient(batch, restart)      # Estimate: loss, grads, steps, counted, state

    bptt             :class:`.truncated.WindowBPTT`: BPTT through each batch from the carried
                     state (full BPTT on fresh sequences), TBPTT(k1, k2) with ``k2``; on the
                     package's one TBPTT, :class:`.truncated.TruncatedBPTT`
    recompute        :class:`.recompute.Recompute`: the same gradient in O(√T) memory, storing
                     only segment boundaries (``loss_and_grads(checkpoint=…)`` runs the model's
                     segmented sweep, :meth:`bptt.model.RNN.sweep_segments`)
    rtrl, snap-n, uoro, kf-rtrl, rflo, tbptt
                     :class:`.online.OnlineGradient`: the online family of :mod:`bptt.online`
                     (``online.make(name, model)``), one step at a time on carried streams
    seed formula     :mod:`.seed_formula`: the literal double sum over lags of Jacobian
                     products (the reference the fast paths are checked against; not registered)

The registry (:mod:`.registry`) is what ``bptt train --algorithm``, the training configuration
and docs/algorithms.md read. The model (:mod:`bptt.model`) imports nothing from here.
"""

from . import base, budget, recompute, registry, seed_formula, truncated
from .base import Estimate, GradientAlgorithm
from .registry import REGISTRY, Entry, get, make, markdown_table, names, register

__all__ = [
    "REGISTRY",
    "Entry",
    "Estimate",
    "GradientAlgorithm",
    "base",
    "budget",
    "get",
    "make",
    "markdown_table",
    "names",
    "recompute",
    "register",
    "registry",
    "seed_formula",
    "truncated",
]
