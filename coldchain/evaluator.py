"""The alert evaluator (`agritrace alerts run`): re-evaluates channels whose readings changed, from the
oldest newly arrived reading (however late, within the ingest window), and watches for silent channels.
Always from the stored readings, so arrival order never matters."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agritrace import audit
from agritrace.coldchain import profiles, service
from agritrace.coldchain.rules import Excursion, episodes, evaluate
from agritrace.db import Conn
from agritrace.settings import get_settings

log = logging.getLogger(__name__)
# How the audit trail names the evaluator's changes to alerts.
ACTOR = "coldchain:evaluator"
# Which rules apply where: a rule for storage only watches cold rooms and warehouses, one for transit
# only watches trucks; the others (`any`) every channel.
CUSTODY_OF_ASSET = {"cold_room": "storage", "warehouse": "storage", "truck": "transit"}

# Channels with readings not yet evaluated, and the oldest of those readings (`coldchain_from`, lowered
# by the ingest worker with every batch; NULL when not known: then the whole ingest window).
PENDING = """
SELECT m.channel_id, c.last_ingested_at, c.coldchain_from, s.evaluated_ingest
  FROM coldchain_monitored_channels m
  JOIN channels c ON c.id = m.channel_id
  LEFT JOIN coldchain_eval_state s ON s.channel_id = m.channel_id
 WHERE c.last_ingested_at IS NOT NULL
   AND (s.evaluated_ingest IS NULL OR c.last_ingested_at > s.evaluated_ingest)
 ORDER BY c.last_ingested_at
"""

RULES_OF_CHANNEL = """
SELECT r.*, m.profile_id, coldchain_condition(r.metric, r.direction) AS condition
  FROM coldchain_monitored_channels m
  JOIN channels c ON c.id = m.channel_id
  JOIN coldchain_rules r ON r.profile_id = m.profile_id AND r.enabled
 WHERE m.channel_id = %s
   AND (r.metric = 'no_data' OR r.metric = coldchain_metric(c.unit))
   AND (r.applies_in = 'any' OR r.applies_in = %s)
 ORDER BY r.id
"""


def ingest_window() -> timedelta:
    """How old a reading the ingest worker still accepts: evaluation looks back as far."""
    return timedelta(days=get_settings().ingest_max_age_days)


def evaluate_channel(
    conn: Conn, *, channel_id: int, now: datetime | None = None, since: datetime | None = None
) -> None:
    """Re-evaluates every threshold rule of one channel from its stored readings, in one transaction,
    from `since` (the oldest reading that arrived since the last evaluation; None: the whole ingest
    window). An alert is a condition (metric and direction); its rules are its escalation levels."""
    now = now or datetime.now(UTC)
    with conn.transaction():
        audit.set_actor(conn, ACTOR)
        asset = conn.execute("SELECT asset_kind FROM channels WHERE id = %s", (channel_id,)).fetchone()
        custody = CUSTODY_OF_ASSET.get((asset or {}).get("asset_kind") or "", "other")
        rules = [
            r
            for r in conn.execute(RULES_OF_CHANNEL, (channel_id, custody)).fetchall()
            if r["metric"] != "no_data"
        ]
        if not rules:
            return
        newest = conn.execute(
            "SELECT max(time) AS t FROM readings WHERE channel_id = %s", (channel_id,)
        ).fetchone()
        if newest is None or newest["t"] is None:
            return
        # Excursions still going on or ended after the horizon are reconciled; older ones were
        # evaluated before and are history. A reading changes how long the one before it stands (up to
        # max_gap), hence the horizon that far before the oldest new reading. Readings are read from
        # before the horizon (back to the start of any alert still in view, plus the longest rule
        # window, delay and clear delay) so no excursion or cumulative window is seen cut short.
        since = max(since or now - ingest_window(), now - ingest_window())
        horizon = since - timedelta(seconds=max(r["max_gap_s"] for r in rules))
        conditions = sorted({r["condition"] for r in rules})
        in_view = conn.execute(
            """SELECT condition, started_at, ended_at FROM alerts WHERE channel_id = %s AND condition = ANY(%s)
                  AND status <> 'withdrawn' AND coalesce(ended_at, 'infinity') >= %s""",
            (channel_id, conditions, horizon),
        ).fetchall()
        anchor = {"t": min((a["started_at"] for a in in_view), default=None)}
        margin = timedelta(
            seconds=max(max(r["window_s"] or 0, r["delay_s"]) + r["clear_delay_s"] for r in rules)
        )
        read_from = min(horizon, (anchor and anchor["t"]) or horizon) - margin
        # In the metric's unit (°C, %RH): a kelvin channel is compared in °C like any other.
        rows = conn.execute(
            """SELECT r.time, coldchain_value(c.unit, r.value) AS value
                 FROM readings r JOIN channels c ON c.id = r.channel_id
                WHERE r.channel_id = %s AND r.time >= %s ORDER BY r.time""",
            (channel_id, read_from),
        ).fetchall()
        points = [(r["time"], r["value"]) for r in rows]
        for condition in conditions:
            group = [r for r in rules if r["condition"] == condition]
            found = {r["id"]: evaluate(profiles.rule_from_row(r), points) for r in group}
            service.reconcile(
                conn,
                channel_id=channel_id,
                condition=condition,
                profile_id=group[0]["profile_id"],
                rules={r["id"]: r for r in group},
                # An episode that ended before the horizon is history, unless it overlaps an alert
                # still in view (whose readings were read in full): a live alert whose excursion late
                # readings show ended earlier is followed to its end, not withdrawn and opened again.
                episodes=[
                    e
                    for e in episodes(found, group[0]["direction"])
                    if e.end is None
                    or e.end >= horizon
                    or any(
                        a["condition"] == condition
                        and a["started_at"] <= e.end
                        and e.start <= (a["ended_at"] or e.start)
                        for a in in_view
                    )
                ],
                since=horizon,
                now=now,
                newest=newest["t"],
            )


NO_DATA = """
SELECT m.channel_id, m.profile_id, r.id AS rule_id, r.name, r.severity, r.delay_s,
       coalesce(last.t, c.first_seen) AS last_time,
       greatest(coalesce(last.t, c.first_seen), c.last_ingested_at) AS last_heard,
       a.id AS alert_id, a.started_at AS alert_start
  FROM coldchain_monitored_channels m
  JOIN channels c ON c.id = m.channel_id
  JOIN coldchain_rules r ON r.profile_id = m.profile_id AND r.enabled AND r.metric = 'no_data'
   AND (r.applies_in = 'any' OR r.applies_in = CASE c.asset_kind WHEN 'truck' THEN 'transit'
                                                  WHEN 'cold_room' THEN 'storage' WHEN 'warehouse' THEN 'storage' END)
  LEFT JOIN LATERAL (SELECT max(time) AS t FROM readings WHERE channel_id = m.channel_id) last ON true
  LEFT JOIN alerts a ON a.channel_id = m.channel_id AND a.condition = 'no_data' AND a.status IN ('open', 'acknowledged')
 ORDER BY m.channel_id, r.delay_s, r.id
