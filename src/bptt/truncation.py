"""Moved to :mod:`bptt.algorithms.truncated` (TBPTT(k1, k2)); this name stays only while
:mod:`bptt.online.tbptt` still imports it from here."""

from .algorithms.truncated import TruncatedBPTT, tbptt_gradients

__all__ = ["TruncatedBPTT", "tbptt_gradients"]
