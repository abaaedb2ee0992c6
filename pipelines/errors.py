"""Errors that mean "the input is wrong", as opposed to bugs.

Front ends turn a :class:`UserError` into one clear line (CLI: exit code 2; HTTP: a 4xx with the reason)
instead of a traceback.
"""


class UserError(Exception):
    """Bad input from a user: a missing path, a malformed CSV, an unknown id. The message is the answer."""


def one_line(text: str) -> str:
    """``text`` on one line: control characters (newlines, tabs) as their escapes, everything else as is."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
