"""Alerts: listing for regulators and cooperatives, the open -> acknowledged -> resolved lifecycle,
and reconciling stored alerts with the excursions the rule engine finds."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from agritrace.coldchain.exceptions import AlertClosed, AlertNotFound
from agritrace.coldchain.rules import Episode
from agritrace.db import Conn
from agritrace.errors import Forbidden

SYSTEM = "evaluator"
LIVE = ("open", "acknowledged")
RANK = {"info": 1, "warning": 2, "critical": 3}
# An excursion that becomes known this long after its first level was met (in reading time) is
# marked late: a gateway that stored and forwarded, a logger read out at the end of a trip.
LATE_AFTER = timedelta(minutes=15)


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
    conn: Conn,
    *,
    alert_id: int,
    actor: str,
    cooperative_id: int | None,
    comment: str | None,
    may_close_critical: bool = True,
) -> None:
    """Closes an alert by hand (the excursion is handled). Only a regulator or admin
    (`may_close_critical`) closes a critical alert: Forbidden otherwise. If readings taken after the
    resolution are still out of range, the evaluator reopens it and names who resolved it."""
    with conn.transaction():
        alert = _lock(conn, alert_id=alert_id, cooperative_id=cooperative_id)
        if alert["status"] not in LIVE:
            raise AlertClosed(f"alert {alert_id} is already {alert['status']}")
        if alert["severity"] == "critical" and not may_close_critical:
            raise Forbidden("only a regulator or an admin resolves a critical alert")
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


def _top(levels: list[int], rules: dict[int, dict[str, Any]], met: dict[int, datetime]) -> int:
    """The level that decides an alert's severity and rule: the most severe, the first met among equals."""
    return max(levels, key=lambda r: (RANK[rules[r]["severity"]], -met[r].timestamp(), -r))


def reconcile(
    conn: Conn,
    *,
    channel_id: int,
    condition: str,
    profile_id: int,
    rules: dict[int, dict[str, Any]],
    episodes: list[Episode],
    since: datetime,
    now: datetime,
    newest: datetime | None = None,
    withdraw_unmatched: bool = True,
) -> None:
    """Makes the stored alerts of one channel and condition agree with the episodes found that go on
    after `since` (the alerts considered are the live ones and those ending after it). `rules`: the
    condition's rules by id (name, severity); `newest`: the channel's newest reading time.

    Idempotent: the same episodes leave the alerts (and the history) as they are. An alert is kept
    for each episode; late readings may extend, merge, end, escalate or (for live alerts) withdraw them.
    """
    # An episode may reach back before `since` (a cumulative level covers the dips of its whole window)
    # and so join an alert that ended long ago: those alerts are matched too, but only the ones ending
    # after `since` may be withdrawn (older ones were settled by earlier evaluations).
    reach = min([since, *(e.start for e in episodes)])
    existing = conn.execute(
        """SELECT * FROM alerts WHERE channel_id = %s AND condition = %s AND status <> 'withdrawn'
              AND (status IN ('open', 'acknowledged') OR coalesce(ended_at, 'infinity') >= %s)
            ORDER BY started_at, id FOR UPDATE""",
        (channel_id, condition, reach),
    ).fetchall()
    claimed: set[int] = set()
    for ep in sorted(episodes, key=lambda e: e.start):
        matches = [a for a in existing if a["id"] not in claimed and _overlaps(a, ep)]
        if not matches:
            _open(
                conn,
                channel_id=channel_id,
                condition=condition,
                profile_id=profile_id,
                rules=rules,
                ep=ep,
                now=now,
            )
            continue
        keep, *merged = matches
        claimed.update(a["id"] for a in matches)
        for other in merged:
            _withdraw(conn, other, f"merged into alert {keep['id']}: late readings joined the excursions")
        # The excursion became known when the first of the alerts it joins was opened.
        opened = min(a["opened_at"] for a in matches)
        _follow(conn, keep, ep, rules=rules, newest=newest, opened=opened)
    if withdraw_unmatched:
        # Only what the evaluator itself decided is taken back; a person's resolution stands.
        for alert in existing:
            mine = alert["status"] in LIVE or alert["resolved_by"] == SYSTEM
            settled = (
                alert["status"] not in LIVE and alert["ended_at"] is not None and alert["ended_at"] < since
            )
            if alert["id"] not in claimed and mine and not settled:
                _withdraw(conn, alert, "late readings show no excursion")


