"""The ``bptt`` command line: argparse glue only, the work is done in the package's rooms.

commands  :mod:`.commands`: the parser, ``train``, ``sample``, ``eval``, ``predict``,
          ``gradcheck``; :func:`main` is the console script
inspect   :mod:`.inspect`: ``bptt inspect`` (the diagnostics: :mod:`bptt.diagnostics`)
export    :mod:`.export`: ``bptt export`` (the conversion: :mod:`bptt.interop`)
sweep     :mod:`.sweep`: ``bptt sweep`` (the Ray Tune driver: :mod:`bptt.sweep`)
tune      :mod:`.tune`: ``bptt tune`` (the loops' measured choices: :mod:`bptt.tuning`)
"""

from .commands import build_parser, main

__all__ = ["build_parser", "main"]
