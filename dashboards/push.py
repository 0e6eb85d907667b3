"""Uploads the dashboards to a running Grafana over its HTTP API (grafana-client), idempotently.

Provisioning from files is the normal way (deploy/compose.yaml); this is for a Grafana that is
already running elsewhere. Each dashboard is saved by its fixed uid with `overwrite`, into a folder
with a fixed uid, so pushing twice leaves one copy of each, updated.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from agritrace.dashboards import boards
from agritrace.dashboards.exceptions import GrafanaUnavailable
from agritrace.dashboards.provisioning import dashboard_json


def ensure_folder(api: Any) -> None:
    """Creates the AgriTrace folder unless it exists (by uid)."""
    try:
        api.folder.get_folder(boards.FOLDER_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(boards.FOLDER_TITLE, uid=boards.FOLDER_UID)


def push(*, url: str, token: str, timeout: float = 10.0) -> list[str]:
    """Creates or updates every dashboard in Grafana at `url`; returns the uids pushed."""
    api: Any = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    pushed = []
    try:
        ensure_folder(api)
        for model in boards.build_all().values():
            body = json.loads(dashboard_json(model))
            # Grafana matches on uid; a numeric id from another instance would be refused.
            body.pop("id", None)
            api.dashboard.update_dashboard(
                {
                    "dashboard": body,
                    "folderUid": boards.FOLDER_UID,
                    "overwrite": True,
                    "message": "agritrace dashboards push",
                }
            )
            pushed.append(str(body["uid"]))
    except (GrafanaException, OSError) as exc:  # OSError: unreachable, refused, TLS
        raise GrafanaUnavailable(f"Grafana at {url}: {exc}") from exc
    return pushed
