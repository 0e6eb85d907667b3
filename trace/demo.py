"""Demo data for `make up`: a 百色芒果 harvest packed into a GTIN lot, a citrus batch, certificates,
events, a cold room with readings, and one code each; and, when the simulator's demo cold room exists,
a mango lot stored in it now, whose page shows the live cold chain. Safe to run again (finds what exists)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from agritrace.db import Conn
from agritrace.ingest import simulate
from agritrace.trace import codes as trace_codes
from agritrace.trace import gs1
from agritrace.trace import service as trace_service

COOPERATIVE = "百色市右江区芒果专业合作社"
CITRUS_COOPERATIVE = "武鸣沃柑种植专业合作社"
GATEWAY = "demo-baise-coldroom"
LIVE_LOT = "MDEMO-LIVE"
# The simulator's demo cold room (`agritrace simulate --demo`) and its temperature channel's SenML name.
LIVE_GATEWAY = next(g for g, _, kind in simulate.DEMO if kind == "mango-coldroom")
LIVE_CHANNEL = simulate.KINDS["mango-coldroom"][0] + "/temp"
# A GTIN from the GS1 China range pattern, with its real check digit.
DEMO_GTIN = "0690123456789" + str(gs1.check_digit("0690123456789"))


def _existing(conn: Conn, lot: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM batches WHERE lot = %s", (lot,)).fetchone()


def _first_code(conn: Conn, batch: dict[str, Any]) -> dict[str, str]:
    row = conn.execute(
        "SELECT serial FROM codes WHERE batch_id = %s ORDER BY issued_at LIMIT 1", (batch["id"],)
    ).fetchone()
    if row is None:
        return trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)[0]
    return {
        "code": row["serial"],
        "url": trace_codes.code_url(serial=row["serial"], gtin=batch["gtin"], lot=batch["lot"]),
    }


def _cold_room(conn: Conn, cooperative_id: int, start: datetime) -> int:
    conn.execute(
        "INSERT INTO gateways (id, cooperative_id, description) VALUES (%s, %s, 'demo cold room') ON CONFLICT DO NOTHING",
        (GATEWAY, cooperative_id),
    )
    conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, 'coldroom/temp', 'Cel') ON CONFLICT DO NOTHING",
        (GATEWAY,),
    )
    row = conn.execute(
        "SELECT id FROM channels WHERE gateway_id = %s AND name = 'coldroom/temp'", (GATEWAY,)
    ).fetchone()
    assert row is not None
    # Two days at 11.5 °C ± 0.8, every 5 minutes: inside the mango band.
    conn.execute(
        """INSERT INTO readings (time, channel_id, value)
           SELECT t, %s, 11.5 + 0.8 * sin(extract(epoch FROM t) / 7200.0)
             FROM generate_series(%s::timestamptz, %s::timestamptz + interval '2 days', interval '5 minutes') t
           ON CONFLICT DO NOTHING""",
        (row["id"], start, start),
    )
    return int(row["id"])


def load(conn: Conn) -> dict[str, Any]:
    """Creates the demo records that are missing; returns the demo codes."""
    # `make migrate` (so every `make test`) runs this: two runs at once must not both find a lot
    # missing and both create it. The second waits, then finds what the first made.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('agritrace.trace.demo'))")
    coop = trace_service.ensure_cooperative(conn, name=COOPERATIVE)
    harvest = datetime(2026, 7, 10, 1, 0, tzinfo=UTC)
    out = []
    mango = _existing(conn, "MDEMO-HARVEST")
    if mango is None:
        mango = trace_service.create_batch(
            conn,
            product="mango",
            cooperative_id=coop,
            variety="台农一号",
            lot="MDEMO-HARVEST",
            origin_plot="右江区阳圩镇 3 号果园",
            gi_area="百色芒果 地理标志产区",
            latitude=23.90,
            longitude=106.62,
            harvest_date=harvest.date(),
            quantity=Decimal(2000),
            unit="kg",
        )
        trace_service.add_event(
            conn,
            batch_id=mango["id"],
            biz_step="commissioning",
            disposition="active",
            event_time=harvest,
            place="右江区阳圩镇 3 号果园",
            actor=COOPERATIVE,
        )
        trace_service.add_inspection(
            conn,
            batch_id=mango["id"],
            inspected_at=harvest + timedelta(hours=5),
            kind="农药残留快速检测",
            standard="GB/T 5009.199",
            laboratory="右江区农产品质量安全检测站",
            passed=True,
        )
        trace_service.add_certificate(
            conn,
            kind="geographical_indication",
            number="AGI01426",
            issuer="农业农村部",
            valid_from=date(2024, 1, 1),
            valid_to=date(2029, 12, 31),
            scope="百色芒果",
            holder_cooperative_id=coop,
        )
        trace_service.add_certificate(
            conn,
            kind="green_food",
            number="LB-15-24070112345A",
            issuer="中国绿色食品发展中心",
            valid_from=date(2024, 7, 1),
            valid_to=date(2027, 6, 30),
            scope="芒果",
            batch_id=mango["id"],
        )
        channel = _cold_room(conn, coop, harvest + timedelta(hours=6))
        trace_service.add_custody(
            conn,
            batch_id=mango["id"],
            channel_id=channel,
            started_at=harvest + timedelta(hours=6),
            ended_at=harvest + timedelta(days=2, hours=6),
        )
    lot = _existing(conn, "MDEMO-BOX10")
    if lot is None:
        lot = trace_service.split_batch(
            conn,
            batch_id=mango["id"],
            parts=[{"quantity": Decimal(500), "unit": "kg", "lot": "MDEMO-BOX10", "gtin": DEMO_GTIN}],
        )[0]
        trace_service.add_event(
            conn,
            batch_id=lot["id"],
            biz_step="packing",
            disposition="active",
            event_time=harvest + timedelta(days=2, hours=7),
            place="百色市田阳区包装厂",
            actor=COOPERATIVE,
        )
        trace_service.add_event(
            conn,
            batch_id=lot["id"],
            biz_step="shipping",
            disposition="in_transit",
            event_time=harvest + timedelta(days=2, hours=9),
            place="百色市田阳区包装厂",
            actor="冷链物流",
            documents=[{"type": "desadv", "id": "DEMO-ASN-0001"}],
        )
        trace_service.set_compliance_certificate(
            conn,
            batch_id=lot["id"],
            product_name="百色芒果（台农一号）",
            quantity=Decimal(500),
            unit="kg",
            origin="广西百色市右江区",
            issued_at=harvest + timedelta(days=2, hours=7),
            issuer="黄师傅",
            contact="0776-2800000",
        )
    out.append({"lot": lot["lot"], "batch_id": lot["id"], **_first_code(conn, lot)})

    citrus_coop = trace_service.ensure_cooperative(conn, name=CITRUS_COOPERATIVE)
    citrus = _existing(conn, "CDEMO-WOGAN")
    if citrus is None:
        citrus = trace_service.create_batch(
            conn,
            product="citrus",
            cooperative_id=citrus_coop,
            variety="沃柑",
            lot="CDEMO-WOGAN",
            origin_plot="南宁市武鸣区双桥镇",
            harvest_date=date(2026, 2, 1),
            quantity=Decimal(800),
            unit="kg",
        )
        trace_service.add_event(
            conn,
            batch_id=citrus["id"],
            biz_step="commissioning",
            disposition="active",
            event_time=datetime(2026, 2, 1, 2, tzinfo=UTC),
            place="南宁市武鸣区双桥镇",
        )
        trace_service.add_certificate(
            conn,
            kind="organic",
            number="124OP2400123",
            issuer="南京国环有机产品认证中心",
            valid_from=date(2024, 3, 1),
            valid_to=date(2025, 2, 28),
            batch_id=citrus["id"],
        )
    out.append({"lot": citrus["lot"], "batch_id": citrus["id"], **_first_code(conn, citrus)})
    live = _live_lot(conn, harvest_date=datetime.now(UTC).date())
    if live is not None:
        out.append({"lot": live["lot"], "batch_id": live["id"], "live": True, **_first_code(conn, live)})
    return {"codes": out}


def _live_lot(conn: Conn, *, harvest_date: date) -> dict[str, Any] | None:
    """A mango lot held in the simulator's demo cold room from now on (open custody), if that gateway exists.

    Its custody also puts the cold room under the mango profile's alert rules (custody drives monitoring)."""
    gateway = conn.execute("SELECT cooperative_id FROM gateways WHERE id = %s", (LIVE_GATEWAY,)).fetchone()
    if gateway is None:
        return None
    lot = _existing(conn, LIVE_LOT)
    if lot is not None:
        return lot
    # The channel is registered now (ingest would on the first reading), so custody can point at it.
    conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, %s, 'Cel') ON CONFLICT DO NOTHING",
        (LIVE_GATEWAY, LIVE_CHANNEL),
    )
    channel = conn.execute(
        "SELECT id FROM channels WHERE gateway_id = %s AND name = %s", (LIVE_GATEWAY, LIVE_CHANNEL)
    ).fetchone()
    assert channel is not None
    lot = trace_service.create_batch(
        conn,
        product="mango",
        cooperative_id=gateway["cooperative_id"],
        variety="桂七芒",
        lot=LIVE_LOT,
        origin_plot="田阳区百育镇 7 号果园",
        gi_area="百色芒果 地理标志产区",
        harvest_date=harvest_date,
        quantity=Decimal(300),
        unit="kg",
        gtin=DEMO_GTIN,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    trace_service.add_event(
        conn,
        batch_id=lot["id"],
        biz_step="storing",
        disposition="active",
        event_time=now,
        place="百色芒果示范合作社 冷库",
        actor="百色芒果示范合作社",
    )
    trace_service.add_custody(conn, batch_id=lot["id"], channel_id=channel["id"], started_at=now)
    return lot