"""


def check_silence(conn: Conn, *, now: datetime | None = None) -> None:
    """Opens a "no data" alert for each monitored channel silent past its rule's delay (further
    no-data rules of the profile are its escalation levels); ends it when readings are back (at the
    first reading after the silence)."""
    now = now or datetime.now(UTC)
    rows = conn.execute(NO_DATA).fetchall()
    for channel_id in dict.fromkeys(r["channel_id"] for r in rows):
        group = [r for r in rows if r["channel_id"] == channel_id]
        excursion = _silence(conn, group[0], now)
        if excursion is None and group[0]["alert_id"] is None:
            continue
        found: dict[int, list[Excursion]] = {}
        if excursion is not None:
            for r in group:
                met = excursion.start + timedelta(seconds=r["delay_s"])
                if met <= (excursion.end or now):
                    found[r["rule_id"]] = [replace(excursion, met=met)]
        with conn.transaction():
            audit.set_actor(conn, ACTOR)
            service.reconcile(
                conn,
                channel_id=channel_id,
                condition="no_data",
                profile_id=group[0]["profile_id"],
                rules={r["rule_id"]: r for r in group},
                episodes=episodes(found, None),
                since=now,
                now=now,
                withdraw_unmatched=False,
            )


def _silence(conn: Conn, row: dict[str, Any], now: datetime) -> Excursion | None:
    start = row["alert_start"] or row["last_time"]
    # Silent = nothing recent in the readings AND nothing arrived lately: a gateway flushing a
    # backlog of old readings is talking, not silent (else every flush would open and close alerts).
    if row["alert_id"] is None and now - row["last_heard"] <= timedelta(seconds=row["delay_s"]):
        return None
    back = conn.execute(
        "SELECT min(time) AS t FROM readings WHERE channel_id = %s AND time > %s", (row["channel_id"], start)
    ).fetchone()
    end = back["t"] if back else None
    minutes = round(((end or now) - start).total_seconds() / 60, 3)
    return Excursion(start=start, end=end, worst=math.nan, minutes_out=minutes)


def run_once(conn: Conn, *, now: datetime | None = None, silence: bool = True) -> int:
    """One pass: evaluates the channels with new readings, then (if asked) the silence check;
    returns how many channels were evaluated."""
    pending = conn.execute(PENDING).fetchall()
    for row in pending:
        # A channel never evaluated (its profile is new) is looked at over the whole ingest window.
        since = row["coldchain_from"] if row["evaluated_ingest"] is not None else None
        try:
            evaluate_channel(conn, channel_id=row["channel_id"], now=now, since=since)
        except Exception:  # one broken channel must not stop the others being watched
            log.exception("evaluating channel %s failed", row["channel_id"])
            continue
        # Mark what was seen, not now(): an ingest that lands meanwhile is evaluated next pass.
        conn.execute(
            """INSERT INTO coldchain_eval_state (channel_id, evaluated_ingest) VALUES (%s, %s)
               ON CONFLICT (channel_id) DO UPDATE SET evaluated_ingest = EXCLUDED.evaluated_ingest""",
            (row["channel_id"], row["last_ingested_at"]),
        )
        # Evaluated from there: the watermark is cleared unless another batch arrived meanwhile (it
        # then stays as low as it was, and the next pass starts from it).
        conn.execute(
            "UPDATE channels SET coldchain_from = NULL WHERE id = %s AND last_ingested_at = %s",
            (row["channel_id"], row["last_ingested_at"]),
        )
    if silence:
        check_silence(conn, now=now)
    return len(pending)
