"""Every way this package computes a gradient, one module each, tested against full BPTT.

    full BPTT        :meth:`bptt.RNN.loss_and_grads` / ``forward_backward`` (:mod:`bptt.model`):
                     the one forward → head → backward sweep over a whole sequence
    recompute        :mod:`.recompute`: the same gradient in O(√T) memory, storing only segment
                     boundaries and recomputing each segment (``loss_and_grads(checkpoint=…)``)
    truncated        :mod:`.truncated`: TBPTT(k1, k2) over B parallel streams, state carried
    seed formula     :mod:`.seed_formula`: the literal double sum over lags of Jacobian
                     products, term by term (the reference the fast paths are checked against)
    online           :mod:`bptt.online`: RTRL, SnAp-n, UORO, KF-RTRL, RFLO and online TBPTT,
                     one step at a time behind one interface (``online.make(name, model)``)

:mod:`bptt.model` itself runs on :mod:`.recompute` (which imports nothing of the package),
while :mod:`.truncated` and :mod:`.seed_formula` run on the model; ``import bptt`` imports this
package first, so the model is complete before they need it.
"""

from . import recompute, seed_formula, truncated

__all__ = ["recompute", "seed_formula", "truncated"]
