"""Tell Airflow that the manifest changed, so the Asset chain (features, training, index) runs from there.

Imports made outside Airflow (``musicrec catalogue import``, ``data fetch-demo``) post an event for the
manifest Asset through the api-server's REST API (``POST /api/v2/assets/events``), authenticated as a
user of the simple auth manager. Without ``MUSICREC_AIRFLOW_API_URL`` nothing is sent and the caller says so.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from pipelines.errors import UserError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

MANIFEST_URI = "musicrec://catalogue/manifest"  # dags/assets.py MANIFEST


class AnnounceFailed(UserError):
    """Airflow is configured but did not take the event; the import itself is done and kept."""


def announce_manifest(settings: Settings, extra: dict[str, Any], timeout_s: float = 10.0) -> int | None:
    """Post a manifest Asset event with ``extra``; the event id, or None when no Airflow API is configured."""
    if not settings.airflow.api_url:
        return None
    base = settings.airflow.api_url.rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=timeout_s) as client:
            headers = {"Authorization": f"Bearer {_token(client, settings)}"}
            found = client.get("/api/v2/assets", params={"uri_pattern": MANIFEST_URI}, headers=headers)
            found.raise_for_status()
            ids = [a["id"] for a in found.json().get("assets", []) if a.get("uri") == MANIFEST_URI]
            if not ids:
                raise AnnounceFailed(
                    f"Airflow at {base} does not know the manifest Asset yet: its dag-processor has not parsed "
                    "musicrec's DAGs (is AIRFLOW__CORE__DAGS_FOLDER the project's dags/?)"
                )
            posted = client.post("/api/v2/assets/events", json={"asset_id": ids[0], "extra": extra}, headers=headers)
            posted.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise AnnounceFailed(
            f"Airflow at {base} refused the manifest event: HTTP {exc.response.status_code} {exc.response.text[:200]}"
        ) from exc
    except httpx.HTTPError as exc:
        raise AnnounceFailed(f"Airflow at {base} is not reachable ({type(exc).__name__}); the import is kept") from exc
    event_id = int(posted.json()["id"])
    log.info("announced the manifest to Airflow at %s (event %d)", base, event_id)
    return event_id


def _token(client: httpx.Client, settings: Settings) -> str:
    if not settings.airflow.username:
        raise AnnounceFailed("MUSICREC_AIRFLOW_API_URL is set but MUSICREC_AIRFLOW_USERNAME is not")
    resp = client.post(
        "/auth/token",
        json={"username": settings.airflow.username, "password": settings.airflow.password.get_secret_value()},
    )
    if resp.status_code in (401, 403):
        raise AnnounceFailed(f"Airflow refused the credentials of user {settings.airflow.username!r}")
    resp.raise_for_status()
    return str(resp.json()["access_token"])
