"""The 15-minute rollup the range panels read: incremental, late readings re-rolled, band edits re-rolled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import factories

from agritrace import db
from agritrace.coldchain import profiles
from agritrace.dashboards import rollup

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def _ingest(conn: db.Conn, channel_id: int, points: list[tuple[datetime, float]]) -> None:
    """What the ingest worker does with a batch: store it, keep the latest value, mark the rollup."""
    factories.readings(conn, channel_id=channel_id, points=points)
    newest = max(points)
    conn.execute(
        """UPDATE channels SET last_value = CASE WHEN last_time IS NULL OR %s > last_time THEN %s ELSE last_value END,
                  last_time = greatest(last_time, %s), last_ingested_at = now(),
                  rollup_from = least(rollup_from, %s) WHERE id = %s""",
        (newest[0], newest[1], newest[0], min(points)[0], channel_id),
    )


def _buckets(conn: db.Conn, channel_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT bucket, n, total, seconds, seconds_out FROM readings_15m
            WHERE channel_id = %s ORDER BY bucket""",
        (channel_id,),
    ).fetchall()


def _raw(conn: db.Conn, channel_id: int) -> list[tuple[datetime, int, float]]:
    rows = conn.execute(
        """SELECT time_bucket('15 minutes', time) AS b, count(*) AS n, sum(value) AS total FROM readings
            WHERE channel_id = %s GROUP BY 1 ORDER BY 1""",
        (channel_id,),
    ).fetchall()
    return [(r["b"], r["n"], r["total"]) for r in rows]


def _cold_room(conn: db.Conn) -> dict[str, Any]:
    profiles.ensure_defaults(conn)
    gw = factories.gateway(conn)["id"]
    ch = factories.channel(conn, gateway_id=gw, name="coldroom-mango/temp", unit="Cel")
    profiles.set_channel_profile(conn, gateway_id=gw, channel="coldroom-mango/temp", profile="mango")
    return ch


def test_rollup_matches_the_raw_readings_and_a_late_reading_is_re_rolled(conn: db.Conn) -> None:
    ch = _cold_room(conn)
    _ingest(conn, ch["id"], [(T0 + timedelta(minutes=5 * i), 12.0) for i in range(24)])
    assert rollup.run_once(conn) >= 1
    assert [(b["bucket"], b["n"], b["total"]) for b in _buckets(conn, ch["id"])] == _raw(conn, ch["id"])
    assert rollup.run_once(conn) == 0, "nothing changed, nothing re-rolled"

    # A gateway back online forwards a reading it stored an hour ago, between two others.
    _ingest(conn, ch["id"], [(T0 + timedelta(minutes=62), 20.0)])
    assert rollup.run_once(conn) == 1
    buckets = _buckets(conn, ch["id"])
    assert [(b["bucket"], b["n"], b["total"]) for b in buckets] == _raw(conn, ch["id"])
    by_bucket = {b["bucket"]: b for b in buckets}
    # 20 °C (band 10-13 °C) stands 3 minutes, until the 65-minute reading.
    assert by_bucket[T0 + timedelta(minutes=60)]["seconds_out"] == 180.0
    # Each reading stands until the next; the newest stands 0 (panels add its open end).
    assert sum(b["seconds"] for b in buckets) == (23 * 5) * 60


def test_editing_a_profiles_band_re_rolls_the_time_out_of_band(conn: db.Conn) -> None:
    ch = _cold_room(conn)
    _ingest(conn, ch["id"], [(T0 + timedelta(minutes=10 * i), 12.5) for i in range(7)])
    rollup.run_once(conn)
    assert sum(b["seconds_out"] for b in _buckets(conn, ch["id"])) == 0
    # The cooperative tightens mango storage to 10-12 °C: an hour at 12.5 °C is now out of band.
    profiles.update_profile(conn, name="mango", changes={"temp_high": 12.0})
    assert rollup.run_once(conn) >= 1
    assert sum(b["seconds_out"] for b in _buckets(conn, ch["id"])) == 3600.0


def test_the_rollup_mark_written_with_every_batch_adds_nothing_to_the_audit_trail(conn: db.Conn) -> None:
    ch = _cold_room(conn)

    def entries() -> int:
        row = conn.execute("SELECT count(*) AS n FROM audit_log WHERE table_name = 'channels'").fetchone()
        assert row is not None
        return int(row["n"])

    before = entries()
    _ingest(conn, ch["id"], [(T0, 11.0)])
    rollup.run_once(conn)
    assert entries() == before
