"""Alert notifications from the history outbox: MQTT (retained state while live) and signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from agritrace.db import Conn
from agritrace.errors import NotFound

log = logging.getLogger(__name__)
TOPIC = "agritrace/v1/alerts/{gateway_id}/{alert_id}"
SIGNATURE_HEADER = "X-AgriTrace-Signature"
LIVE = ("open", "acknowledged")


def topic_for(state: dict[str, Any]) -> str:
    """The MQTT topic of one alert."""
    return TOPIC.format(gateway_id=state["gateway_id"], alert_id=state["id"])


def payload(event: dict[str, Any]) -> bytes:
    """The JSON document sent for one history event: the alert's state plus what happened."""
    doc = {
        **event["state"],
        "event": {
            "id": event["id"],
            "action": event["action"],
            "actor": event["actor"],
            "comment": event["comment"],
            "at": event["at"].isoformat(),
        },
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _pending(conn: Conn, *, cursor: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    row = conn.execute(
        """INSERT INTO coldchain_outbox_cursor (name, last_event_id) VALUES (%s, 0)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING last_event_id""",
        (cursor,),
    ).fetchone()
    assert row is not None
    events = conn.execute(
        "SELECT * FROM alert_events WHERE id > %s ORDER BY id LIMIT %s", (row["last_event_id"], limit)
    ).fetchall()
    return int(row["last_event_id"]), events


def _advance(conn: Conn, *, cursor: str, event_id: int) -> None:
    conn.execute("UPDATE coldchain_outbox_cursor SET last_event_id = %s WHERE name = %s", (event_id, cursor))


def publish_pending(conn: Conn, client: mqtt.Client, *, limit: int = 500, timeout: float = 5.0) -> int:
    """Publishes new alert events on MQTT (QoS 1), in order; returns how many were sent.

    A live alert's topic holds its state retained; when it is resolved or withdrawn, the final state
    is sent once and the retained message is cleared (an empty retained payload).
    """
    _, events = _pending(conn, cursor="mqtt", limit=limit)
    for event in events:
        state = event["state"]
        topic = topic_for(state)
        live = state["status"] in LIVE
        infos = [client.publish(topic, payload(event), qos=1, retain=live)]
        if not live:
            infos.append(client.publish(topic, b"", qos=1, retain=True))
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:  # not connected: paho is reconnecting; retry later
                raise ConnectionError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise ConnectionError(f"MQTT publish of alert event {event['id']} not acknowledged")
        _advance(conn, cursor="mqtt", event_id=event["id"])
    return len(events)


def sign(secret: str, body: bytes, timestamp: str) -> str:
    """HMAC-SHA256 over "timestamp.body", hex, as sent in the signature header (sha256=...)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def deliver(
    http: httpx.Client,
    hook: dict[str, Any],
    event_id: int,
    body: bytes,
    *,
    attempts: int = 4,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, int | None, str | None]:
    """POSTs one event to one webhook, retrying failures with exponential back-off.
    Returns (attempts made, last status code, last error)."""
    status: int | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook["secret"], body, stamp),
            "X-AgriTrace-Timestamp": stamp,
            "X-AgriTrace-Event": str(event_id),
        }
        try:
            response = http.post(hook["url"], content=body, headers=headers)
            status, error = response.status_code, None
            if response.is_success:
                return attempt, status, None
            error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            sleep(backoff * 2 ** (attempt - 1))
    return attempts, status, error


def deliver_pending(conn: Conn, http: httpx.Client, *, limit: int = 100, backoff: float = 0.5) -> int:
    """Sends new alert events to every enabled webhook they concern; returns how many events."""
    _, events = _pending(conn, cursor="webhooks", limit=limit)
    for event in events:
        hooks = conn.execute(
            "SELECT * FROM coldchain_webhooks WHERE enabled AND (cooperative_id IS NULL OR cooperative_id = %s)",
            (event["state"]["cooperative_id"],),
        ).fetchall()
        body = payload(event)
        for hook in hooks:
            made, status, error = deliver(http, hook, event["id"], body, backoff=backoff)
            if error:
                log.warning("webhook %s gave up on event %s: %s", hook["id"], event["id"], error)
            conn.execute(
                """INSERT INTO coldchain_webhook_deliveries (webhook_id, event_id, attempts, status_code, error, delivered_at)
                   VALUES (%s, %s, %s, %s, %s, CASE WHEN %s::text IS NULL THEN now() END)""",
                (hook["id"], event["id"], made, status, error, error),
            )
        _advance(conn, cursor="webhooks", event_id=event["id"])
    return len(events)


def cooperative_id(conn: Conn, *, name: str) -> int:
    """The id of the cooperative with this name (a webhook's filter)."""
    row = conn.execute("SELECT id FROM cooperatives WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no cooperative named {name!r}")
    return int(row["id"])


def add_webhook(conn: Conn, *, url: str, secret: str, cooperative_id: int | None = None) -> int:
    """Registers a webhook; returns its id."""
    row = conn.execute(
        "INSERT INTO coldchain_webhooks (url, secret, cooperative_id) VALUES (%s, %s, %s) RETURNING id",
        (url, secret, cooperative_id),
    ).fetchone()
    assert row is not None
    return int(row["id"])
