"""The one MLflow run context manager: a step's failure ends its run FAILED, success leaves or ends it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.registry import Registry
from pipelines.settings import Settings

pytestmark = pytest.mark.integration


def test_run_context_ends_failed_on_error_and_finishes_on_request(tmp_path: Path) -> None:
    registry = Registry(Settings(data_root=tmp_path / "data"))
    status = lambda run_id: registry.client.get_run(run_id).info.status  # noqa: E731

    kept = registry.start_run({"p": 1}, {"t": "x"}, "kept")
    with registry.run(kept):
        pass
    assert status(kept) == "RUNNING"  # the next step continues it

    finished = registry.start_run({}, {}, "finished")
    with registry.run(finished, finish=True):
        pass
    assert status(finished) == "FINISHED"

    failed = registry.start_run({}, {}, "failed")
    with pytest.raises(KeyboardInterrupt), registry.run(failed, tag_failure=True):
        raise KeyboardInterrupt  # Ctrl+C too: any exception ends the run
    assert status(failed) == "FAILED"
    assert registry.client.get_run(failed).data.tags["failure"] == "KeyboardInterrupt: "

    untagged = registry.start_run({}, {}, "untagged")
    with pytest.raises(ValueError, match="bad"), registry.run(untagged, finish=True):
        raise ValueError("bad")
    assert status(untagged) == "FAILED" and "failure" not in registry.client.get_run(untagged).data.tags
