"""The alert evaluator (`agritrace alerts run`): re-evaluates channels whose readings changed, and
watches for silent channels. Always from the stored readings, so arrival order never matters."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from agritrace import audit
from agritrace.coldchain import profiles, service
from agritrace.coldchain.rules import Excursion, evaluate
from agritrace.db import Conn

log = logging.getLogger(__name__)
# How far back each evaluation looks for excursions: long enough for a gateway that stored and
# forwarded a day or two of readings.
LOOKBACK = timedelta(hours=48)
# How the audit trail names the evaluator's changes to alerts.
ACTOR = "coldchain:evaluator"

PENDING = """
SELECT m.channel_id, c.last_ingested_at
  FROM coldchain_monitored_channels m
  JOIN channels c ON c.id = m.channel_id
  LEFT JOIN coldchain_eval_state s ON s.channel_id = m.channel_id
 WHERE c.last_ingested_at IS NOT NULL
   AND (s.evaluated_ingest IS NULL OR c.last_ingested_at > s.evaluated_ingest)
 ORDER BY c.last_ingested_at
"""

RULES_OF_CHANNEL = """
SELECT r.*, m.profile_id
  FROM coldchain_monitored_channels m
  JOIN channels c ON c.id = m.channel_id
  JOIN coldchain_rules r ON r.profile_id = m.profile_id AND r.enabled
 WHERE m.channel_id = %s
   AND (r.metric = 'no_data' OR r.metric = coldchain_metric(c.unit))
 ORDER BY r.id
"""


def evaluate_channel(conn: Conn, *, channel_id: int, now: datetime | None = None) -> None:
    """Re-evaluates every threshold rule of one channel from its stored readings, in one transaction."""
    now = now or datetime.now(UTC)
    with conn.transaction():
        audit.set_actor(conn, ACTOR)
        rules = [
            r for r in conn.execute(RULES_OF_CHANNEL, (channel_id,)).fetchall() if r["metric"] != "no_data"
        ]
        if not rules:
            return
        newest = conn.execute(
            "SELECT max(time) AS t FROM readings WHERE channel_id = %s", (channel_id,)
        ).fetchone()
        if newest is None or newest["t"] is None:
            return
        # Excursions still going on or ended after the horizon are reconciled; older ones are history.
        # Readings are read from before the horizon (back to the start of any alert still in view,
        # plus the longest rule window) so no excursion or cumulative window is seen cut short.
        horizon = newest["t"] - LOOKBACK
        anchor = conn.execute(
            """SELECT min(started_at) AS t FROM alerts WHERE channel_id = %s AND status <> 'withdrawn'
                  AND coalesce(ended_at, 'infinity') >= %s""",
            (channel_id, horizon),
        ).fetchone()
        margin = timedelta(seconds=max(max(r["window_s"] or 0, r["delay_s"]) for r in rules))
        read_from = min(horizon, (anchor and anchor["t"]) or horizon) - margin
        # In the metric's unit (°C, %RH): a kelvin channel is compared in °C like any other.
        rows = conn.execute(
            """SELECT r.time, coldchain_value(c.unit, r.value) AS value
                 FROM readings r JOIN channels c ON c.id = r.channel_id
                WHERE r.channel_id = %s AND r.time >= %s ORDER BY r.time""",
            (channel_id, read_from),
        ).fetchall()
        points = [(r["time"], r["value"]) for r in rows]
        for rule in rules:
            excursions = [
                e for e in evaluate(profiles.rule_from_row(rule), points) if e.end is None or e.end >= horizon
            ]
            service.reconcile(
                conn,
                channel_id=channel_id,
                rule_id=rule["id"],
                profile_id=rule["profile_id"],
                severity=rule["severity"],
                excursions=excursions,
                since=horizon,
            )


NO_DATA = """
SELECT m.channel_id, m.profile_id, r.id AS rule_id, r.severity, r.delay_s,
       coalesce(last.t, c.first_seen) AS last_time,
       greatest(coalesce(last.t, c.first_seen), c.last_ingested_at) AS last_heard,
       a.id AS alert_id, a.started_at AS alert_start
  FROM coldchain_monitored_channels m
  JOIN channels c ON c.id = m.channel_id
  JOIN coldchain_rules r ON r.profile_id = m.profile_id AND r.enabled AND r.metric = 'no_data'
  LEFT JOIN LATERAL (SELECT max(time) AS t FROM readings WHERE channel_id = m.channel_id) last ON true
  LEFT JOIN alerts a ON a.channel_id = m.channel_id AND a.rule_id = r.id AND a.status IN ('open', 'acknowledged')
"""


def check_silence(conn: Conn, *, now: datetime | None = None) -> None:
    """Opens a "no data" alert for each monitored channel silent past its rule's delay; ends it when
    readings are back (at the first reading after the silence)."""
    now = now or datetime.now(UTC)
    for row in conn.execute(NO_DATA).fetchall():
        excursion = _silence(conn, row, now)
        if excursion is None and row["alert_id"] is None:
            continue
        with conn.transaction():
            audit.set_actor(conn, ACTOR)
            service.reconcile(
                conn,
                channel_id=row["channel_id"],
                rule_id=row["rule_id"],
                profile_id=row["profile_id"],
                severity=row["severity"],
                excursions=[excursion] if excursion else [],
                since=now,
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
        try:
            evaluate_channel(conn, channel_id=row["channel_id"], now=now)
        except Exception:  # one broken channel must not stop the others being watched
            log.exception("evaluating channel %s failed", row["channel_id"])
            continue
        # Mark what was seen, not now(): an ingest that lands meanwhile is evaluated next pass.
        conn.execute(
            """INSERT INTO coldchain_eval_state (channel_id, evaluated_ingest) VALUES (%s, %s)
               ON CONFLICT (channel_id) DO UPDATE SET evaluated_ingest = EXCLUDED.evaluated_ingest""",
            (row["channel_id"], row["last_ingested_at"]),
        )
    if silence:
        check_silence(conn, now=now)
    return len(pending)
