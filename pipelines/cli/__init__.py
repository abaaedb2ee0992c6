"""The offline half of the ``musicrec`` command line: data, catalogue, features, training, models, the stack.

:mod:`serving.cli_serve` adds the online commands (``recommend``, ``playlist``, ``serve``, ``mpd radio``) to
the same app and is the entry point.
"""
