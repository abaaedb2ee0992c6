"""The one shape of an offline step: a frozen job and ``run(settings, job, inputs) -> Report``.

The CLI command and the DAG task of a step make that same call; the CLI prints ``report.line()`` and the
task logs it with :func:`log_report`, so both say the same. docs/architecture.md lists the steps.
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)


class StepJob(BaseModel):
    """What a step is asked to do, as plain frozen data (a misspelt field is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Report(Protocol):
    """What a step did; ``line()`` is the text the CLI prints and the DAG task logs."""

    def line(self) -> str: ...


R = TypeVar("R", bound=Report)


def log_report(step: str, report: R) -> R:
    """Log ``report`` as the task log's record of ``step``; returns it unchanged."""
    log.info("%s: %s", step, report.line())
    return report
