"""Device registry: cooperatives, gateways (with their broker credentials), channels and their readings."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from psycopg import errors as pg_errors

from agritrace.coldchain import feeds
from agritrace.db import Conn
from agritrace.devices import broker
from agritrace.devices.broker import DynamicSecurity
from agritrace.devices.exceptions import ChannelNotFound, GatewayNotFound, InvalidRange
from agritrace.errors import Conflict, InvalidInput, NotFound
from agritrace.settings import Settings

GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"  # the gateways.id CHECK in 0001
MAX_RAW_RANGE = timedelta(days=31)
MAX_BUCKETED_RANGE = timedelta(days=3 * 366)
MAX_BUCKETS = 10_000
MAX_PAGE = 10_000
CHANNEL_FIELDS = ("description", "quantity", "asset_kind", "asset_name", "unit")

GATEWAY_COLUMNS = """g.id AS gateway_id, c.name AS cooperative, g.cooperative_id, g.description,
    g.created_at, g.disabled_at, g.online, g.status_at, g.last_seen, g.credentials_issued_at"""


def get_or_create_cooperative(conn: Conn, *, name: str) -> int:
    """Returns the id of the cooperative with this name, creating it if new."""
    row = conn.execute(
        """INSERT INTO cooperatives (name) VALUES (%s)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
        (name,),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def cooperative_id(conn: Conn, *, name: str) -> int:
    """The id of the cooperative with this name; NotFound if there is none."""
    row = conn.execute("SELECT id FROM cooperatives WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no cooperative named {name!r}")
    return int(row["id"])


def cooperative_name(conn: Conn, *, cooperative_id: int) -> str | None:
    """The name of the cooperative with this id, or None if there is none."""
    row = conn.execute("SELECT name FROM cooperatives WHERE id = %s", (cooperative_id,)).fetchone()
    return None if row is None else str(row["name"])


def mqtt_connection(settings: Settings) -> dict[str, Any]:
    """How any gateway reaches the broker: its TLS listener, and the CA certificate (PEM) to verify it
    with, or None when the broker's certificate comes from a CA gateways already trust. Read before
    a gateway is made, so a missing CA file changes nothing."""
    ca_certificate = None
    if settings.mqtt_tls_ca_file is not None:
        try:
            ca_certificate = settings.mqtt_tls_ca_file.read_text()
        except OSError as exc:
            raise RuntimeError(f"AGRITRACE_MQTT_TLS_CA_FILE cannot be read: {exc}") from exc
    return {
        "host": settings.gateway_mqtt_host,
        "port": settings.gateway_mqtt_port,
        "tls": True,
        "ca_certificate": ca_certificate,
    }


def mqtt_credentials(connection: dict[str, Any], *, gateway_id: str, password: str) -> dict[str, Any]:
    """What a gateway needs to connect (the CLI and API contract): the broker's TLS host, port and CA,
    and its own client id, username (both the gateway id) and password."""
    return {**connection, "client_id": gateway_id, "username": gateway_id, "password": password}


def create_gateway(
    conn: Conn,
    *,
    dynsec: DynamicSecurity,
    cooperative_id: int,
    gateway_id: str | None = None,
    description: str | None = None,
) -> tuple[str, str]:
    """Registers a gateway and provisions its broker client; returns (gateway id, password shown once)."""
    gateway_id = gateway_id or f"gw-{secrets.token_hex(5)}"
    if broker.is_reserved(gateway_id):
        raise broker.ReservedName(f"{gateway_id!r} is in the platform's reserved namespace")
    password = broker.new_password()
    # The row and the broker client are created together: if the broker refuses, the row is
    # rolled back with the enclosing transaction.
    with conn.transaction():
        try:
            conn.execute(
                """INSERT INTO gateways (id, cooperative_id, description, credentials_issued_at)
                   VALUES (%s, %s, %s, now())""",
                (gateway_id, cooperative_id, description),
            )
        except pg_errors.UniqueViolation:
            raise Conflict(f"gateway {gateway_id!r} already exists") from None
        except pg_errors.CheckViolation:
            raise InvalidInput(
                f"a gateway id must match {GATEWAY_ID_PATTERN} and not start with 'agritrace'"
            ) from None
        broker.provision_gateway(dynsec, gateway_id, password)
        feeds.add_gateway(dynsec, cooperative_id=cooperative_id, gateway_id=gateway_id)  # its alert feed
    return gateway_id, password


