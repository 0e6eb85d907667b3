"""Webhook subscriptions to alert changes: registering one (delivery is `notify.py`'s job)."""

from __future__ import annotations

from agritrace.coldchain.notify import resolve_target
from agritrace.db import Conn
from agritrace.settings import get_settings


def add_webhook(conn: Conn, *, url: str, secret: str, cooperative_id: int | None = None) -> int:
    """Registers a webhook; returns its id. TargetRefused (422) for a URL that is not https or whose
    host resolves to a non-public address (unless AGRITRACE_WEBHOOK_ALLOW_PRIVATE_TARGETS)."""
    resolve_target(url, allow_private=get_settings().webhook_allow_private_targets, unresolved_ok=True)
    row = conn.execute(
        "INSERT INTO coldchain_webhooks (url, secret, cooperative_id) VALUES (%s, %s, %s) RETURNING id",
        (url, secret, cooperative_id),
    ).fetchone()
    assert row is not None
    return int(row["id"])
