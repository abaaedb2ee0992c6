"""Cron expressions that put a slot at a chosen distance from now, so schedule tests hold on any day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def daily_cron_before(now: datetime, minutes: int = 2) -> tuple[str, datetime]:
    """A daily cron (UTC) whose latest slot is ``minutes`` (whole minutes) before ``now``, and that slot.

    Its next slot is a day minus ``minutes`` away: a run that starts with the platform is the only one.
    """
    slot = now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    return f"{slot.minute} {slot.hour} * * *", slot
