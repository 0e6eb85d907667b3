"""The issue-14 lots as a shopper and a regulator see them: the page, its JSON and the API summary say
the same thing, and what they say follows from the logger data (figures computed by hand)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agritrace.coldchain import profiles
from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service

from .conftest import phone_browser

DAY = datetime(2026, 8, 3, tzinfo=UTC)


def _fifteen_minute_lot(conn: Conn, cooperative_id: int) -> dict[str, Any]:
    """A mango lot in custody 00:05-05:58 of a cold room read every 15 min, 16.0 °C at 05:15, 05:30, 05:45."""
    gateway = f"gw-truth-{datetime.now().timestamp():.0f}"
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gateway, cooperative_id))
    ch = conn.execute(
        """INSERT INTO channels (gateway_id, name, unit, asset_kind, asset_name)
           VALUES (%s, 'coldroom/temp', 'Cel', 'cold_room', '3号冷库') RETURNING id""",
        (gateway,),
    ).fetchone()
    assert ch is not None
    values = [12.0] * 25
    for i in (21, 22, 23):
        values[i] = 16.0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, channel_id, value) VALUES (%s, %s, %s)",
            [(DAY + timedelta(minutes=15 * i), ch["id"], v) for i, v in enumerate(values)],
        )
    # A mango room: the channel's own profile gives the API summary its band.
    profiles.ensure_defaults(conn)
    profiles.set_channel_profile(conn, gateway_id=gateway, channel="coldroom/temp", profile="mango")
    batch = trace_service.create_batch(conn, product="mango", cooperative_id=cooperative_id)
    trace_service.add_custody(
        conn,
        batch_id=batch["id"],
        channel_id=ch["id"],
        started_at=DAY + timedelta(minutes=5),
        ended_at=DAY + timedelta(hours=5, minutes=58),
    )
    code = trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)[0]
    return {"channel_id": ch["id"], "batch": batch, **code}


@pytest.fixture
def fifteen_minute_lot(conn: Conn) -> dict[str, Any]:
    return _fifteen_minute_lot(conn, trace_service.ensure_cooperative(conn, name="右江芒果合作社"))


def test_the_fifteen_minute_lot_reads_excursion_43_min_on_the_page_the_json_and_the_api(
    client: TestClient, regulator: dict[str, str], fifteen_minute_lot: dict[str, Any]
) -> None:
    cold = client.get(f"/api/v1/trace/{fifteen_minute_lot['code']}").json()["cold_chain"]
    assert (cold["verdict"], cold["minutes_out_of_band"]) == ("excursion", 43.0)
    assert cold["worst"] == {"value": 16.0, "time": "2026-08-03T05:15:00+00:00", "place": "3号冷库"}
    html = client.get(f"/t/{fifteen_minute_lot['code']}").text
    assert "冷链温度超出范围" in html and "全程冷链合格" not in html
    assert "超出适宜温度 43 分钟，最差 16.0°C（3号冷库，2026-08-03 13:15）" in html
    api = client.get(
        f"/api/v1/coldchain/channels/{fifteen_minute_lot['channel_id']}/summary",
        params={"start": "2026-08-03T00:05:00Z", "end": "2026-08-03T05:58:00Z"},
        headers=regulator,
    ).json()
    assert (api["verdict"], api["minutes_out_of_band"], api["minutes_no_data"]) == ("excursion", 43.0, 0.0)
    # Stored once custody ended: the second view reads the stored summary, which says the same.
    again = client.get(f"/api/v1/trace/{fifteen_minute_lot['code']}").json()["cold_chain"]
    assert (again["verdict"], again["minutes_out_of_band"]) == ("excursion", 43.0)


def test_a_lot_still_in_the_cold_room_reads_incomplete_with_its_latest_reading(
    client: TestClient, conn: Conn
) -> None:
    coop = trace_service.ensure_cooperative(conn, name="田阳合作社")
    gateway = "gw-open-custody"
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gateway, coop))
    ch = conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, 'coldroom/temp', 'Cel') RETURNING id",
        (gateway,),
    ).fetchone()
    assert ch is not None
    now = datetime.now(UTC).replace(microsecond=0)
    # Nine minutes of data, all in band, custody open.
    points = [(now - timedelta(minutes=9 - i), ch["id"], 11.5) for i in range(0, 10, 3)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO readings (time, channel_id, value) VALUES (%s, %s, %s)", points)
    batch = trace_service.create_batch(conn, product="mango", cooperative_id=coop)
    trace_service.add_custody(
        conn, batch_id=batch["id"], channel_id=ch["id"], started_at=now - timedelta(minutes=9)
    )
    code = trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)[0]["code"]
    cold = client.get(f"/api/v1/trace/{code}").json()["cold_chain"]
    assert (cold["verdict"], cold["in_progress"]) == ("incomplete", True)
    assert cold["latest_reading"] == now.isoformat()
    html = client.get(f"/t/{code}").text
    shown = now.astimezone(trace_codes_tz()).strftime("%Y-%m-%d %H:%M")
    assert "冷链数据不完整" in html and f"冷链监测进行中，最新读数 {shown}" in html
    assert "全程冷链合格" not in html


def trace_codes_tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")


@pytest.mark.slow
def test_the_fifteen_minute_lot_in_a_phone_browser(
    live_server: str, fifteen_minute_lot: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    url = f"{live_server}/t/{fifteen_minute_lot['code']}"
    shot = artifacts / "trace-page-excursion-43min.png"
    dom = phone_browser(url, shot, tmp_path / "profile")
    assert "冷链温度超出范围" in dom and "超出适宜温度 43 分钟" in dom and "3号冷库" in dom
    assert "全程冷链合格" not in dom
