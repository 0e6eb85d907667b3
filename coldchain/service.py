"""Alerts: listing for regulators and cooperatives, the open -> acknowledged -> resolved lifecycle,
and reconciling stored alerts with the excursions the rule engine finds."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from psycopg import sql

from agritrace.coldchain.exceptions import AlertClosed, AlertNotFound
from agritrace.coldchain.rules import Excursion
from agritrace.db import Conn

SYSTEM = "evaluator"
LIVE = ("open", "acknowledged")


def record(conn: Conn, *, alert_id: int, action: str, actor: str, comment: str | None = None) -> None:
    """Appends a history event holding the alert's state after the change (also the outbox)."""
    conn.execute(
        """INSERT INTO alert_events (alert_id, action, actor, comment, state)
           SELECT id, %s, %s, %s, to_jsonb(v) FROM alerts_view v WHERE id = %s""",
        (action, actor, comment, alert_id),
    )


def list_alerts(
    conn: Conn,
    *,
    cooperative_id: int | None,
    status: str | None = None,
    cooperative: str | None = None,
    product: str | None = None,
    severity: str | None = None,
    gateway_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Alerts, newest first; withdrawn ones only when asked for by status. `after` is the
    (started_at, id) of the last alert of the previous page (keyset pagination)."""
    where: list[sql.Composable] = [
        sql.SQL("status <> 'withdrawn'") if status is None else sql.SQL("status = %(status)s")
    ]
    filters = {
        "cooperative_id": cooperative_id,
        "cooperative": cooperative,
        "product": product,
        "severity": severity,
        "gateway_id": gateway_id,
    }
    where += [
        sql.SQL("{} = %({})s").format(sql.Identifier(k), sql.SQL(k))
        for k, v in filters.items()
        if v is not None
    ]
    # "time" filters select alerts whose excursion overlaps [since, until].
    if since is not None:
        where.append(sql.SQL("coalesce(ended_at, 'infinity') >= %(since)s"))
    if until is not None:
        where.append(sql.SQL("started_at <= %(until)s"))
    if after is not None:
        where.append(sql.SQL("(started_at, id) < (%(after_t)s, %(after_id)s)"))
    query = sql.SQL(
        "SELECT * FROM alerts_view WHERE {} ORDER BY started_at DESC, id DESC LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(where))
    params = {
        **filters,
        "status": status,
        "since": since,
        "until": until,
        "after_t": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
    }
    return conn.execute(query, params).fetchall()


def get_alert(conn: Conn, *, alert_id: int, cooperative_id: int | None) -> dict[str, Any]:
    """One alert with its history; another cooperative's alert is not found."""
    row = conn.execute(
        "SELECT * FROM alerts_view WHERE id = %s AND (%s::bigint IS NULL OR cooperative_id = %s)",
        (alert_id, cooperative_id, cooperative_id),
    ).fetchone()
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    row["history"] = conn.execute(
        "SELECT id, at, action, actor, comment FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)
    ).fetchall()
    return row


def _lock(conn: Conn, *, alert_id: int, cooperative_id: int | None) -> dict[str, Any]:
    row = conn.execute(
        """SELECT a.* FROM alerts a JOIN channels ch ON ch.id = a.channel_id JOIN gateways g ON g.id = ch.gateway_id
            WHERE a.id = %s AND (%s::bigint IS NULL OR g.cooperative_id = %s) FOR UPDATE OF a""",
        (alert_id, cooperative_id, cooperative_id),
    ).fetchone()
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    return row


def acknowledge(
    conn: Conn, *, alert_id: int, actor: str, cooperative_id: int | None, comment: str | None
) -> None:
    """Marks an open alert as seen and being handled."""
    with conn.transaction():
        alert = _lock(conn, alert_id=alert_id, cooperative_id=cooperative_id)
        if alert["status"] != "open":
            raise AlertClosed(
                f"alert {alert_id} is {alert['status']}, only an open alert can be acknowledged"
            )
        conn.execute(
            """UPDATE alerts SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s,
                      updated_at = now() WHERE id = %s""",
            (actor, alert_id),
        )
        record(conn, alert_id=alert_id, action="acknowledged", actor=actor, comment=comment)


def resolve(
    conn: Conn, *, alert_id: int, actor: str, cooperative_id: int | None, comment: str | None
) -> None:
    """Closes an alert by hand (the excursion is handled); the evaluator will not reopen it."""
    with conn.transaction():
        alert = _lock(conn, alert_id=alert_id, cooperative_id=cooperative_id)
        if alert["status"] not in LIVE:
            raise AlertClosed(f"alert {alert_id} is already {alert['status']}")
        conn.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = now(), resolved_by = %s, updated_at = now() WHERE id = %s",
            (actor, alert_id),
        )
        record(conn, alert_id=alert_id, action="resolved", actor=actor, comment=comment)


def comment(conn: Conn, *, alert_id: int, actor: str, cooperative_id: int | None, text: str) -> None:
    """Adds a comment to an alert's history (any status)."""
    with conn.transaction():
        _lock(conn, alert_id=alert_id, cooperative_id=cooperative_id)
        record(conn, alert_id=alert_id, action="commented", actor=actor, comment=text)


def _worst(value: float) -> float | None:
    return None if math.isnan(value) else value


