"""Errors of the dashboards domain."""

from __future__ import annotations

from agritrace.errors import AgriTraceError


class GrafanaUnavailable(AgriTraceError):
    """Grafana refused or failed an upload (bad token, unreachable, server error)."""

    status = 502
    type_slug = "grafana-unavailable"
    title = "Grafana refused the request"
