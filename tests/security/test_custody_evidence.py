"""The evidence a consumer page relies on is in the audit chain (issue 12, item 4): readings and the
evaluator's alert figures were not audited, so editing them changed a lot's cold-chain verdict without
a trace. When a lot's custody has ended its summary enters the chain with a digest of its readings,
and `audit verify` recomputes it. The digest is recomputed here by an independent oracle written from
its definition (migrations 0016 and 0018), in Python, from the raw rows."""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import factories
import pytest

from agritrace import audit, db
from agritrace.coldchain import profiles
from agritrace.trace import coldchain_page
from agritrace.trace import service as trace_service

START = datetime(2026, 11, 20, 0, 5, tzinfo=UTC)
CUSTODY_START = START + timedelta(minutes=1)


# The mango profile's default: readings expected every 15 min, standing at most twice that.
MAX_STAND = timedelta(minutes=30)


def custody_rows(
    rows: list[tuple[int, datetime, float]], start: datetime, end: datetime
) -> list[tuple[int, datetime, float]]:
    """The readings the summary of a custody [start, end) is computed from, by definition (issue 14):
    the one standing at `start` (the latest before it, if less than MAX_STAND before and not followed
    by one at `start`), then those in [start, end)."""
    before = [r for r in rows if start - MAX_STAND < r[1] < start]
    carried = [max(before, key=lambda r: r[1])] if before and not any(r[1] == start for r in rows) else []
    return carried + [r for r in rows if start <= r[1] < end]


def oracle_digest(rows: list[tuple[int, datetime, float]]) -> tuple[int, str]:
    """The definition: one line per reading `<channel>\\t<UTC time, µs, Z>\\t<binary64 big-endian hex>`,
    ordered by channel and time, joined by LF; SHA-256 hex of the UTF-8 text."""
    lines = [
        f"{c}\t{t.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}\t{struct.pack('>d', v).hex()}"
        for c, t, v in sorted(rows, key=lambda r: (r[0], r[1]))
    ]
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.fixture
def lot() -> Iterator[tuple[str, int, int]]:
    """A scratch database holding a mango lot whose cold-room custody has ended, with 15-minute
    readings (one of them 16.0 °C); yields (url, batch id, channel id)."""
    name = f"agritrace_ev_{secrets.token_hex(4)}"
    url = db.create_database(name)
    with db.cli_connect(url) as conn:
        coop = factories.cooperative(conn)
        ch = factories.channel(conn, gateway_id=factories.gateway(conn, cooperative_id=coop["id"])["id"])
        points = [(START + timedelta(minutes=15 * i), 11.0 + (i % 3) * 0.25) for i in range(24)]
        points[20] = (points[20][0], 16.0)
        # Custody begins a minute after the first reading, which still stands then (carried in); one
        # before it is long superseded, and one comes at custody's very end (stands no time in it).
        points += [(START - timedelta(minutes=40), 9.0), (START + timedelta(hours=6), 20.0)]
        factories.readings(conn, channel_id=ch["id"], points=points)
        batch = trace_service.create_batch(conn, product="mango", cooperative_id=coop["id"])
        trace_service.add_custody(
            conn,
            batch_id=batch["id"],
            channel_id=ch["id"],
            started_at=CUSTODY_START,
            ended_at=START + timedelta(hours=6),
        )
        conn.commit()
    yield url, int(batch["id"]), int(ch["id"])
    db.drop_database(name)


def test_ended_custody_enters_the_chain_with_a_digest_an_oracle_recomputes(lot: tuple[str, int, int]) -> None:
    url, batch_id, channel_id = lot
    with db.cli_connect(url) as conn:
        assert coldchain_page.record_evidence(conn) == 1
        assert coldchain_page.record_evidence(conn) == 0  # recorded once
        row = conn.execute(
            "SELECT readings_count, readings_sha256, summary FROM batch_coldchain_summaries WHERE batch_id = %s",
            (batch_id,),
        ).fetchone()
        raw = conn.execute(
            "SELECT channel_id, time, value FROM readings WHERE channel_id = %s", (channel_id,)
        ).fetchall()
        entry = conn.execute(
            """SELECT actor, after FROM audit_log WHERE table_name = 'batch_coldchain_summaries'
                AND row_key = %s ORDER BY id DESC LIMIT 1""",
            (str(batch_id),),
        ).fetchone()
    assert row is not None and entry is not None
    assert (row["readings_count"], row["readings_sha256"]) == oracle_digest(
        custody_rows(
            [(r["channel_id"], r["time"], r["value"]) for r in raw], CUSTODY_START, START + timedelta(hours=6)
        )
    )
    assert row["readings_count"] == 24
    # The summary recorded is computed from those same readings.
    assert row["summary"]["readings"] == 24
    # In the chain: the figures and the digest, recorded by the evidence step.
    assert entry["actor"] == coldchain_page.EVIDENCE_ACTOR
    assert entry["after"]["readings_sha256"] == row["readings_sha256"]
    assert entry["after"]["summary"] == row["summary"]