def _overlaps(alert: dict[str, Any], ep: Episode) -> bool:
    a_end = alert["ended_at"] or datetime.max.replace(tzinfo=ep.start.tzinfo)
    e_end = ep.end or datetime.max.replace(tzinfo=ep.start.tzinfo)
    return bool(alert["started_at"] <= e_end and ep.start <= a_end)


def _level_note(rules: dict[int, dict[str, Any]], rule_id: int, met: datetime) -> str:
    rule = rules[rule_id]
    return f"{rule['name']} ({rule['severity']}) met at {met.isoformat()}"


def _open(
    conn: Conn,
    *,
    channel_id: int,
    condition: str,
    profile_id: int,
    rules: dict[int, dict[str, Any]],
    ep: Episode,
    now: datetime,
) -> None:
    # An excursion that is already over when first seen (a burst of stored readings) is recorded
    # too, opened and resolved at once, so a late logger upload never hides one.
    ended = ep.end is not None
    order = sorted(ep.levels, key=lambda r: (ep.levels[r], -RANK[rules[r]["severity"]], r))
    first = order[0]
    late = now - ep.met > LATE_AFTER
    row = conn.execute(
        """INSERT INTO alerts (channel_id, rule_id, profile_id, severity, condition, met_rules, met_at, late,
                               opened_at, started_at, ended_at, worst_value, minutes_out, status,
                               resolved_at, resolved_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN %s END, %s)
           RETURNING id""",
        (
            channel_id,
            first,
            profile_id,
            rules[first]["severity"],
            condition,
            [first],
            ep.met,
            late,
            now,
            ep.start,
            ep.end,
            _worst(ep.worst),
            ep.minutes_out,
            "resolved" if ended else "open",
            ended,
            now,
            SYSTEM if ended else None,
        ),
    ).fetchone()
    assert row is not None
    note = _level_note(rules, first, ep.levels[first])
    if late:
        note += f"; late: it happened from {ep.start.isoformat()}, known at {now.isoformat()}"
    # The history still tells it as it happened: opened, each further level, then resolved.
    record(conn, alert_id=row["id"], action="opened", actor=SYSTEM, comment=note)
    _escalate(conn, alert_id=row["id"], have=[first], add=order[1:], rules=rules, met=ep.levels)
    if ended:
        record(conn, alert_id=row["id"], action="resolved", actor=SYSTEM, comment="readings back in range")


def _escalate(
    conn: Conn,
    *,
    alert_id: int,
    have: list[int],
    add: list[int],
    rules: dict[int, dict[str, Any]],
    met: dict[int, datetime],
) -> None:
    """Records each further level met, in the order they were met; the severity rises with them."""
    levels = list(have)
    for rule_id in add:
        before = rules[_top(levels, rules, met)]["severity"]
        levels.append(rule_id)
        top = _top(levels, rules, met)
        after = rules[top]["severity"]
        conn.execute(
            "UPDATE alerts SET met_rules = %s, rule_id = %s, severity = %s, updated_at = now() WHERE id = %s",
            (sorted(levels), top, after, alert_id),
        )
        note = _level_note(rules, rule_id, met[rule_id])
        note += f"; severity {before} -> {after}" if after != before else f"; severity stays {after}"
        record(conn, alert_id=alert_id, action="escalated", actor=SYSTEM, comment=note)


