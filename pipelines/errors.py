"""Errors that mean "the input is wrong", as opposed to bugs.

Front ends turn a :class:`UserError` into one clear line (CLI: exit code 2; HTTP: a 4xx with the reason)
instead of a traceback.
"""


class UserError(Exception):
    """Bad input from a user: a missing path, a malformed CSV, an unknown id. The message is the answer."""
