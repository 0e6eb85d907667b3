"""Alert notifications from the history outbox: MQTT (retained state while live) and signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import paho.mqtt.client as mqtt

from agritrace.coldchain import service as alerts_service
from agritrace.db import Conn
from agritrace.errors import InvalidInput
from agritrace.settings import get_settings

log = logging.getLogger(__name__)
TOPIC = "agritrace/v1/alerts/{gateway_id}/{alert_id}"
SIGNATURE_HEADER = "X-AgriTrace-Signature"


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
        live = state["status"] in alerts_service.LIVE
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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(InvalidInput):
    """A webhook URL that may not be called: not https, or reaching a non-public address."""


@dataclass(frozen=True)
class Target:
    """Where one webhook call goes: the URL with the host replaced by the address that was checked,
    the Host header and TLS server name of the original host (certificates are verified against it)."""

    url: str
    host: str
    addresses: tuple[str, ...]


def _embedded(addr: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address it carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            found.append(addr.ipv4_mapped)
        if addr.sixtofour:
            found.append(addr.sixtofour)
        if addr.teredo:
            found.extend(addr.teredo)
        if addr in _NAT64:
            found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def non_public(addr: IPAddress) -> str | None:
    """Why an address may not be a webhook target (`loopback`, `private` ...), or None if public."""
    embedded = _embedded(addr)
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if any(getattr(a, f"is_{kind}") for a in embedded):
            return kind.replace("_", "-")
    if not all(a.is_global for a in embedded):  # shared address space (100.64/10) and the like
        return "not globally reachable"
    return None


def resolve_target(url: str, *, allow_private: bool, unresolved_ok: bool = False) -> Target:
    """Checks a webhook URL and every address its host resolves to; TargetRefused when it is not
    https, carries credentials, or any address is not public (unless `allow_private`).

    `unresolved_ok`: a host that does not resolve now passes (registration: it is checked again
    before every call, where an unresolvable host is refused)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise TargetRefused("a webhook URL is https://host/path")
    if allow_private:
        return Target(url, host, ())
    if parts.scheme != "https":
        raise TargetRefused("a webhook URL must use https")
    if parts.username is not None or parts.password is not None:
        # https://good.example@127.0.0.1/ reads like good.example; the signature header authenticates calls.
        raise TargetRefused("a webhook URL carries no credentials (user@host): calls are signed instead")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:  # no lookup, nothing to pin
        why = non_public(literal)
        if why:
            raise TargetRefused(f"{host} is a {why} address: webhooks may only reach public addresses")
        return Target(url, host, (host,))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        if unresolved_ok:
            return Target(url, host, ())
        raise TargetRefused(f"{host} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    for address in addresses:
        why = non_public(ipaddress.ip_address(address))
        if why:
            raise TargetRefused(
                f"{host} resolves to {address}, a {why} address: webhooks may only reach public addresses"
            )
    # Connect to the address checked here, not to whatever a second lookup would answer.
    pinned = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
    netloc = f"{pinned}:{parts.port}" if parts.port else pinned
    return Target(urlunsplit(parts._replace(netloc=netloc)), host, tuple(addresses))


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
    Returns (attempts made, last status code, last error).

    Before each attempt the target is checked again (`resolve_target`) and the call goes to the
    address that passed; a refused target is not retried. Redirects are never followed."""
    status: int | None = None
    error: str | None = None
    allow_private = get_settings().webhook_allow_private_targets
    for attempt in range(1, attempts + 1):
        try:
            target = resolve_target(hook["url"], allow_private=allow_private)
        except TargetRefused as exc:
            return attempt, None, f"refused: {exc.detail}"
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook["secret"], body, stamp),
            "X-AgriTrace-Timestamp": stamp,
            "X-AgriTrace-Event": str(event_id),
        }
        extensions: dict[str, Any] = {}
        if target.url != hook["url"]:
            port = urlsplit(hook["url"]).port
            headers["Host"] = f"{target.host}:{port}" if port else target.host  # a name: never an IP
            extensions["sni_hostname"] = target.host
        try:
            response = http.post(
                target.url, content=body, headers=headers, extensions=extensions, follow_redirects=False
            )
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
