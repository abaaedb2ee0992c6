"""The two error families every front end tells apart: bad input, and a service that is down.

* :class:`UserError`: the input is wrong (a missing path, a malformed CSV, an unknown id). Trying again
  with the same input fails the same way. CLI: one line, exit 2; HTTP: a 4xx with the reason; Airflow: the
  task fails without retries.
* :class:`Unavailable`: something the command needs (Milvus, the index, MLflow) cannot be used right now;
  not the caller's fault, and the same call may work later. CLI: one line, exit 2 (the code outages have
  always had); HTTP: 503 with the reason and ``Retry-After``; Airflow: raised as is, so the task retries.

Anything else is a bug, shown with its traceback. Design: docs/architecture.md#error-families.
"""


class UserError(Exception):
    """Bad input from a user: a missing path, a malformed CSV, an unknown id. The message is the answer."""


class Unavailable(Exception):
    """A service is down or not ready (Milvus, the index, the model registry); the message says what to do.

    Deliberately not a :class:`UserError`: callers that retry (Airflow, serving's reconnect) must not mistake
    an outage for bad input, nor bad input for an outage.
    """


def one_line(text: str) -> str:
    """``text`` on one line: control characters (newlines, tabs) as their escapes, everything else as is."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