def _follow(
    conn: Conn,
    alert: dict[str, Any],
    ep: Episode,
    *,
    rules: dict[int, dict[str, Any]],
    newest: datetime | None,
    opened: datetime,
) -> None:
    """Updates a matched alert; only changes a person cares about go into the history. `opened`: when
    the excursion became known (the earliest opening of the alerts it joins). Late is judged against
    when its first level was met by the readings known now, which late readings may move earlier."""
    worst = _worst(ep.worst)
    old = [r for r in alert["met_rules"] if r in rules]
    kept = [r for r in old if r in ep.levels]
    gone = [r for r in alert["met_rules"] if r not in kept]
    added = sorted((r for r in ep.levels if r not in kept), key=lambda r: (ep.levels[r], r))
    if not kept:
        kept, added = added[:1], added[1:]
    top = _top(kept, rules, ep.levels)
    late = opened - ep.met > LATE_AFTER
    changed = (
        alert["started_at"],
        alert["ended_at"],
        alert["worst_value"],
        alert["met_at"],
        alert["opened_at"],
        alert["late"],
    ) != (ep.start, ep.end, worst, ep.met, opened, late)
    if changed or gone or top != alert["rule_id"]:
        conn.execute(
            """UPDATE alerts SET started_at = %s, ended_at = %s, worst_value = %s, minutes_out = %s, met_at = %s,
                      met_rules = %s, rule_id = %s, severity = %s, opened_at = %s, late = %s,
                      updated_at = now()
                WHERE id = %s""",
            (
                ep.start,
                ep.end,
                worst,
                ep.minutes_out,
                ep.met,
                sorted(kept),
                top,
                rules[top]["severity"],
                opened,
                late,
                alert["id"],
            ),
        )
        resolving = ep.end is not None and alert["status"] in LIVE  # its own event says it all
        if late and not alert["late"]:
            note = f"late: its first level was met at {ep.met.isoformat()}, known at {opened.isoformat()}"
            record(conn, alert_id=alert["id"], action="updated", actor=SYSTEM, comment=note)
        elif gone:
            names = ", ".join(rules[r]["name"] if r in rules else f"rule {r}" for r in gone)
            note = f"no longer met ({names}): late readings"
            record(conn, alert_id=alert["id"], action="updated", actor=SYSTEM, comment=note)
        elif not resolving:
            record(conn, alert_id=alert["id"], action="updated", actor=SYSTEM)
    elif alert["minutes_out"] != ep.minutes_out:  # grows every reading: kept current, not logged
        conn.execute("UPDATE alerts SET minutes_out = %s WHERE id = %s", (ep.minutes_out, alert["id"]))
    _escalate(conn, alert_id=alert["id"], have=kept, add=added, rules=rules, met=ep.levels)
    status = alert["status"]
    if ep.end is not None and status in LIVE:
        conn.execute(
            """UPDATE alerts SET status = 'resolved', resolved_at = now(), resolved_by = %s, updated_at = now()
                WHERE id = %s""",
            (SYSTEM, alert["id"]),
        )
        record(conn, alert_id=alert["id"], action="resolved", actor=SYSTEM, comment="readings back in range")
    elif ep.end is None and status == "resolved" and not _live_exists(conn, alert):
        by = alert["resolved_by"]
        if by == SYSTEM:
            why, attempted = "late readings show the excursion went on", alert["resolve_attempted_by"]
        elif newest is not None and newest > alert["resolved_at"]:
            # A person closed it, but readings taken since are still out of range: it is not over.
            why = f"still out of range after {by} resolved it at {alert['resolved_at'].isoformat()}"
            attempted = by
        else:
            return
        conn.execute(
            """UPDATE alerts SET status = 'open', resolved_at = NULL, resolved_by = NULL,
                      resolve_attempted_by = %s, updated_at = now() WHERE id = %s""",
            (attempted, alert["id"]),
        )
        record(conn, alert_id=alert["id"], action="reopened", actor=SYSTEM, comment=why)


def _live_exists(conn: Conn, alert: dict[str, Any]) -> bool:
    """Is another alert of the same channel and condition live (only one may be)?"""
    row = conn.execute(
        """SELECT 1 FROM alerts WHERE channel_id = %s AND condition = %s AND status IN ('open', 'acknowledged')
              AND id <> %s""",
        (alert["channel_id"], alert["condition"], alert["id"]),
    ).fetchone()
    return row is not None


def _withdraw(conn: Conn, alert: dict[str, Any], why: str) -> None:
    conn.execute("UPDATE alerts SET status = 'withdrawn', updated_at = now() WHERE id = %s", (alert["id"],))
    record(conn, alert_id=alert["id"], action="withdrawn", actor=SYSTEM, comment=why)