@pytest.mark.parametrize(
    "tampering",
    [
        "UPDATE readings SET value = 11.5 WHERE value = 16.0",  # hide the excursion
        "DELETE FROM readings WHERE value = 16.0",
    ],
)
def test_editing_the_readings_behind_a_recorded_summary_is_found(
    lot: tuple[str, int, int], tampering: str
) -> None:
    url, batch_id, _ = lot
    with db.cli_connect(url) as conn:
        coldchain_page.record_evidence(conn)
        assert audit.verify(conn) == []
        conn.execute(tampering)
        conn.commit()
        findings = [str(f) for f in audit.verify(conn)]
    assert findings == [
        f"batch_coldchain_summaries {batch_id}: its readings differ from those its summary was computed "
        + (
            "from (24 now, 24 then): edited or deleted"
            if "UPDATE" in tampering
            else "from (23 now, 24 then): edited or deleted"
        )
    ]


def test_a_late_reading_is_recorded_again_not_reported_as_tampering(lot: tuple[str, int, int]) -> None:
    url, batch_id, channel_id = lot
    with db.cli_connect(url) as conn:
        coldchain_page.record_evidence(conn)
        # A gateway back from two days offline uploads a reading inside the custody.
        factories.readings(conn, channel_id=channel_id, points=[(START + timedelta(minutes=7), 12.0)])
        conn.commit()
        assert audit.verify(conn) == []
        assert coldchain_page.record_evidence(conn) == 1
        entries = conn.execute(
            """SELECT after ->> 'readings_count' AS n FROM audit_log
                WHERE table_name = 'batch_coldchain_summaries' AND row_key = %s ORDER BY id""",
            (str(batch_id),),
        ).fetchall()
    assert [e["n"] for e in entries] == ["24", "25"]  # both versions stay in the chain


def test_editing_a_resolved_alerts_figures_is_found(database: str, conn: db.Conn) -> None:
    coop = factories.cooperative(conn)
    ch = factories.channel(conn, gateway_id=factories.gateway(conn, cooperative_id=coop["id"])["id"])
    profiles.ensure_defaults(conn)
    rule = conn.execute("SELECT id, profile_id, severity FROM coldchain_rules LIMIT 1").fetchone()
    assert rule is not None
    alert = conn.execute(
        """INSERT INTO alerts (channel_id, rule_id, profile_id, severity, started_at, ended_at, status,
                               worst_value, minutes_out)
           VALUES (%s, %s, %s, %s, now() - interval '2 hours', now() - interval '1 hour', 'resolved', 16.0, 43)
           RETURNING id""",
        (ch["id"], rule["id"], rule["profile_id"], rule["severity"]),
    ).fetchone()
    assert alert is not None
    conn.execute(
        """INSERT INTO alert_events (alert_id, action, actor, state)
           SELECT id, 'resolved', 'coldchain:evaluator', to_jsonb(v) FROM alerts_view v WHERE id = %s""",
        (alert["id"],),
    )
    conn.commit()
    assert [f for f in audit.verify(conn) if f.table_name == "alerts"] == []
    # The evaluator's figures are not in the alert's own audit entries (they change with every
    # reading); its history event is, and the edit no longer matches it.
    conn.execute("UPDATE alerts SET minutes_out = 29, worst_value = 13.5 WHERE id = %s", (alert["id"],))
    conn.commit()
    findings = [str(f) for f in audit.verify(conn) if f.table_name == "alerts"]
    assert findings == [
        f"alerts {alert['id']}: its worst value or minutes out differ from its last recorded event (alert_events)"
    ]
    event = conn.execute(
        "SELECT count(*) AS n FROM audit_log WHERE table_name = 'alert_events' AND after ->> 'alert_id' = %s",
        (str(alert["id"]),),
    ).fetchone()
    assert event == {"n": 1}
