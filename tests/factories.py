"""Small factories for arranging test data with plain SQL (unique names, so tests never collide)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from agritrace.db import Conn


def unique(prefix: str) -> str:
    """A short unique name: `prefix-1a2b3c4d`."""
    return f"{prefix}-{secrets.token_hex(4)}"


def cooperative(conn: Conn, *, name: str | None = None) -> dict[str, Any]:
    """Inserts a cooperative."""
    row = conn.execute(
        "INSERT INTO cooperatives (name) VALUES (%s) RETURNING *", (name or unique("coop"),)
    ).fetchone()
    assert row is not None
    return row


def gateway(
    conn: Conn, *, cooperative_id: int | None = None, gateway_id: str | None = None
) -> dict[str, Any]:
    """Inserts a gateway row (no broker account: use the devices service for that)."""
    coop_id = cooperative_id if cooperative_id is not None else cooperative(conn)["id"]
    row = conn.execute(
        "INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s) RETURNING *",
        (gateway_id or unique("gw"), coop_id),
    ).fetchone()
    assert row is not None
    return row


def channel(
    conn: Conn, *, gateway_id: str | None = None, name: str = "coldroom/temp", unit: str = "Cel"
) -> dict[str, Any]:
    """Inserts a sensor channel."""
    gw = gateway_id or gateway(conn)["id"]
    row = conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, %s, %s) RETURNING *", (gw, name, unit)
    ).fetchone()
    assert row is not None
    return row


def readings(conn: Conn, *, channel_id: int, points: list[tuple[datetime, float]]) -> None:
    """Inserts readings for one channel (duplicates ignored)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, channel_id, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            [(t, channel_id, v) for t, v in points],
        )
