"""Moved to :mod:`bptt.algorithms.recompute` (the O(√T) recompute schedule); this name stays
only while :mod:`bptt.model` still imports it from here."""

from .algorithms.recompute import recompute_forward_backward, segment_length

__all__ = ["recompute_forward_backward", "segment_length"]
