"""Failure alerts: a failed pipeline step is logged and, if a webhook is configured, POSTed to it as JSON."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from pipelines.settings import Settings

log = logging.getLogger(__name__)


def notify_failure(settings: Settings, event: dict[str, Any], timeout_s: float = 5.0) -> bool:
    """Log ``event`` (what failed, where, why) and POST it to ``settings.airflow.alert_webhook_url``; True if delivered.

    Never raises: an alert that cannot be delivered must not hide the failure it reports.
    """
    log.error("pipeline step failed: %s", json.dumps(event, default=str))
    if not settings.airflow.alert_webhook_url:
        return False
    body = json.dumps({"source": "musicrec", **event}, default=str).encode()
    request = urllib.request.Request(
        settings.airflow.alert_webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError, ValueError) as exc:
        log.warning("alert webhook %s not reached: %s", settings.airflow.alert_webhook_url, exc)
        return False
