"""The consumer page's stored cold-chain summary (trace_coldchain_pages): a page view reads it instead of
the readings once custody has ended, and every change that alters the summary shows on the next view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import factories
from fastapi.testclient import TestClient

from agritrace.coldchain import profiles
from agritrace.dashboards import rollup
from agritrace.db import Conn
from agritrace.trace import coldchain_page
from agritrace.trace import service as trace_service

from .conftest import cold_room

HARVEST = datetime(2026, 7, 10, 1, tzinfo=UTC)  # the mango_lot fixture's; its cold room holds it hours 4-52


def _page(client: TestClient, lot: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/api/v1/trace/{lot['code']}").json()
    # Each view must come from the database, not from this process's memory.
    coldchain_page.clear_cache()
    return body


def _stored(conn: Conn, batch_id: int) -> dict[str, Any] | None:
    return conn.execute(
        """SELECT gen, summary || jsonb_build_object('buckets', series) AS summary
             FROM trace_coldchain_pages WHERE batch_id = %s""",
        (batch_id,),
    ).fetchone()


def _ingest(conn: Conn, channel_id: int, points: list[tuple[datetime, float]]) -> None:
    """What the ingest worker does with a batch: store it and mark the channel for the rollup job."""
    factories.readings(conn, channel_id=channel_id, points=points)
    conn.execute(
        "UPDATE channels SET last_ingested_at = now(), rollup_from = least(rollup_from, %s) WHERE id = %s",
        (min(points)[0], channel_id),
    )


def test_page_stores_the_summary_of_an_ended_custody_and_shows_it_again(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    first = _page(client, mango_lot)
    assert first["cold_chain"]["verdict"] == "ok" and first["cold_chain"]["readings"] > 500
    stored = _stored(conn, mango_lot["child"]["id"])
    assert stored is not None and stored["summary"] == first["cold_chain"]
    # The readings are not read again: with them gone the page is unchanged (and the scan still counts).
    conn.execute("DELETE FROM readings WHERE channel_id = %s", (mango_lot["channel_id"],))
    second = _page(client, mango_lot)
    assert second["cold_chain"] == first["cold_chain"]
    assert second["scans"]["count"] == first["scans"]["count"] + 1


def test_late_readings_in_an_ended_custody_change_the_verdict_once_the_rollup_job_runs(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    assert _page(client, mango_lot)["cold_chain"]["verdict"] == "ok"
    # A truck's logger forwards two hours at 5 °C it recorded inside the custody window (stored and forwarded).
    late = HARVEST + timedelta(hours=20, minutes=2, seconds=30)
    _ingest(conn, mango_lot["channel_id"], [(late + timedelta(minutes=5 * i), 5.0) for i in range(24)])
    assert rollup.run_once(conn) >= 1
    after = _page(client, mango_lot)
    assert after["cold_chain"]["verdict"] == "excursion"
    assert after["cold_chain"]["min"] == 5.0
    assert "cold_chain_excursion" in after["warnings"]
    stored = _stored(conn, mango_lot["child"]["id"])
    assert stored is not None and stored["summary"]["verdict"] == "excursion"


def test_late_readings_outside_every_custody_leave_the_stored_summary_alone(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    _page(client, mango_lot)
    before = _stored(conn, mango_lot["child"]["id"])
    assert before is not None and before["summary"] is not None
    _ingest(conn, mango_lot["channel_id"], [(HARVEST + timedelta(days=30), 5.0)])
    rollup.run_once(conn)
    assert _stored(conn, mango_lot["child"]["id"]) == before


def test_custody_recorded_after_a_view_shows_on_the_next_one(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    assert _page(client, mango_lot)["cold_chain"]["verdict"] == "ok"
    start = HARVEST + timedelta(days=3)
    truck = cold_room(conn, mango_lot["cooperative_id"], start=start, hours=6, temp=6.0)
    trace_service.add_custody(
        conn,
        batch_id=mango_lot["child"]["id"],
        channel_id=truck,
        started_at=start,
        ended_at=start + timedelta(hours=6),
    )
    assert _page(client, mango_lot)["cold_chain"]["verdict"] == "excursion"


def test_custody_of_a_source_batch_changes_the_lot_packed_from_it(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    before = _page(client, mango_lot)["cold_chain"]
    # The harvest batch (the lot's source) turns out to have left the cold room after 10 hours, not 48.
    conn.execute(
        "UPDATE batch_custody SET ended_at = %s WHERE batch_id = %s",
        (HARVEST + timedelta(hours=14), mango_lot["parent"]["id"]),
    )
    after = _page(client, mango_lot)["cold_chain"]
    assert after["readings"] < before["readings"] / 3


def test_editing_the_products_band_changes_the_stored_verdict(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    profiles.ensure_defaults(conn)
    assert _page(client, mango_lot)["cold_chain"]["verdict"] == "ok"
    conn.execute("UPDATE coldchain_profiles SET temp_low = 12.5 WHERE name = 'mango'")
    after = _page(client, mango_lot)["cold_chain"]
    assert after["verdict"] == "excursion" and after["band"]["low"] == 12.5


def test_a_lot_still_in_custody_is_not_stored(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    start = datetime.now(UTC) - timedelta(hours=2)
    room = cold_room(conn, mango_lot["cooperative_id"], start=start, hours=2, temp=11.0)
    trace_service.add_custody(conn, batch_id=mango_lot["child"]["id"], channel_id=room, started_at=start)
    # Still in the room: never "ok" while monitoring goes on.
    cold = _page(client, mango_lot)["cold_chain"]
    assert (cold["verdict"], cold["in_progress"]) == ("incomplete", True)
    stored = _stored(conn, mango_lot["child"]["id"])
    assert stored is None or stored["summary"] is None


def test_a_summary_computed_before_an_invalidation_is_not_stored(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    batch = mango_lot["child"]["id"]
    _page(client, mango_lot)
    stored = _stored(conn, batch)
    assert stored is not None
    # A page read gen, then a change committed while it computed: its (stale) result is dropped.
    conn.execute("SELECT trace_coldchain_invalidate(ARRAY[%s]::bigint[])", (batch,))
    coldchain_page.store_page_summary(
        conn, batch_id=batch, gen=stored["gen"], summary={"verdict": "ok"}, chart="<svg/>"
    )
    assert _stored(conn, batch) == {"gen": stored["gen"] + 1, "summary": None}
    # A batch never viewed: the invalidation leaves a row, so a view that read "no row" cannot store either.
    conn.execute("DELETE FROM trace_coldchain_pages")
    conn.execute("SELECT trace_coldchain_invalidate(ARRAY[%s]::bigint[])", (batch,))
    coldchain_page.store_page_summary(conn, batch_id=batch, gen=0, summary={"verdict": "ok"}, chart="<svg/>")
    assert _stored(conn, batch) == {"gen": 1, "summary": None}