def reconcile(
    conn: Conn,
    *,
    channel_id: int,
    rule_id: int,
    profile_id: int,
    severity: str,
    excursions: list[Excursion],
    since: datetime,
    withdraw_unmatched: bool = True,
) -> None:
    """Makes the stored alerts of one channel and rule agree with the excursions found that go on
    after `since` (the alerts considered are the live ones and those ending after it).

    Idempotent: the same excursions leave the alerts (and the history) as they are. An alert is kept
    for each excursion; late readings may extend, merge, end or (for live alerts) withdraw them.
    """
    existing = conn.execute(
        """SELECT * FROM alerts WHERE channel_id = %s AND rule_id = %s AND status <> 'withdrawn'
              AND (status IN ('open', 'acknowledged') OR coalesce(ended_at, 'infinity') >= %s)
            ORDER BY started_at, id FOR UPDATE""",
        (channel_id, rule_id, since),
    ).fetchall()
    claimed: set[int] = set()
    for exc in sorted(excursions, key=lambda e: e.start):
        matches = [a for a in existing if a["id"] not in claimed and _overlaps(a, exc)]
        if not matches:
            _open(
                conn,
                channel_id=channel_id,
                rule_id=rule_id,
                profile_id=profile_id,
                severity=severity,
                exc=exc,
            )
            continue
        keep, *merged = matches
        claimed.update(a["id"] for a in matches)
        for other in merged:
            _withdraw(conn, other, f"merged into alert {keep['id']}: late readings joined the excursions")
        _follow(conn, keep, exc)
    if withdraw_unmatched:
        # Only what the evaluator itself decided is taken back; a person's resolution stands.
        for alert in existing:
            mine = alert["status"] in LIVE or alert["resolved_by"] == SYSTEM
            if alert["id"] not in claimed and mine:
                _withdraw(conn, alert, "late readings show no excursion")


def _overlaps(alert: dict[str, Any], exc: Excursion) -> bool:
    a_end = alert["ended_at"] or datetime.max.replace(tzinfo=exc.start.tzinfo)
    e_end = exc.end or datetime.max.replace(tzinfo=exc.start.tzinfo)
    return bool(alert["started_at"] <= e_end and exc.start <= a_end)


def _open(
    conn: Conn, *, channel_id: int, rule_id: int, profile_id: int, severity: str, exc: Excursion
) -> None:
    # An excursion that is already over when first seen (a burst of stored readings) is recorded
    # too, opened and resolved at once, so a late logger upload never hides one.
    ended = exc.end is not None
    row = conn.execute(
        """INSERT INTO alerts (channel_id, rule_id, profile_id, severity, started_at, ended_at, worst_value,
                               minutes_out, status, resolved_at, resolved_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END, %s) RETURNING id""",
        (
            channel_id,
            rule_id,
            profile_id,
            severity,
            exc.start,
            exc.end,
            _worst(exc.worst),
            exc.minutes_out,
            "resolved" if ended else "open",
            ended,
            SYSTEM if ended else None,
        ),
    ).fetchone()
    assert row is not None
    # The history still tells it as it happened: opened, then resolved.
    record(conn, alert_id=row["id"], action="opened", actor=SYSTEM)
    if ended:
        record(conn, alert_id=row["id"], action="resolved", actor=SYSTEM, comment="readings back in range")


def _follow(conn: Conn, alert: dict[str, Any], exc: Excursion) -> None:
    """Updates a matched alert; only changes a person cares about go into the history."""
    worst = _worst(exc.worst)
    changed = (alert["started_at"], alert["ended_at"], alert["worst_value"]) != (exc.start, exc.end, worst)
    status, action, note = alert["status"], "updated", None
    if exc.end is not None and status in LIVE:
        status, action, note = "resolved", "resolved", "readings back in range"
    elif (
        exc.end is None
        and status == "resolved"
        and alert["resolved_by"] == SYSTEM
        and not _live_exists(conn, alert)
    ):
        status, note = "open", "reopened: late readings show the excursion went on"
    if not changed and status == alert["status"]:
        if alert["minutes_out"] != exc.minutes_out:  # grows every reading: kept current, not logged
            conn.execute("UPDATE alerts SET minutes_out = %s WHERE id = %s", (exc.minutes_out, alert["id"]))
        return
    conn.execute(
        """UPDATE alerts SET started_at = %s, ended_at = %s, worst_value = %s, minutes_out = %s, status = %s,
                  resolved_at = CASE WHEN %s = 'resolved' THEN coalesce(resolved_at, now()) END,
                  resolved_by = CASE WHEN %s = 'resolved' THEN coalesce(resolved_by, %s) END,
                  updated_at = now()
            WHERE id = %s""",
        (exc.start, exc.end, worst, exc.minutes_out, status, status, status, SYSTEM, alert["id"]),
    )
    record(conn, alert_id=alert["id"], action=action, actor=SYSTEM, comment=note)


def _live_exists(conn: Conn, alert: dict[str, Any]) -> bool:
    """Is another alert of the same channel and rule live (only one may be)?"""
    row = conn.execute(
        "SELECT 1 FROM alerts WHERE channel_id = %s AND rule_id = %s AND status IN ('open', 'acknowledged') AND id <> %s",
        (alert["channel_id"], alert["rule_id"], alert["id"]),
    ).fetchone()
    return row is not None


def _withdraw(conn: Conn, alert: dict[str, Any], why: str) -> None:
    conn.execute("UPDATE alerts SET status = 'withdrawn', updated_at = now() WHERE id = %s", (alert["id"],))
    record(conn, alert_id=alert["id"], action="withdrawn", actor=SYSTEM, comment=why)