def get_gateway(conn: Conn, *, gateway_id: str, cooperative_id: int | None = None) -> dict[str, Any]:
    """One gateway, if the caller may see it (404 otherwise)."""
    row = conn.execute(
        f"""SELECT {GATEWAY_COLUMNS} FROM gateways g JOIN cooperatives c ON c.id = g.cooperative_id
             WHERE g.id = %s AND (%s::bigint IS NULL OR g.cooperative_id = %s)""",  # noqa: S608 - only module constants are interpolated
        (gateway_id, cooperative_id, cooperative_id),
    ).fetchone()
    if row is None:
        raise GatewayNotFound(f"no gateway {gateway_id!r}")
    return row


def list_gateways(
    conn: Conn, *, cooperative_id: int | None = None, after: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The gateways the caller may see, by id; keyset pages (ids after `after`) when given a limit."""
    return conn.execute(
        f"""SELECT {GATEWAY_COLUMNS} FROM gateways g JOIN cooperatives c ON c.id = g.cooperative_id
             WHERE (%s::bigint IS NULL OR g.cooperative_id = %s) AND (%s::text IS NULL OR g.id > %s)
             ORDER BY g.id LIMIT %s""",  # noqa: S608 - only module constants are interpolated
        (cooperative_id, cooperative_id, after, after, limit),
    ).fetchall()


def set_gateway_enabled(
    conn: Conn, *, dynsec: DynamicSecurity, gateway_id: str, enabled: bool, cooperative_id: int | None = None
) -> dict[str, Any]:
    """Disables (the broker refuses and disconnects it) or re-enables a gateway."""
    get_gateway(conn, gateway_id=gateway_id, cooperative_id=cooperative_id)
    with conn.transaction():
        conn.execute(
            """UPDATE gateways SET disabled_at = CASE WHEN %s THEN NULL ELSE coalesce(disabled_at, now()) END,
                      online = online AND %s
                WHERE id = %s""",
            (enabled, enabled, gateway_id),
        )
        broker.set_gateway_enabled(dynsec, gateway_id, enabled)
    return get_gateway(conn, gateway_id=gateway_id)


def rotate_credentials(
    conn: Conn, *, dynsec: DynamicSecurity, gateway_id: str, cooperative_id: int | None = None
) -> str:
    """Issues a new password for the gateway (the old one stops working); returns it, shown once."""
    gateway = get_gateway(conn, gateway_id=gateway_id, cooperative_id=cooperative_id)
    password = broker.new_password()
    with conn.transaction():
        conn.execute("UPDATE gateways SET credentials_issued_at = now() WHERE id = %s", (gateway_id,))
        broker.set_gateway_password(dynsec, gateway_id, password)
        if gateway["disabled_at"] is None:
            # Mosquitto 2.0 keeps a connected session alive after a password change; cycling the
            # client drops it, so whoever held the old password must reconnect with the new one.
            broker.set_gateway_enabled(dynsec, gateway_id, False)
            broker.set_gateway_enabled(dynsec, gateway_id, True)
    return password


CHANNEL_COLUMNS = """ch.id, ch.gateway_id, ch.name, ch.unit, ch.quantity, ch.description, ch.asset_kind,
    ch.asset_name, ch.first_seen, ch.last_time, ch.last_value, ch.last_ingested_at"""


def list_channels(conn: Conn, *, gateway_id: str, cooperative_id: int | None = None) -> list[dict[str, Any]]:
    """A gateway's channels, by name."""
    get_gateway(conn, gateway_id=gateway_id, cooperative_id=cooperative_id)
    return conn.execute(
        f"SELECT {CHANNEL_COLUMNS} FROM channels ch WHERE ch.gateway_id = %s ORDER BY ch.name",  # noqa: S608
        (gateway_id,),
    ).fetchall()


def get_channel(conn: Conn, *, channel_id: int, cooperative_id: int | None = None) -> dict[str, Any]:
    """One channel, if the caller may see its gateway (404 otherwise)."""
    row = conn.execute(
        f"""SELECT {CHANNEL_COLUMNS} FROM channels ch JOIN gateways g ON g.id = ch.gateway_id
             WHERE ch.id = %s AND (%s::bigint IS NULL OR g.cooperative_id = %s)""",  # noqa: S608 - only module constants are interpolated
        (channel_id, cooperative_id, cooperative_id),
    ).fetchone()
    if row is None:
        raise ChannelNotFound(f"no channel {channel_id}")
    return row


def describe_channel(
    conn: Conn, *, channel_id: int, changes: dict[str, Any], cooperative_id: int | None = None
) -> dict[str, Any]:
    """Sets what a channel measures and where it is (only the fields given)."""
    get_channel(conn, channel_id=channel_id, cooperative_id=cooperative_id)
    fields = {k: v for k, v in changes.items() if k in CHANNEL_FIELDS}
    if fields:
        assignments = ", ".join(f"{k} = %({k})s" for k in fields)  # keys are from CHANNEL_FIELDS
        conn.execute(f"UPDATE channels SET {assignments} WHERE id = %(id)s", {**fields, "id": channel_id})  # noqa: S608
    return get_channel(conn, channel_id=channel_id)


def latest(conn: Conn, *, gateway_id: str, cooperative_id: int | None = None) -> list[dict[str, Any]]:
    """The newest reading (by timestamp, not arrival) of every channel of a gateway."""
    get_gateway(conn, gateway_id=gateway_id, cooperative_id=cooperative_id)
    return conn.execute(
        """SELECT name, last_time AS time, last_value AS value, unit FROM channels
            WHERE gateway_id = %s AND last_time IS NOT NULL ORDER BY name""",
        (gateway_id,),
    ).fetchall()


def readings(
    conn: Conn,
    *,
    channel_id: int,
    start: datetime,
    end: datetime,
    bucket: timedelta | None = None,
    limit: int = 1000,
    after: datetime | None = None,
    cooperative_id: int | None = None,
) -> list[dict[str, Any]]:
    """A channel's readings in [start, end): raw (paged by `after`) or averaged per time_bucket."""
    get_channel(conn, channel_id=channel_id, cooperative_id=cooperative_id)
    if end <= start:
        raise InvalidRange("end must be after start")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRange(f"limit must be between 1 and {MAX_PAGE}")
    if bucket is None:
        if end - start > MAX_RAW_RANGE:
            raise InvalidRange(f"raw readings span at most {MAX_RAW_RANGE.days} days; ask for a bucket")
        return conn.execute(
            """SELECT time, value FROM readings
                WHERE channel_id = %s AND time >= %s AND time < %s AND (%s::timestamptz IS NULL OR time > %s)
                ORDER BY time LIMIT %s""",
            (channel_id, start, end, after, after, limit),
        ).fetchall()
    if bucket < timedelta(seconds=1):
        raise InvalidRange("a bucket is at least one second")
    if end - start > MAX_BUCKETED_RANGE or (end - start) / bucket > MAX_BUCKETS:
        raise InvalidRange(f"at most {MAX_BUCKETS} buckets over at most {MAX_BUCKETED_RANGE.days} days")
    return conn.execute(
        """SELECT time_bucket(%s, time) AS time, avg(value) AS value, min(value) AS min,
                  max(value) AS max, count(*) AS count
             FROM readings WHERE channel_id = %s AND time >= %s AND time < %s
            GROUP BY 1 ORDER BY 1""",
        (bucket, channel_id, start, end),
    ).fetchall()
