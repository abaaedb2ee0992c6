"""train_triplet_model's clock as the scheduler reads it, at chosen instants instead of today's date.

The DAG is serialized and read back as the scheduler holds it, and ``next_dagrun_info`` is asked what it
asks after parsing and after each run. Airflow's trigger timetables read the time through
``airflow.timetables.trigger.utcnow``; pinning that is the only way a test can stand on a Monday at 04:00.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.dags.clock import daily_cron_before
from tests.dags.conftest import DAGS_DIR

MONDAY_0300 = pendulum.datetime(2025, 6, 2, 3, 0, tz="UTC")
WEEK = timedelta(days=7)


def _scheduler_dag(dag: Any) -> Any:
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


@pytest.fixture
def scheduled(dag_bag: Any) -> Any:
    return _scheduler_dag(dag_bag.dags["train_triplet_model"])


def _next_slot(dag: Any, now: datetime, monkeypatch: pytest.MonkeyPatch, last: datetime | None = None) -> Any:
    """When the scheduler would start the next timed run, at ``now``, after a timed run at ``last``."""
    import airflow.timetables.trigger as trigger
    from airflow.timetables.base import DagRunInfo

    monkeypatch.setattr(trigger, "utcnow", lambda: pendulum.instance(now))
    info = dag.next_dagrun_info(last_automated_run_info=None if last is None else DagRunInfo.exact(last))
    assert info is not None
    return info.run_after


def test_the_clock_is_weekly_utc_without_catchup(scheduled: Any) -> None:
    assert scheduled.catchup is False
    clock = scheduled.timetable.timetable  # AssetOrTimeSchedule: the features Asset or this
    stored = clock.serialize()
    assert (stored["expression"], stored["timezone"], stored["run_immediately"]) == ("0 3 * * 1", "UTC", True)


def test_on_monday_after_0300_the_weekly_run_is_due(scheduled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monday_0400 = MONDAY_0300 + timedelta(hours=1)
    # First scheduled on a Monday at 04:00: today's 03:00 runs at once.
    assert _next_slot(scheduled, monday_0400, monkeypatch) == MONDAY_0300
    # The scheduler was down at 03:00 (last run a week ago): today's slot runs once it is back.
    assert _next_slot(scheduled, monday_0400, monkeypatch, last=MONDAY_0300 - WEEK) == MONDAY_0300
    # Last week's slot missed too: catchup is off, only the latest slot runs.
    assert _next_slot(scheduled, monday_0400, monkeypatch, last=MONDAY_0300 - 3 * WEEK) == MONDAY_0300


def test_on_tuesday_the_weekly_run_has_fired_and_the_next_is_next_monday(
    scheduled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuesday = MONDAY_0300 + timedelta(days=1, hours=7)
    after = _next_slot(scheduled, tuesday, monkeypatch, last=MONDAY_0300)
    assert after == MONDAY_0300 + WEEK and after > tuesday  # not due: nothing starts on Tuesday
    # Before 03:00 on Monday the week's slot is still ahead.
    assert _next_slot(scheduled, MONDAY_0300 - timedelta(hours=1), monkeypatch, last=MONDAY_0300 - WEEK) == MONDAY_0300
    # A platform first scheduled on Tuesday runs Monday's slot once (run_immediately), then waits a week.
    assert _next_slot(scheduled, tuesday, monkeypatch) == MONDAY_0300


def test_the_cron_is_a_setting_read_when_the_dag_file_is_parsed(
    airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daily slot two minutes ago (as the stack test sets it) runs at start, and the next is a day away."""
    from airflow.dag_processing.dagbag import DagBag

    now = datetime.now(pendulum.UTC)
    cron, slot = daily_cron_before(now, minutes=2)
    monkeypatch.setenv("MUSICREC_AIRFLOW_RETRAIN_CRON", cron)
    bag = DagBag(dag_folder=str(Path(DAGS_DIR) / "train_triplet_model.py"))
    assert bag.import_errors == {}
    dag = _scheduler_dag(bag.dags["train_triplet_model"])
    assert dag.timetable.timetable.serialize()["expression"] == cron
    assert _next_slot(dag, now, monkeypatch) == slot
    assert _next_slot(dag, now, monkeypatch, last=slot) == slot + timedelta(days=1)


def test_a_malformed_cron_is_refused_with_the_setting_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from pipelines.settings import AirflowSettings

    monkeypatch.setenv("MUSICREC_AIRFLOW_RETRAIN_CRON", "weekly")
    with pytest.raises(ValidationError, match="retrain_cron"):
        AirflowSettings()
